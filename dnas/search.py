"""The search loop: `run(config, workdir) -> Genotype`.

One jitted step (`make_step`) updates the alphas on a validation batch, then the weights on a
training batch with the new alphas (DARTS Algorithm 1). The loop feeds it batches addressed by
step (so the data position is the step), writes metrics late (the host reads step t - 1 while
step t runs), logs the derived genotype and alpha statistics every epoch, checkpoints the whole
state, and resumes from the workdir by default.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dnas import (
    checkpoint,
    configlib,
    data,
    diagnostics,
    discretise,
    evaluate,
    loop,
    metrics,
    optim,
    parallel,
    selection,
    spaces,
    strategies,
    supernet,
)
from dnas.genotype import Genotype
from dnas.state import SearchState, init_variables
from dnas.types import Batch, Metrics


@dataclasses.dataclass(frozen=True)
class Augmentation:
    crop_padding: int | None = None  # None: the dataset's default
    flip: bool | None = None
    cutout_length: int | None = None

    @classmethod
    def from_config(cls, s: ml_collections.ConfigDict) -> Augmentation:
        """From `config.search` or `config.train` (-1: the dataset's default)."""
        return cls(
            crop_padding=None if s.crop_padding < 0 else s.crop_padding,
            flip=s.flip,
            cutout_length=None if s.cutout_length < 0 else s.cutout_length,
        )


def loss_keys(key):
    """(augmentation key, relaxation key) of a loss evaluation with `key`."""
    return jax.random.split(key)


def make_loss_fn(model, strategy: strategies.Strategy, info: data.DatasetInfo, aug: Augmentation):
    """loss_fn(params, alphas, batch, key, step, mix=None) -> (loss, metrics) of the supernet;
    `mix` replaces the strategy's mixing weights of `alphas` (SDARTS' perturbed weight step)."""

    def loss_fn(params, alphas, batch: Batch, key, step, mix=None):
        k_aug, k_mix = loss_keys(key)
        x = data.preprocess(
            k_aug, batch["image"], info, train=True, crop_padding=aug.crop_padding,
            flip=aug.flip, cutout_length=aug.cutout_length,
        )  # fmt: skip
        if mix is None:
            mix = strategy.mix_weights(alphas, k_mix, step)
        if strategy.skip_dropout is None:
            logits = model.apply({"params": params}, x, mix, train=True)
        else:  # P-DARTS: dropout on the skip connections, its own key
            logits = model.apply(
                {"params": params}, x, mix, train=True, skip_dropout=strategy.skip_dropout(step),
                rngs={"dropout": jax.random.fold_in(key, 2)},
            )  # fmt: skip
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, {"loss": loss, "accuracy": evaluate.accuracy(logits, batch["label"])}

    return loss_fn


def make_step(
    loss_fn: Callable,
    strategy: strategies.Strategy,
    weight_tx: optax.GradientTransformation,
    alpha_tx: optax.GradientTransformation,
    learning_rate: optax.Schedule,
    alpha_start_step: int = 0,
) -> Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]:
    """The pure search step: alpha update on `val_batch`, then weight update on `train_batch`.
    Before `alpha_start_step` (a weights-only warm-up, PC-DARTS / P-DARTS) and for strategies
    that do not learn alphas, the alphas stay and the validation loss is only evaluated."""

    def alpha_half(state: SearchState, train_batch: Batch, val_batch: Batch, key):
        g_alpha, val_metrics = strategy.alpha_grad(
            loss_fn, state.params, state.alphas, state.weight_opt_state, train_batch, val_batch,
            key, state.step,
        )  # fmt: skip
        reg, g_reg = jax.value_and_grad(strategy.regularizer)(state.alphas, state.step)
        g_alpha = jax.tree.map(jnp.add, g_alpha, g_reg)
        updates, alpha_opt_state = alpha_tx.update(g_alpha, state.alpha_opt_state, state.alphas)
        alphas = optax.apply_updates(state.alphas, updates)
        return alphas, alpha_opt_state, g_alpha, val_metrics, reg

    def frozen_half(state: SearchState, train_batch: Batch, val_batch: Batch, key):
        del train_batch
        _, val_metrics = loss_fn(state.params, state.alphas, val_batch, key, state.step)
        reg = strategy.regularizer(state.alphas, state.step)
        g_alpha = jax.tree.map(jnp.zeros_like, state.alphas)
        return state.alphas, state.alpha_opt_state, g_alpha, val_metrics, reg

    def step_fn(state: SearchState, train_batch: Batch, val_batch: Batch):
        key = jax.random.fold_in(state.rng, state.step)
        k_alpha, k_weight = jax.random.split(key)
        args = (state, train_batch, val_batch, k_alpha)
        if not strategy.update_alphas:
            half = frozen_half(*args)
        elif alpha_start_step > 0:
            half = jax.lax.cond(state.step >= alpha_start_step, alpha_half, frozen_half, *args)
        else:
            half = alpha_half(*args)
        alphas, alpha_opt_state, g_alpha, val_metrics, reg = half

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        mix = None
        if strategy.weight_mix is not None:
            k_weight, k_perturb = jax.random.split(k_weight)
            _, k_mix = loss_keys(k_weight)  # the relaxation's key in loss_fn(..., k_weight)
            loss_of_mix = lambda m: loss_fn(
                state.params, alphas, train_batch, k_weight, state.step, mix=m
            )[0]
            mix = strategy.weight_mix(
                loss_of_mix, strategy.mix_weights(alphas, k_mix, state.step), k_perturb,
                state.step, alphas=alphas,
            )  # fmt: skip
        extra = () if mix is None else (mix,)
        (_, train_metrics), g_w = grad_fn(
            state.params, alphas, train_batch, k_weight, state.step, *extra
        )
        updates, weight_opt_state = weight_tx.update(g_w, state.weight_opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        new_state = state.replace(
            step=state.step + 1,
            params=params,
            alphas=alphas,
            weight_opt_state=weight_opt_state,
            alpha_opt_state=alpha_opt_state,
        )
        out = {f"train/{k}": v for k, v in train_metrics.items()}
        out |= {f"val/{k}": v for k, v in val_metrics.items()}
        out |= {
            "lr": learning_rate(state.step),
            "alpha_reg": reg,
            "grad_norm/weights": optax.tree.norm(g_w),
            "grad_norm/alphas": optax.tree.norm(g_alpha),
        }
        return new_state, out

    return step_fn


def alpha_report(space: spaces.SearchSpace, weights: dict[str, Any]) -> dict[str, float]:
    """Per-edge mixing weights and their mean entropy, for logging."""
    out = {}
    for cell, w in weights.items():
        w = np.asarray(w, np.float64)
        for e, (src, dst) in enumerate(space.edges):
            for k, op in enumerate(space.primitives):
                out[f"alpha/{cell}/{src}_{dst}/{op}"] = float(w[e, k])
        p = w / w.sum(-1, keepdims=True)
        entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)
        out[f"alpha_entropy/{cell}"] = float(entropy.mean())
    return out


