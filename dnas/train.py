"""Retraining from scratch: `run(config, workdir, genotype) -> results`.

The DARTS evaluation protocol (Liu et al. 2019, Sec. 3.3; quark0/darts `train.py`): SGD with
momentum 0.9 and weight decay 3e-4, cosine learning rate per epoch to 0, gradient clipping at 5,
auxiliary head weighted 0.4, drop-path rate ramped linearly from 0 to its final value over the
epochs, cutout; then accuracy on the test split. The drop-path rate and the learning rate are
computed from the step inside the jitted step, so they never recompile.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from dnas import checkpoint, configlib, data, evaluate, loop, metrics, optim, parallel, spaces
from dnas import workdir as workdir_lib
from dnas.configlib import ConfigError
from dnas.genotype import Genotype
from dnas.search_step import Augmentation
from dnas.state import TrainState, init_variables
from dnas.types import Batch


def make_train_step(
    model, tx: optax.GradientTransformation, info: data.DatasetInfo, aug: Augmentation, *,
    auxiliary_weight: float, drop_path_prob: float, epochs: int, steps_per_epoch: int,
    learning_rate: optax.Schedule,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:  # fmt: skip
    def step_fn(state: TrainState, batch: Batch):
        key = jax.random.fold_in(state.rng, state.step)
        k_aug, k_drop = jax.random.split(key)
        x = data.preprocess(
            k_aug, batch["image"], info, train=True, crop_padding=aug.crop_padding,
            flip=aug.flip, cutout_length=aug.cutout_length,
        )  # fmt: skip
        epoch = (state.step // steps_per_epoch).astype(jnp.float32)
        rate = drop_path_prob * epoch / epochs  # the reference ramps it per epoch

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            (logits, aux), updates = model.apply(
                variables, x, train=True, drop_path_rate=rate, rngs={"dropout": k_drop},
                mutable=["batch_stats"],
            )  # fmt: skip
            ce = optax.softmax_cross_entropy_with_integer_labels
            loss = ce(logits, batch["label"]).mean()
            if aux is not None:
                loss = loss + auxiliary_weight * ce(aux, batch["label"]).mean()
            return loss, (logits, updates.get("batch_stats", {}))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        return new_state, {
            "train/loss": loss,
            "train/accuracy": evaluate.accuracy(logits, batch["label"]),
            "lr": learning_rate(state.step),
            "drop_path_rate": rate,
        }

    return step_fn


def make_eval_step(model, info: data.DatasetInfo) -> Callable[[TrainState, Batch], dict]:
    """Sums (not means) over the real examples of a padded batch, so batches add up."""

    def eval_step(state: TrainState, batch: Batch):
        x = data.preprocess(None, batch["image"], info, train=False)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        logits, _ = model.apply(variables, x, train=False)
        mask = batch["mask"].astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return {"loss": jnp.sum(ce * mask), "correct": jnp.sum(correct * mask), "n": mask.sum()}

    return eval_step


def evaluate_source(
    eval_step, state: TrainState, source, batch_size: int, mesh: Mesh | None = None
) -> dict[str, float]:
    totals = None
    for batch in data.eval_batches(source, batch_size):
        if mesh is not None:
            batch = parallel.shard_batch(batch, mesh)
        out = eval_step(state, batch)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    n = float(totals["n"])
    return {"loss": float(totals["loss"]) / n, "accuracy": float(totals["correct"]) / n}


@dataclasses.dataclass
class TrainSetup:
    info: data.DatasetInfo
    genotype: Genotype
    model: object
    tx: optax.GradientTransformation
    learning_rate: optax.Schedule
    step_fn: Callable
    eval_step: Callable
    splits: data.Splits
    steps_per_epoch: int
    total_steps: int


def setup(
    config: ml_collections.ConfigDict,
    genotype: Genotype,
    *,
    info: data.DatasetInfo | None = None,
    splits: data.Splits | None = None,
) -> TrainSetup:
    """Builds the retraining from `config`; `info` and `splits` replace the config's dataset."""
    t = config.train
    info = info or data.get_info(config.dataset)
    splits = splits or data.load(config.dataset, data_dir=config.data_dir or None)
    steps_per_epoch = data.steps_per_epoch(splits.train, t.batch_size)
    # Spaces whose networks have no auxiliary head or no drop-path (NAS-Bench-201, by the
    # benchmark's protocol) ignore train.auxiliary / train.drop_path_prob (and the logged
    # drop_path_rate stays 0).
    space = genotype.search_space
    model = space.network(
        genotype, info.num_classes, input_shape=info.input_shape, C=t.C, layers=t.layers,
        auxiliary=t.auxiliary and space.auxiliary_head, sep_impl=t.sep_impl,
    )  # fmt: skip
    learning_rate = optim.cosine_schedule(t.lr, t.lr_min, t.epochs, steps_per_epoch)
    tx = optim.sgd(
        learning_rate, momentum=t.momentum, weight_decay=t.weight_decay, grad_clip=t.grad_clip
    )
    aug = Augmentation.from_config(t)
    step_fn = make_train_step(
        model, tx, info, aug, auxiliary_weight=t.auxiliary_weight,
        drop_path_prob=t.drop_path_prob if space.drop_path else 0.0, epochs=t.epochs,
        steps_per_epoch=steps_per_epoch,
        learning_rate=learning_rate,
    )  # fmt: skip
    return TrainSetup(
        info, genotype, model, tx, learning_rate, step_fn, make_eval_step(model, info), splits,
        steps_per_epoch, t.epochs * steps_per_epoch,
    )  # fmt: skip


