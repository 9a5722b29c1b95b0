"""Implementations chosen by measurement on the running device (`search.sep_impl='auto'`,
`train.sep_impl='auto'`, the defaults).

Some ops have several forms that compute the same function (`ops.IMPL_FORMS`: the separable and
dilated convolutions as one dense convolution, a grouped depthwise convolution or shifted slices;
the chain spaces' depthwise convolutions; pooling as shifted views or XLA's `reduce_window`). Which
is fastest depends on the device (a dense kernel keeps a TPU's matrix unit busy, cuDNN's depthwise
kernels usually win on GPUs, XLA:CPU's grouped convolutions are slow), the shape and the dtype.
At start-up, `tuned` traces the model abstractly and records every call of such an op
(`ops.recording_sites`: its kind, input shape, dtype and arguments), times each form's forward
and backward at that shape on the device (`time_site`: compiled alone, median of a few calls),
and builds the model again with the fastest form per site (`ops.ImplTable`).

Choices are cached on disk (`cache_path`: `$DNAS_CACHE_DIR/autotune.json`, else
`$XDG_CACHE_HOME/dnas/...`, else `~/.cache/dnas/...`), keyed by the device kind, the backend, the
JAX version and the site (shape with batch, dtype, arguments): a second run on the same kind of
device measures nothing. Processes on one host share the file under a lock, so concurrent runs
(a sweep's trials) measure a site once and agree on its form; with several JAX processes
(multi-host), process 0's choices are broadcast to all, since every process must compile the
same program. A corrupt cache file is set aside with a warning and measured again.
`DNAS_AUTOTUNE=0` skips measuring (every site gets its kind's default form; a resumed run,
the forms it recorded).

The forms agree to float rounding (tests/test_ops.py and tests/test_autotune.py check every
pair in float64), but a search amplifies rounding: two choices of forms can end a float32
search in different cells. The run records its choices in its `config.json` (`autotune` entry,
`workdir.record_autotune`, kept on resume), and a resumed run takes them again (`tuned`'s
`prior`), wherever it resumes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnas import ops

log = logging.getLogger(__name__)

CACHE_ENV = "DNAS_CACHE_DIR"
ENABLE_ENV = "DNAS_AUTOTUNE"
CACHE_FILE = "autotune.json"
CACHE_VERSION = 1

# A timer: (site, form) -> milliseconds of one forward+backward (inf: the form failed).
Timer = Callable[[ops.Site, str], float]


def cache_path() -> Path:
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "dnas")
    return Path(root) / CACHE_FILE


def device_key() -> str:
    """What a measurement is valid for: backend, device kind and JAX version."""
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind} jax {jax.__version__}"


def entry_key(site: ops.Site, device: str | None = None) -> str:
    """The cache key of a site: the device key, then the site's key with the batch."""
    return f"{device or device_key()} | {site.key} batch {site.shape[0]}"


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


# ---------------------------------------------------------------------------------------------
# Recording and timing sites.


def record_sites(fn: Callable[[], Any]) -> list[ops.Site]:
    """The distinct sites (by key) that `fn()` traces, in first-call order; `fn` is traced
    abstractly (`jax.eval_shape`), no FLOPs. Of a key seen at several batch sizes, the largest."""
    with ops.recording_sites() as sites:
        jax.eval_shape(fn)
    by_key: dict[str, ops.Site] = {}
    for site in sites:
        if site.key not in by_key or site.shape[0] > by_key[site.key].shape[0]:
            by_key[site.key] = site
    return list(by_key.values())


