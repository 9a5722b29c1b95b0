"""The methods table of BENCHMARKS.md: every method config's `:digits` variant (its search, then
the found cell retrained, on the embedded digits at `dnas run`'s default sizes) for seeds 0, 1
and 2, each seed's random cell retrained once (in the DARTS trial) as the paired baseline.

    dnas study experiments/studies/methods_digits.py        # into runs/study-methods_digits/
    dnas study experiments/studies/methods_digits.py --max-concurrent 2   # two at a time
    dnas study experiments/studies/methods_digits.py --seeds 0-4          # five seeds

A trial takes 3-25 minutes on a 2-core CPU (BENCHMARKS.md); 13 methods x 3 seeds are hours.
"""

import os

from dnas.study import Group, Study, methods

EXPERIMENTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_study():
    return Study(
        groups=[Group(m, f"../{m}/cifar10_search.py:digits") for m in methods(EXPERIMENTS)],
        seeds=(0, 1, 2),
    )
