"""PC-DARTS (Xu et al., ICLR 2020; yuhuixu1993/PC-DARTS train_search.py): partial channel
connections (K=4, channel shuffle, 2x2 max-pooled bypass on reduction edges) and edge
normalisation (a beta per edge, softmax over each node's incoming edges).

    dnas search --config experiments/pc_darts/cifar10_search.py          # CIFAR-10, DARTS space
    dnas search --config experiments/pc_darts/cifar10_search.py:nb201    # NAS-Bench-201 CIFAR-10
    dnas search --config experiments/pc_darts/cifar10_search.py:smoke    # seconds, on digits

Protocol (the authors' code): DARTS' 8-cell C=16 supernet, 50 epochs, batch 256, SGD 0.1 cosine
to 0, wd 3e-4; alphas and betas Adam 6e-4 (0.5, 0.999), wd 1e-3, first order, and updated
only from epoch 15 (weights-only warm-up). Retraining: DARTS' protocol.
Paper: 2.57 +- 0.07% CIFAR-10 test error, 3.6M parameters, 0.1 GPU-days (1080Ti).
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "pc_darts"
    s = c.search
    s.partial_channels = 4
    s.batch_size, s.lr, s.lr_min, s.alpha_lr = 256, 0.1, 0.0, 6e-4
    s.alpha_warmup_epochs = 15
    return configlib.method_variant(c, arg)
