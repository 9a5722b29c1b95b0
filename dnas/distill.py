"""Knowledge distillation (Hinton, Vinyals & Dean 2015) in the retraining.

The student's loss on its main logits s, with the teacher's logits t and the labels y:

    (1 - a) * CE(y, s) + a * T^2 * KL(softmax(t / T) || softmax(s / T)),

the KL a mean over the batch (RepDistiller's `DistillKL`; not the mean over batch x classes of
some older code, which divides the term by the number of classes). T^2 keeps the soft term's
gradient, which scales as 1 / T^2, comparable across temperatures (Hinton et al., Sec. 2). The
auxiliary head, where the network has one, keeps its plain weighted cross-entropy (the DARTS
protocol). Defaults `train.kd_weight` a = 0.9 and `train.kd_temperature` T = 4: the KD setting
of RepDistiller (Tian et al., ICLR 2020: `-r 0.1 -a 0.9`, `kd_T 4`) and of attention-transfer's
CIFAR-10 KD (Zagoruyko & Komodakis 2017: `--alpha 0.9`, T 4), in line with Hinton et al.'s
finding that a small weight on the hard labels works best.

A teacher (`load_teacher`, from `train.teacher`) is one of

* **trained**: a `dnas train` workdir or a `dnas run` retraining folder (`retrain_<name>/`): the
  network at its latest checkpoint, in inference mode (BatchNorm running statistics, no
  drop-path, no auxiliary head), as RepDistiller's `teacher.eval()`;
* **supernet**: a `dnas search` (or `dnas run`) workdir: the supernet at its last checkpoint
  under its strategy's final mixing weights. The supernet normalises with the batch's own
  statistics (it keeps no running ones), so its logits of an example depend on the batch;
* **logits**: an `.npz` file written by `dnas logits` (`write_logits`): one row of logits per
  training example, of the un-augmented image, looked up by the example's index. The cheap mode
  (no teacher forward pass), but not on the student's augmented batch.

The teacher's forward pass runs inside the student's jitted step on the same augmented batch,
under `stop_gradient`. Its variables are an argument of the compiled step
(`loop.compile_step(consts=)`), not part of the student's state or checkpoints: the student's
workdir records the teacher's fingerprint (`TEACHER`, a hash of its variables or logits) and a
resume with a changed teacher is refused, so a resumed distillation is the same computation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnas import data
from dnas import workdir as workdir_lib
from dnas.configlib import ConfigError
from dnas.types import Array

_log = logging.getLogger(__name__)
KINDS = ("trained", "supernet", "logits")
TEACHER = "teacher.json"  # in the student's workdir: which teacher, and its fingerprint
LOGITS_KEYS = ("logits", "labels", "dataset", "split")


class Teacher(NamedTuple):
    """A loaded teacher. `apply(variables, x) -> float32 logits` on the student's preprocessed
    float32 batch `x` (None for a logits file, whose rows come with the batches: `WithLogits`)."""

    kind: str  # one of KINDS
    path: str
    apply: Callable[[Any, Array], Array] | None
    variables: Any  # a pytree of arrays; None for a logits file
    logits: np.ndarray | None  # (training examples, classes) for a logits file
    record: dict  # what results.json and TEACHER say about it


def kd_loss(student_logits: Array, teacher_logits: Array, temperature: float) -> Array:
    """T^2 * mean over the batch of KL(softmax(teacher / T) || softmax(student / T)), in
    float32 at least (float64 logits stay float64); no gradient flows into the teacher's
    logits."""
    t = temperature
    dtype = jnp.promote_types(student_logits.dtype, jnp.float32)
    log_s = jax.nn.log_softmax(student_logits.astype(dtype) / t)
    log_t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(dtype) / t)
    return t * t * optax.losses.kl_divergence_with_log_targets(log_s, log_t).mean()


def objective(ce: Array, kd: Array, weight: float) -> Array:
    """(1 - a) * CE + a * KD, a = `weight`."""
    return (1.0 - weight) * ce + weight * kd


# --------------------------------------------------------------------------------------- teachers


def kind_of(spec: str) -> str:
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
    if any(
        os.path.exists(os.path.join(path, n))
        for n in (workdir_lib.ALPHAS, workdir_lib.ALPHA_HISTORY)
    ):
        return "supernet"
    if os.path.exists(os.path.join(path, workdir_lib.GENOTYPE)):
        return "trained"
    raise FileNotFoundError(
        f"{path} is not a dnas workdir with a trained network (no {workdir_lib.GENOTYPE}) nor a "
        f"search (no {workdir_lib.ALPHAS}): name a finished dnas train or dnas search workdir"
    )


def load_teacher(
    spec: str, dataset: str, info: data.DatasetInfo, train_source: data.Source
) -> Teacher:
    """The teacher `spec` names (`kind_of`), checked against the student's `dataset` (same
    dataset: the teacher sees the student's normalised images) and its training split
    `train_source` (a logits file must have one row per example, with the same labels)."""
    kind = kind_of(spec)
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


def from_config(config: Any, train_source: data.Source, stage: str = "train") -> Teacher | None:
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


def _trained_teacher(path: str, dataset: str, train_source: data.Source) -> Teacher:
    from dnas import evaluate, train  # train imports this module

    config, su, state = train.load_trained(path, splits=_splits_with(train_source))
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
    results = _read_json(os.path.join(path, "results.json")) or {}
    record |= {k: results[k] for k in ("params", "test_accuracy") if k in results}
    return Teacher("trained", path, apply, variables, None, record | _fingerprint(variables))


def _supernet_teacher(path: str, train_source: data.Source) -> Teacher:
    from dnas import evaluate, search

    config, su, state = search.load_searched(path, splits=_splits_with(train_source))
    model = su.model.clone(single_op=False) if getattr(su.model, "single_op", False) else su.model
    dtype = su.dtype

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
    return Teacher("supernet", path, apply, variables, None, record | _fingerprint(variables))


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
) -> Teacher:
    try:
        arrays = workdir_lib.load_arrays(path)
    except Exception as e:  # a truncated or foreign file
        raise ConfigError(f"cannot read teacher logits {path}: {e}") from e
    missing = [k for k in LOGITS_KEYS if k not in arrays]
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
    return Teacher("logits", path, None, None, logits, record | _fingerprint(logits))


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _fingerprint(tree: Any) -> dict:
    """{"fingerprint": sha256 of the arrays' shapes, dtypes and bytes, in tree order}."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        leaf = np.ascontiguousarray(leaf)
        digest.update(f"{leaf.dtype}{leaf.shape}".encode())
        digest.update(leaf.tobytes())
    return {"fingerprint": digest.hexdigest()}


def check_same_teacher(workdir: str, teacher: Teacher) -> None:
    """Writes `TEACHER` in a new training's workdir; refuses to resume one whose recorded
    teacher differs (its variables or logits changed, e.g. its training went on)."""
    path = os.path.join(workdir, TEACHER)
    previous = _read_json(path)
    if previous is not None and workdir_lib.has_progress(workdir):
        if previous.get("fingerprint") != teacher.record["fingerprint"]:
            raise ConfigError(
                f"{workdir} was distilled from a teacher that has changed since ({teacher.path}: "
                f"was step {previous.get('step', '?')}, is step {teacher.record.get('step', '?')}"
                "; its variables or logits differ). Resuming would mix two teachers: restore "
                "that teacher, or start a new --workdir."
            )
        return
    workdir_lib.atomic_write_text(path, json.dumps(teacher.record, indent=2) + "\n")


# ----------------------------------------------------------------------------------------- batches


class WithLogits:
    """A training source whose examples and batches also carry `teacher_logits` (float32,
    (classes,) per example): the row of the logits file for the example's index."""

    def __init__(self, source: data.Source, logits: np.ndarray):
        if len(logits) != len(source):
            raise ValueError(f"{len(logits)} rows of logits for {len(source)} examples")
        self.source, self.logits = source, logits

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        return dict(self.source[index], teacher_logits=self.logits[index])

    def gather(self, indices: np.ndarray) -> dict:
        batch = dict(data.gather(self.source, indices))
        batch["teacher_logits"] = self.logits[np.asarray(indices)]
        return batch


def write_logits(spec: str, out: str, *, batch_size: int = 256) -> dict:
    """Writes the logits of the teacher `spec` (a trained network or a search's supernet, as
    `load_teacher`) for every example of its dataset's training split, un-augmented and in
    order, to the `.npz` file `out`, with the labels and the dataset's name (what
    `load_teacher` checks). Returns a summary."""
    kind = kind_of(spec)
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
