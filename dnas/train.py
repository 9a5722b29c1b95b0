"""Retraining from scratch: `run(config, workdir, genotype) -> results`.

The DARTS evaluation protocol (Liu et al. 2019, Sec. 3.3; quark0/darts `train.py`): SGD with
momentum 0.9 and weight decay 3e-4, cosine learning rate per epoch to 0, gradient clipping at 5,
auxiliary head weighted 0.4, drop-path rate ramped linearly from 0 to its final value over the
epochs, cutout; then accuracy on the test split. The drop-path rate and the learning rate are
computed from the step inside the jitted step, so they never recompile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dnas import (
    autotune,
    checkpoint,
    configlib,
    data,
    distill,
    evaluate,
    loop,
    metrics,
    optim,
    parallel,
    search_step,
    spaces,
    supernet,
)
from dnas import workdir as workdir_lib
from dnas.configlib import ConfigError
from dnas.genotype import Genotype
from dnas.search_step import Augmentation
from dnas.state import SearchState, TrainState, init_variables
from dnas.types import Batch

_log = logging.getLogger(__name__)


def make_train_step(
    model, tx: optax.GradientTransformation, info: data.DatasetInfo, aug: Augmentation, *,
    auxiliary_weight: float, drop_path_prob: float, epochs: int, steps_per_epoch: int,
    learning_rate: optax.Schedule, dtype=jnp.float32, teacher: distill.Teacher | None = None,
    kd_weight: float = 0.0, kd_temperature: float = 1.0,
) -> Callable[..., tuple[TrainState, dict]]:  # fmt: skip
    """The retraining step `(state, batch) -> (state, metrics)`; the network computes in `dtype`
    (`configlib.compute_dtype`), the parameters, optimiser state, BatchNorm statistics and loss
    stay float32.

    With a `teacher` (`distill.Teacher`) the main logits' loss is `distill.objective` of the
    cross-entropy and `distill.kd_loss` at `kd_temperature`, weighted `kd_weight`; the teacher's
    logits are those of the same augmented batch (a logits file's come with the batch, as
    `teacher_logits`). A teacher with variables makes the step `(state, teacher_variables,
    batch)` (`loop.compile_step(consts=)` binds them). Without a teacher the program is the
    plain step's."""
    distilling = teacher is not None

    def step_fn(state: TrainState, *args):
        *teacher_vars, batch = args
        key = jax.random.fold_in(state.rng, state.step)
        k_aug, k_drop = jax.random.split(key)
        x32 = data.preprocess(
            k_aug, batch["image"], info, train=True, crop_padding=aug.crop_padding,
            flip=aug.flip, cutout_length=aug.cutout_length, dtype=jnp.float32,
        )  # fmt: skip
        x = x32.astype(dtype)  # the teacher sees the float32 batch, in its own precision
        epoch = (state.step // steps_per_epoch).astype(jnp.float32)
        rate = drop_path_prob * epoch / epochs  # the reference ramps it per epoch
        t_logits = None
        if distilling:
            t_logits = (
                batch["teacher_logits"] if teacher.apply is None
                else teacher.apply(teacher_vars[0], x32)
            )  # fmt: skip
            t_logits = jax.lax.stop_gradient(t_logits.astype(jnp.float32))

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            (logits, aux), updates = model.apply(
                variables, x, train=True, drop_path_rate=rate, rngs={"dropout": k_drop},
                mutable=["batch_stats"],
            )  # fmt: skip
            ce = optax.softmax_cross_entropy_with_integer_labels
            logits = logits.astype(jnp.float32)
            loss = ce(logits, batch["label"]).mean()
            parts = {}
            if distilling:
                kd = distill.kd_loss(logits, t_logits, kd_temperature)
                parts = {"train/ce": loss, "train/kd": kd}
                loss = distill.objective(loss, kd, kd_weight)
            if aux is not None:
                loss = loss + auxiliary_weight * ce(aux.astype(jnp.float32), batch["label"]).mean()
            return loss, (logits, updates.get("batch_stats", {}), parts)

        (loss, (logits, batch_stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
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
            **parts,
        }

    return step_fn


def make_eval_step(
    model, info: data.DatasetInfo, dtype=jnp.float32
) -> Callable[[TrainState, Batch], dict]:
    """Sums (not means) over the real examples of a padded batch, so batches add up. `edits`:
    the cell networks' apply-time edits (`network`; `dnas explain`), or None."""

    def eval_step(state: TrainState, batch: Batch, edits=None):
        x = data.preprocess(None, batch["image"], info, train=False, dtype=dtype)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        kwargs = {} if edits is None else {"edits": edits}
        logits, _ = model.apply(variables, x, train=False, **kwargs)
        logits = logits.astype(jnp.float32)
        mask = batch["mask"].astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return {"loss": jnp.sum(ce * mask), "correct": jnp.sum(correct * mask), "n": mask.sum()}

    return eval_step


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
    autotune: dict = dataclasses.field(default_factory=dict)  # `autotune.tuned`'s record
    dtype: object = jnp.float32  # the compute dtype (`precision`)
    teacher: distill.Teacher | None = None  # train.teacher, loaded (None: not distilling)


def setup(
    config: ml_collections.ConfigDict,
    genotype: Genotype,
    *,
    info: data.DatasetInfo | None = None,
    splits: data.Splits | None = None,
    autotune_prior: Mapping[str, Any] | None = None,
    teacher: distill.Teacher | None = None,
) -> TrainSetup:
    """Builds the retraining from `config`; `info` and `splits` replace the config's dataset;
    `autotune_prior`: the resumed run's forms (`workdir.recorded_autotune`); `teacher`
    (`teacher_from_config`): the step distils from it at `train.kd_weight` and
    `train.kd_temperature`."""
    t = config.train
    info = info or data.get_info(config.dataset)
    splits = splits or data.load(config.dataset, data_dir=config.data_dir or None)
    steps_per_epoch = data.steps_per_epoch(splits.train, t.batch_size)
    # Spaces whose networks have no auxiliary head or no drop-path (NAS-Bench-201, by the
    # benchmark's protocol) ignore train.auxiliary / train.drop_path_prob (and the logged
    # drop_path_rate stays 0).
    space = genotype.search_space

    def build(impl):
        return space.network(
            genotype, info.num_classes, input_shape=info.input_shape, C=t.C, layers=t.layers,
            auxiliary=t.auxiliary and space.auxiliary_head, sep_impl=impl,
        )  # fmt: skip

    x = search_step.tuning_input(config, t.batch_size, info)
    model, tuning = autotune.tuned(
        build, lambda m: m.init(jax.random.key(0), x, train=True), t.sep_impl,
        prior=autotune_prior,
    )  # fmt: skip
    learning_rate = optim.cosine_schedule(t.lr, t.lr_min, t.epochs, steps_per_epoch)
    tx = optim.sgd(
        learning_rate, momentum=t.momentum, weight_decay=t.weight_decay, grad_clip=t.grad_clip
    )
    aug = Augmentation.from_config(t)
    dtype = configlib.compute_dtype(config)
    if teacher is not None and teacher.logits is not None:  # rows come with the batches
        splits = splits._replace(train=distill.WithLogits(splits.train, teacher.logits))
    step_fn = make_train_step(
        model, tx, info, aug, auxiliary_weight=t.auxiliary_weight,
        drop_path_prob=t.drop_path_prob if space.drop_path else 0.0, epochs=t.epochs,
        steps_per_epoch=steps_per_epoch, learning_rate=learning_rate, dtype=dtype,
        teacher=teacher, kd_weight=t.kd_weight, kd_temperature=t.kd_temperature,
    )  # fmt: skip
    return TrainSetup(
        info, genotype, model, tx, learning_rate, step_fn, make_eval_step(model, info, dtype),
        splits, steps_per_epoch, t.epochs * steps_per_epoch, tuning, dtype, teacher,
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


def resolve_genotype(config: ml_collections.ConfigDict, workdir: str | None = None) -> Genotype:
    """`config.train.genotype`; without one, the genotype of the training that `workdir` holds
    (its `genotype.json`: a `dnas train` workdir or a `dnas run` retraining folder, resumed).
    A published name is looked up in `config.space` first (`darts_v2` with space darts_rnn is
    the recurrent cell's)."""
    if config.train.genotype:
        spec = config.train.genotype
        own = spaces.in_space(spaces.get(config.space), spec.strip().lower())
        return own if own is not None else spaces.load(spec)
    path = os.path.join(workdir or "", workdir_lib.GENOTYPE)
    if workdir is not None and os.path.exists(path):
        check_not_a_search(workdir)
        return spaces.load_json(path)
    raise ValueError(
        "dnas train needs a genotype: --config.train.genotype=NAME|STRING|path/genotype.json, "
        "or the --workdir of a training to resume"
    )


def check_not_a_search(workdir: str) -> None:
    """Refuses a search's workdir (its alphas), where a training would overwrite the search's
    genotype.json and trip over its checkpoints; names the retraining folders of a `dnas run`."""
    if not holds_search(workdir):
        return
    retrainings = sorted(e for e in os.listdir(workdir) if e.startswith("retrain_"))
    where = (
        f"its retrainings are in {', '.join(os.path.join(workdir, e) for e in retrainings)}"
        if retrainings
        else f"train its genotype in a new workdir: --config.train.genotype="
        f"{os.path.join(workdir, workdir_lib.GENOTYPE)} --workdir DIR"
    )
    raise ConfigError(f"{workdir} holds a search, not a training; {where}")


def holds_search(workdir: str) -> bool:
    """Whether `workdir` holds a search (its alphas, final or per epoch)."""
    return any(
        os.path.exists(os.path.join(workdir, name))
        for name in (workdir_lib.ALPHAS, workdir_lib.ALPHA_HISTORY)
    )


def _check_same_genotype(workdir: str, genotype: Genotype) -> None:
    """Refuses to resume a workdir trained on another genotype (two cells with the same ops on
    other inputs have the same parameter tree, so the checkpoint alone would not notice)."""
    path = os.path.join(workdir, workdir_lib.GENOTYPE)
    if not (os.path.exists(path) and workdir_lib.has_progress(workdir)):
        return
    previous = spaces.load_json(path)
    if previous != genotype:
        raise ConfigError(
            f"{workdir} holds the training of another genotype ({previous.to_string()}); "
            f"resuming it with {genotype.to_string()} would mix two networks. Use a new --workdir."
        )


def _check_space(space: str, config: ml_collections.ConfigDict) -> None:
    if space != config.space:
        raise ConfigError(
            f"the genotype to train is of search space {space!r} but config.space is "
            f"{config.space!r}; set --config.space={space} (the space is recorded with the run)"
        )


@workdir_lib.exclusive
def run(config: ml_collections.ConfigDict, workdir: str, genotype: Genotype | None = None) -> dict:
    """Trains `genotype` (default: `config.train.genotype`) from scratch; returns the results
    (also written to `<workdir>/results.json`). Their times are summed over every process that
    ran this training (`loop.Clock`): `wall_s` (all of it), `compile_s`, and `train_wall_s`
    (the training loop: steps, epoch-end evaluations, checkpoints)."""
    clock = loop.Clock()
    configlib.validate(config)
    check_not_a_search(workdir)
    genotype = genotype or resolve_genotype(config, workdir)
    space = genotype.search_space.name
    resuming = workdir_lib.has_checkpoints(workdir)
    if not resuming:  # a resume with another config.space: the guard's message says more
        _check_space(space, config)
    _check_same_genotype(workdir, genotype)
    splits = teacher = None
    if config.train.teacher and genotype.search_space.modality == "image":
        # The teacher is read and checked before anything is written.
        splits = data.load(config.dataset, data_dir=config.data_dir or None)
        teacher = teacher_from_config(config, splits.train)
    workdir = configlib.prepare_workdir(workdir, config, "train")
    _check_space(space, config)
    genotype.save(os.path.join(workdir, workdir_lib.GENOTYPE))
    loop.enable_compilation_cache(config.compilation_cache_dir)
    if genotype.search_space.modality == "text":  # a language model: perplexity, NT-ASGD
        from dnas import lm

        return lm.train(config, workdir, genotype, clock)
    mesh = parallel.make_mesh(config.num_devices)
    parallel.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
    prior = workdir_lib.recorded_autotune(workdir, "train")
    su = setup(config, genotype, splits=splits, autotune_prior=prior, teacher=teacher)
    workdir_lib.record_autotune(workdir, "train", su.autotune)
    consts = None
    if su.teacher is not None:
        distill.check_same_teacher(workdir, su.teacher)
        if su.teacher.variables is not None:
            consts = parallel.replicate(su.teacher.variables, mesh)
    t = config.train
    state = parallel.replicate(create_state(config, su), mesh)
    ckpt = checkpoint.Checkpointer(workdir)
    state = loop.resume(ckpt, state, clock)
    start = int(state.step)
    rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    eval_step = jax.jit(su.eval_step, in_shardings=(rep, split), out_shardings=rep)
    batches = data.batches(su.splits.train, t.batch_size, seed=config.seed + 2, start_step=start)
    batches = parallel.shard_batches(((b,) for b in batches), mesh)
    step_fn, compiled_record, batches = loop.compile_on_first(
        su.step_fn, "training step", config.progress, state, batches, mesh, clock, consts
    )
    writer = metrics.MetricWriter(workdir)
    writer.write_scalars(start, {f"train/{k}": v for k, v in compiled_record.items()})

    # The whole validation split at every epoch end (`eval_val/`); tfds datasets have none.
    epoch_eval = None
    if su.splits.val is not None:
        epoch_eval = lambda state: evaluate.over_source(
            eval_step, state, su.splits.val, t.batch_size, mesh
        )
    state = loop.run(
        config, step_fn=step_fn, state=state, batches=batches, start=start,
        total_steps=su.total_steps, steps_per_epoch=su.steps_per_epoch, ckpt=ckpt, writer=writer,
        desc="train", postfix=lambda m: {"loss": f"{m['train/loss']:.3f}"},
        on_epoch_end=lambda state, step: None, epoch_eval=epoch_eval, clock=clock,
    )  # fmt: skip
    test = evaluate.over_source(eval_step, state, su.splits.test, t.batch_size, mesh)
    stats = evaluate.model_stats(su.model, su.info.input_shape)
    totals = clock.totals()
    results = {
        "space": space,
        "genotype": genotype.to_string(),
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "params": stats["params"],
        "params_total": stats["params_total"],
        "macs": stats["macs"],
        "flops": stats["macs"],  # the old name of `macs`, kept for scripts that read it
        "train_wall_s": round(totals["loop_s"], 1),
        "compile_s": round(totals["compile_s"], 1),
        "wall_s": round(totals["wall_s"], 1),
        "steps": su.total_steps,
    }
    if su.teacher is not None:
        results["distillation"] = {
            "kd_weight": t.kd_weight, "kd_temperature": t.kd_temperature,
            "teacher": su.teacher.record,
        }  # fmt: skip
    writer.write_scalars(su.total_steps, {f"test/{k}": v for k, v in test.items()})
    writer.close()
    ckpt.close()
    text = json.dumps(results, indent=2) + "\n"
    workdir_lib.atomic_write_text(os.path.join(workdir, "results.json"), text)
    return results


# ---------------------------------------------------------------------------------------------
# A trained network, read back from its workdir: evaluation (`dnas eval`) and export (`dnas
# export`).


def load_trained(
    workdir: str, *, dataset: str | None = None, splits: data.Splits | None = None
) -> tuple[ml_collections.ConfigDict, TrainSetup, TrainState]:
    """(config, set-up, state) of the training in `workdir` (a `dnas train` workdir or a `dnas
    run` retraining folder): its config.json, genotype.json and latest checkpoint, restored and
    verified by `checkpoint.Checkpointer`; a training still running there is refused
    (`errors.WorkdirLocked`). `dataset` sets the splits up on another registered dataset, which
    must have the trained one's input shape and classes; images are still normalised with the
    trained dataset's statistics, as the network saw them. `splits` replaces the dataset's
    splits (a distillation's student has them in memory already). The network is built with the
    forms its training recorded (`workdir.recorded_autotune`), not timed again."""
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"no workdir {workdir!r}")
    check_not_a_search(workdir)
    for name in (workdir_lib.CONFIG, workdir_lib.GENOTYPE):
        if not os.path.exists(os.path.join(workdir, name)):
            raise FileNotFoundError(
                f"{workdir} has no {name}: not the workdir of a dnas train or of a dnas run "
                "retraining (retrain_<name>/)"
            )
    if not workdir_lib.has_checkpoints(workdir):
        raise FileNotFoundError(
            f"{workdir} has no checkpoint yet: its training saved no step (resume it with "
            f"dnas train --workdir {workdir})"
        )
    config = configlib.load_json(os.path.join(workdir, workdir_lib.CONFIG))
    genotype = spaces.load_json(os.path.join(workdir, workdir_lib.GENOTYPE))
    trained = data.get_info(config.dataset)
    info = data.get_info(dataset or config.dataset)
    if (info.input_shape, info.num_classes) != (trained.input_shape, trained.num_classes):
        raise ValueError(
            f"dataset {info.name!r} ({'x'.join(map(str, info.input_shape))} images, "
            f"{info.num_classes} classes) does not fit the network of {workdir}, trained on "
            f"{trained.name!r} ({'x'.join(map(str, trained.input_shape))}, "
            f"{trained.num_classes} classes)"
        )
    splits = splits or data.load(info.name, data_dir=config.data_dir or None)
    prior = workdir_lib.recorded_autotune(workdir, "train")
    su = setup(config, genotype, info=trained, splits=splits, autotune_prior=prior)
    target = jax.eval_shape(lambda: create_state(config, su))
    # The workdir's lock: a training still running there is named, not disturbed (opening a
    # Checkpointer clears unfinished saves).
    # A workdir this process cannot write (another user's, a read-only copy) is only read.
    lock = workdir_lib.locked(workdir) if os.access(workdir, os.W_OK) else contextlib.nullcontext()
    with lock, checkpoint.Checkpointer(workdir) as ckpt:
        state, _ = ckpt.restore(target)
    return config, su, state


SPLITS = ("test", "train", "val")


def evaluate_trained(
    workdir: str, *, split: str = "test", dataset: str | None = None, batch_size: int | None = None
) -> dict:
    """Loss and accuracy of the network trained in `workdir` (`load_trained`) on every example
    of `split` of its dataset (or of `dataset`), with the retraining's own evaluation step; also
    the number of examples and the checkpoint's step."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    config, su, state = load_trained(workdir, dataset=dataset)
    source = getattr(su.splits, split)
    name = dataset or config.dataset
    if source is None:
        raise ValueError(
            f"dataset {name!r} has no {split} split (tensorflow-datasets datasets have train and "
            "test; the search carves its validation half out of train)"
        )
    result = evaluate.over_source(
        jax.jit(su.eval_step), state, source, batch_size or config.train.batch_size
    )
    return {
        "workdir": os.path.abspath(workdir), "dataset": name, "split": split, **result,
        "examples": len(source), "step": int(state.step), "total_steps": su.total_steps,
    }  # fmt: skip


EXPORT_PARAMS = "params.npz"
EXPORT_MODEL = "model.json"


def export(workdir: str, out: str | None = None) -> dict:
    """Writes the network trained in `workdir` (`load_trained`: its latest checkpoint) into `out`
    (default `<workdir>/export/`) for use without the workdir machinery:

    * `params.npz`: the network's variables, parameters and BatchNorm statistics, as plain
      arrays keyed by their path `"<collection>/<module>/.../<name>"` (`params/...`,
      `batch_stats/...`): numpy reads them, and `flax.traverse_util.unflatten_dict(dict(
      np.load(path)), sep="/")` is the `variables` of `model.apply`;
    * `genotype.json` (`dnas.spaces.load` reads it);
    * `model.json`: the space, genotype string, C, layers, classes, input shape, dataset, the
      input normalisation (images in [0, 1], minus `mean`, over `std`, per channel), the
      checkpoint's step, and `rebuild`: three lines that build the network and load the
      parameters.

    Returns model.json's content."""
    config, su, state = load_trained(workdir)
    out = os.path.abspath(out or os.path.join(workdir, "export"))
    from flax import traverse_util  # flax is a dependency; only export flattens trees

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
    workdir_lib.save_arrays(os.path.join(out, EXPORT_PARAMS), flat)
    su.genotype.save(os.path.join(out, workdir_lib.GENOTYPE))
    t, info = config.train, su.info
    network_args = {
        "input_shape": list(info.input_shape), "C": t.C, "layers": t.layers,
        "auxiliary": bool(t.auxiliary and su.genotype.search_space.auxiliary_head),
        "sep_impl": t.sep_impl,
    }  # fmt: skip
    model = {
        "space": su.genotype.space,
        "genotype": su.genotype.to_string(),
        "C": t.C,
        "layers": t.layers,
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "dataset": info.name,
        "mean": list(info.mean),
        "std": list(info.std),
        "step": int(state.step),
        "total_steps": su.total_steps,
        "params": evaluate.count_params(state.params),
        "network_args": network_args,
        "rebuild": [
            'm = json.load(open("model.json")); g = dnas.spaces.load("genotype.json")',
            'net = g.search_space.network(g, m["num_classes"], **m["network_args"])',
            'variables = flax.traverse_util.unflatten_dict(dict(np.load("params.npz")), sep="/")',
        ],
        "apply": 'logits, _ = net.apply(variables, (images - np.float32(m["mean"])) / '
        'np.float32(m["std"]), train=False)  # images: float32 (N, H, W, C) in [0, 1]',
    }
    text = json.dumps(model, indent=2) + "\n"
    workdir_lib.atomic_write_text(os.path.join(out, EXPORT_MODEL), text)
    return model | {"out": out}


# ---------------------------------------------------------------------------------------------
# Distillation teachers (`dnas/distill.py` has the loss and the teacher's use in a step): a
# trained network, a search's supernet, or a logits file, read back and checked here, where both
# kinds of workdir can be read.


def load_searched(
    workdir: str, *, splits: data.Splits | None = None
) -> tuple[ml_collections.ConfigDict, search_step.SearchSetup, SearchState]:
    """(config, set-up, state) of the search in `workdir` at its latest checkpoint, restored and
    verified by `checkpoint.Checkpointer` (a search still running there is refused), its
    supernet built with the forms it recorded. `splits` replaces the dataset's splits. The
    set-up's hardware objective is left out (the state does not depend on it, and a measured
    latency table need not be at hand). Image spaces only; a staged search (`stage_<i>/`) is
    read from one of its stages' folders. An SGAS search's set-up has its strategy under the
    decisions (`sgas.Driver.start`): its final weights are the decided cell's."""
    workdir = os.path.abspath(workdir)
    path = os.path.join(workdir, workdir_lib.CONFIG)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir} has no {workdir_lib.CONFIG}: not a dnas workdir")
    if not workdir_lib.has_checkpoints(workdir):
        stages = sorted(e for e in os.listdir(workdir) if e.startswith("stage_"))
        hint = (
            f"a staged search: name its last stage, {os.path.join(workdir, stages[-1])}"
            if stages
            else f"resume it with dnas search --workdir {workdir}"
        )
        raise FileNotFoundError(f"{workdir} has no search checkpoint ({hint})")
    config = configlib.load_json(path)
    if spaces.get(config.space).modality != "image":
        raise ConfigError(
            f"{workdir} searched the text space {config.space!r}; only image supernets load here"
        )
    config.hardware.objective, config.hardware.discretise = "", ""
    prior = workdir_lib.recorded_autotune(workdir, "search")
    su = search_step.setup(config, splits=splits, autotune_prior=prior)

    ran = {"su": su}  # the set-up as the search ran it

    def initial_state():
        state = search_step.create_state(config, su)
        if config.search.sgas:  # its decisions in the alphas, the strategy projected on them
            from dnas import sgas

            ran["su"], state = sgas.Driver(config, workdir).start(su, state)
        return state

    target = jax.eval_shape(initial_state)
    su = ran["su"]
    lock = workdir_lib.locked(workdir) if os.access(workdir, os.W_OK) else contextlib.nullcontext()
    with lock, checkpoint.Checkpointer(workdir) as ckpt:
        state, _ = ckpt.restore(target)
    return config, su, state


def teacher_kind(spec: str) -> str:
    """What `spec` (`train.teacher`) names, from what is there; a one-line error otherwise."""
    path = os.path.abspath(os.path.expanduser(spec))
    if path.endswith(".npz"):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"teacher logits file {path!r} does not exist; write one with "
                "`dnas logits TEACHER_WORKDIR --out FILE.npz`"
            )
        return "logits"
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"teacher {spec!r} is neither a workdir nor a .npz logits file: set "
            "--config.train.teacher to a dnas train workdir, a dnas run retrain_<name>/ folder, "
            "a dnas search workdir or a file from `dnas logits`"
        )
    if holds_search(path):
        return "supernet"
    if os.path.exists(os.path.join(path, workdir_lib.GENOTYPE)):
        return "trained"
    raise FileNotFoundError(
        f"{path} is not a dnas workdir with a trained network (no {workdir_lib.GENOTYPE}) nor a "
        f"search (no {workdir_lib.ALPHAS}): name a finished dnas train or dnas search workdir"
    )


