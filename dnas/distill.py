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

A teacher (`train.load_teacher`, from `train.teacher`; `train.py` reads both kinds of workdir)
is one of

* **trained**: a `dnas train` workdir or a `dnas run` retraining folder (`retrain_<name>/`): the
  network at its latest checkpoint, in inference mode (BatchNorm running statistics, no
  drop-path, no auxiliary head), as RepDistiller's `teacher.eval()`;
* **supernet**: a `dnas search` (or `dnas run`) workdir: the supernet at its last checkpoint
  under its strategy's final mixing weights. The supernet normalises with the batch's own
  statistics (it keeps no running ones), so its logits of an example depend on the batch;
* **logits**: an `.npz` file written by `dnas logits` (`train.write_logits`): one row of logits per
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


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fingerprint(tree: Any) -> dict:
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
    previous = read_json(path)
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
