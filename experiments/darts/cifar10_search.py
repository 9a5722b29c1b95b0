"""DARTS search on CIFAR-10 (Liu et al., ICLR 2019, Sec. 3.1 and A.1; quark0/darts train_search.py).

    dnas search --config experiments/darts/cifar10_search.py            # first order
    dnas search --config experiments/darts/cifar10_search.py:second     # exact second order
    dnas search --config experiments/darts/cifar10_search.py:finite_difference
    dnas search --config experiments/darts/cifar10_search.py:nb201      # NAS-Bench-201 CIFAR-10
    dnas search --config experiments/darts/cifar10_search.py:smoke      # seconds, on digits

Protocol (`darts_cnn.cifar10_protocol`): 8 cells, C=16, 50 epochs, batch 64, the 50k training
images split into 25k for the weights and 25k for the alphas; weights SGD 0.025 cosine to 0.001,
momentum 0.9, wd 3e-4, clip 5; alphas Adam 3e-4, betas (0.5, 0.999), wd 1e-3; crop + flip, no
cutout. Paper (Table 1): first order 1.5 GPU-days (1080Ti) -> 3.00 +- 0.14% test error after
retraining; second order 4 GPU-days -> 2.76 +- 0.09%; NAS-Bench-201 (benchmark paper's runs):
first order 54.30%, second order 54.30% CIFAR-10 test accuracy (collapsed to skip connections).
Second order here is exact autodiff through the unrolled SGD step (momentum, weight decay and
clipping included); `finite_difference` is the paper's Eq. 8 approximation.
Needs CIFAR-10 prepared for tensorflow-datasets (`dnas` says how if it is not).
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def second(c):
    c.order = "second"


def finite_difference(c):
    c.order = "finite_difference"


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy, c.order = "darts", "first"
    variants = {"second": second, "finite_difference": finite_difference}
    return configlib.method_variant(c, arg, variants)