def create_state(config: ml_collections.ConfigDict, su: TrainSetup) -> TrainState:
    root = jax.random.key(config.seed)
    k_params, k_steps = jax.random.fold_in(root, 10), jax.random.fold_in(root, 11)
    x = jnp.zeros((1, *su.info.input_shape), jnp.float32)
    variables = init_variables(su.model, k_params, x)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        opt_state=su.tx.init(variables["params"]),
        rng=k_steps,
    )


def resolve_genotype(config: ml_collections.ConfigDict) -> Genotype:
    if not config.train.genotype:
        raise ValueError(
            "dnas train needs a genotype: --config.train.genotype=NAME|STRING|path/genotype.json"
        )
    return spaces.load(config.train.genotype)


def _check_same_genotype(workdir: str, genotype: Genotype) -> None:
    """Refuses to resume a workdir trained on another genotype (two cells with the same ops on
    other inputs have the same parameter tree, so the checkpoint alone would not notice)."""
    path = os.path.join(workdir, workdir_lib.GENOTYPE)
    if not (os.path.exists(path) and workdir_lib.has_checkpoints(workdir)):
        return
    previous = spaces.load_json(path)
    if previous != genotype:
        raise ConfigError(
            f"{workdir} holds the training of another genotype ({previous.to_string()}); "
            f"resuming it with {genotype.to_string()} would mix two networks. Use a new --workdir."
        )


def run(config: ml_collections.ConfigDict, workdir: str, genotype: Genotype | None = None) -> dict:
    """Trains `genotype` (default: `config.train.genotype`) from scratch; returns the results
    (also written to `<workdir>/results.json`)."""
    genotype = genotype or resolve_genotype(config)
    _check_same_genotype(workdir, genotype)
    workdir = configlib.prepare_workdir(workdir, config)
    genotype.save(os.path.join(workdir, workdir_lib.GENOTYPE))
    loop.enable_compilation_cache(config.compilation_cache_dir)
    mesh = parallel.make_mesh(config.num_devices)
    parallel.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
    su = setup(config, genotype)
    t = config.train
    state = parallel.replicate(create_state(config, su), mesh)
    ckpt = checkpoint.Checkpointer(workdir)
    state = loop.resume(ckpt, state)
    start = int(state.step)
    rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    eval_step = jax.jit(su.eval_step, in_shardings=(rep, split), out_shardings=rep)
    batches = data.batches(su.splits.train, t.batch_size, seed=config.seed + 2, start_step=start)
    batches = parallel.shard_batches(((b,) for b in batches), mesh)
    step_fn, compiled_record, batches = loop.compile_on_first(
        su.step_fn, "training step", config.progress, state, batches, mesh
    )
    writer = metrics.MetricWriter(workdir)
    writer.write_scalars(start, {f"train/{k}": v for k, v in compiled_record.items()})
    t_start = time.time()

    def on_epoch_end(state: TrainState, step: int) -> None:
        if su.splits.val is not None:
            val = evaluate_source(eval_step, state, su.splits.val, t.batch_size, mesh)
            writer.write_scalars(step, {f"eval_val/{k}": v for k, v in val.items()})

    state = loop.run(
        config, step_fn=step_fn, state=state, batches=batches, start=start,
        total_steps=su.total_steps, steps_per_epoch=su.steps_per_epoch, ckpt=ckpt, writer=writer,
        desc="train", postfix=lambda m: {"loss": f"{m['train/loss']:.3f}"},
        on_epoch_end=on_epoch_end,
    )  # fmt: skip
    train_s = time.time() - t_start
    test = evaluate_source(eval_step, state, su.splits.test, t.batch_size, mesh)
    stats = evaluate.model_stats(su.model, su.info.input_shape)
    results = {
        "genotype": genotype.to_string(),
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "params": stats["params"],
        "params_total": stats["params_total"],
        "macs": stats["macs"],
        "flops": stats["macs"],  # the old name of `macs`, kept for scripts that read it
        "train_wall_s": round(train_s, 1),
        "steps": su.total_steps,
    }
    writer.write_scalars(su.total_steps, {f"test/{k}": v for k, v in test.items()})
    writer.close()
    ckpt.close()
    text = json.dumps(results, indent=2) + "\n"
    workdir_lib.atomic_write_text(os.path.join(workdir, "results.json"), text)
    return results
