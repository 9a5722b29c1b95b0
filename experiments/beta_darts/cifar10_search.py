"""beta-DARTS (Ye et al., CVPR 2022; Sunshine-Ye/Beta-DARTS): the Beta-Decay regulariser,
lambda * mean over edges of logsumexp(alpha), in the alpha objective; lambda = 50 * epoch / epochs.

    dnas search --config experiments/beta_darts/cifar10_search.py          # CIFAR-10
    dnas search --config experiments/beta_darts/cifar10_search.py:nb201    # NAS-Bench-201
    dnas search --config experiments/beta_darts/cifar10_search.py:smoke    # seconds, on digits

Protocol: the authors' NAS-Bench-201 code (100 epochs, lambda 50 * epoch / 100, weight decay
3e-4, alpha weight decay kept at 1e-3, first order); their DARTS-space script did not give its
lambda, so the CIFAR-10 config uses the same schedule over DARTS' 50 epochs.
Paper: CIFAR-10 2.53 +- 0.08% and NAS-Bench-201 CIFAR-10 94.36% (as reported; not re-checked).
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def nb201(c):
    c.search.epochs, c.search.weight_decay = 100, 3e-4  # nasbench201/train_search.py


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "beta_darts"
    c.strategy_args.lambda_max = 50.0
    return configlib.method_variant(c, arg, space_changes={"nb201": nb201})
