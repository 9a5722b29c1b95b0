"""P-DARTS (Chen et al., ICCV 2019; chenxin061/pdarts): three search stages of 5, 11 and 17 cells,
each a fresh supernet over the ops the previous stage kept (8 -> 5 -> 3 per edge), alphas learned
after a 10-epoch weights-only warm-up in each stage, dropout on the skip connections (0.1, 0.4,
0.7 per stage, decaying within each stage); the final normal cell keeps at most 2 skip
connections.

    dnas search --config experiments/pdarts/cifar10_search.py          # CIFAR-10, DARTS space
    dnas search --config experiments/pdarts/cifar10_search.py:smoke    # seconds, on digits

Protocol (the authors' code): 25 epochs per stage, batch 96, SGD 0.025 cosine to 0, wd 3e-4;
alphas Adam 6e-4 (0.5, 0.999), wd 1e-3, first order; skip dropout as the README's CIFAR-10
command. Difference: the skip cap M=2 is applied automatically (the authors log every M and pick
2 by hand).
Paper: 2.50% CIFAR-10 test error, 3.4M parameters, 0.3 GPU-days (as reported; not re-checked).
"""

from dnas import configlib, spaces
from dnas.spaces import darts_cnn


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "pdarts"
    a = c.strategy_args
    a.stage_layers, a.keep, a.max_skips = (5, 11, 17), (5, 3, 1), 2
    a.dropout_rate = (0.1, 0.4, 0.7)
    s = c.search
    s.epochs, s.batch_size, s.lr_min, s.alpha_lr, s.alpha_warmup_epochs = 25, 96, 0.0, 6e-4, 10
    c = configlib.method_variant(c, arg)
    if arg and arg.endswith("smoke"):
        tiny = spaces.get(c.space).tiny_layers  # DARTS: 3, the fewest cells with a normal cell
        a.stage_layers = (tiny, tiny + 1, tiny + 2)
    return c
