"""DARTS- (Chu et al., ICLR 2021; Meituan-AutoML/DARTS-): an auxiliary skip connection on every
edge, weighted by beta = 1 - epoch / epochs (linear decay, not learned).

    dnas search --config experiments/darts_minus/cifar10_search.py         # CIFAR-10
    dnas search --config experiments/darts_minus/cifar10_search.py:nb201   # NAS-Bench-201
    dnas search --config experiments/darts_minus/cifar10_search.py:smoke   # seconds, on digits

Protocol (the authors' code): DARTS' (50 epochs, batch 64, SGD 0.025 cosine to 0.001, alphas
Adam 3e-4, first order). Difference: on reduction edges the authors' auxiliary path is its own
FactorizedReduce; dnas reuses the edge's skip_connect op (the same function, shared weights).
Paper: 2.50 +- 0.08% CIFAR-10 test error (as reported in the paper; not re-checked here).
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "darts_minus"
    c.strategy_args.beta_start = 1.0
    c.strategy_args.beta_end = 0.0
    return configlib.method_variant(c, arg)
