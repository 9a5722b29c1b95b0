"""The step loop shared by the search and the retraining: ahead-of-time compilation, late metric
fetching, non-finite checks, progress, logging and checkpointing every N steps and every epoch."""

from __future__ import annotations

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

from dnas import checkpoint, metrics, parallel

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


def compile_step(
    fn: Callable, what: str, verbose: bool, state: Any, *batches: Any, mesh: Mesh | None = None
) -> tuple[Callable, dict[str, float]]:
    """`jax.jit(fn, donate_argnums=0)` compiled ahead of the loop, so progress and ETA start
    after it; returns the compiled step and `{"compile_s": seconds, "compile_cache_hits": n}`,
    n the executables loaded from the persistent compilation cache instead of compiled.

    With `mesh`, the step is compiled for data parallelism (`parallel`): state and metrics
    replicated, batches split along their leading axis. The compiled step then expects batches
    placed by `parallel.shard_batch` and the state by `parallel.replicate`.
    """
    if verbose:
        print(f"compiling the {what} (once per run) ...", file=sys.stderr, flush=True)
    t0, hits = time.time(), _CACHE_HITS[0]
    if mesh is None:
        jitted = jax.jit(fn, donate_argnums=0)
    else:
        rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)
        in_shardings = (rep, *(split for _ in batches))
        jitted = jax.jit(fn, donate_argnums=0, in_shardings=in_shardings, out_shardings=rep)
    compiled = jitted.lower(state, *batches).compile()
    return compiled, {"compile_s": time.time() - t0, "compile_cache_hits": _CACHE_HITS[0] - hits}


def resume(ckpt: checkpoint.Checkpointer, state: Any) -> Any:
    """The latest checkpoint restored into `state`'s structure and shardings, or `state` itself
    when there is none (a fresh run)."""
    if ckpt.latest_step() is None:
        return state
    state, _ = ckpt.restore(state)
    log.info("resumed %s at step %d", ckpt.directory, int(ckpt.latest_step()))
    return state


def compile_on_first(
    fn: Callable, what: str, verbose: bool, state: Any, batches: Iterator[tuple],
    mesh: Mesh | None = None,
) -> tuple[Callable, dict[str, float], Iterator[tuple]]:  # fmt: skip
    """`compile_step` for the shapes of the first batch tuple of `batches`; returns the compiled
    step, its compile record and `batches` with that first tuple put back in front."""
    first = next(batches)
    compiled, record = compile_step(fn, what, verbose, state, *first, mesh=mesh)
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
) -> Any:
    """Runs `state, metrics = step_fn(state, *batch)` for steps start + 1 .. total_steps.

    Metrics of step t are read while step t + 1 runs; a non-finite one raises FloatingPointError
    naming the step and the last checkpoint. Every `config.log_every_steps` steps they go to the
    writer; at every epoch end `on_epoch_end(state, step)` runs and, then and every
    `config.checkpoint_every_steps` steps, the state is checkpointed (asynchronously). When
    `on_epoch_end` returns True the loop stops after that checkpoint (early stopping).
    `update_state(state, step)`, at every epoch end after `on_epoch_end`, returns the state the
    next epoch starts from (DARTS-PT's decisions), which is what that checkpoint holds.
    """
    fetcher = metrics.LateFetcher()
    progress = metrics.Progress(total_steps, initial=start, desc=desc, disable=not config.progress)
    last_saved = [ckpt.latest_step()]

    def report(step: int, host: dict) -> None:
        metrics.check_finite(step, host, last_checkpoint_step=last_saved[0])
        if step % config.log_every_steps == 0 or step == total_steps:
            writer.write_scalars(step, host)
        progress.update(step, **postfix(host))

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
            stop = bool(on_epoch_end(state, step)) if epoch_end else False
            if epoch_end and update_state is not None:
                state = update_state(state, step)
            ckpt.save(step, state, metadata={"epoch": step // steps_per_epoch}, wait=False)
            last_saved[0] = step
            if stop:
                break
    progress.close()
    ckpt.wait_until_finished()
    return state
