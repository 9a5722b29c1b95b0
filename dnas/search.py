"""The search loop: `run(config, workdir) -> Genotype`.

One jitted step (`make_step`) updates the alphas on a validation batch, then the weights on a
training batch with the new alphas (DARTS Algorithm 1). The loop feeds it batches addressed by
step (so the data position is the step), writes metrics late (the host reads step t - 1 while
step t runs), logs the derived genotype and alpha statistics every epoch, checkpoints the whole
state, and resumes from the workdir by default.
"""

from __future__ import annotations

import dataclasses
import json
import os
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
    discretise,
    evaluate,
    loop,
    metrics,
    optim,
    parallel,
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


def make_loss_fn(model, strategy: strategies.Strategy, info: data.DatasetInfo, aug: Augmentation):
    """loss_fn(params, alphas, batch, key, step) -> (loss, metrics) of the supernet."""

    def loss_fn(params, alphas, batch: Batch, key, step):
        k_aug, k_mix = jax.random.split(key)
        x = data.preprocess(
            k_aug, batch["image"], info, train=True, crop_padding=aug.crop_padding,
            flip=aug.flip, cutout_length=aug.cutout_length,
        )  # fmt: skip
        mix = strategy.mix_weights(alphas, k_mix, step)
        logits = model.apply({"params": params}, x, mix, train=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, {"loss": loss, "accuracy": evaluate.accuracy(logits, batch["label"])}

    return loss_fn


def make_step(
    loss_fn: Callable,
    strategy: strategies.Strategy,
    weight_tx: optax.GradientTransformation,
    alpha_tx: optax.GradientTransformation,
    learning_rate: optax.Schedule,
) -> Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]:
    """The pure search step: alpha update on `val_batch`, then weight update on `train_batch`."""

    def step_fn(state: SearchState, train_batch: Batch, val_batch: Batch):
        key = jax.random.fold_in(state.rng, state.step)
        k_alpha, k_weight = jax.random.split(key)
        g_alpha, val_metrics = strategy.alpha_grad(
            loss_fn, state.params, state.alphas, state.weight_opt_state, train_batch, val_batch,
            k_alpha, state.step,
        )  # fmt: skip
        reg, g_reg = jax.value_and_grad(strategy.regularizer)(state.alphas, state.step)
        g_alpha = jax.tree.map(jnp.add, g_alpha, g_reg)
        updates, alpha_opt_state = alpha_tx.update(g_alpha, state.alpha_opt_state, state.alphas)
        alphas = optax.apply_updates(state.alphas, updates)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, train_metrics), g_w = grad_fn(state.params, alphas, train_batch, k_weight, state.step)
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
    space = spaces.get(config.space)
    info = info or data.get_info(config.dataset)
    splits = splits or data.load(config.dataset, data_dir=config.data_dir or None)
    weights_source, alphas_source = data.search_split(splits.train, s.train_portion)
    steps_per_epoch = data.steps_per_epoch(weights_source, s.batch_size)
    data.steps_per_epoch(alphas_source, s.batch_size)  # fail early: too few validation examples
    kw = {"N" if space.name == "nb201" else "layers": s.layers}
    if space.name == "darts_cnn":
        kw["sep_impl"] = s.sep_impl
    model = supernet.build(space.name, info.num_classes, C=s.C, remat=s.remat, **kw)
    parts = make_step_parts(config, model, info, steps_per_epoch)
    return SearchSetup(
        space, info, model, *parts, weights_source, alphas_source, steps_per_epoch,
        s.epochs * steps_per_epoch,
    )  # fmt: skip


# The search.* scalars used only inside the step: `make_step_parts` takes them as arguments, so
# they may be traced arrays (`sweep` vmaps the search over one of them).
HPARAMS = (
    "lr", "lr_min", "momentum", "weight_decay", "grad_clip", "alpha_lr", "alpha_b1", "alpha_b2",
    "alpha_weight_decay",
)  # fmt: skip


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
    learning_rate = optim.cosine_schedule(hp["lr"], hp["lr_min"], s.epochs, steps_per_epoch)
    weight_tx = optim.sgd(
        learning_rate, momentum=hp["momentum"], weight_decay=hp["weight_decay"],
        grad_clip=hp["grad_clip"],
    )  # fmt: skip
    alpha_tx = optim.adam(
        hp["alpha_lr"], b1=hp["alpha_b1"], b2=hp["alpha_b2"],
        weight_decay=hp["alpha_weight_decay"],
    )  # fmt: skip
    strategy = strategies.get(config.strategy)(
        order=config.order, weight_tx=weight_tx, learning_rate=learning_rate
    )
    aug = Augmentation(
        crop_padding=None if s.crop_padding < 0 else s.crop_padding,
        flip=s.flip,
        cutout_length=None if s.cutout_length < 0 else s.cutout_length,
    )
    loss_fn = make_loss_fn(model, strategy, info, aug)
    step_fn = make_step(loss_fn, strategy, weight_tx, alpha_tx, learning_rate)
    return strategy, weight_tx, alpha_tx, learning_rate, loss_fn, step_fn


def create_state(config: ml_collections.ConfigDict, su: SearchSetup) -> SearchState:
    root = jax.random.key(config.seed)
    k_params, k_alphas, k_steps = (jax.random.fold_in(root, i) for i in range(3))
    alphas = su.space.init_alphas(k_alphas, config.search.alpha_init_scale)
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


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> str:
    """Creates `workdir` and writes config.json; refuses to resume under a different config."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    if os.path.exists(path):
        with open(path) as f:
            previous = f.read()
        if previous != text and os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise configlib.ConfigError(
                f"{workdir} holds a run with a different config.json; resuming it with this "
                "config would mix two experiments. Use a new --workdir, or delete the old one."
            )
    checkpoint.atomic_write_text(path, text)
    return workdir


def run(config: ml_collections.ConfigDict, workdir: str) -> Genotype:
    """Searches, writing to `workdir`; resumes from its latest checkpoint if there is one."""
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
    t_start = time.time()
    state = loop.run(
        config, step_fn=step_fn, state=state, batches=batches, start=start,
        total_steps=su.total_steps, steps_per_epoch=su.steps_per_epoch, ckpt=ckpt, writer=writer,
        desc="search",
        postfix=lambda m: {"loss": f"{m['train/loss']:.3f}", "acc": f"{m['val/accuracy']:.3f}"},
        on_epoch_end=lambda state, step: _log_epoch(writer, su, state, step),
    )  # fmt: skip
    weights = jax.device_get(su.strategy.final_weights(state.alphas))
    genotype = discretise.discretise(su.space, weights)
    genotype.save(os.path.join(workdir, "genotype.json"))
    save_alphas(os.path.join(workdir, "alphas.npz"), jax.device_get(state.alphas))
    writer.write_scalars(su.total_steps, {"search/wall_s": time.time() - t_start})
    writer.close()
    ckpt.close()
    return genotype


def _log_epoch(writer, su: SearchSetup, state: SearchState, step: int) -> None:
    weights = jax.device_get(su.strategy.final_weights(state.alphas))
    genotype = discretise.discretise(su.space, weights)
    scalars = alpha_report(su.space, weights)
    scalars["epoch"] = step // su.steps_per_epoch
    for cell in su.space.cell_types:
        scalars[f"parameter_free_ops/{cell}"] = discretise.count_parameter_free(genotype, cell)
    writer.write_scalars(step, scalars)
    writer.write_text(step, "genotype", genotype.to_string())


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
