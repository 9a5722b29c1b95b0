"""SGAS search on CIFAR-10 (Li et al., "SGAS: Sequential Greedy Architecture Search", CVPR 2020;
lightaime/sgas `cnn/train_search.py`): DARTS' supernet and first-order search, the edges decided
one at a time and frozen as it goes (`dnas/sgas.py`).

    dnas search --config experiments/sgas/cifar10_search.py            # criterion 1
    dnas search --config experiments/sgas/cifar10_search.py:cri2       # criterion 2 (stability)
    dnas search --config experiments/sgas/cifar10_search.py:freq7      # 7 epochs between decisions
    dnas run --config experiments/sgas/cifar10_search.py:digits        # beside DARTS, BENCHMARKS.md
    dnas run --config experiments/sgas/cifar10_search.py:digits --config.search.sgas_shrink=true
    dnas search --config experiments/sgas/cifar10_search.py:nb201      # NAS-Bench-201 CIFAR-10
    dnas search --config experiments/sgas/cifar10_search.py:smoke      # seconds, on digits

Protocol (the authors' defaults): DARTS' CIFAR-10 search (`darts_cnn.cifar10_protocol`: 8 cells,
C=16, batch 64, half of the training set for the alphas, SGD 0.025 cosine to 0.001, alphas Adam
3e-4, first order), 50 epochs = 9 + 5 x (8 - 1) + 5 + 1: the first decision after 10 epochs,
one every 5 epochs in each cell type (8 per type: 2 inputs for each of 4 nodes; a node's other
edges are pruned once 2 are decided), 5 epochs after the last. Criterion 2's history: 4 epochs.
The cell is then retrained with the DARTS protocol (`experiments/darts/cifar10_eval.py`).

Reported (genotypes.py of the authors' code, 10 searches each, DARTS retraining): criterion 1
2.66 +- 0.24% test error, 3.66M parameters (best 2.39%, 3.8M); criterion 2 2.67 +- 0.21%, 3.91M
(best 2.44%, 4.1M); 0.25 GPU-days (1080Ti). ImageNet (mobile setting, the best cells): 24.22% /
24.13% top-1.

Differences: the authors' batch grows by 8 after every decision epoch (64 -> 128); dnas keeps
64 (one batch, one data order for the whole search). Their published numbers predate their fix of
a pruned edge re-adding the previous edge's output (commit 980ec71, 2020-11); dnas computes the
fixed cell. The supernet's BatchNorm uses batch statistics in the validation pass too (the
reference tracks running ones). Decided edges compute their op alone and pruned edges nothing,
one compiled program per decision (`search.sgas_shrink`).
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def cri2(c):
    c.search.sgas = "cri2"


def freq7(c):  # the authors' ablation: "more stable"; 9 + 7 x 7 + 5 + 1 = 64 epochs
    c.search.sgas_decision_freq, c.search.epochs = 7, 64


def digits(c):
    """`dnas run`'s digits sizes and budget (15 search epochs, as every method's `:digits`):
    decisions after epochs 3, 4, ..., 10, then 5 epochs of the decided supernet. One program
    (`sgas_shrink` off): on a 2-core CPU each program of this supernet compiles in ~1.5-3
    minutes, so the 8 recompiles of a shrinking search would cost more than the whole search
    (BENCHMARKS.md)."""
    configlib.digits(c)
    c.search.sgas_warmup_epochs, c.search.sgas_decision_freq = 2, 1
    c.search.sgas_shrink = False


def nb201(c):
    """NAS-Bench-201: 6 edges, every one decided (none pruned), within the 50 epochs."""
    c.search.sgas_warmup_epochs, c.search.sgas_decision_freq = 9, 5


def smoke(c):
    """A decision after every epoch (8 in a DARTS cell), one program (`sgas_shrink` off)."""
    c.search.epochs, c.search.sgas_warmup_epochs, c.search.sgas_decision_freq = 8, 0, 1
    c.search.sgas_shrink = False


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy, c.order = "darts", "first"
    s = c.search
    s.epochs = 50
    s.sgas, s.sgas_warmup_epochs, s.sgas_decision_freq, s.sgas_history = "cri1", 9, 5, 4
    variants = {"cri2": cri2, "freq7": freq7, "digits": digits}
    return configlib.method_variant(c, arg, variants, {"nb201": nb201}, smoke)
