"""GDAS (Dong & Yang, CVPR 2019; D-X-Y/AutoDL-Projects): one op per edge in every forward pass,
sampled by hard Gumbel-softmax with a straight-through gradient; temperature linear per epoch
from 10 to 0.1. `search.single_op` computes only the sampled op (`lax.switch`).

    dnas search --config experiments/gdas/cifar10_search.py           # CIFAR-10, DARTS space
    dnas search --config experiments/gdas/cifar10_search.py:nb201     # NAS-Bench-201 CIFAR-10
    dnas search --config experiments/gdas/cifar10_search.py:smoke     # seconds, on digits

Protocol: the authors' code searches the DARTS space with a fixed reduction cell ("GDAS-FRC"),
6 cells, batch 256, 250 epochs, SGD 0.025 (Nesterov) cosine to 0.001, wd 5e-4; on NAS-Bench-201
240 epochs, batch 64. dnas searches both cell types (no fixed reduction cell), with plain momentum
SGD; the rest follows the code. Alphas: Adam 3e-4 (0.5, 0.999), wd 1e-3, first order.
Other differences from the authors' code: their step updates the weights first and the alphas
second (dnas: alphas first, as DARTS); their DARTS-space genotype keeps the two best
(op, input) pairs of a node, which may share an input (dnas: DARTS' rule, two distinct inputs);
their NAS-Bench-201 cell adds the unsampled ops' (zero) weights as scalars, so those get the
gradient sum(dL/dout) (dnas: no gradient for unsampled ops, as their DARTS-space code).
Paper: 2.82% CIFAR-10 test error (GDAS-FRC, 2.5M parameters), 4 GPU-hours; NAS-Bench-201
CIFAR-10 93.61 +- 0.09% (benchmark paper's run).
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def nb201(c):
    c.search.epochs = 240


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "gdas"
    c.strategy_args.tau_max = 10.0
    c.strategy_args.tau_min = 0.1
    s = c.search
    s.single_op = True
    s.layers, s.batch_size, s.epochs, s.weight_decay = 6, 256, 250, 5e-4
    return configlib.method_variant(c, arg, space_changes={"nb201": nb201})