def site_function(site: ops.Site, form: str) -> tuple[Callable, tuple]:
    """(f, args): `f(*args)` computes the site's op in `form`, forward and backward (the
    gradients with respect to its input and weights), at the site's shape and dtype."""
    spec = dict(site.spec)
    shape, dtype = site.shape, jnp.dtype(site.dtype)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), dtype)
    c = shape[-1]
    if site.kind == "separable":
        k = spec["k"]
        dw = jnp.asarray(rng.standard_normal((k, k, c)) / k, jnp.float32)
        pw = jnp.asarray(rng.standard_normal((c, spec["out"])) / math.sqrt(c), jnp.float32)
        args = (x, dw, pw)

        def op(x, dw, pw):
            return ops.separable_conv(x, dw, pw, spec["s"], spec["p"], spec["d"], form)
    elif site.kind == "depthwise":
        k = spec["k"]
        args = (x, jnp.asarray(rng.standard_normal((k, k, c)) / k, jnp.float32))

        def op(x, dw):
            return ops.depthwise_conv2d(x, dw, spec["s"], spec["p"], form)
    elif site.kind == "pool":
        pool = ops.max_pool if spec["op"] == "max" else ops.avg_pool
        args = (x,)

        def op(x):
            return pool(x, spec["k"], spec["s"], spec["p"], form)
    else:
        raise ValueError(f"unknown site kind {site.kind!r}; valid: {tuple(ops.IMPL_FORMS)}")

    def loss(*a):
        y = op(*a)
        return jnp.sum(y.astype(jnp.float32) * jnp.cos(jnp.arange(y.size).reshape(y.shape)))

    return jax.grad(loss, argnums=tuple(range(len(args)))), args


def time_site(site: ops.Site, form: str, *, runs: int = 7, warmup: int = 2) -> float:
    """Milliseconds of one forward+backward of `site` in `form` on the default device (median of
    `runs` calls after `warmup`); inf if the form does not compile or run there."""
    from dnas import latency

    fn, args = site_function(site, form)
    try:
        compiled = jax.jit(fn).lower(*args).compile()
        median, _ = latency.time_fn(compiled, *args, runs=runs, warmup=warmup)
    except Exception as err:  # a form a backend cannot compile loses the vote, nothing more
        log.warning("autotune: %s in form %r failed (%s); not chosen", site.key, form, err)
        return math.inf
    return median


