"""SDARTS (Chen & Hsieh, ICML 2020; xiangning-chen/SmoothDARTS): the weight step trains on
perturbed softmax weights, random (RS) or adversarial (ADV: 7-step L-inf PGD); eps rises
0.03 -> 0.3 linearly over the epochs.

    dnas search --config experiments/sdarts/cifar10_search.py              # SDARTS-RS
    dnas search --config experiments/sdarts/cifar10_search.py:adv          # SDARTS-ADV
    dnas search --config experiments/sdarts/cifar10_search.py:nb201        # NAS-Bench-201, RS
    dnas search --config experiments/sdarts/cifar10_search.py:adv_smoke    # seconds, on digits

Protocol (the authors' code): DARTS' (50 epochs, batch 64, SGD 0.025 cosine to 0.001, alphas Adam
3e-4, first order). Paper: RS 2.67 +- 0.03%, ADV 2.61 +- 0.02% CIFAR-10 test error (as reported;
not re-checked).
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def adv(c):
    c.strategy_args.mode = "adv"


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "sdarts"
    a = c.strategy_args
    a.mode, a.epsilon_start, a.epsilon_end, a.pgd_steps = "rs", 0.03, 0.3, 7
    return configlib.method_variant(c, arg, {"adv": adv})