def load_teacher(
    spec: str, dataset: str, info: data.DatasetInfo, train_source: data.Source
) -> distill.Teacher:
    """The teacher `spec` names (`teacher_kind`), checked against the student's `dataset` (same
    dataset: the teacher sees the student's normalised images) and its training split
    `train_source` (a logits file must have one row per example, with the same labels)."""
    kind = teacher_kind(spec)
    path = os.path.abspath(os.path.expanduser(spec))
    if kind == "logits":
        return _logits_teacher(path, dataset, info, train_source)
    config = _teacher_config(path)
    if config.get("dataset") != dataset:
        raise ConfigError(
            f"teacher {path} was trained on dataset {config.get('dataset')!r}, the student "
            f"trains on {dataset!r}: a teacher must have seen the same (normalised) images"
        )
    if kind == "trained":
        return _trained_teacher(path, dataset, train_source)
    return _supernet_teacher(path, train_source)


def teacher_from_config(
    config: Any, train_source: data.Source, stage: str = "train"
) -> distill.Teacher | None:
    """The teacher of `config.<stage>` (train or search; `load_teacher`), or None: no
    `<stage>.teacher`, or `<stage>.kd_weight` 0 (the plain step; the teacher is not read)."""
    t = config[stage]
    if not t.teacher or t.kd_weight == 0:
        return None
    return load_teacher(t.teacher, config.dataset, data.get_info(config.dataset), train_source)


