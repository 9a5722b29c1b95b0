"""Latency tables measured on the running JAX backend (`dnas lut`), and their check against
whole networks timed on the same device (`dnas latency`).

`measure_table` compiles every candidate op of a space's supernet (`Space.candidates`: one
module and input shape per (group, position, row, op)) on its own and times its inference
(`time_fn`): the median over `runs` calls, each ended by `block_until_ready`, after `warmup`
calls, and the interquartile range as `spread_ms` (robust to the outliers a shared machine
adds). Identical candidates (the module's repr and the input shape) are timed once. This is the
ProxylessNAS / FBNet lookup table (Cai et al. 2019, Sec. 3.3; Wu et al. 2019, Sec. 3.2): the
network's latency is modelled as a fixed part plus the sum of its ops' entries,

    LAT(net) ~= fixed + sum over mixed rows of table[position, row, op chosen].

The fixed part (stem, reduction blocks, head, and whatever the per-op sum misses: the calls
XLA fuses or does not make in a whole network, the candidates' own dispatch overhead) is
estimated as the median over a few random genotypes of (their network's measured latency minus
the sum of their ops' entries); the table's meta says so. `fit_correction` goes one step further
(`dnas latency --fit`): measured ~= a * (fixed + sum) + b by least squares on the relative
errors of timed networks, stored as the table's `correction` (`hardware.py`), which
`hardware.expected_cost` applies.

Initialisation never runs the model's initialisers: shapes come from `jax.eval_shape` and the
values are drawn on the host (positive, scaled by 1/sqrt(fan-in), so BatchNorm variances are
valid and activations stay finite); the values do not change what XLA computes or how fast.

Timings are of whatever else the machine runs at the same time: on a shared host, compare
tables measured under the same load, and use `spread_ms` to see how noisy they were.
"""

from __future__ import annotations

import datetime
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from dnas import hardware

if TYPE_CHECKING:  # annotations only
    import flax.linen as nn

    from dnas.genotype import Genotype
    from dnas.spaces.base import Space

RESOURCE = "latency_ms"
SPREAD = "spread_ms"
FIXED_ESTIMATE = (
    "median over random genotypes of (measured network latency - sum of its ops' entries)"
)


def time_fn(
    fn: Callable[..., Any], *args: Any, runs: int = 20, warmup: int = 5
) -> tuple[float, float]:
    """(median, interquartile range) in milliseconds of `runs` calls of `fn(*args)`, each timed
    until its outputs are ready (`jax.block_until_ready`), after `warmup` untimed calls. Compile
    `fn` first (`jax.jit(f).lower(...).compile()`), or give warm-up calls to compile it."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times[i] = time.perf_counter() - start
    q1, median, q3 = np.percentile(times * 1e3, [25, 50, 75])
    return float(median), float(q3 - q1)


def host_variables(
    init: Callable[[jax.Array], Any], dtype: Any = jnp.float32, seed: int = 0
) -> Any:
    """The variables `init(key)` would make, with their shapes from `jax.eval_shape` and values
    drawn on the host: uniform in [0.5, 1.5) / sqrt(fan-in) (positive: BatchNorm variances are
    valid; finite activations). Floating leaves in `dtype`."""
    shapes = jax.eval_shape(init, jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(leaf):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = math.prod(leaf.shape[:-1]) or 1
        return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape) / math.sqrt(fan_in), dtype)

    return jax.tree.map(fill, shapes)


def _input(batch: int, input_shape: Sequence[int], dtype: Any, seed: int = 0) -> jax.Array:
    x = np.random.default_rng(seed).standard_normal((batch, *input_shape))
    return jnp.asarray(x, dtype)


def _tokens(batch: int, input_shape: Sequence[int], vocab_size: int, seed: int = 0) -> jax.Array:
    """A language model's input: token ids, uniform over the vocabulary."""
    x = np.random.default_rng(seed).integers(0, vocab_size, (batch, *input_shape))
    return jnp.asarray(x, jnp.int32)