@dataclasses.dataclass
class SearchSetup:
    """Everything the loop needs, built from a config; also what notebooks and tests use."""

    space: spaces.SearchSpace
    info: data.DatasetInfo
    model: Any
    strategy: strategies.Strategy
    weight_tx: optax.GradientTransformation
    alpha_tx: optax.GradientTransformation
    learning_rate: optax.Schedule
    loss_fn: Callable
    step_fn: Callable
    weights_source: Any
    alphas_source: Any
    steps_per_epoch: int
    total_steps: int


def setup(
    config: ml_collections.ConfigDict,
    *,
    info: data.DatasetInfo | None = None,
    splits: data.Splits | None = None,
) -> SearchSetup:
    """Builds the search from `config`; `info` and `splits` replace the config's dataset (e.g. an
    in-memory dataset of your own)."""
    s = config.search
    for key, valid in (("early_stop", EARLY_STOP), ("selection", SELECTIONS)):
        if s[key] not in valid:
            raise configlib.ConfigError(f"search.{key} must be one of {valid}, got {s[key]!r}")
    space = spaces.get(config.space)
    info = info or data.get_info(config.dataset)
    splits = splits or data.load(config.dataset, data_dir=config.data_dir or None)
    weights_source, alphas_source = data.search_split(splits.train, s.train_portion)
    steps_per_epoch = data.steps_per_epoch(weights_source, s.batch_size)
    data.steps_per_epoch(alphas_source, s.batch_size)  # fail early: too few validation examples
    kw = {"N" if space.name == "nb201" else "layers": s.layers}
    if space.name == "darts_cnn":
        kw["sep_impl"] = s.sep_impl
    model = supernet.build(
        space.name, info.num_classes, C=s.C, remat=s.remat, partial_channels=s.partial_channels,
        single_op=s.single_op, **kw,
    )  # fmt: skip
    parts = make_step_parts(config, model, info, steps_per_epoch)
    _check_method_options(config, parts[0])
    return SearchSetup(
        space, info, model, *parts, weights_source, alphas_source, steps_per_epoch,
        s.epochs * steps_per_epoch,
    )  # fmt: skip