def _teacher_config(path: str) -> dict:
    file = os.path.join(path, workdir_lib.CONFIG)
    if not os.path.exists(file):
        raise FileNotFoundError(f"teacher {path} has no {workdir_lib.CONFIG}: not a dnas workdir")
    with open(file) as f:
        return json.load(f)


def _splits_with(train_source: data.Source) -> data.Splits:
    """Splits for building the teacher without reading its dataset again (only the training
    split's length is used: the teacher's schedule, which its forward pass does not read)."""
    return data.Splits(train=train_source, val=None, test=train_source)


def _trained_teacher(path: str, dataset: str, train_source: data.Source) -> distill.Teacher:
    config, su, state = load_trained(path, splits=_splits_with(train_source))
    model, dtype = su.model, su.dtype

    def apply(variables, x):
        logits, _ = model.apply(variables, x.astype(dtype), train=False)
        return logits.astype(jnp.float32)

    _warn_unfinished(path, int(state.step), su.total_steps)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    record = {
        "kind": "trained", "path": path, "genotype": su.genotype.to_string(),
        "C": config.train.C, "layers": config.train.layers, "step": int(state.step),
        "total_steps": su.total_steps, "params_total": evaluate.count_params(state.params),
    }  # fmt: skip
    results = distill.read_json(os.path.join(path, "results.json")) or {}
    record |= {k: results[k] for k in ("params", "test_accuracy") if k in results}
    record |= distill.fingerprint(variables)
    return distill.Teacher("trained", path, apply, variables, None, record)


