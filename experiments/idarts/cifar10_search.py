"""iDARTS (Zhang et al., ICML 2021): the implicit-function-theorem hypergradient, the inverse
Hessian of the training loss by a 3-term Neumann series of exact Hessian-vector products with
step = the weight learning rate.

    dnas search --config experiments/idarts/cifar10_search.py          # CIFAR-10
    dnas search --config experiments/idarts/cifar10_search.py:nb201    # NAS-Bench-201
    dnas search --config experiments/idarts/cifar10_search.py:smoke    # seconds, on digits

Protocol: DARTS'. Difference: the authors' code approximates the Hessian by a diagonal surrogate
and takes 5 weight steps before each hypergradient; dnas uses the paper's formula with exact
Hessian-vector products at the current weights.
Paper: NAS-Bench-201 test 93.58 / 70.83 / 40.89% (CIFAR-10 / CIFAR-100 / ImageNet16-120).
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "idarts"
    c.strategy_args.neumann_steps = 2
    return configlib.method_variant(c, arg)
