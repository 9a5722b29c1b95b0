"""The search loop: `run(config, workdir) -> Genotype`.

The loop feeds the search step (`search_step.py`) batches addressed by step (so the data
position is the step), writes metrics late (the host reads step t - 1 while step t runs), logs
the derived genotype and alpha statistics every epoch (`EpochMonitor`, with collapse diagnostics
and DARTS+ early stopping), checkpoints the whole state, and resumes from the workdir by default.
A selection phase that follows the search (DARTS-PT, random search or evolution with the trained
supernet) is passed in as `select`; `pipeline.search_genotype` composes them, and the staged
methods (`progressive.py`) run one `run` per stage.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import ml_collections
import numpy as np

from dnas import (
    checkpoint,
    configlib,
    data,
    diagnostics,
    distill,
    evaluate,
    loop,
    metrics,
    ops,
    parallel,
    search_step,
    signals,
    spaces,
    supernet,
    train,
)
from dnas import workdir as workdir_lib
from dnas.genotype import Genotype
from dnas.state import SearchState

if TYPE_CHECKING:  # annotations only
    from dnas.hardware import CostTable
    from dnas.spaces.base import Space

# (config, setup, searched state, workdir, mesh, metric writer, clock=loop.Clock) -> the genotype
# of a selection phase run after the search loop (DARTS-PT, selection with the supernet); the
# clock is the search's, which a checkpointing phase continues (`loop.Clock`).
Select = Callable[..., Genotype]


def config_table(config: ml_collections.ConfigDict, **options: Any):
    """The latency table (`latency.measure_table`) of `config`'s search supernet (space, dataset
    input shape and classes, search.C, search.layers) on this device, random networks drawn with
    its seed; `options` are `measure_table`'s (batch, runs, log, ...). A text space is timed on
    sequences of `text.bptt` tokens over its corpus' vocabulary. `dnas lut` and
    `hardware.lut=measure` both measure with it."""
    from dnas import latency  # the timing tools, only where a table is measured

    space = spaces.get(config.space)
    if space.modality == "text":
        from dnas import lm

        input_shape, num_classes = (config.text.bptt,), lm.load_corpus(config).vocab_size
    else:
        info = data.get_info(config.dataset)
        input_shape, num_classes = info.input_shape, info.num_classes
    return latency.measure_table(
        space, input_shape, num_classes=num_classes, C=config.search.C,
        layers=config.search.layers, seed=config.seed, meta={"dataset": config.dataset},
        **options,
    )  # fmt: skip


def measured_lut(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """`config`, its `hardware.lut=measure` replaced by the latency table of its search
    supernet measured on this device (`latency.measure_table` at `hardware.lut_batch`, 20 runs
    per op), written once as `<workdir>/lut.json` and read again when the search resumes. Other
    configs are returned as they are."""
    h = config.hardware
    if not (h.objective or h.discretise) or h.lut != configlib.MEASURE:
        return config
    path = os.path.join(workdir, workdir_lib.LUT)
    if not os.path.exists(path):
        from dnas import hardware, spaces

        say = (
            (lambda line: print(f"dnas lut: {line}", file=sys.stderr)) if config.progress else None
        )
        table = config_table(config, batch=h.lut_batch, log=say)
        if jax.process_index() == 0:
            space = spaces.get(config.space)
            hardware.save_table(path, table, space.name, space.ops)
        if jax.process_count() > 1:  # every host reads process 0's table
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("dnas lut written")
    config = ml_collections.ConfigDict(config.to_dict())
    config.hardware.lut = path
    return config


def alpha_entropy(weights: dict[str, Any]) -> dict[str, float]:
    """The mean entropy of each group's rows of mixing weights, for logging (the weights
    themselves go to `workdir.alpha_history_path` as arrays)."""
    out = {}
    for cell, w in weights.items():
        w = np.asarray(w, np.float64)
        p = w / w.sum(-1, keepdims=True)
        entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)
        out[f"alpha_entropy/{cell}"] = float(entropy.mean())
    return out


@workdir_lib.exclusive
def run(config: ml_collections.ConfigDict, workdir: str, select: Select | None = None) -> Genotype:
    """Searches, writing to `workdir`; resumes from its latest checkpoint if there is one. The
    genotype is the strategy's selection from the final alphas, or `select`'s (a selection phase
    with the trained supernet, e.g. `pt.run`). Its time, summed over every process that ran it
    (`loop.Clock`, kept in the checkpoints), is the last record's `search/wall_s`."""
    configlib.validate(config)
    clock = loop.Clock()
    check_monitor_options(config)
    benchmark = None  # the space's published results, read and checked before the workdir
    if config.benchmark.table:
        benchmark = spaces.get(config.space).ground_truth(config.benchmark.table)
    splits = teacher = None  # search.teacher: read and checked before anything is written
    if config.search.teacher and spaces.get(config.space).modality == "image":
        splits = data.load(config.dataset, data_dir=config.data_dir or None)
        teacher = train.teacher_from_config(config, splits.train, "search")
    workdir = configlib.prepare_workdir(workdir, config)
    loop.enable_compilation_cache(config.compilation_cache_dir)
    mesh = parallel.make_mesh(config.num_devices)
    parallel.check_batch_size(config.search.batch_size, mesh, "search.batch_size")
    config = measured_lut(config, workdir)
    prior = workdir_lib.recorded_autotune(workdir, "search")
    su = search_step.setup(config, splits=splits, autotune_prior=prior, teacher=teacher)
    workdir_lib.record_autotune(workdir, "search", su.autotune)
    if teacher is not None:
        distill.check_same_teacher(workdir, teacher)
    budget = None  # hardware.discretise=budget: its table; a budget nothing meets fails now
    if config.hardware.discretise == "budget":
        budget = search_step.cost_table(config, su.space, su.model, su.info.input_shape)
        uniform = {g: np.ones(shape) for g, shape in su.space.alpha_shapes.items()}
        budget_choice(config, su.space, budget, uniform | dict(su.space.mask or {}))
    s = config.search
    state = search_step.create_state(config, su)
    driver = None  # SGAS: decisions between epochs, a step compiled per shrunk supernet
    if s.sgas:
        from dnas import sgas

        say = lambda line: print(line, file=sys.stderr, flush=True)
        driver = sgas.Driver(config, workdir, print_fn=say)
        su, state = driver.start(su, state)
    state = parallel.replicate(state, mesh)
    ckpt = checkpoint.Checkpointer(workdir)
    state = loop.resume(ckpt, state, clock)
    start = int(state.step)
    if su.text is None:
        train_iter = data.batches(su.weights_source, s.batch_size, seed=config.seed,
                                  start_step=start)  # fmt: skip
        val_iter = data.batches(su.alphas_source, s.batch_size, seed=config.seed + 1,
                                start_step=start)  # fmt: skip
        batches = parallel.shard_batches(zip(train_iter, val_iter, strict=False), mesh)
    else:
        from dnas import lm

        lm.check_corpus(workdir, su.text.corpus)
        batches = parallel.shard_batches(lm.search_batches(su.text, start), mesh)
    writer = metrics.MetricWriter(workdir)
    monitor = EpochMonitor(config, su, writer, workdir, mesh, benchmark)
    # The supernet on the whole validation split (the alphas' half) at every epoch end, as the
    # DARTS reference's `infer` (`eval_val/`).
    rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    eval_step = jax.jit(
        search_step.make_eval_step(su.model, su.strategy, su.info, su.dtype),
        in_shardings=(rep, split), out_shardings=rep,
    )  # fmt: skip
    epoch_eval = lambda state: evaluate.over_source(
        eval_step, state, su.alphas_source, s.batch_size, mesh, fill="overlap"
    )
    postfix = lambda m: {"loss": f"{m['train/loss']:.3f}", "acc": f"{m['val/accuracy']:.3f}"}
    if su.text is not None:  # the supernet on the whole validation text, its state carried
        epoch_eval = lm.supernet_evaluator(su, su.text.corpus.level)
        postfix = lambda m: {"ppl": f"{m['train/perplexity']:.1f}",
                             "val_ppl": f"{m['val/perplexity']:.1f}"}  # fmt: skip
    # A finished search (resumed for its selection phase, or stopped early) compiles nothing.
    if monitor.stopped() is None and start < su.total_steps:
        consts = None if su.consts is None else parallel.replicate(su.consts, mesh)
        if driver is None:
            step_fn, compiled_record, batches = loop.compile_on_first(
                su.step_fn, "search step", config.progress, state, batches, mesh, clock, consts
            )
        else:
            driver.writer = writer
            step_fn, compiled_record, batches = driver.compile(state, batches, mesh, clock, consts)
        writer.write_scalars(start, {f"search/{k}": v for k, v in compiled_record.items()})
        state = loop.run(
            config, step_fn=step_fn, state=state, batches=batches, start=start,
            total_steps=su.total_steps, steps_per_epoch=su.steps_per_epoch, ckpt=ckpt,
            writer=writer, desc="search", postfix=postfix, on_epoch_end=monitor,
            update_state=None if driver is None else driver.update_state, epoch_eval=epoch_eval,
            clock=clock,
        )  # fmt: skip
        monitor.save_stop()  # loop.run returns once the checkpoints are written
    weights = jax.device_get(su.strategy.final_weights(state.alphas))
    genotype = su.strategy.select(su.space, weights)
    if budget is not None:
        chosen = budget_choice(config, su.space, budget, weights)
        save_budget(config, su.space, budget, weights, chosen, genotype, workdir)
        genotype = chosen
    if select is not None:
        signals.check("after the search loop, before its selection phase", workdir)
        genotype = select(config, su, state, workdir, mesh, writer, clock=clock)
    genotype.save(os.path.join(workdir, workdir_lib.GENOTYPE))
    workdir_lib.save_arrays(os.path.join(workdir, workdir_lib.ALPHAS), jax.device_get(state.alphas))
    save_cell_diagrams(genotype, workdir)
    # At the last step run (an early stop ends before total_steps); the sums of all processes.
    writer.write_scalars(int(state.step), clock.scalars("search"))
    writer.close()
    ckpt.close()
    return genotype


