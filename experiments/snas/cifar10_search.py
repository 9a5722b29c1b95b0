"""SNAS (Xie et al., ICLR 2019; SNAS-Series/SNAS-Series): a concrete (Gumbel-softmax) sample of
the mixing weights in every forward pass, temperature linear per epoch from 1 to 0.03.

    dnas search --config experiments/snas/cifar10_search.py           # CIFAR-10, DARTS space
    dnas search --config experiments/snas/cifar10_search.py:nb201     # NAS-Bench-201 CIFAR-10
    dnas search --config experiments/snas/cifar10_search.py:smoke     # seconds, on digits

Protocol (the authors' code): 8 cells, C=16, 150 epochs, batch 64, SGD 0.025 cosine to 0.001,
alpha lr 3e-4. Differences: SNAS updates alphas and weights on the same training batch (single
level) and adds an optional resource penalty; dnas keeps DARTS' split (alphas on the held-out
half) and has no resource penalty.
Paper: 2.85 +- 0.02% CIFAR-10 test error (mild constraint), 2.8M parameters, 1.5 GPU-days.
"""

from dnas import configlib


def get_config(arg: str | None = None):
    c = configlib.darts_cifar10(configlib.default_config())
    c.strategy = "snas"
    c.strategy_args.tau_start = 1.0
    c.strategy_args.tau_end = 0.03
    c.search.epochs = 150
    return configlib.method_variant(c, arg)