def _check_method_options(config: ml_collections.ConfigDict, strategy: strategies.Strategy) -> None:
    """Option combinations that would run but mean nothing fail before the search starts."""
    s = config.search
    if s.single_op and not strategy.one_hot:
        raise configlib.ConfigError(
            f"search.single_op computes only each edge's largest-weight op, which equals the "
            f"mixture only for one-hot weights (gdas, random_ws); strategy {config.strategy!r} "
            "mixes softly: set --config.search.single_op=false"
        )
    if not strategy.update_alphas and s.selection not in ("random", "evolution"):
        raise configlib.ConfigError(
            f"strategy {config.strategy!r} learns no alphas, so its genotype must come from the "
            "trained supernet: set --config.search.selection=random (or evolution)"
        )
    if s.selection_rerank and s.selection not in ("random", "evolution"):
        raise configlib.ConfigError(
            "search.selection_rerank re-scores the best architectures of selection=random or "
            f"evolution; with selection={s.selection!r} set --config.search.selection_rerank=0"
        )
    if s.selection == "evolution" and not 1 <= s.evolution_sample_size <= s.evolution_population:
        raise configlib.ConfigError(
            f"search.evolution_sample_size ({s.evolution_sample_size}) must be between 1 and "
            f"search.evolution_population ({s.evolution_population})"
        )


# The search.* scalars used only inside the step: `make_step_parts` takes them as arguments, so
# they may be traced arrays (`sweep` vmaps the search over one of them).
HPARAMS = (
    "lr", "lr_min", "momentum", "weight_decay", "grad_clip", "alpha_lr", "alpha_b1", "alpha_b2",
    "alpha_weight_decay",
)  # fmt: skip


def make_optimizers(
    hp: dict, epochs: int, steps_per_epoch: int, *, schedule_epochs: int = 0, offset_epochs: int = 0
) -> tuple:
    """(learning_rate, weight_tx, alpha_tx) from the `HPARAMS` values in `hp`: SGD on the
    weights with a cosine learning rate over `epochs`, Adam on the alphas. A search that goes on
    from earlier stages (DrNAS' progressive scheme) follows one cosine of `schedule_epochs`
    from epoch `offset_epochs`."""
    cosine = optim.cosine_schedule(
        hp["lr"], hp["lr_min"], schedule_epochs or epochs, steps_per_epoch
    )
    offset = offset_epochs * steps_per_epoch
    learning_rate = (lambda step: cosine(step + offset)) if offset else cosine
    weight_tx = optim.sgd(
        learning_rate, momentum=hp["momentum"], weight_decay=hp["weight_decay"],
        grad_clip=hp["grad_clip"],
    )  # fmt: skip
    alpha_tx = optim.adam(
        hp["alpha_lr"], b1=hp["alpha_b1"], b2=hp["alpha_b2"],
        weight_decay=hp["alpha_weight_decay"],
    )  # fmt: skip
    return learning_rate, weight_tx, alpha_tx


def make_step_parts(
    config: ml_collections.ConfigDict,
    model,
    info: data.DatasetInfo,
    steps_per_epoch: int,
    **hparams,
) -> tuple:
    """(strategy, weight_tx, alpha_tx, learning_rate, loss_fn, step_fn) of the search in
    `config`; `hparams` (names in `HPARAMS`) replace the config's values and may be traced."""
    s = config.search
    unknown = set(hparams) - set(HPARAMS)
    if unknown:
        raise KeyError(f"not a step hyper-parameter: {sorted(unknown)}; valid: {HPARAMS}")
    hp = {k: hparams.get(k, s[k]) for k in HPARAMS}
    learning_rate, weight_tx, alpha_tx = make_optimizers(
        hp, s.epochs, steps_per_epoch, schedule_epochs=s.lr_schedule_epochs,
        offset_epochs=s.lr_offset_epochs,
    )  # fmt: skip
    ctx = strategies.Context(
        space=spaces.get(config.space), order=config.order, weight_tx=weight_tx,
        learning_rate=learning_rate, steps_per_epoch=steps_per_epoch, epochs=s.epochs,
        edge_costs=functools.partial(supernet.edge_costs, model, info.input_shape),
    )  # fmt: skip
    try:
        strategy = strategies.build(config.strategy, ctx, config.strategy_args.to_dict())
    except (KeyError, ValueError) as err:
        raise configlib.ConfigError(str(err.args[0])) from None
    loss_fn = make_loss_fn(model, strategy, info, Augmentation.from_config(s))
    step_fn = make_step(
        loss_fn, strategy, weight_tx, alpha_tx, learning_rate,
        alpha_start_step=s.alpha_warmup_epochs * steps_per_epoch,
    )  # fmt: skip
    return strategy, weight_tx, alpha_tx, learning_rate, loss_fn, step_fn