BUDGET = "budget.json"  # hardware.discretise=budget: what was chosen, and what the rule chose


def budget_choice(
    config: ml_collections.ConfigDict, space: Space, table: CostTable, weights: dict
) -> Genotype:
    """The most probable genotype under the mixing `weights` whose cost by `table` (the
    search's: `search_step.cost_table`) is in [floor x target, target]
    (`hardware.within_budget`); ops the space's genotypes never take (`discrete_ops`) are left
    out. ConfigError when no genotype fits."""
    from dnas import hardware

    h = config.hardware
    try:
        chosen = hardware.within_budget(
            _discrete(space, weights), table, h.resource, h.target, h.floor * h.target
        )  # fmt: skip
    except ValueError as err:
        raise configlib.ConfigError(f"hardware.discretise=budget: {err}") from None
    return space.discretise(chosen.weights)


def _discrete(space: Space, weights: dict) -> dict[str, np.ndarray]:
    """`weights` as float64, 0 at the ops the space's genotypes never take."""
    weights = {g: np.asarray(w, np.float64) for g, w in weights.items()}
    if space.discrete_ops is None:
        return weights
    keep = np.isin(np.asarray(space.ops), space.discrete_ops)
    return {g: np.where(keep, w, 0.0) for g, w in weights.items()}


