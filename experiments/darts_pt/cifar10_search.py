"""DARTS-PT (Wang et al., ICLR 2021; ruocwang/darts-pt): perturbation-based architecture selection
on the trained DARTS supernet instead of the argmax of the alphas.

    dnas search --config experiments/darts_pt/cifar10_search.py              # DARTS + PT
    dnas search --config experiments/darts_pt/cifar10_search.py:sdarts_rs    # SDARTS-RS + PT
    dnas search --config experiments/darts_pt/cifar10_search.py:nb201        # NAS-Bench-201
    dnas search --config experiments/darts_pt/cifar10_search.py:smoke        # seconds, on digits

Protocol (the authors' scripts): DARTS' 50-epoch search, then one decision every 5 epochs of
fine-tuning (weights at lr / 10, cosine; alphas keep learning): 14 operation decisions (a random
edge of each cell type; the op whose removal drops validation accuracy most), then 3 topology
decisions; accuracy on the whole 25k-image validation split (the authors' valid_queue; here 391
batches of 64 drawn from the shuffled split, about one pass).
Paper: DARTS+PT 2.61 +- 0.08%, SDARTS-RS+PT 2.54 +- 0.10% CIFAR-10 test error (as reported;
not re-checked). The fine-tuning is checkpointed in <workdir>/pt/ and resumes after an interruption.
"""

from dnas import configlib
from dnas.spaces import darts_cnn


def sdarts_rs(c):
    c.strategy = "sdarts"
    a = c.strategy_args
    a.mode, a.epsilon_start, a.epsilon_end, a.pgd_steps = "rs", 0.03, 0.3, 7


def get_config(arg: str | None = None):
    c = darts_cnn.cifar10_protocol(configlib.default_config())
    c.strategy = "darts"
    s = c.search
    s.selection, s.pt_interval, s.pt_eval_batches = "pt", 5, 391
    c = configlib.method_variant(c, arg, {"sdarts_rs": sdarts_rs})
    if arg and arg.endswith("smoke"):
        s.pt_interval, s.pt_eval_batches = 1, 2
    return c
