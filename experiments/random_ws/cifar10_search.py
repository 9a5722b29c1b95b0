"""Random search with weight sharing (Li & Talwalkar, UAI 2019): every step trains the shared
supernet weights of one uniformly sampled op per edge (alphas are not learned); then sampled
architectures are ranked by validation accuracy with the shared weights (`:evolution` ranks
candidates proposed by regularised evolution, Real et al. 2019, instead).

    dnas search --config experiments/random_ws/cifar10_search.py          # CIFAR-10
    dnas search --config experiments/random_ws/cifar10_search.py:nb201    # NAS-Bench-201
    dnas search --config experiments/random_ws/cifar10_search.py:evolution
    dnas search --config experiments/random_ws/cifar10_search.py:smoke    # seconds, on digits

Protocol: DARTS' supernet and schedule; as the authors' code (random_weight_share.py), 1000
architectures scored on 10 validation batches, the 10 best re-scored on the whole validation
split, the best of those kept (the paper then retrains a few finalists: `dnas train` does that).
Paper: 2.85 +- 0.08% CIFAR-10 test error (as reported; not re-checked).
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def evolution(c):
    c.search.selection = "evolution"


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "random_ws"
    s = c.search
    s.single_op = True
    s.selection, s.selection_archs, s.selection_batches, s.selection_rerank = "random", 1000, 10, 10
    c = configlib.method_variant(c, arg, {"evolution": evolution})
    if arg and arg.endswith("smoke"):
        s.selection_archs, s.evolution_population, s.evolution_sample_size = 12, 6, 3
        s.selection_batches, s.selection_rerank = 4, 3
    return c
