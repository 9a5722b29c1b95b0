r"""DARTS evaluation on CIFAR-10: train a genotype from scratch (Liu et al., ICLR 2019, Sec. 3.3
and A.2; quark0/darts train.py).

    dnas train --config experiments/darts/cifar10_eval.py          # DARTS_V2
    dnas train --config experiments/darts/cifar10_eval.py \
        --config.train.genotype=runs/search-x/genotype.json        # a searched cell
    dnas train --config experiments/darts/cifar10_eval.py:smoke    # seconds, on digits

Protocol: 20 cells, C=36, 600 epochs, batch 96, SGD 0.025 cosine to 0, momentum 0.9, wd 3e-4,
clip 5, auxiliary head weight 0.4, drop-path 0.2 (ramped), cutout 16, crop + flip.
Paper: DARTS_V2 (second order) 2.76 +- 0.09% test error, 3.3M parameters, 1.5 days on one
1080Ti; DARTS_V1 (first order) 3.00 +- 0.14%.
"""

from dnas import configlib


def get_config(arg: str | None = None):
    c = configlib.default_config()
    c.dataset = "cifar10"
    t = c.train
    t.genotype = "darts_v2"
    t.C, t.layers, t.epochs, t.batch_size = 36, 20, 600, 96
    t.lr, t.lr_min, t.momentum, t.weight_decay, t.grad_clip = 0.025, 0.0, 0.9, 3e-4, 5.0
    t.auxiliary, t.auxiliary_weight, t.drop_path_prob = True, 0.4, 0.2
    t.crop_padding, t.flip, t.cutout_length = 4, True, 16
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 100
    if arg == "smoke":
        c.dataset = "digits"
        t.C, t.layers, t.epochs, t.batch_size = 4, 3, 1, 32
        t.crop_padding, t.cutout_length = -1, 0
    elif arg:
        raise ValueError(f"unknown argument {arg!r}; valid: smoke")
    return c