def create_state(config: ml_collections.ConfigDict, su: SearchSetup) -> SearchState:
    root = jax.random.key(config.seed)
    k_params, k_alphas, k_steps = (jax.random.fold_in(root, i) for i in range(3))
    init_alphas = su.strategy.init_alphas or type(su.space).init_alphas
    alphas = init_alphas(su.space, k_alphas, config.search.alpha_init_scale)
    x = jnp.zeros((1, *su.info.input_shape), jnp.float32)
    params = init_variables(su.model, k_params, x, su.strategy.final_weights(alphas))["params"]
    return SearchState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        alphas=alphas,
        weight_opt_state=su.weight_tx.init(params),
        alpha_opt_state=su.alpha_tx.init(alphas),
        rng=k_steps,
    )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: tree}


_NEUTRAL = (None, False, 0, 0.0, "", [], {})


def config_changes(previous: dict, current: dict) -> list[str]:
    """The fields (dotted keys) in which `current` differs from a workdir's `previous` config.
    A field the previous config lacks (added to dnas since) counts as unchanged when its value is
    the default config's, or neutral (0, False, "", empty) where the default has no such field."""
    defaults = _flatten(json.loads(json.dumps(configlib.default_config().to_dict())))
    old, new = _flatten(previous), _flatten(json.loads(json.dumps(current)))
    changed = []
    for key in sorted(set(old) | set(new)):
        if key in old and key in new:
            if old[key] != new[key]:
                changed.append(key)
        elif key in new:
            if new[key] != defaults.get(key, new[key]) or (
                key not in defaults and new[key] not in _NEUTRAL
            ):
                changed.append(key)
        else:
            changed.append(key)
    return changed


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> str:
    """Creates `workdir` and writes config.json; refuses to resume under a different config
    (fields dnas added since the workdir was written are not a difference at their default)."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    if os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints")):
        with open(path) as f:
            previous = json.load(f)
        changed = config_changes(previous, config.to_dict())
        if changed:
            shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
            raise configlib.ConfigError(
                f"{workdir} holds a run whose config.json differs in {shown}; resuming it with "
                "this config would mix two experiments. Use a new --workdir (or the workdir's "
                "config.json as --config values to resume it)."
            )
    checkpoint.atomic_write_text(path, text)
    return workdir


def run(config: ml_collections.ConfigDict, workdir: str) -> Genotype:
    """Searches, writing to `workdir`; resumes from its latest checkpoint if there is one.
    P-DARTS and progressive DrNAS without an op mask run their stages (`dnas.progressive`)."""
    a = config.strategy_args
    if config.strategy == "pdarts" and not a.get("ops_mask"):
        from dnas import progressive  # progressive imports this module

        return progressive.run_pdarts(config, workdir)
    if config.strategy == "drnas" and a.get("progressive") and not a.get("ops_mask"):
        from dnas import progressive

        return progressive.run_drnas(config, workdir)
    workdir = prepare_workdir(workdir, config)
    loop.enable_compilation_cache(config.compilation_cache_dir)
    mesh = parallel.make_mesh(config.num_devices)
    parallel.check_batch_size(config.search.batch_size, mesh, "search.batch_size")
    su = setup(config)
    s = config.search
    state = parallel.replicate(create_state(config, su), mesh)
    ckpt = checkpoint.Checkpointer(workdir)
    state = loop.resume(ckpt, state)
    start = int(state.step)
    train_iter = data.batches(su.weights_source, s.batch_size, seed=config.seed, start_step=start)
    val_iter = data.batches(su.alphas_source, s.batch_size, seed=config.seed + 1, start_step=start)
    batches = parallel.shard_batches(zip(train_iter, val_iter, strict=False), mesh)
    step_fn, compile_s, batches = loop.compile_on_first(
        su.step_fn, "search step", config.progress, state, batches, mesh
    )
    writer = metrics.MetricWriter(workdir)
    writer.write_scalars(start, {"search/compile_s": compile_s})
    monitor = EpochMonitor(config, su, writer, workdir, mesh)
    t_start = time.time()
    if monitor.stopped() is None:
        state = loop.run(
            config, step_fn=step_fn, state=state, batches=batches, start=start,
            total_steps=su.total_steps, steps_per_epoch=su.steps_per_epoch, ckpt=ckpt,
            writer=writer, desc="search",
            postfix=lambda m: {"loss": f"{m['train/loss']:.3f}",
                               "acc": f"{m['val/accuracy']:.3f}"},
            on_epoch_end=monitor,
        )  # fmt: skip
        monitor.save_stop()  # loop.run returns once the checkpoints are written
    weights = jax.device_get(su.strategy.final_weights(state.alphas))
    genotype = su.strategy.select(su.space, weights)
    if s.selection == "pt":
        from dnas import pt  # pt imports this module

        genotype = pt.run(config, su, state, workdir, mesh, writer)
    elif s.selection:
        genotype = select_with_supernet(config, su, state, workdir, mesh, writer)
    genotype.save(os.path.join(workdir, "genotype.json"))
    save_alphas(os.path.join(workdir, "alphas.npz"), jax.device_get(state.alphas))
    save_cell_diagrams(genotype, workdir)
    # At the last step run (an early stop ends before total_steps).
    writer.write_scalars(int(state.step), {"search/wall_s": time.time() - t_start})
    writer.close()
    ckpt.close()
    return genotype


def save_cell_diagrams(genotype: Genotype, workdir: str) -> None:
    """The genotype's cells as `cell_<type>.svg` in `workdir` (`viz.save_cells`: graphviz, or
    matplotlib without `dot`). A figure is not worth a search: without the `viz` extra, or when
    drawing fails, a note says so and the search ends normally."""
    if jax.process_index() != 0:
        return
    try:
        from dnas import viz

        viz.save_cells(genotype, workdir)
    except Exception as err:  # drawing must not fail a finished search
        print(f"dnas: cell diagrams not drawn ({type(err).__name__}: {err})", file=sys.stderr)


EARLY_STOP = ("", "skip", "stable")


class EpochMonitor:
    """What runs at every epoch end of a search: the derived genotype and alpha statistics go to
    the writer, with the collapse diagnostics (skip connections in the normal cell; every
    `search.hessian_every_epochs` epochs the dominant eigenvalue of the validation-loss Hessian
    w.r.t. the alphas, on one fixed validation batch), and DARTS+ early stopping decides whether
    to stop (`search.early_stop`: 'skip' when the normal cell has `early_stop_skips` skip
    connections, 'stable' when the ranking of the learnable ops' weights on every edge has not
    changed for `early_stop_patience` epochs). The diagnostic's validation batch is augmented as
    the search's validation batches are (DARTS draws both halves with the training transform).
    The ranking history lives in the workdir, so it survives a resume; a stop writes
    `early_stop.json`, and a resumed stopped search does not go on."""

    def __init__(self, config, su: SearchSetup, writer, workdir: str, mesh):
        s = config.search
        self.su, self.s, self.writer = su, s, writer
        self.history_path = os.path.join(workdir, "epoch_rankings.json")
        self.stop_path = os.path.join(workdir, "early_stop.json")
        self.history: dict[str, list] = {}  # epoch -> op ranking
        self.stop_record: dict | None = None
        if s.early_stop == "stable" and os.path.exists(self.history_path):
            with open(self.history_path) as f:
                self.history = json.load(f)
        self.hessian = None
        if s.hessian_every_epochs > 0:
            batch = next(data.batches(su.alphas_source, s.batch_size, seed=config.seed + 2))
            self.val_batch = parallel.shard_batch(batch, mesh)
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
        scalars = alpha_report(su.space, weights)
        scalars["epoch"] = epoch
        for cell in su.space.cell_types:
            scalars[f"parameter_free_ops/{cell}"] = discretise.count_parameter_free(genotype, cell)
        skips = diagnostics.count_op(genotype, "skip_connect", "normal")
        scalars["skip_connections/normal"] = skips
        if self.hessian is not None and epoch % s.hessian_every_epochs == 0:
            value = self.hessian(state.params, state.alphas, self.val_batch, state.step)
            scalars["hessian/eigenvalue"] = float(value)
        reason = None
        if s.early_stop == "skip" and skips >= s.early_stop_skips:
            reason = f"the normal cell has {skips} skip connections (>= {s.early_stop_skips})"
        elif s.early_stop == "stable":
            # DARTS+: the ranking of the learnable (parametric) ops' weights on every edge.
            learnable = [
                k for k, op in enumerate(su.space.primitives)
                if op != "none" and op not in discretise.PARAMETER_FREE
            ]  # fmt: skip
            stacked = np.stack([weights[c] for c in su.space.cell_types])[..., learnable]
            ranking = np.argsort(-stacked, -1)
            self.history[str(epoch)] = ranking.tolist()  # a redone epoch (resume) overwrites
            checkpoint.atomic_write_text(self.history_path, json.dumps(self.history))
            window = [self.history.get(str(e)) for e in range(epoch - s.early_stop_patience,
                                                             epoch + 1)]  # fmt: skip
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

    def save_stop(self) -> None:
        if self.stop_record is not None:
            text = json.dumps(self.stop_record) + "\n"
            checkpoint.atomic_write_text(self.stop_path, text)


SELECTIONS = ("", "random", "evolution", "pt")


def select_with_supernet(config, su: SearchSetup, state: SearchState, workdir: str, mesh,
                         writer) -> Genotype:  # fmt: skip
    """`search.selection`: the genotype chosen by the trained supernet's validation accuracy,
    'random' (random search with weight sharing, `selection_archs` samples) or 'evolution'
    (regularised evolution, population `evolution_population`, tournament
    `evolution_sample_size`, `selection_archs` architectures evaluated in all). Every evaluated
    genotype and its accuracy go to `selection.jsonl`. `selection_rerank` > 0 re-scores that
    many of the best on the whole validation split and keeps the best of those
    (`selection_rerank.jsonl`)."""
    s = config.search
    acc_fn = selection.make_accuracy_fn(su.model, su.info)

    def scorer(seed_offset: int, num_batches: int):
        """Mean accuracy of a genotype on `num_batches` validation batches of that seed."""
        it = data.batches(su.alphas_source, s.batch_size, seed=config.seed + seed_offset)
        val = [parallel.shard_batch(next(it), mesh) for _ in range(num_batches)]
        return lambda g: selection.score(acc_fn, state.params, su.space, g, val)

    def write(name: str, scored) -> float:
        """(genotype, accuracy) pairs to `workdir/name` as JSON lines; the best accuracy."""
        lines = [json.dumps({"genotype": g.to_string(), "val_accuracy": a}) for g, a in scored]
        checkpoint.atomic_write_text(os.path.join(workdir, name), "\n".join(lines) + "\n")
        return max(a for _, a in scored)

    score = scorer(3, s.selection_batches)
    if s.selection == "random":
        best, history = selection.random_search(score, su.space, s.selection_archs, config.seed)
    else:
        population = s.evolution_population
        best, history = selection.evolution(
            score, su.space, population=population, sample_size=s.evolution_sample_size,
            cycles=max(s.selection_archs - population, 0), seed=config.seed,
        )  # fmt: skip
    best_accuracy = write("selection.jsonl", history)
    writer.write_scalars(int(state.step), {"selection/best_val_accuracy": best_accuracy})
    if s.selection_rerank > 0:  # the top ones again, on the whole validation split
        whole = scorer(4, data.steps_per_epoch(su.alphas_source, s.batch_size))
        best, rescored = selection.rerank(whole, history, s.selection_rerank)
        best_full = write("selection_rerank.jsonl", rescored)
        writer.write_scalars(int(state.step), {"selection/best_rerank_accuracy": best_full})
    return best


def save_alphas(path: str, alphas: dict) -> None:
    """Writes the alphas (one array per cell type) to an .npz file, atomically."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in alphas.items()})
    checkpoint.atomic_write_bytes(path, buffer.getvalue())


__all__ = [
    "HPARAMS",
    "SearchSetup",
    "create_state",
    "make_loss_fn",
    "make_step",
    "make_step_parts",
    "run",
    "save_alphas",
    "setup",
]
