"""The step loop shared by the search and the retraining: ahead-of-time compilation, late metric
fetching, non-finite checks, progress, logging and checkpointing every N steps and every epoch;
a stop on SIGINT/SIGTERM (`signals`) with the current step checkpointed, and a stage's time
summed over every process that ran it (`Clock`)."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import ml_collections
from jax.experimental.compilation_cache import compilation_cache
from jax.sharding import Mesh

from dnas import checkpoint, metrics, parallel, signals

log = logging.getLogger(__name__)

# Persistent-cache hits counted process-wide from JAX's monitoring events, so a compilation can
# report whether its executable came from the cache (a fact, unlike a compile time).
_CACHE_HITS = [0]


def _count_cache_hit(event: str, **_: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _CACHE_HITS[0] += 1


jax.monitoring.register_event_listener(_count_cache_hit)


def enable_compilation_cache(path: str) -> None:
    """Turns on JAX's persistent compilation cache in `path` (~ expanded), unless a cache
    directory is already configured (JAX_COMPILATION_CACHE_DIR or `jax.config`) or `path` is ""."""
    if not path or jax.config.jax_compilation_cache_dir:
        return
    path = os.path.expanduser(path)
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    # Cache what takes over a second to compile: the steps, not every small helper.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    # JAX decides once per process whether the cache is on, at the first compilation; make it
    # decide again (something may have compiled before this call).
    compilation_cache.reset_cache()


class Clock:
    """Seconds a stage has spent, summed over every process that ran it: `wall_s` (since the
    stage began in each process: set-up, compilation, steps, evaluations, saves), `compile_s`
    (compiling its steps) and `loop_s` (in the step loop: steps, epoch-end work, saves).

    `run` stores `totals()` in every checkpoint's metadata and `resume` continues from the
    restored ones, so a resumed run reports the time of all its processes (the work a killed
    process did after its last checkpoint is done again, and counted once). Several loops may
    share one clock (DARTS-PT's fine-tuning continues the search's): the latest checkpoint of
    any of them holds the sums up to then.
    """

    KEYS = ("wall_s", "compile_s", "loop_s")

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._restored = dict.fromkeys(self.KEYS, 0.0)
        self._here = dict.fromkeys(self.KEYS, 0.0)  # this process's, but for wall_s

    def restore(self, metadata: dict[str, Any]) -> None:
        """Continues from the sums in a checkpoint's metadata (a key it lacks, written before
        dnas kept it, keeps its value)."""
        for key in self.KEYS:
            if key in metadata:
                self._restored[key] = float(metadata[key])

    def add(self, key: str, seconds: float) -> None:
        self._here[key] += seconds

    def totals(self, running: dict[str, float] | None = None) -> dict[str, float]:
        """The sums now; `running` maps a key to the `time.monotonic()` at which a period
        still going on (the loop) began."""
        now = time.monotonic()
        here = self._here | {"wall_s": now - self._start}
        for key, since in (running or {}).items():
            here[key] += now - since
        return {key: self._restored[key] + here[key] for key in self.KEYS}

    def scalars(self, prefix: str) -> dict[str, float]:
        """The sums as the metrics a stage records at its end: `<prefix>/wall_s`,
        `<prefix>/compile_total_s`, `<prefix>/loop_s`."""
        totals = self.totals()
        return {
            f"{prefix}/wall_s": totals["wall_s"], f"{prefix}/compile_total_s": totals["compile_s"],
            f"{prefix}/loop_s": totals["loop_s"],
        }  # fmt: skip


def compile_step(
    fn: Callable, what: str, verbose: bool, state: Any, *batches: Any, mesh: Mesh | None = None,
    clock: Clock | None = None, consts: Any = None,
) -> tuple[Callable, dict[str, float]]:  # fmt: skip
    """`jax.jit(fn, donate_argnums=0)` compiled ahead of the loop, so progress and ETA start
    after it; returns the compiled step and `{"compile_s": seconds, "compile_cache_hits": n}`,
    n the executables loaded from the persistent compilation cache instead of compiled.

    With `mesh`, the step is compiled for data parallelism (`parallel`): state and metrics
    replicated, batches split along their leading axis. The compiled step then expects batches
    placed by `parallel.shard_batch` and the state by `parallel.replicate`.

    `consts`: a pytree of arrays the step reads but never changes (a distillation teacher's
    variables, `distill.Teacher`): `fn(state, consts, *batches)` is compiled with them as an
    argument (replicated, not donated, not embedded in the program as constants) and the
    returned step takes `(state, *batches)` like one without.

    A signal recorded before (`signals.deferred`) stops here rather than after a compilation;
    one that arrives during it is noticed by `run`, before the first step. The compile time is
    added to `clock`.
    """
    signals.check(f"before compiling the {what}")
    t0, hits = time.time(), _CACHE_HITS[0]
    if verbose:
        print(f"compiling the {what} (once per run) ...", file=sys.stderr, flush=True)
    leading = () if consts is None else (consts,)
    if mesh is None:
        jitted = jax.jit(fn, donate_argnums=0)
    else:
        rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)
        in_shardings = (rep, *(rep for _ in leading), *(split for _ in batches))
        jitted = jax.jit(fn, donate_argnums=0, in_shardings=in_shardings, out_shardings=rep)
    compiled = jitted.lower(state, *leading, *batches).compile()
    if consts is not None:
        compiled = functools.partial(_with_consts, compiled, consts)
    seconds = time.time() - t0
    if clock is not None:
        clock.add("compile_s", seconds)
    return compiled, {"compile_s": seconds, "compile_cache_hits": _CACHE_HITS[0] - hits}


def resume(ckpt: checkpoint.Checkpointer, state: Any, clock: Clock | None = None) -> Any:
    """The latest checkpoint restored into `state`'s structure and shardings, or `state` itself
    when there is none (a fresh run); `clock` continues from the checkpoint's time sums."""
    if ckpt.latest_step() is None:
        return state
    state, metadata = ckpt.restore(state)
    if clock is not None:
        clock.restore(metadata)
    log.info("resumed %s at step %d", ckpt.directory, int(ckpt.latest_step()))
    return state


