"""FairDARTS (Chu et al., ECCV 2020; xiaomi-automl/FairDARTS): independent sigmoid weights per op
(no `none`), alphas initialised to 0, zero-one loss weight 10 in the alpha objective.

    dnas search --config experiments/fair_darts/cifar10_search.py          # CIFAR-10
    dnas search --config experiments/fair_darts/cifar10_search.py:smoke    # seconds, on digits

Protocol (the authors' code): 50 epochs, batch 128, SGD 0.005 cosine to 0.001, wd 3e-4; alphas
Adam 3e-3 (0.9, 0.999), wd 1e-3, first order. Difference: their genotype drops kept edges whose
sigmoid is below 0.85 (nodes may keep fewer than two inputs); dnas keeps DARTS' two per node.
Paper: 2.54 +- 0.05% CIFAR-10 test error (97.46%, 7 runs), 3.32M parameters.
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "fair_darts"
    c.strategy_args.zero_one_weight = 10.0
    s = c.search
    s.batch_size, s.lr = 128, 0.005
    s.alpha_lr, s.alpha_b1 = 3e-3, 0.9
    return configlib.method_variant(c, arg)
