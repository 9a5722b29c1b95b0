"""Distillation on the embedded digits (BENCHMARKS.md): a small DARTS_V2 network retrained with
and without a larger one as its teacher, the same budget (digits' retraining protocol: 30
epochs, batch 64, SGD 0.05 cosine, auxiliary head 0.4, drop-path 0.1).

    dnas train --config experiments/distill/digits.py:teacher --workdir runs/kd-digits-teacher
    dnas train --config experiments/distill/digits.py --workdir runs/kd-digits-student \
        --config.train.teacher=runs/kd-digits-teacher
    dnas train --config experiments/distill/digits.py:plain --workdir runs/kd-digits-plain

`python scripts/distill_digits.py` runs all three for seeds 0, 1, 2 (a `dnas study` of the
students) and writes the paired table. Teacher: C=16, 8 cells (245,242 parameters, ~99.4%);
student: C=2, 3 cells (1,010 parameters, ~92% alone: room to gain); KD a = 0.9, T = 4
(`dnas/distill.py`).
"""

from dnas import configlib

TEACHER = {"C": 16, "layers": 8}
STUDENT = {"C": 2, "layers": 3}  # the smallest DARTS network: ~92% alone


def get_config(arg: str | None = None):
    c = configlib.default_config()
    t = c.train
    t.genotype = "darts_v2"
    size = TEACHER if arg == "teacher" else STUDENT
    t.C, t.layers = size["C"], size["layers"]
    t.kd_weight, t.kd_temperature = 0.9, 4.0  # the defaults, stated
    if arg not in (None, "", "teacher", "plain", "student"):
        raise ValueError(f"unknown argument {arg!r}; valid: teacher, student (default), plain")
    return c
