"""DARTS search on CIFAR-10 (Liu et al., ICLR 2019, Sec. 3.1 and A.1; quark0/darts train_search.py).

    dnas search --config experiments/darts/cifar10_search.py            # first order
    dnas search --config experiments/darts/cifar10_search.py:second     # exact second order
    dnas search --config experiments/darts/cifar10_search.py:finite_difference
    dnas search --config experiments/darts/cifar10_search.py:smoke      # seconds, on digits

Protocol: 8 cells, C=16, 50 epochs, batch 64, the 50k training images split into 25k for the
weights and 25k for the alphas; weights SGD 0.025 cosine to 0.001, momentum 0.9, wd 3e-4, clip 5;
alphas Adam 3e-4, betas (0.5, 0.999), wd 1e-3; crop + flip, no cutout.
Paper (Table 1): first order 1.5 GPU-days (1080Ti) -> 3.00 +- 0.14% test error after retraining;
second order 4 GPU-days -> 2.76 +- 0.09%.
Second order here is exact autodiff through the unrolled SGD step (momentum, weight decay and
clipping included); `finite_difference` is the paper's Eq. 8 approximation.
Needs CIFAR-10 prepared for tensorflow-datasets (`dnas` says how if it is not).
"""

from dnas import configlib


def get_config(arg: str | None = None):
    c = configlib.default_config()
    c.dataset = "cifar10"
    c.space = "darts_cnn"
    c.strategy = "darts"
    c.order = "first"
    s = c.search
    s.C, s.layers, s.epochs, s.batch_size = 16, 8, 50, 64
    s.crop_padding, s.flip, s.cutout_length = 4, True, 0
    s.remat = True  # per-edge jax.checkpoint: batch 64 needs it for second order (BENCHMARKS.md)
    # The evaluation protocol of `dnas run` (see cifar10_eval.py for the full one).
    t = c.train
    t.C, t.layers, t.epochs, t.batch_size = 36, 20, 600, 96
    t.cutout_length, t.drop_path_prob, t.auxiliary, t.auxiliary_weight = 16, 0.2, True, 0.4
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 50
    if arg in ("second", "finite_difference"):
        c.order = arg
    elif arg == "smoke":
        c.dataset = "digits"
        s.C, s.layers, s.epochs, s.batch_size = 4, 3, 1, 32
        s.crop_padding = -1
        t.C, t.layers, t.epochs, t.batch_size, t.cutout_length = 4, 3, 1, 32, 0
        c.baseline = False
    elif arg:
        raise ValueError(f"unknown argument {arg!r}; valid: second, finite_difference, smoke")
    return c