def save_budget(
    config: ml_collections.ConfigDict, space: Space, table: CostTable, weights: dict,
    chosen: Genotype, argmax: Genotype, workdir: str,
) -> None:  # fmt: skip
    """Writes `<workdir>/budget.json` and says it: the genotype `budget_choice` chose and the
    space's rule's (`argmax`), each with its cost by `table` and its log-probability under the
    final mixing `weights`."""
    from dnas import hardware

    h = config.hardware
    r = table.index(h.resource)
    weights = _discrete(space, weights)

    def record(g: Genotype) -> dict:
        mix = space.genotype_mix(g)
        cost = float(hardware.expected_cost(mix, table)[r])
        log_prob = sum(float(np.sum(np.log(np.where(mix[k] > 0, weights[k], 1.0)))) for k in mix)
        return {"genotype": g.to_string(), h.resource: cost, "log_prob": log_prob}

    summary = {
        "resource": h.resource, "target": h.target, "floor": h.floor * h.target,
        "chosen": record(chosen), "argmax": record(argmax),
    }  # fmt: skip
    workdir_lib.atomic_write_text(os.path.join(workdir, BUDGET), json.dumps(summary, indent=2))
    print(
        f"budget: {h.resource} {summary['chosen'][h.resource]:.4g} (the argmax genotype's: "
        f"{summary['argmax'][h.resource]:.4g}) for [{h.floor * h.target:g}, {h.target:g}]"
    )


