"""DrNAS (Chen et al., ICLR 2021; xiangning-chen/DrNAS): mixing weights sampled from a Dirichlet
with concentration elu(alpha) + 1 in every forward pass, pathwise gradients; L2 regularisation
of the alphas (the authors' default, as the alpha optimiser's weight decay), or `:kl` for the
KL-to-Dir(1) regulariser.

    dnas search --config experiments/drnas/cifar10_search.py           # CIFAR-10, DARTS space
    dnas search --config experiments/drnas/cifar10_search.py:kl        # KL regulariser
    dnas search --config experiments/drnas/cifar10_search.py:progressive        # the paper's
    dnas search --config experiments/drnas/cifar10_search.py:progressive_smoke  # seconds
    dnas search --config experiments/drnas/cifar10_search.py:nb201     # NAS-Bench-201 CIFAR-10
    dnas search --config experiments/drnas/cifar10_search.py:smoke     # seconds, on digits

Protocol: the paper's CIFAR-10 result uses the progressive search, `:progressive`
(`dnas.progressive.run_drnas`): 20-cell C=36 supernet, partial channels K 6 -> 4, ops per edge
8 -> 4, two stages of 25 epochs under one cosine learning rate 0.1 -> 0, alphas from epoch 10 of
each stage, batch 64, alpha lr 6e-4. The default runs the non-progressive search on DARTS'
8-cell supernet with that learning-rate setting. Differences: each stage's supernet weights
start afresh (the authors widen the previous stage's with net2wider); the op set keeps `none`
(the authors' DARTS-space list has 7 ops without it). `:nb201` follows their
201-space/train_search.py (100 epochs, weight decay 3e-4, no warm-up, no partial channels).
Paper: 2.46 +- 0.03% CIFAR-10 test error, 4.1M parameters, 0.6 GPU-days; NAS-Bench-201 test
94.36 / 73.51 / 46.34% (CIFAR-10 / CIFAR-100 / ImageNet16-120).
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def kl(c):
    c.strategy_args.reg_type = "kl"
    c.strategy_args.reg_scale = 1e-3
    c.search.alpha_weight_decay = 0.0


def progressive(c):
    a, s = c.strategy_args, c.search
    a.progressive, a.stage_epochs, a.stage_partial_channels, a.keep = True, (25, 25), (6, 4), (4,)
    s.C, s.layers = 36, 20


def nb201(c):
    """The authors' 201-space/train_search.py: 100 epochs, weight decay 3e-4, alphas learn from
    the first step (no warm-up)."""
    c.search.epochs, c.search.weight_decay, c.search.alpha_warmup_epochs = 100, 3e-4, 0


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "drnas"
    c.strategy_args.reg_type = "l2"  # its scale: search.alpha_weight_decay
    s = c.search
    s.lr, s.lr_min, s.alpha_lr, s.alpha_weight_decay = 0.1, 0.0, 6e-4, 1e-3
    s.alpha_warmup_epochs = 10
    c = configlib.method_variant(c, arg, {"kl": kl, "progressive": progressive}, {"nb201": nb201})
    if arg == "progressive_smoke":  # the smoke supernet's 4 channels
        c.strategy_args.stage_epochs, c.strategy_args.stage_partial_channels = (2, 2), (2, 1)
    return c