# ---------------------------------------------------------------------------------------------
# The cache.


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`.lock while measuring (processes on one host agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; concurrent runs may measure a site twice
        yield
        return
    with open(f"{path}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_cache(path: Path) -> dict[str, dict]:
    """The cache's entries (key -> {'form', 'ms', ...}); a corrupt or foreign file is moved to
    `<path>.corrupt` with a warning and counts as empty."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
            raise ValueError(f"not a version-{CACHE_VERSION} dnas autotune cache")
        return data["entries"]
    except (ValueError, AttributeError, OSError) as err:
        aside = path.with_name(path.name + ".corrupt")
        log.warning("autotune: ignoring %s (%s); moved it to %s, measuring again", path, err, aside)
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        return {}


def write_cache(path: Path, entries: dict[str, dict]) -> None:
    from dnas import workdir

    text = json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1, sort_keys=True)
    workdir.atomic_write_text(path, text + "\n")


# ---------------------------------------------------------------------------------------------
# Choosing.


def choose(
    sites: Sequence[ops.Site], *, timer: Timer | None = None, path: Path | None = None,
    use_cache: bool = True,
) -> tuple[ops.ImplTable, dict[str, Any]]:  # fmt: skip
    """The fastest form of every site, from the cache or measured with `timer` (`time_site`),
    and a record of the choices: {'device', 'sites': {site key: form}, 'measured': [keys timed
    now], 'ms': {site key: {form: ms}}, 'seconds'}."""
    timer = timer or time_site
    path = path or cache_path()
    device = device_key()
    start = time.perf_counter()
    choices: dict[str, str] = {}
    timings: dict[str, dict[str, float]] = {}
    measured: list[str] = []
    lock = _locked(path) if use_cache else contextlib.nullcontext()
    with lock:
        entries = read_cache(path) if use_cache else {}
        for site in sites:
            key = entry_key(site, device)
            entry = entries.get(key)
            forms = ops.IMPL_FORMS[site.kind]
            if entry is None or entry.get("form") not in forms:
                ms = {form: float(timer(site, form)) for form in forms}
                finite = {f: t for f, t in ms.items() if math.isfinite(t)}
                if not finite:
                    raise RuntimeError(
                        f"autotune: no form of {site.key} ran on {device} ({ms}); force one with "
                        "--config.search.sep_impl / --config.train.sep_impl"
                    )
                entry = {
                    "form": min(finite, key=finite.get),
                    "ms": {f: round(t, 4) if math.isfinite(t) else None for f, t in ms.items()},
                    "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                }
                entries[key] = entry
                measured.append(site.key)
            choices[site.key] = entry["form"]
            timings[site.key] = entry["ms"]
        if measured and use_cache:
            try:
                write_cache(path, entries)
            except OSError as err:  # a read-only home: measure again next time, nothing lost
                log.warning("autotune: could not write %s (%s)", path, err)
    choices = _agree_across_processes(sites, choices)
    record = {
        "device": device,
        "sites": choices,
        "measured": measured,
        "ms": timings,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return ops.ImplTable(tuple(sorted(choices.items()))), record


def _agree_across_processes(sites: Sequence[ops.Site], choices: dict[str, str]) -> dict[str, str]:
    """Process 0's choices on every process (they must compile the same program)."""
    if jax.process_count() == 1:
        return choices
    from jax.experimental import multihost_utils

    index = np.array([ops.IMPL_FORMS[s.kind].index(choices[s.key]) for s in sites], np.int32)
    index = np.asarray(multihost_utils.broadcast_one_to_all(index))
    return {s.key: ops.IMPL_FORMS[s.kind][int(i)] for s, i in zip(sites, index, strict=True)}


def tuned(
    build: Callable[[ops.Impl], Any], trace: Callable[[Any], Any], impl: ops.Impl,
    *, timer: Timer | None = None, prior: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """(model, record): `build(impl)` as it is when `impl` is a form's name (forced; record
    empty); under `'auto'`, `build(table)` with the fastest forms of the sites that
    `trace(build('auto'))` calls (`choose`; traced abstractly).

    `prior` is the record of the run being resumed (`workdir.recorded_autotune`): the forms it
    names are taken again, measuring nothing, wherever the run resumes (another machine, an
    emptied cache): the forms agree only to rounding, and a search amplifies rounding. Sites it
    does not name (another dnas version) are chosen as usual. A prior made with autotuning off
    gives the default forms again, and a prior's forms are kept under `DNAS_AUTOTUNE=0` too: the
    variable is the machine's, the forms the run's. A forced `impl` (`sep_impl`, part of the
    config) still wins."""
    if impl != ops.AUTO:
        return build(impl), {}
    if prior is not None and prior.get("disabled"):
        return build(ops.ImplTable()), dict(prior)
    if not enabled() and prior is None:
        return build(ops.ImplTable()), {"device": device_key(), "sites": {}, "disabled": ENABLE_ENV}
    model = build(ops.AUTO)
    sites = record_sites(lambda: trace(model))
    if not sites:
        return model, {}
    if prior is None:
        table, record = choose(sites, timer=timer)
        if record["measured"]:
            log.info(
                "autotune: measured %d of %d sites in %.1f s (%s)", len(record["measured"]),
                len(sites), record["seconds"], cache_path(),
            )  # fmt: skip
        return build(table), record
    known = prior.get("sites") or {}
    kept = {s.key: known[s.key] for s in sites if known.get(s.key) in ops.IMPL_FORMS[s.kind]}
    ms = prior.get("ms") or {}
    record = {"device": prior.get("device", "?"), "sites": kept, "measured": [],
              "ms": {k: ms[k] for k in kept if k in ms}, "resumed": True}  # fmt: skip
    log.info("autotune: %d forms the run chose on %s, again", len(kept), record["device"])
    rest = [s for s in sites if s.key not in kept]
    if rest:
        log.warning(
            "autotune: the resumed run's record gives a valid form for %d of these %d sites "
            "(another dnas version?); choosing the other %d again", len(kept), len(sites),
            len(rest),
        )  # fmt: skip
        if enabled():
            _, chosen = choose(rest, timer=timer)
            record["sites"] |= chosen["sites"]
            record["ms"] |= chosen["ms"]
            record["measured"] = chosen["measured"]
        else:  # autotuning off: the defaults for what the prior does not name
            record["sites"] |= {s.key: ops.IMPL_FORMS[s.kind][0] for s in rest}
    choices = _agree_across_processes(sites, {s.key: record["sites"][s.key] for s in sites})
    record["sites"] = choices
    return build(ops.ImplTable(tuple(sorted(choices.items())))), record
