"""Every method on CIFAR-10 as its paper runs it, 5 seeds: each method config's search protocol,
then the found cell retrained with the DARTS evaluation protocol (20 cells, C=36, 600 epochs,
batch 96, cutout, drop-path, auxiliary head), each seed's random cell retrained under the same
protocol as the paired baseline. One GPU per trial. README.md ("A study on paper") estimates
420 GPU-hours: 2.2 days on 8 GPUs, about 14 hours on 32.

    ray start --head                  # on one node; `ray start --address=HEAD:6379` on the others
    dnas study experiments/studies/methods_cifar10.py --dir /shared/methods --address HEAD:6379

Needs CIFAR-10 prepared for tensorflow-datasets on every node (`dnas` says how if it is not).
"""

import os

from dnas.study import Group, Study, methods

EXPERIMENTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_study():
    return Study(
        groups=[Group(m, f"../{m}/cifar10_search.py") for m in methods(EXPERIMENTS)],
        seeds=(0, 1, 2, 3, 4),
        resources={"num_gpus": 1},
    )
