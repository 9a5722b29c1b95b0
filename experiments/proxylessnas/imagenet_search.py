"""ProxylessNAS (Cai, Zhu & Han, ICLR 2019; mit-han-lab/proxylessnas `search/`): binary gates,
one sampled path per block in the weight step and two in the alpha step (mode 'two', the pair's
alphas rescaled after each update), on the MobileNetV2 chain (`proxyless` space: MBConv kernel
3/5/7, expansion 3/6, or `zero` where the block has a shortcut).

    dnas search --config experiments/proxylessnas/imagenet_search.py
    dnas run --config experiments/proxylessnas/imagenet_search.py:digits
    dnas search --config experiments/proxylessnas/imagenet_search.py:smoke

The first is the paper's search on ImageNet (proxyless space); `:digits` searches and retrains on
the embedded digits; `:smoke` ends with a `proxyless` genotype (one op per block) in about 2
minutes on 2 CPU cores (measuring the table, compiling, 7 steps). The digits run's accuracy is
not a published number. The ImageNet search needs the ImageNet data and GPU-days; nobody has
run it with dnas.

Protocol (the authors' code, `search/imagenet_arch_search.py` and `nas_manager.py`): 40
weights-only warm-up epochs (paths sampled from the initial alphas; their own cosine from lr
0.05), then 120 epochs of search with SGD lr 0.025 cosine, Nesterov momentum 0.9, wd 4e-5,
label smoothing 0.1, batch 256, and no architecture update in its first epoch; 50,000 training
images held out for the alphas; alphas initialised N(0, 1e-3), Adam lr 1e-3, betas (0, 0.999),
eps 1e-8, no weight decay, one update every 5 weight steps (`grad_update_arch_param_every`) on a
validation batch of 256. Here: 160 epochs on one cosine from 0.025 with the first 41 of them
weights-only (`search.alpha_warmup_epochs`), plain momentum, no label smoothing, no gradient
clipping; alpha steps at every 5th step counted from the run's start (theirs: the 5th, 10th, ...
batch of each epoch). The released code's default binary mode is 'full_v2' (the gradient of
mode 'full', the other paths computed in the backward pass only): `strategy_args.mode=full`.
Latency: the paper's loss CE * a * (log E[LAT] / log T)^b, a = 0.2, b = 0.3 (`mul#log`, E[LAT]
under softmax(alpha)), T = 5.1 ms, on a table dnas measures at the search's start on the device
it runs on (`hardware.lut=measure`, batch 8 as the paper's GPU figure; `:digits`: batch 1,
T = 4 ms, inside the 3-6 ms of random networks of that size on a 2-core CPU).
Paper: ProxylessNAS-GPU 75.1% ImageNet top-1 at 5.1 ms on a V100 (batch 8); search 200
GPU-hours (V100).
"""

from dnas import configlib


def get_config(arg: str | None = None):
    c = configlib.default_config()
    c.dataset = "imagenet"
    c.space = "proxyless"
    c.strategy = "proxylessnas"
    c.strategy_args.mode = "two"
    c.strategy_args.alpha_every = 5
    s = c.search
    s.C = 32  # the stem width: the paper's widths (1.0x)
    s.epochs, s.alpha_warmup_epochs = 160, 41
    s.batch_size, s.train_portion = 256, 0.96  # 50,000 of ImageNet's 1,281,167 for the alphas
    s.lr, s.lr_min, s.momentum, s.weight_decay, s.grad_clip = 0.025, 0.0, 0.9, 4e-5, 0.0
    s.alpha_lr, s.alpha_b1, s.alpha_b2, s.alpha_weight_decay = 1e-3, 0.0, 0.999, 0.0
    s.alpha_init_scale = 1e-3
    # The latency loss `mul#log` (a = 0.2, b = 0.3) at ProxylessNAS-GPU's 5.1 ms, E[LAT] under
    # softmax(alpha), from a table of this supernet measured on the search's own device at the
    # paper's GPU batch of 8 (<workdir>/lut.json; --config.hardware.lut=FILE reads one instead).
    h = c.hardware
    h.objective, h.resource, h.target = "mul_log", "latency_ms", 5.1
    h.lut, h.lut_batch = "measure", 8
    return configlib.method_variant(
        c, arg, variants={"digits": _digits}, smoke_changes=configlib.chain_smoke
    )


def _digits(c):
    """The digits sizes (`configlib.digits`), a latency table at batch 1, and a target inside
    the range of this space's networks at that size on a 2-core CPU (random networks measure
    3-6 ms there: `dnas latency --random 30`); set yours from your device's table."""
    c = configlib.digits(c)
    c.hardware.lut_batch, c.hardware.target = 1, 4.0
    return c