def _with_consts(compiled: Callable, consts: Any, state: Any, *batches: Any) -> Any:
    return compiled(state, consts, *batches)


def compile_on_first(
    fn: Callable, what: str, verbose: bool, state: Any, batches: Iterator[tuple],
    mesh: Mesh | None = None, clock: Clock | None = None, consts: Any = None,
) -> tuple[Callable, dict[str, float], Iterator[tuple]]:  # fmt: skip
    """`compile_step` for the shapes of the first batch tuple of `batches`; returns the compiled
    step, its compile record and `batches` with that first tuple put back in front."""
    first = next(batches)
    compiled, record = compile_step(
        fn, what, verbose, state, *first, mesh=mesh, clock=clock, consts=consts
    )
    return compiled, record, itertools.chain([first], batches)


def run(
    config: ml_collections.ConfigDict,
    *,
    step_fn: Callable,
    state: Any,
    batches: Iterable[tuple],
    start: int,
    total_steps: int,
    steps_per_epoch: int,
    ckpt: checkpoint.Checkpointer,
    writer: metrics.MetricWriter,
    desc: str,
    postfix: Callable[[dict], dict],
    on_epoch_end: Callable[[Any, int], bool | None],
    update_state: Callable[[Any, int], Any] | None = None,
    epoch_eval: Callable[[Any], dict[str, float]] | None = None,
    clock: Clock | None = None,
) -> Any:
    """Runs `state, metrics = step_fn(state, *batch)` for steps start + 1 .. total_steps.

    Metrics of step t are read while step t + 1 runs; a non-finite one raises FloatingPointError
    naming the step and the last checkpoint. Every `config.log_every_steps` steps they go to the
    writer; at every epoch end `on_epoch_end(state, step)` runs and, then and every
    `config.checkpoint_every_steps` steps, the state is checkpointed (asynchronously). When
    `on_epoch_end` returns True the loop stops after that checkpoint (early stopping).
    `update_state(state, step)`, at every epoch end after `on_epoch_end`, returns the state the
    next epoch starts from (DARTS-PT's decisions), which is what that checkpoint holds.

    `epoch_eval(state)`, at every epoch end before `on_epoch_end`, returns the loss and accuracy
    over the whole validation split (written as `eval_val/<key>`). When no progress bar is drawn
    (`config.progress` off, or stderr not a terminal: a log file), every epoch end also prints
    one line on stderr: the epoch's mean training loss and accuracy and `epoch_eval`'s values
    (`metrics.epoch_line`).

    Every checkpoint's metadata holds `clock`'s sums (`Clock`; the loop's time is `loop_s`).
    Inside `signals.deferred()`, a SIGINT or SIGTERM is noticed before the first step (so after
    a compilation) and after every step: the current step is checkpointed unless it is on disk,
    the save waited for, and `signals.Interrupted` raised.
    """
    clock = clock or Clock()
    loop_start = time.monotonic()
    fetcher = metrics.LateFetcher()
    progress = metrics.Progress(total_steps, initial=start, desc=desc, disable=not config.progress)
    last_saved = [ckpt.latest_step()]
    epoch_lines = not config.progress or not metrics.stderr_is_terminal()
    epoch_means = metrics.Means(("train/loss", "train/accuracy"))
    epoch_start = time.time()

    def report(step: int, host: dict) -> None:
        metrics.check_finite(step, host, last_checkpoint_step=last_saved[0])
        if step % config.log_every_steps == 0 or step == total_steps:
            writer.write_scalars(step, host)
        progress.update(step, **postfix(host))
        epoch_means.add(host)

    def save(step: int, state: Any) -> None:
        metadata = {"epoch": step // steps_per_epoch}
        metadata |= clock.totals(running={"loop_s": loop_start})
        ckpt.save(step, state, metadata=metadata, wait=False)
        last_saved[0] = step

    def stop_if_interrupted(step: int, state: Any) -> None:
        signum = signals.received()
        if signum is None:
            return
        fetched = fetcher.flush()
        if fetched is not None:
            report(*fetched)
        progress.close()
        epoch, epochs = -(-step // steps_per_epoch), -(-total_steps // steps_per_epoch)
        where = f"at {desc} step {step} of {total_steps} (epoch {epoch} of {epochs})"
        if step == 0:
            where = f"before {desc} step 1 of {total_steps}"
        stopped = signals.Interrupted(
            signum, where, os.fspath(ckpt.workdir), step=step, total=total_steps, saved=True
        )
        # A second signal meanwhile abandons the save (orbax's temporary directory is never
        # taken for a checkpoint) and exits at once.
        with signals.saving(stopped.replace(saved=False)):
            if last_saved[0] != step:
                save(step, state)
            ckpt.wait_until_finished()
            writer.flush()  # TensorBoard's events too (its thread flushes every 30 s)
        raise stopped

    stop_if_interrupted(start, state)
    for step, batch in zip(range(start + 1, total_steps + 1), batches, strict=False):
        state, device_metrics = step_fn(state, *batch)
        fetched = fetcher.push(step, device_metrics)
        if fetched is not None:
            report(*fetched)
        epoch_end = step % steps_per_epoch == 0
        if epoch_end or step % config.checkpoint_every_steps == 0 or step == total_steps:
            fetched = fetcher.flush()
            if fetched is not None:
                report(*fetched)
            val = epoch_eval(state) if epoch_end and epoch_eval is not None else None
            if val is not None:
                writer.write_scalars(step, {f"eval_val/{k}": v for k, v in val.items()})
            stop = bool(on_epoch_end(state, step)) if epoch_end else False
            if epoch_end:
                train_means = epoch_means.pop()
                seconds, epoch_start = time.time() - epoch_start, time.time()
                if epoch_lines and (train_means or val is not None):
                    progress.write(metrics.epoch_line(
                        desc, step // steps_per_epoch, total_steps // steps_per_epoch, step,
                        train_means, val, seconds,
                    ))  # fmt: skip
            if epoch_end and update_state is not None:
                state = update_state(state, step)
            save(step, state)
            if stop:
                break
        stop_if_interrupted(step, state)
    progress.close()
    ckpt.wait_until_finished()
    clock.add("loop_s", time.monotonic() - loop_start)
    return state