_DOT_FALLBACK_SAID = [False]  # the matplotlib fallback is announced once per process


def save_cell_diagrams(genotype: Genotype, workdir: str) -> None:
    """The genotype's cells as `cell_<type>.svg` in `workdir` (`viz.save_cells`: graphviz, or
    matplotlib without `dot`, which one line on stderr says once per process: a `dnas run` of
    a staged method draws cells after every stage). A figure is not worth a search: without
    the `viz` extra, or when drawing fails, a note says so and the search ends normally."""
    if jax.process_index() != 0:
        return
    try:
        from dnas import viz

        drawn = genotype.search_space.topology is not None
        if drawn and not viz.dot_available() and not _DOT_FALLBACK_SAID[0]:
            _DOT_FALLBACK_SAID[0] = True
            print(f"dnas: {viz.DOT_FALLBACK}", file=sys.stderr)
        viz.save_cells(genotype, workdir)
    except Exception as err:  # drawing must not fail a finished search
        print(f"dnas: cell diagrams not drawn ({type(err).__name__}: {err})", file=sys.stderr)


EARLY_STOP = ("", "skip", "stable")


def check_monitor_options(config: ml_collections.ConfigDict) -> None:
    early_stop = config.search.early_stop
    if early_stop not in EARLY_STOP:
        raise configlib.ConfigError(
            f"search.early_stop must be one of {EARLY_STOP}, got {early_stop!r}"
        )


SHARES = "shares"  # `alpha_history/` entries `shares/<group>`: `op_shares_fn`'s, per epoch


def op_shares_fn(su: search_step.SearchSetup):
    """(params, alphas, batch) -> alpha group -> (rows, ops) share of each op in its mixed
    edge's output under the strategy's final mixing weights (`supernet.op_shares`), on the
    batch's images preprocessed for evaluation; jit it."""

    def shares(params, alphas, batch):
        x = data.preprocess(None, batch["image"], su.info, train=False, dtype=su.dtype)
        mix = su.strategy.final_weights(alphas)
        return supernet.op_shares(su.model, {"params": params}, x, mix, train=True)

    return shares


def monitor_batch(config: ml_collections.ConfigDict, su: search_step.SearchSetup):
    """The one fixed validation batch (the alphas' half) of a search's epoch-end diagnostics:
    the Hessian eigenvalue and the op shares (`dnas explain` recomputes the last ones on it)."""
    return next(data.batches(su.alphas_source, config.search.batch_size, seed=config.seed + 2))


