"""SGAS beside DARTS on the embedded digits (BENCHMARKS.md): both at `dnas run`'s digits sizes and
budget (15 search epochs; SGAS decides its 8 edges per cell type after epochs 3-10), the found
cell retrained, for seeds 0, 1 and 2; each seed's random cell retrained once (in the DARTS
trial) as the paired baseline. SGAS' `:digits` compiles one program for the whole search
(`search.sgas_shrink=false`: on this CPU the 8 recompiles of a shrinking supernet cost more than
the search). The trials run side by side, so their search times compare.

    dnas study experiments/studies/sgas_digits.py --max-concurrent 2   # runs/study-sgas_digits/
"""

import os

from dnas.study import Group, Study

EXPERIMENTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SGAS = os.path.join(EXPERIMENTS, "sgas", "cifar10_search.py:digits")


def get_study():
    return Study(
        groups=[
            Group("darts", os.path.join(EXPERIMENTS, "darts", "cifar10_search.py:digits")),
            Group("sgas", SGAS),
        ],
        seeds=(0, 1, 2),
    )