def _supernet_teacher(path: str, train_source: data.Source) -> distill.Teacher:
    config, su, state = load_searched(path, splits=_splits_with(train_source))
    model, dtype = supernet.full_mixture(su.model), su.dtype

    def apply(variables, x):
        logits = model.apply({"params": variables["params"]}, x.astype(dtype), variables["mix"],
                             train=True)  # fmt: skip
        return logits.astype(jnp.float32)

    _warn_unfinished(path, int(state.step), su.total_steps)
    mix = jax.device_get(su.strategy.final_weights(state.alphas))
    variables = {"params": state.params, "mix": {k: jnp.asarray(v) for k, v in mix.items()}}
    record = {
        "kind": "supernet", "path": path, "space": config.space, "strategy": config.strategy,
        "C": config.search.C, "layers": config.search.layers, "step": int(state.step),
        "total_steps": su.total_steps, "params": evaluate.count_params(state.params),
    }  # fmt: skip
    record |= distill.fingerprint(variables)
    return distill.Teacher("supernet", path, apply, variables, None, record)


def _warn_unfinished(path: str, step: int, total: int) -> None:
    if step < total:
        _log.warning(
            "teacher %s stopped at step %d of %d: distilling from an unfinished training "
            "(resume it first for the finished teacher)", path, step, total,
        )  # fmt: skip


