"""SNAS (Xie et al., ICLR 2019; SNAS-Series/SNAS-Series): a concrete (Gumbel-softmax) sample of
the mixing weights in every forward pass, temperature linear per epoch from 1 to 0.03.

    dnas search --config experiments/snas/cifar10_search.py           # CIFAR-10, DARTS space
    dnas search --config experiments/snas/cifar10_search.py:resource  # with the resource constraint
    dnas search --config experiments/snas/cifar10_search.py:nb201     # NAS-Bench-201 CIFAR-10
    dnas search --config experiments/snas/cifar10_search.py:smoke     # seconds, on digits
    dnas search --config experiments/snas/cifar10_search.py:resource_smoke

Protocol (the authors' code): 8 cells, C=16, 150 epochs, batch 64, SGD 0.025 cosine to 0.001,
alpha lr 3e-4. `:resource` adds the resource constraint as the authors' README runs it
(`--resource_efficient --log_penalty`, lambda 1e-2): the log of the expected parameters,
multiply-adds and memory access of every edge (`strategies.resource_penalty`).
Differences: SNAS updates alphas and weights on the same training batch (single level); dnas
keeps DARTS' split (alphas on the held-out half). The penalty weights op costs by softmax(alpha)
(the paper's expectation) where the authors' code uses the sampled relaxation.
Paper: 2.85 +- 0.02% CIFAR-10 test error (mild constraint), 2.8M parameters, 1.5 GPU-days.
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def resource(c):
    c.strategy_args.resource_lambda = 1e-2


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "snas"
    c.strategy_args.tau_start = 1.0
    c.strategy_args.tau_end = 0.03
    c.strategy_args.resource_lambda = 0.0
    c.search.epochs = 150
    return configlib.method_variant(c, arg, {"resource": resource})
