"""Knowledge distillation on CIFAR-10, for GPU users: the DARTS network (DARTS_V2, 20 cells, C=36)
as the teacher of a small DARTS_V2 network (8 cells, C=16), both retrained with the DARTS
CIFAR-10 protocol (Liu et al. 2019, A.2: 600 epochs, batch 96, SGD 0.025 cosine, momentum 0.9,
wd 3e-4, clip 5, auxiliary 0.4, drop-path 0.2, cutout 16; `darts_cnn.cifar10_protocol`).

    dnas train --config experiments/distill/cifar10.py:teacher --workdir runs/kd-cifar10-teacher
    dnas train --config experiments/distill/cifar10.py --workdir runs/kd-cifar10-student \\
        --config.train.teacher=runs/kd-cifar10-teacher
    dnas train --config experiments/distill/cifar10.py:plain --workdir runs/kd-cifar10-plain
    dnas logits runs/kd-cifar10-teacher --out runs/kd-cifar10-teacher.npz   # the cheap mode:
    #   --config.train.teacher=runs/kd-cifar10-teacher.npz (logits of un-augmented images)
    dnas train --config experiments/distill/cifar10.py:smoke     # seconds, on digits

The distillation setting is the published KD of RepDistiller (Tian et al., ICLR 2020; its
`run_cifar_distill.sh`: `-r 0.1 -a 0.9`, `kd_T 4`, batch-mean KL x T^2, teacher in inference mode
on the student's augmented batch) and of attention-transfer's CIFAR-10 KD (Zagoruyko & Komodakis,
ICLR 2017: WRN-16-2 -> WRN-16-1, alpha 0.9, T 4): `train.kd_weight` 0.9, `train.kd_temperature` 4.
RepDistiller reports, on CIFAR-100, e.g. resnet110 -> resnet20 69.06% alone -> 70.67% with KD and
WRN-40-2 -> WRN-16-2 73.26% -> 74.92%. Differences: the networks here are DARTS cells and the
schedule is DARTS' (cosine over 600 epochs, not steps at 150/180/210 of 240); attention-transfer's
code averages its KL over classes as well (a 10x smaller KD term on CIFAR-10), dnas over the batch
as RepDistiller. No published number exists for this teacher/student pair; the teacher alone is
the DARTS paper's network, 2.76 +- 0.09% test error (3.3M parameters). Needs CIFAR-10 prepared for
tensorflow-datasets (`dnas` says how if it is not).
"""

from dnas import configlib
from dnas.spaces import darts_cnn

TEACHER = {"C": 36, "layers": 20}
STUDENT = {"C": 16, "layers": 8}


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    t = c.train
    t.genotype = "darts_v2"
    t.kd_weight, t.kd_temperature = 0.9, 4.0
    variants = ("teacher", "student", "plain", "smoke")
    if arg not in (None, "", *variants):
        raise ValueError(f"unknown argument {arg!r}; valid: {', '.join(variants)}")
    size = TEACHER if arg == "teacher" else STUDENT
    t.C, t.layers = size["C"], size["layers"]
    if arg == "smoke":  # the student's settings on digits, one epoch
        c.dataset = "digits"
        t.C, t.layers, t.epochs, t.batch_size = 4, 3, 1, 32
        t.crop_padding, t.cutout_length = -1, 0
    return c
