"""FBNet's DNAS (Wu et al., CVPR 2019): every block mixes its 9 candidates with a Gumbel-softmax
sample of softmax(alpha) whose temperature falls from 5.0 by exp(-0.045) per epoch, on the
FBNet chain (`fbnet` space: inverted residuals of kernel 3/5, expansion 1/3/6, group-2 1x1
convolutions, or skip).

    dnas search --config experiments/fbnet/imagenet_search.py
    dnas run --config experiments/fbnet/imagenet_search.py:digits
    dnas search --config experiments/fbnet/imagenet_search.py:smoke

The first is the paper's search on ImageNet (fbnet space); `:digits` searches and retrains on
the embedded digits; `:smoke` ends with an `fbnet` genotype (one op per layer) in about 3
minutes on 2 CPU cores (measuring the table, compiling, 7 steps). The digits run's accuracy is
not a published number. The ImageNet search needs the ImageNet data and GPU-days; nobody has
run it with dnas.

Protocol (the paper, Sec. 4.1): the supernet searched on ImageNet-100 (100 random ImageNet
classes; not a dnas dataset: this config uses all of ImageNet) for 90 epochs, the weights on
80% of it with momentum SGD, the alphas on the other 20% with Adam, the temperature 5.0
annealed by exp(-0.045) every epoch. The authors' search code is not released; the optimiser
settings are the widely used PyTorch reproduction's (AnnaAraslanova/FBNet,
`supernet_functions/config_for_supernet.py`): SGD lr 0.1 cosine, momentum 0.9, wd 1e-4, batch
256; alphas Adam lr 0.01, wd 5e-4 (PyTorch's default betas (0.9, 0.999)); the weights alone for
the first 10 epochs (`search.alpha_warmup_epochs`; the paper gives none). dnas alternates an
alpha step and a weight step at every step instead of the paper's per-epoch alternation.
Latency: the paper's loss CE * a * log(LAT)^b, a = 0.2, b = 0.6, LAT the latency under the
Gumbel sample (`hardware.sampled`), on a table dnas measures at the search's start on the device
it runs on (`hardware.lut=measure`, batch 1 as the paper's phone).
Paper: FBNet-B 74.1% ImageNet top-1 at 295M multiply-adds and 23.1 ms on a Samsung S8; search
216 GPU-hours (8 GPUs, 27 hours).
"""

from dnas import configlib


def get_config(arg: str | None = None):
    c = configlib.default_config()
    c.dataset = "imagenet"
    c.space = "fbnet"
    c.strategy = "fbnet"
    c.strategy_args.tau_start = 5.0
    c.strategy_args.tau_decay = 0.045
    s = c.search
    s.C = 16  # the stem width: the paper's widths (1.0x)
    s.epochs, s.alpha_warmup_epochs = 90, 10
    s.batch_size, s.train_portion = 256, 0.8
    s.lr, s.lr_min, s.momentum, s.weight_decay, s.grad_clip = 0.1, 0.0, 0.9, 1e-4, 0.0
    s.alpha_lr, s.alpha_b1, s.alpha_b2, s.alpha_weight_decay = 0.01, 0.9, 0.999, 5e-4
    # FBNet's latency loss CE * a * log(LAT)^b (a = 0.2, b = 0.6; no target), LAT under the
    # step's Gumbel sample, from a table of this supernet measured on the search's own device at
    # batch 1 (the paper's phone; <workdir>/lut.json; --config.hardware.lut=FILE reads one).
    h = c.hardware
    h.objective, h.resource, h.sampled = "mul_logpow", "latency_ms", True
    h.lut, h.lut_batch = "measure", 1
    return configlib.method_variant(c, arg, smoke_changes=configlib.chain_smoke)