def time_module(
    module: nn.Module, input_shape: Sequence[int], *, batch: int, runs: int, warmup: int,
    dtype: Any = "float32",
) -> tuple[float, float]:  # fmt: skip
    """`time_fn` of a candidate op's jitted inference, `module.apply(variables, x, False)`, on a
    batch of the candidate's `input_shape` ((H, W, C), or a text space's (seq_len, C))."""
    x = _input(batch, input_shape, dtype)
    variables = host_variables(lambda k: module.init(k, x, False), dtype)
    apply = jax.jit(lambda v, x: module.apply(v, x, False)).lower(variables, x).compile()
    return time_fn(apply, variables, x, runs=runs, warmup=warmup)


def time_network(
    space: Space, genotype: Genotype, *, num_classes: int, input_shape: Sequence[int],
    C: int | None, layers: int | None, batch: int, runs: int, warmup: int,
    dtype: Any = "float32",
) -> tuple[float, float]:  # fmt: skip
    """`time_fn` of the discrete network of `genotype` (`space.network`) at inference: on
    images of `input_shape` (H, W, C), or for a text space (`Space.modality`) on token ids of
    `input_shape` (seq_len,) over a vocabulary of `num_classes`."""
    model = space.network(genotype, num_classes, input_shape=tuple(input_shape), C=C, layers=layers)
    if space.modality == "text":
        x = _tokens(batch, input_shape, num_classes)
    else:
        x = _input(batch, input_shape, dtype)
    rngs = lambda k: {"params": k, "dropout": k}
    variables = host_variables(lambda k: model.init(rngs(k), x, train=False), dtype)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
    return time_fn(apply, variables, x, runs=runs, warmup=warmup)


def predict(space: Space, table: hardware.CostTable, genotype: Genotype) -> dict[str, float]:
    """Resource -> the table's cost of `genotype`: `hardware.expected_cost` of its one-hot
    mixing weights (fixed part, entries of its ops, and the table's correction if it has one)."""
    cost = hardware.expected_cost(space.genotype_mix(genotype), table)
    return {r: float(v) for r, v in zip(table.resources, np.asarray(cost), strict=True)}


def _refuse_without_candidates(space: Space) -> None:
    if space.candidates is None:
        raise ValueError(
            f"search space {space.name!r} does not list its candidate ops (Space.candidates is "
            "None), so it has no latency table"
        )