def _labels(source: data.Source) -> np.ndarray:
    labels = getattr(source, "labels", None)
    if labels is not None:
        return np.asarray(labels)
    return np.asarray([int(source[i]["label"]) for i in range(len(source))])


def _logits_teacher(
    path: str, dataset: str, info: data.DatasetInfo, train_source: data.Source
) -> distill.Teacher:
    try:
        arrays = workdir_lib.load_arrays(path)
    except Exception as e:  # a truncated or foreign file
        raise ConfigError(f"cannot read teacher logits {path}: {e}") from e
    missing = [k for k in distill.LOGITS_KEYS if k not in arrays]
    if missing:
        raise ConfigError(
            f"{path} is not a dnas logits file (no {', '.join(missing)}); write one with "
            "`dnas logits TEACHER_WORKDIR --out FILE.npz`"
        )
    logits, labels = arrays["logits"], arrays["labels"]
    stored = str(arrays["dataset"])
    n = len(train_source)
    problem = None
    if stored != dataset:
        problem = f"holds logits of dataset {stored!r}, the student trains on {dataset!r}"
    elif logits.ndim != 2 or logits.shape != (n, info.num_classes):
        problem = (
            f"holds logits of shape {list(logits.shape)}, the student's training split needs "
            f"[{n}, {info.num_classes}] (one row per example, one column per class)"
        )
    elif not np.array_equal(labels, _labels(train_source)):
        problem = "was written for another training split (its labels differ, in order or value)"
    elif not np.all(np.isfinite(logits)):
        problem = "holds non-finite logits"
    if problem:
        raise ConfigError(f"teacher logits {path} {problem}")
    logits = np.asarray(logits, np.float32)
    record = {"kind": "logits", "path": path, "examples": n}
    return distill.Teacher("logits", path, None, None, logits, record | distill.fingerprint(logits))