class EpochMonitor:
    """What runs at every epoch end of a search: the derived genotype and alpha statistics go to
    the writer (and to `alpha_history/`, with each op's share of its edge's output every
    `search.explain_every_epochs` epochs on the same fixed validation batch, for `dnas explain`),
    with the collapse diagnostics (skip connections in the normal cell; every
    `search.hessian_every_epochs` epochs the dominant eigenvalue of the validation-loss Hessian
    w.r.t. the alphas, on one fixed validation batch; with `benchmark`, the space's table of
    published results, the derived cell's), and DARTS+ early stopping decides whether
    to stop (`search.early_stop`: 'skip' when the normal cell has `early_stop_skips` skip
    connections, 'stable' when the ranking of the learnable ops' weights on every edge has not
    changed for `early_stop_patience` epochs). The diagnostic's validation batch is augmented as
    the search's validation batches are (DARTS draws both halves with the training transform).
    The rankings of earlier epochs come from the workdir's `alpha_history/`, so they survive a
    resume; a stop writes `early_stop.json`, and a resumed stopped search does not go on."""

    def __init__(
        self, config, su: search_step.SearchSetup, writer, workdir: str, mesh, benchmark=None
    ):
        s = config.search
        self.su, self.s, self.writer, self.workdir = su, s, writer, workdir
        self.stop_path = os.path.join(workdir, "early_stop.json")
        self.stop_record: dict | None = None
        self.benchmark = benchmark  # Space.ground_truth's table (benchmark.table), or None
        self.hessian = self.shares = None
        if s.hessian_every_epochs > 0 or s.explain_every_epochs > 0:
            self.val_batch = parallel.shard_batch(monitor_batch(config, su), mesh)
        if s.explain_every_epochs > 0:
            self.shares = jax.jit(op_shares_fn(su))
        if s.hessian_every_epochs > 0:
            k_loss, k_start = jax.random.split(jax.random.key(config.seed))

            def eigenvalue(params, alphas, batch, step):
                loss = lambda a: su.loss_fn(params, a, batch, k_loss, step)[0]
                return diagnostics.hessian_eigenvalue(loss, alphas, k_start, s.hessian_iters)[0]

            self.hessian = jax.jit(eigenvalue)

    def stopped(self) -> dict | None:
        """The early stop record of this workdir, if the search stopped early."""
        if not os.path.exists(self.stop_path):
            return None
        with open(self.stop_path) as f:
            return json.load(f)

    def __call__(self, state: SearchState, step: int) -> bool:
        su, s = self.su, self.s
        weights = jax.device_get(su.strategy.final_weights(state.alphas))
        genotype = su.strategy.select(su.space, weights)
        epoch = step // su.steps_per_epoch
        # A redone epoch (after a resume) overwrites its file.
        history = {g: weights[g] for g in su.space.groups}
        history |= {f"alphas/{k}": v for k, v in jax.device_get(state.alphas).items()}
        if self.shares is not None and epoch % s.explain_every_epochs == 0:
            shares = jax.device_get(self.shares(state.params, state.alphas, self.val_batch))
            history |= {f"{SHARES}/{g}": v for g, v in shares.items()}
        workdir_lib.save_arrays(workdir_lib.alpha_history_path(self.workdir, epoch), history)
        scalars = alpha_entropy(weights)
        scalars["epoch"] = epoch
        for cell, chosen in su.space.ops_used(genotype).items():
            scalars[f"parameter_free_ops/{cell}"] = sum(op in ops.PARAMETER_FREE for op in chosen)
        first = su.space.groups[0]  # DARTS+ counts the normal cell's
        skips = diagnostics.count_op(genotype, "skip_connect", first)
        scalars[f"skip_connections/{first}"] = skips
        if self.benchmark is not None:  # the derived cell's published accuracies, percent
            truth = self.benchmark.lookup(genotype)
            scalars |= {f"benchmark/{column}": value for column, value in truth.items()}
        if self.hessian is not None and epoch % s.hessian_every_epochs == 0:
            value = self.hessian(state.params, state.alphas, self.val_batch, state.step)
            scalars["hessian/eigenvalue"] = float(value)
        reason = None
        if s.early_stop == "skip" and skips >= s.early_stop_skips:
            reason = f"the {first} cell has {skips} skip connections (>= {s.early_stop_skips})"
        elif s.early_stop == "stable":
            window = [self.ranking(e) for e in range(epoch - s.early_stop_patience, epoch + 1)]
            if all(r is not None and r == window[-1] for r in window):
                reason = f"the op ranking has not changed for {s.early_stop_patience} epochs"
        self.writer.write_scalars(step, scalars)
        self.writer.write_text(step, "genotype", genotype.to_string())
        if reason is None:
            return False
        # Written by `save_stop` once this step's checkpoint is on disk.
        self.stop_record = {"step": step, "epoch": epoch, "reason": reason}
        self.writer.write_text(step, "early_stop", reason)
        return True

    def ranking(self, epoch: int) -> list | None:
        """DARTS+: the ranking of the learnable (parametric) ops' weights on every edge at the end
        of `epoch`, from its `alpha_history/` file (None if it has none)."""
        path = workdir_lib.alpha_history_path(self.workdir, epoch)
        if not os.path.exists(path):
            return None
        weights = workdir_lib.load_arrays(path)
        space = self.su.space
        learnable = [
            k for k, op in enumerate(space.ops) if op != "none" and op not in ops.PARAMETER_FREE
        ]
        stacked = np.stack([weights[c] for c in space.groups])[..., learnable]
        return np.argsort(-stacked, -1).tolist()

    def save_stop(self) -> None:
        if self.stop_record is not None:
            text = json.dumps(self.stop_record) + "\n"
            workdir_lib.atomic_write_text(self.stop_path, text)


__all__ = ["EARLY_STOP", "EpochMonitor", "alpha_entropy", "run", "save_cell_diagrams"]