def measure_table(
    space: Space, input_shape: Sequence[int], *, num_classes: int, C: int, layers: int,
    batch: int = 1, runs: int = 20, warmup: int = 5, dtype: str = "float32",
    fixed_samples: int = 5, seed: int = 0, meta: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None, verbose: bool = False,
) -> hardware.CostTable:  # fmt: skip
    """The latency table (`latency_ms` per (group, position, row, op), its `spread_ms` in
    `extra`) of the supernet `space.supernet(num_classes, C=C, layers=layers)` on inputs of
    `input_shape` (H, W, C; a text space's (seq_len,) with `num_classes` its vocabulary size) at
    `batch`, measured on the running JAX backend (see the module docstring), with the fixed
    part estimated on `fixed_samples` random genotypes (drawn with `seed`; 0: fixed part 0).
    `meta` adds provenance (e.g. the dataset); `log` gets a line per alpha group and one for the
    fixed part, and with `verbose` one per timed op."""
    _refuse_without_candidates(space)
    if warmup < 1:
        raise ValueError(
            f"warmup must be >= 1 (the first call of a program is slower), got {warmup}"
        )
    say = log or (lambda line: None)
    input_shape = tuple(int(n) for n in input_shape)
    supernet = space.supernet(num_classes, C=C, layers=layers)
    candidates = space.candidates(supernet, input_shape)
    positions: dict[str, int] = {}
    for c in candidates:
        positions[c.group] = max(positions.get(c.group, 0), c.position + 1)
    shape = lambda g: (positions[g], *space.alpha_shapes[g])
    latency = {g: np.zeros((*shape(g), 1)) for g in space.alpha_shapes if g in positions}
    spread = {g: np.full(shape(g), np.nan) for g in latency}
    timed: dict[tuple, tuple[float, float]] = {}
    options = dict(batch=batch, runs=runs, warmup=warmup, dtype=dtype)
    for group in latency:
        start, before = time.perf_counter(), len(timed)
        mine = [c for c in candidates if c.group == group]
        for c in mine:
            key = (repr(c.module), tuple(c.input_shape))
            if key not in timed:
                timed[key] = time_module(c.module, c.input_shape, **options)
                if verbose:
                    shape_text = "x".join(map(str, c.input_shape))
                    say(f"  {group} position {c.position} row {c.row} {c.op} {shape_text}: "
                        f"{timed[key][0]:.4f} ms (spread {timed[key][1]:.4f})")  # fmt: skip
            k = space.op_index(c.op)
            latency[group][c.position, c.row, k, 0], spread[group][c.position, c.row, k] = timed[
                key
            ]
        say(f"{group}: {len(mine)} candidates at {positions[group]} positions, "
            f"{len(timed) - before} timed ({time.perf_counter() - start:.1f} s), sum of entries "
            f"{latency[group].sum():.3f} ms")  # fmt: skip
    table = hardware.CostTable((RESOURCE,), latency, np.zeros(1), extra={SPREAD: spread})
    residuals, genotypes = [], []
    rng = np.random.default_rng(seed)
    net = dict(num_classes=num_classes, input_shape=input_shape, C=C, layers=layers, **options)
    for _ in range(fixed_samples):
        genotype = space.random_genotype(rng)
        measured, _ = time_network(space, genotype, **net)
        residuals.append(measured - predict(space, table, genotype)[RESOURCE])
        genotypes.append(space.to_string(genotype))
    fixed = float(np.median(residuals)) if residuals else 0.0
    if residuals:
        say(f"fixed part: {fixed:.3f} ms (median of {len(residuals)} random networks' latency "
            f"minus their ops' entries: {', '.join(f'{r:.3f}' for r in residuals)})")  # fmt: skip
    info = {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "batch": batch,
        "dtype": str(jnp.dtype(dtype)),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "space": space.name,
        "C": C,
        "layers": layers,
        "runs": runs,
        "warmup": warmup,
        "statistic": "median of the runs; spread_ms: their interquartile range",
        "candidates": len(candidates),
        "timed_modules": len(timed),
        "fixed_estimate": FIXED_ESTIMATE if residuals else "none (0)",
        "fixed_residuals_ms": residuals,
        "fixed_genotypes": genotypes,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return table._replace(fixed=np.array([fixed]), meta=info | (meta or {}))


# ------------------------------------------------------------------------------------------
# Prediction against measurement.


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties get their average rank); None when undefined (fewer
    than 2 points, or a constant side)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    try:
        from scipy import stats
    except ImportError:
        rx, ry = _average_ranks(x), _average_ranks(y)
        return float(np.corrcoef(rx, ry)[0, 1])
    return float(stats.spearmanr(x, y).statistic)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # ties: the mean of their ranks
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error, as a fraction: mean |p - m| / m."""
    p, m = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    return float(np.mean(np.abs(p - m) / m))


def fit_correction(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """measured ~= scale * predicted + offset (`predicted`: the table's own, uncorrected sums),
    fitted by least squares on the relative errors, sum ((scale * p + offset) / m - 1)^2 (what
    `mape` measures, so a slow outlier weighs no more than a fast network), as a table's
    `correction` entry with its provenance (n, mape before and after, in sample). Falls back to
    a per-network offset (scale 1, minimising the same sum) when the predictions do not vary or
    the fitted scale is not positive."""
    p, m = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    if len(p) < 2:
        raise ValueError(f"fitting a correction needs at least 2 timed networks, got {len(p)}")
    scale, offset = 1.0, float(np.sum((m - p) / m**2) / np.sum(1 / m**2))
    if np.ptp(p) > 0:
        (a, b), *_ = np.linalg.lstsq(np.stack([p / m, 1 / m], axis=1), np.ones_like(m), rcond=None)
        if a > 0:
            scale, offset = float(a), float(b)
    return {
        "scale": scale,
        "offset": offset,
        "model": "measured ~ scale * (fixed + sum of entries) + offset, relative least squares",
        "n": len(p),
        "mape_before": mape(p, m),
        "mape_after": mape(scale * p + offset, m),
    }


__all__ = [
    "FIXED_ESTIMATE", "RESOURCE", "SPREAD", "fit_correction", "host_variables", "mape",
    "measure_table", "predict", "rank_correlation", "time_fn", "time_module", "time_network",
]  # fmt: skip