def write_logits(spec: str, out: str, *, batch_size: int = 256) -> dict:
    """Writes the logits of the teacher `spec` (a trained network or a search's supernet, as
    `load_teacher`) for every example of its dataset's training split, un-augmented and in
    order, to the `.npz` file `out`, with the labels and the dataset's name (what
    `load_teacher` checks). Returns a summary."""
    kind = teacher_kind(spec)
    if kind == "logits":
        raise ConfigError(f"{spec} is already a logits file; name the teacher's workdir")
    path = os.path.abspath(os.path.expanduser(spec))
    if not out.endswith(".npz"):
        raise ConfigError(f"--out {out!r} must end in .npz (train.teacher recognises it so)")
    config = _teacher_config(path)
    dataset = config["dataset"]
    info = data.get_info(dataset)
    splits = data.load(dataset, data_dir=config.get("data_dir") or None)
    teacher = load_teacher(path, dataset, info, splits.train)
    apply = jax.jit(
        lambda v, images: teacher.apply(
            v, data.preprocess(None, images, info, train=False, dtype=jnp.float32)
        )
    )
    rows = []
    batch_size = min(batch_size, len(splits.train))
    for batch in data.eval_batches(splits.train, batch_size, fill="overlap"):
        logits = np.asarray(apply(teacher.variables, batch["image"]))
        rows.append(logits[np.asarray(batch["mask"], bool)])
    logits = np.concatenate(rows)
    labels = _labels(splits.train)
    accuracy = float(np.mean(np.argmax(logits, -1) == labels))
    workdir_lib.save_arrays(
        out, {"logits": logits, "labels": labels, "dataset": np.asarray(dataset),
              "split": np.asarray("train")},
    )  # fmt: skip
    return {"out": os.path.abspath(out), "teacher": teacher.record, "examples": len(logits),
            "train_accuracy": accuracy}  # fmt: skip
