"""A small study: DARTS and GDAS on the NAS-Bench-201 space at `:smoke` sizes (the embedded
digits, seconds per trial), seeds 0 and 1, each seed's random cell retrained as the baseline.
Notebook 3 runs it when it finds no study of yours; the tests kill and restart it.

    dnas study experiments/studies/smoke.py          # into runs/study-smoke/
    dnas plot runs/study-smoke                       # its table drawn

Each trial checkpoints every 5 steps, so a killed study loses little when it is run again, and
retrains one cell per stage (`:smoke` has three) at batch 64: the study's minutes are mostly
compilation, and a deeper network only compiles longer.
"""

from dnas.study import Group, Study


def get_study():
    return Study(
        groups=[
            Group("darts", "../darts/cifar10_search.py:nb201_smoke"),
            Group("gdas", "../gdas/cifar10_search.py:nb201_smoke"),
        ],
        seeds=(0, 1),
        overrides={"checkpoint_every_steps": 5, "train.layers": 1, "train.batch_size": 64},
    )
