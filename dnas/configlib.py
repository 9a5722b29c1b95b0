"""Configurations: the embedded default, config files and command-line overrides.

A config file is a Python file with `get_config(arg=None) -> ml_collections.ConfigDict` (big_vision,
flax examples); `path.py:arg` passes `arg`. It usually starts from `default_config()` and overrides
what differs. A workdir's `config.json` (or the workdir) is a config too (`load_json`). Overrides
`--config.a.b=value` are parsed with the type of the existing field (a field that is None takes
true, false, none or a Python literal; `strategy_args.NAME` takes any name, its value a literal or
else text); an unknown key or a value of the wrong type is a one-line `ConfigError`.

`FIELDS` documents every field and its valid values; `validate(config)`, which every entry point
calls before anything compiles or is written, checks them and the combinations that make no sense
(one-line `ConfigError`s naming the key, the value and the range). The ConfigDict stops at the
`run()` functions: library code takes typed arguments.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import json
import math
import numbers
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import ml_collections
import optax

from dnas import bilevel, data, errors, hardware, ops, spaces, strategies
from dnas import workdir as workdir_lib
from dnas.genotype import show

ConfigError = errors.ConfigError


def _text():
    from dnas import text  # the text datasets, imported where a config names one

    return text


def _stage_config(**sizes: Any) -> ml_collections.ConfigDict:
    """The fields the search and the retraining share (`_stage_fields`): network size, epochs,
    batch, the SGD's learning rates (`sizes`) and its momentum, decay and clipping."""
    return ml_collections.ConfigDict(sizes | {"momentum": 0.9, "weight_decay": 3e-4,
                                              "grad_clip": 5.0})  # fmt: skip


def default_config() -> ml_collections.ConfigDict:
    """The embedded default: DARTS space, first order, on the 8x8 digits (no download).

    `dnas run` with it searches for ~2 minutes and retrains the searched and a random cell for
    ~1 minute each on a 2-core CPU; the searched cell reaches ~98% test accuracy. Every field is
    documented, with its valid values, in `FIELDS` (`dnas config` prints them).
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = "digits"
    c.data_dir = ""
    c.data = ml_collections.ConfigDict()
    c.data.text_dir = ""
    c.space = spaces.DEFAULT  # the DARTS cell space
    c.strategy = "darts"
    c.order = "first"
    c.strategy_args = ml_collections.ConfigDict()

    c.search = s = _stage_config(C=4, layers=5, epochs=15, batch_size=64, lr=0.025, lr_min=0.001)
    s.train_portion = 0.5
    s.lr_schedule_epochs = 0
    s.lr_offset_epochs = 0
    s.alpha_lr = 3e-4
    s.alpha_b1 = 0.5
    s.alpha_b2 = 0.999
    s.alpha_weight_decay = 1e-3
    s.alpha_init_scale = 1e-3
    s.alpha_warmup_epochs = 0
    s.fd_clip = False
    s.sep_impl = "auto"  # the fastest form on this device (autotune.py)
    s.remat = False
    s.partial_channels = 1
    s.single_op = False
    # Collapse diagnostics and DARTS+ early stopping (search.EpochMonitor).
    s.hessian_every_epochs = 0
    s.hessian_iters = 20
    # Each op's share of its edge's output, logged for `dnas explain` (search.EpochMonitor).
    s.explain_every_epochs = 0
    s.early_stop = ""
    s.early_stop_skips = 2
    s.early_stop_patience = 10
    # Selection with the trained supernet instead of the alphas (selection.py, pt.py).
    s.selection = ""
    s.selection_archs = 100
    s.selection_batches = 4
    s.selection_rerank = 0
    s.evolution_population = 20
    s.evolution_sample_size = 5
    s.pt_interval = 5
    s.pt_eval_batches = 10
    s.crop_padding = -1
    s.flip = None
    s.cutout_length = 0
    s.sgas = ""  # SGAS' edge-by-edge decisions (dnas/sgas.py): '' off, cri1, cri2
    s.sgas_warmup_epochs = 9
    s.sgas_decision_freq = 5
    s.sgas_history = 4
    s.sgas_shrink = True
    s.sgas_freeze_decided = False
    s.teacher = ""  # distillation in the weight step (as train.teacher): '' off
    s.kd_weight = 0.9
    s.kd_temperature = 4.0

    # Hardware-aware search (issue 15; search_step.HardwareObjective): off where objective is ''.
    c.hardware = h = ml_collections.ConfigDict()
    h.objective = ""
    h.resource = "latency_ms"
    h.target = 0.0
    h.lut = ""
    h.lut_batch = 1
    h.sampled = False
    h.discretise = ""
    h.floor = 0.0
    h.a = None
    h.b = None
    h.scale = None

    # Ground truth of a benchmark space (Space.ground_truth): logged, never used by the search.
    c.benchmark = ml_collections.ConfigDict()
    c.benchmark.table = ""

    c.train = t = _stage_config(C=8, layers=5, epochs=30, batch_size=64, lr=0.05, lr_min=0.0)
    t.genotype = ""
    t.auxiliary = True
    t.auxiliary_weight = 0.4
    t.drop_path_prob = 0.1
    t.crop_padding = -1
    t.flip = None
    t.cutout_length = -1
    t.sep_impl = "auto"
    t.teacher = ""  # knowledge distillation (dnas/distill.py): '' off
    t.kd_weight = 0.9
    t.kd_temperature = 4.0

    # Language models (the text spaces, dnas/lm.py): batching, regularisation, NT-ASGD.
    c.text = x = ml_collections.ConfigDict()
    x.level = ""
    x.max_tokens = 0
    x.bptt = 35
    x.max_seq_len_delta = 20
    x.search_lengths = "halve"
    x.train_lengths = "normal"
    x.eval_batch_size = 10
    x.test_batch_size = 1
    x.tar_beta = 1e-3
    x.dropout = None
    x.dropouth = None
    x.dropoutx = None
    x.dropouti = None
    x.dropoute = None
    x.nonmono = 5

    c.sweep = ml_collections.ConfigDict()  # dnas sweep (dnas/sweep.py)
    c.sweep.seeds = ""
    c.sweep.param = ""
    c.sweep.param_values = ""

    c.num_devices = 0
    c.precision = "float32"
    c.compilation_cache_dir = "~/.cache/dnas/xla"
    c.baseline = True
    c.checkpoint_every_steps = 200
    c.log_every_steps = 20
    c.progress = True
    return c


# ---------------------------------------------------------------------------------------------
# The fields: what each means and which values it takes. `validate` checks a config against
# them (and checks the combinations that make no sense) before anything compiles or is written.


class Check(NamedTuple):
    """The values a config field takes: `ok(value)`, and `words()` naming them (a function:
    registries such as `spaces.SPACES` may grow after import)."""

    ok: Callable[[Any], bool]
    words: Callable[[], str]
    numeric: bool = False  # a refused value is "out of range" (else "not valid")


class Field(NamedTuple):
    doc: str
    check: Check

    def refusal(self, key: str, value: Any) -> str | None:
        """None if `value` is valid for field `key`, else the one-line reason."""
        if self.check.ok(value):
            return None
        problem = "out of range" if self.check.numeric else "not valid"
        return f"{key}={show(value)} is {problem}: {self.check.words()}"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int) -> Check:
    return Check(lambda v: _is_int(v) and v >= low, lambda: f"an integer >= {low}", True)


def number(low: float, high: float | None = None, *, open_low=False, open_high=False) -> Check:
    """A finite number in [low, high] (no `high`: unbounded), `open_low`/`open_high` excluding
    the bound."""
    lo, hi = ("<" if open_low else "<="), ("<" if open_high else "<=")

    def ok(v: Any) -> bool:
        if not _is_number(v) or (v <= low if open_low else v < low):
            return False
        return high is None or (v < high if open_high else v <= high)

    if high is None:
        words = f"a number {lo.replace('<', '>')} {low:g}"
    else:
        words = f"a number {low:g} {lo} x {hi} {high:g}"
    return Check(ok, lambda: words, True)


PRECISIONS = ("float32", "bfloat16")


def compute_dtype(config: ml_collections.ConfigDict):
    """The dtype of activations and convolutions (`precision`): what the steps cast the images
    to; everything else stays float32."""
    import jax.numpy as jnp

    return jnp.dtype(config.get("precision", "float32"))


def one_of(names: Callable[[], Sequence[str]]) -> Check:
    return Check(
        lambda v: isinstance(v, str) and v in names(),
        lambda: "one of " + ", ".join(repr(n) for n in names()),
    )


BOOL = Check(lambda v: isinstance(v, bool), lambda: "true or false")
BOOL_OR_NONE = Check(lambda v: v is None or isinstance(v, bool), lambda: "true, false or none")
TEXT = Check(lambda v: isinstance(v, str), lambda: "text")
ARGUMENTS = Check(
    lambda v: isinstance(v, dict | ml_collections.ConfigDict),
    lambda: "NAME=VALUE arguments of the strategy's factory",
)
POSITIVE, NON_NEGATIVE = number(0, open_low=True), number(0)
NUMBER_OR_NONE = Check(lambda v: v is None or _is_number(v), lambda: "a number or none")
FRACTION = number(0, 1, open_high=True)  # momentum, Adam betas, drop-path rate

# search.early_stop and search.selection: the names search.py and pipeline.py act on
# (tests/test_config_validation.py checks that they agree).
EARLY_STOP = ("", "skip", "stable")
SELECTIONS = ("", "random", "evolution", "pt")
DISCRETISE = ("", "budget")  # hardware.discretise (search.py)

# Every field of `default_config()` (tests/test_config_validation.py checks that none is missing),
# in its order: doc (printed by `dnas config`) and valid values. The search and the retraining
# share the fields of their augmentation, optimiser and network sizes.
_AUGMENTATION = {
    "crop_padding": Field("random-crop padding in pixels; -1: the dataset's default", integer(-1)),
    "flip": Field(
        "random horizontal flip; none: the dataset's default (no flip for digits and SVHN: a "
        "mirrored digit is another symbol)",
        BOOL_OR_NONE,
    ),
}


def _stage_fields(stage: str, net: str, epochs: str, batch: str, lr: str, whose: str) -> dict:
    """The fields the search and the retraining share: network size, epochs, batch and SGD."""
    return {
        f"{stage}.C": Field(f"channels of the {net}'s first cells", integer(1)),
        f"{stage}.layers": Field(
            f"{net} depth as the space counts it (DARTS: cells; "
            "NAS-Bench-201: cells per stage), at least the space's "
            "min_layers",
            integer(1),
        ),
        f"{stage}.epochs": Field(epochs, integer(1)),
        f"{stage}.batch_size": Field(batch, integer(1)),
        f"{stage}.lr": Field(
            f"{whose}SGD learning rate, cosine-annealed per epoch to lr_min{lr}", POSITIVE
        ),
        f"{stage}.lr_min": Field("the cosine's final learning rate, at most lr", NON_NEGATIVE),
        f"{stage}.momentum": Field(f"{whose}SGD momentum", FRACTION),
        f"{stage}.weight_decay": Field(
            f"{whose}L2 decay, added to the gradient (PyTorch's)", NON_NEGATIVE
        ),
        f"{stage}.grad_clip": Field(
            f"{whose}gradient clipping by global norm; 0: none", NON_NEGATIVE
        ),
    }


FIELDS: dict[str, Field] = {
    "seed": Field("the root of every random stream of the run (weights, alphas, data order)",
                  integer(0)),
    "dataset": Field("the dataset: images (dnas.data.DATASETS: digits ships with scikit-learn, "
                     "the others are read with tensorflow-datasets) or text for the text spaces "
                     "(dnas.text.CORPORA: pydoc ships with Python, tiny_shakespeare is read with "
                     "tensorflow-datasets, text_dir reads data.text_dir)",
                     one_of(lambda: (*data.DATASETS, *_text().CORPORA))),
    "data_dir": Field("tensorflow-datasets data_dir; '' uses TFDS_DATA_DIR or "
                      "~/tensorflow_datasets", TEXT),
    "data.text_dir": Field("dataset=text_dir: a directory of train.txt, valid.txt and test.txt "
                           "(the PTB / WikiText-2 layout)", TEXT),
    "space": Field("the search space (dnas.spaces.SPACES)", one_of(lambda: tuple(spaces.SPACES))),
    "strategy": Field("the search strategy (dnas.strategies.STRATEGIES)",
                      one_of(lambda: tuple(strategies.STRATEGIES))),
    "order": Field("the alphas' hypergradient: first order, second (exact, autodiff through the "
                   "unrolled weight step) or finite_difference (the paper's Eq. 7-8)",
                   one_of(lambda: bilevel.ORDERS)),
    "strategy_args": Field("the strategy's own keyword arguments (strategies.py; e.g. gdas: "
                           "tau_max, tau_min), --config.strategy_args.NAME=VALUE", ARGUMENTS),
    **_stage_fields("search", "supernet", "search epochs", "examples per step from each half of "
                    "the split (global over devices), at most the smaller half", "", "weights' "),
    "search.train_portion": Field("DARTS split: this fraction of the training set trains the "
                                  "weights, the rest the alphas", number(0, 1, open_low=True,
                                                                         open_high=True)),
    "search.lr_schedule_epochs": Field("one cosine over several searches (DrNAS' progressive "
                                       "stages): its length in epochs; 0: this search's",
                                       integer(0)),
    "search.lr_offset_epochs": Field("epochs of that cosine run before this search (offset + "
                                     "epochs: at most its length)", integer(0)),
    "search.alpha_lr": Field("alphas' Adam learning rate; 0: the alphas stay as initialised",
                             NON_NEGATIVE),
    "search.alpha_b1": Field("alphas' Adam beta1", FRACTION),
    "search.alpha_b2": Field("alphas' Adam beta2", FRACTION),
    "search.alpha_weight_decay": Field("alphas' L2 decay, added to the gradient", NON_NEGATIVE),
    "search.alpha_init_scale": Field("alphas start as scale * N(0, 1) (DARTS: 1e-3)",
                                     NON_NEGATIVE),
    "search.alpha_warmup_epochs": Field("weights-only epochs before the first alpha step "
                                        "(PC-DARTS: 15), fewer than epochs", integer(0)),
    "search.fd_clip": Field("order=finite_difference: clip the virtual step's gradient at "
                            "grad_clip too (the DARTS reference does not; order=second "
                            "differentiates through the real, clipped weight step)", BOOL),
    "search.sep_impl": Field("how separable convolutions (and pooling, the chains' depthwise "
                             "convolutions) are computed (ops.py): auto: the fastest form per "
                             "op and shape, measured on this device and cached (autotune.py); "
                             "a form forces it; the same function either way",
                             one_of(lambda: (ops.AUTO, *ops.SEP_IMPLS))),
    "search.remat": Field("jax.checkpoint per edge: less memory, more compute; the CIFAR configs "
                          "turn it on (BENCHMARKS.md)", BOOL),
    "search.partial_channels": Field("PC-DARTS' K: 1/K of the channels go through the mixed "
                                     "ops; divides C", integer(1)),
    "search.single_op": Field("compute only each edge's largest-weight op (one-hot mixing: "
                              "gdas, random_ws)", BOOL),
    "search.hessian_every_epochs": Field("log the dominant eigenvalue of the validation loss' "
                                         "Hessian w.r.t. the alphas every this many epochs "
                                         "(collapse diagnostic); 0: off", integer(0)),
    "search.hessian_iters": Field("power iterations of that eigenvalue (one Hessian-vector "
                                  "product each)", integer(1)),
    "search.explain_every_epochs": Field("log each op's share of its mixed edge's output "
                                         "(norm of its weighted output, on one fixed "
                                         "validation batch) every this many epochs, for dnas "
                                         "explain; cell spaces; 0: off", integer(0)),
    "search.early_stop": Field("DARTS+ early stopping: '' (off), skip (at early_stop_skips skip "
                               "connections in the normal cell) or stable (the op ranking "
                               "unchanged for early_stop_patience epochs)",
                               one_of(lambda: EARLY_STOP)),
    "search.early_stop_skips": Field("early_stop=skip: the skip connections that stop the "
                                     "search", integer(0)),
    "search.early_stop_patience": Field("early_stop=stable: epochs the ranking must hold",
                                        integer(1)),
    "search.selection": Field("the genotype from '' (the alphas), random (random search with "
                              "weight sharing), evolution (regularised evolution; selection.py) "
                              "or pt (DARTS-PT, pt.py) with the trained supernet",
                              one_of(lambda: SELECTIONS)),
    "search.selection_archs": Field("selection=random|evolution: architectures evaluated",
                                    integer(1)),
    "search.selection_batches": Field("selection=random|evolution: validation batches per "
                                      "architecture", integer(1)),
    "search.selection_rerank": Field("selection=random|evolution: re-score this many of the "
                                     "best on the whole validation split; 0: none", integer(0)),
    "search.evolution_population": Field("selection=evolution: population size", integer(1)),
    "search.evolution_sample_size": Field("selection=evolution: tournament size, at most the "
                                          "population", integer(1)),
    "search.pt_interval": Field("selection=pt: fine-tuning epochs between decisions",
                                integer(1)),
    "search.pt_eval_batches": Field("selection=pt: validation batches per evaluation",
                                    integer(1)),
    **{f"search.{k}": f for k, f in _AUGMENTATION.items()},
    "search.cutout_length": Field("cutout square's side in pixels, 0: none; -1: the dataset's "
                                  "default", integer(-1)),
    "search.sgas": Field("SGAS (dnas/sgas.py): decide the edges one by one during the search, "
                         "each decision frozen and the supernet shrunk (decided edges compute "
                         "their op, pruned ones nothing); cri1: edge importance x selection "
                         "certainty; cri2: x selection stability too; '': off",
                         one_of(lambda: ("", "cri1", "cri2"))),
    "search.sgas_warmup_epochs": Field("sgas: the first decision after epoch warmup + 1 (the "
                                       "authors' 0-based warm-up, 9)", integer(0)),
    "search.sgas_decision_freq": Field("sgas: epochs between decisions (the authors: 5; 7 in "
                                       "their ablation)", integer(1)),
    "search.sgas_history": Field("sgas=cri2: epochs of selection history the stability "
                                 "compares with (the authors: 4)", integer(1)),
    "search.sgas_shrink": Field("sgas: decided edges compute their op only and pruned ones "
                                "nothing, one program compiled per decision; false: one "
                                "program, every op computed (the same function: where "
                                "compiling costs more than the ops saved)", BOOL),
    "search.sgas_freeze_decided": Field("sgas: the weights of decided (and pruned) edges stop "
                                        "training too (the layer-freezing form of progressive "
                                        "freezing; not in the authors' code)", BOOL),
    "search.teacher": Field("distillation in the weight step (the alphas' step keeps the plain "
                            "validation loss): a teacher as train.teacher; order=first, no "
                            "selection=pt, no dnas sweep; '': none", TEXT),
    "search.kd_weight": Field("a of the weight step's loss (as train.kd_weight)", number(0, 1)),
    "search.kd_temperature": Field("T of the weight step's KL (as train.kd_temperature)",
                                   POSITIVE),
    "hardware.objective": Field("hardware-aware alpha objective of the validation loss and the "
                                "expected cost E[C] (hardware.OBJECTIVES: mul_log, add_linear: "
                                "ProxylessNAS'; mul_logpow: FBNet's; add_abs: TF-NAS'); '': the "
                                "loss alone",
                                one_of(lambda: ("", *hardware.OBJECTIVES))),
    "hardware.resource": Field("the cost: a column of the table hardware.lut (latency_ms, "
                               "energy_mj, ...) or, without a table, of the space's cost model "
                               "(params, macs, memory_access)", TEXT),
    "hardware.target": Field("the cost's target T in its unit (ms for latency_ms); mul_log, "
                             "add_linear and add_abs need one; mul_logpow has none", NON_NEGATIVE),
    "hardware.lut": Field("a cost table file (dnas lut measures one); measure: the search "
                          "measures one on this device at its start (<workdir>/lut.json); '': "
                          "the space's cost model", TEXT),
    "hardware.lut_batch": Field("hardware.lut=measure: the batch the table is timed at (the "
                                "deployment's: 1 for a phone, more for a server)", integer(1)),
    "hardware.sampled": Field("E[C] under the step's sampled mixing weights (FBNet's Gumbel "
                              "sample) instead of the strategy's final weights (softmax: "
                              "ProxylessNAS, TF-NAS)", BOOL),
    "hardware.discretise": Field("'': the genotype by the space's rule (the argmax); budget: "
                                 "the most probable architecture under the final weights whose "
                                 "table cost is at most hardware.target (hardware.within_budget; "
                                 "spaces of one op per row)", one_of(lambda: DISCRETISE)),
    "hardware.floor": Field("hardware.discretise=budget: the architecture's cost is also at least "
                            "floor x target (0: any cost up to the target)", number(0, 1)),
    "hardware.a": Field("the objective's a (mul_log, mul_logpow); none: its paper's value",
                        NUMBER_OR_NONE),
    "hardware.b": Field("the objective's exponent b (mul_log, mul_logpow); none: its paper's value",
                        NUMBER_OR_NONE),
    "hardware.scale": Field("the objective's scale (add_linear, add_abs); none: its paper's value",
                            NUMBER_OR_NONE),
    "benchmark.table": Field("the space's benchmark table (NAS-Bench-201: a CSV of its 15,625 "
                             "architectures' accuracies): the search logs the true results of "
                             "its derived cell every epoch (benchmark/<column>); '': none", TEXT),
    **_stage_fields("train", "network", "retraining epochs", "examples per step (global over "
                    "devices), at most the training split", " (DARTS: 0.025 with batch 96 for 600 "
                    "epochs; digits trains for 30)", ""),
    "train.genotype": Field("dnas train: a published name, a genotype string or a genotype.json "
                            "path", TEXT),
    "train.auxiliary": Field("auxiliary head after the 2/3 cell, where the space's network has "
                             "one (DARTS)", BOOL),
    "train.auxiliary_weight": Field("the auxiliary head's loss weight", NON_NEGATIVE),
    "train.drop_path_prob": Field("drop-path rate, ramped linearly from 0 over the epochs as the "
                                  "reference does", FRACTION),
    **{f"train.{k}": f for k, f in _AUGMENTATION.items()},
    "train.cutout_length": Field("cutout square's side in pixels, 0: none; -1: the dataset's "
                                 "default (the CIFAR protocols set 16)", integer(-1)),
    "train.sep_impl": Field("how separable convolutions are computed (ops.py; as "
                            "search.sep_impl)", one_of(lambda: (ops.AUTO, *ops.SEP_IMPLS))),
    "train.teacher": Field("knowledge distillation (dnas/distill.py) from a teacher: a dnas "
                           "train workdir or dnas run retrain_<name>/ folder (the network, in "
                           "inference mode), a dnas search workdir (the supernet under its final "
                           "mixing weights) or a .npz file of `dnas logits`; '': none", TEXT),
    "train.kd_weight": Field("a: the loss is (1 - a) CE + a T^2 KL(teacher || student) at "
                             "temperature T; 0.9 as RepDistiller's and attention-transfer's KD; 0: "
                             "the plain step (the teacher is not loaded)", number(0, 1)),
    "train.kd_temperature": Field("T, the softmax temperature of both sides of the KL (4: "
                                  "RepDistiller, attention-transfer)", POSITIVE),
    "text.level": Field("word (split on spaces, <eos> per line, as the DARTS recurrent code) or "
                        "char; '': the corpus' own (text_dir: word; pydoc, tiny_shakespeare: "
                        "char)", one_of(lambda: ("", "word", "char"))),
    "text.max_tokens": Field("use at most the first this many tokens of each split (quick runs "
                             "and tests); 0: all", integer(0)),
    "text.bptt": Field("tokens per truncated back-propagation segment (DARTS: 35)", integer(2)),
    "text.max_seq_len_delta": Field("train_lengths=normal: a segment is at most bptt + this long",
                                    integer(0)),
    "text.search_lengths": Field("the search's segment lengths: fixed (bptt), halve (bptt, or "
                                 "bptt/2 one time in 20: the DARTS search) or normal (N(bptt, 5), "
                                 "the DARTS retraining)", one_of(lambda: _text().LENGTHS)),
    "text.train_lengths": Field("the retraining's segment lengths (fixed, halve, normal)",
                                one_of(lambda: _text().LENGTHS)),
    "text.eval_batch_size": Field("rows the validation text is cut into for evaluation (DARTS: "
                                  "10)",
                                  integer(1)),
    "text.test_batch_size": Field("rows the test text is cut into for evaluation (DARTS: 1)",
                                  integer(1)),
    "text.tar_beta": Field("temporal activation regularisation of the weights' loss: beta * "
                           "mean (h_t+1 - h_t)^2 (DARTS: 1e-3); 0: off", NON_NEGATIVE),
    **{f"text.{k}": Field(f"{what}; none: the space's default for the stage", NUMBER_OR_NONE)
       for k, what in (
           ("dropout", "dropout on the model's outputs (an attention model's: on every residual "
                       "branch)"),
           ("dropouth", "the recurrent cell: dropout on its hidden states"),
           ("dropoutx", "the recurrent cell: dropout on its input"),
           ("dropouti", "the recurrent cell: dropout on the embedded tokens"),
           ("dropoute", "the recurrent cell: drops whole words of the embedding"))},
    "text.nonmono": Field("retraining: NT-ASGD starts averaging the weights once the validation "
                          "loss is worse than the best before the last nonmono epochs; 0: never",
                          integer(0)),
    "sweep.seeds": Field("dnas sweep: seeds and ranges, e.g. 0-7 or 0,3,5; '': seed", TEXT),
    "sweep.param": Field("dnas sweep: the search.* step hyper-parameter swept, e.g. "
                         "search.alpha_weight_decay; '': none", TEXT),
    "sweep.param_values": Field("dnas sweep: its values, e.g. 1e-3,1e-2", TEXT),
    "num_devices": Field("data parallel over this many devices; 0: all (batch sizes are global)",
                         integer(0)),
    "precision": Field("float32, or bfloat16: activations and convolutions in bfloat16; "
                       "parameters, optimiser states, alphas and their relaxations, BatchNorm "
                       "statistics and the loss in float32 (image spaces; for TPUs and GPUs "
                       "with bfloat16 units)", one_of(lambda: PRECISIONS)),
    "compilation_cache_dir": Field("persistent XLA compilation cache (a rerun of the same config "
                                   "skips compiling); '': off; JAX_COMPILATION_CACHE_DIR, when "
                                   "set, wins", TEXT),
    "baseline": Field("dnas run: also retrain a random genotype of the space", BOOL),
    "checkpoint_every_steps": Field("checkpoint every this many steps (and at every epoch end)",
                                    integer(1)),
    "log_every_steps": Field("write metrics every this many steps", integer(1)),
    "progress": Field("a progress bar on stderr", BOOL),
}  # fmt: skip


def leaf_keys(config: ml_collections.ConfigDict | dict, prefix: str = "") -> list[str]:
    """The dotted keys of `config`'s fields, in order; `strategy_args` is one field (its
    content is the strategy's)."""
    out = []
    for key, value in config.items():
        name = prefix + key
        if isinstance(value, dict | ml_collections.ConfigDict) and name != "strategy_args":
            out += leaf_keys(value, name + ".")
        else:
            out.append(name)
    return out


def _get(config: ml_collections.ConfigDict | dict, key: str) -> Any:
    for part in key.split("."):
        config = config[part]
    return config


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config`, once every field is checked against `FIELDS` and the combinations that make no
    sense are refused (a batch larger than the split it draws from, fewer layers than the
    space's `min_layers`, strategy_args the strategy does not take, ...): a one-line
    `ConfigError` naming the key, the value and the valid range. Cheap (no data is read, nothing
    compiles), so every entry point calls it first."""
    keys = leaf_keys(config)
    known = leaf_keys(default_config())
    for key in keys:
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}{_did_you_mean(key, known)}")
    missing = [k for k in known if k not in keys]
    if missing:
        raise ConfigError(
            f"the config has no {', '.join(missing)}: start it from configlib.default_config()"
        )
    for key, field in FIELDS.items():
        refusal = field.refusal(key, _get(config, key)) if key in keys else None
        if refusal:
            raise ConfigError(refusal)
    _check_strategy_args(config)
    _check_combinations(config)
    _check_method_and_sweep(config)
    return config


def _check_method_and_sweep(config: ml_collections.ConfigDict) -> None:
    """The search's method options against its strategy (`check_method_options`), and every
    swept value against its field's range (the sweep's names and seeds: `sweep.members`)."""
    check_method_options(config, _strategy(config))
    _check_sgas(config)
    parse_seeds(config.sweep.seeds)
    field = FIELDS.get(config.sweep.param)
    # Only the float step hyper-parameters can be swept (`sweep.members` names them).
    swept = field is not None and isinstance(_get(config, config.sweep.param), float)
    if swept and config.sweep.param.startswith("search."):
        try:
            values = [float(v) for v in config.sweep.param_values.split(",") if v.strip()]
        except ValueError:
            return  # `sweep.members` names the format
        for value in values:
            refusal = field.refusal(config.sweep.param, value)
            if refusal:
                raise ConfigError(f"sweep.param_values: {refusal}")


def _strategy(config: ml_collections.ConfigDict) -> strategies.Strategy:
    """The config's strategy, built for its flags (`one_hot`, `update_alphas`, `reads_epochs`)
    and its factory's own checks of its arguments (a `ConfigError`); nothing is computed (no
    supernet costs). The hypergradient order is the config's, with a stand-in weight optimiser
    (a strategy may refuse an order, e.g. ProxylessNAS' two-path gradient takes first order)."""
    ctx = strategies.Context(
        space=spaces.get(config.space), order=config.order, learning_rate=config.search.lr,
        weight_tx=optax.sgd(config.search.lr), edge_costs=lambda: {},
    )  # fmt: skip
    try:
        return strategies.build(config.strategy, ctx, config.strategy_args.to_dict())
    except ValueError as err:
        raise ConfigError(str(err)) from None


def parse_seeds(text: str) -> list[int]:
    """`sweep.seeds`: integers and ascending ranges, e.g. "0-7" or "0,3,5" ("" -> [])."""
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            span = (int(first), int(last)) if dash else (int(first), int(first))
        except ValueError:
            span = (1, 0)
        if span[0] > span[1]:  # also "7-0", which used to become no seed at all
            raise ConfigError(
                f"sweep.seeds={text!r}: expected integers and ascending ranges such as 0-7 or 0,3,5"
            )
        seeds += list(range(span[0], span[1] + 1))
    return seeds


def check_method_options(config: ml_collections.ConfigDict, strategy: strategies.Strategy) -> None:
    """Option combinations that would run but mean nothing fail before the search starts
    (`validate`, and `search_step.setup` for the strategy it builds)."""
    s = config.search
    space = spaces.get(config.space)
    if s.selection == "evolution" and space.mutate is None:
        raise ConfigError(
            f"search.selection=evolution mutates genotypes and space {space.name!r} has no "
            "mutate: set --config.search.selection=random, or give the space a mutate function"
        )
    if s.single_op and not strategy.one_hot:
        raise ConfigError(
            f"search.single_op computes only each edge's largest-weight op, which equals the "
            f"mixture only for one-hot weights (gdas, random_ws); strategy {config.strategy!r} "
            "mixes softly: set --config.search.single_op=false"
        )
    if not strategy.update_alphas and s.selection not in ("random", "evolution"):
        raise ConfigError(
            f"strategy {config.strategy!r} learns no alphas, so its genotype must come from the "
            "trained supernet: set --config.search.selection=random (or evolution)"
        )
    if s.selection_rerank and s.selection not in ("random", "evolution"):
        raise ConfigError(
            "search.selection_rerank re-scores the best architectures of selection=random or "
            f"evolution; with selection={s.selection!r} set --config.search.selection_rerank=0"
        )
    if s.teacher and s.kd_weight > 0 and (config.order != "first" or s.selection == "pt"):
        what = f"order={config.order}" if config.order != "first" else "search.selection=pt"
        raise ConfigError(
            f"search.teacher distils the weight step of a first-order search; with {what} the "
            "hypergradient's virtual step (or DARTS-PT's fine-tuning) would still take the plain "
            "loss: set --config.order=first and no selection=pt, or --config.search.teacher=''"
        )
    if s.selection == "evolution" and s.evolution_sample_size > s.evolution_population:
        raise ConfigError(
            f"search.evolution_sample_size={s.evolution_sample_size} exceeds "
            f"search.evolution_population={s.evolution_population}: tournaments sample from it"
        )


def _check_sgas(config: ml_collections.ConfigDict) -> None:
    """What SGAS (`search.sgas`, dnas/sgas.py) cannot be combined with, refused before anything
    runs (staged strategies: `pipeline.search_genotype`)."""
    s = config.search
    if not s.sgas:
        return
    space = spaces.get(config.space)
    what = None
    if space.topology is None or "none" not in space.ops or not space.node_rows:
        what = f"space {config.space!r} (SGAS decides the edges of the cell spaces)"
    elif s.selection:
        what = f"search.selection={s.selection!r} (the decisions are the selection)"
    elif s.single_op:
        what = "search.single_op"
    elif s.early_stop:
        what = f"search.early_stop={s.early_stop!r}"
    elif s.hessian_every_epochs:
        what = "search.hessian_every_epochs (its loss would not see the decisions)"
    elif config.hardware.discretise:
        what = f"hardware.discretise={config.hardware.discretise!r}"
    if what is not None:
        raise ConfigError(f"search.sgas={s.sgas!r} does not combine with {what}")
    if s.sgas == "cri2" and s.sgas_warmup_epochs < 1:
        raise ConfigError(
            "search.sgas=cri2 scores each edge's stability against the epochs before its "
            "decision; with search.sgas_warmup_epochs=0 the first decision has none (every "
            "score 0: the first edge): set search.sgas_warmup_epochs >= 1"
        )
    if s.sgas_warmup_epochs + 1 <= s.alpha_warmup_epochs:
        raise ConfigError(
            f"search.sgas's first decision (after epoch {s.sgas_warmup_epochs + 1}) comes before "
            f"the alphas train (search.alpha_warmup_epochs={s.alpha_warmup_epochs}): set "
            f"search.sgas_warmup_epochs >= {s.alpha_warmup_epochs}"
        )
    # The decisions settling a cell (`sgas.num_decisions`) and the last one's epoch
    # (`sgas.decision_epochs`).
    keep = space.keep_per_node
    n = sum(len(rows) if keep is None else min(keep, len(rows)) for rows in space.node_rows)
    last = s.sgas_warmup_epochs + 1 + (n - 1) * s.sgas_decision_freq
    if last > s.epochs:
        raise ConfigError(
            f"search.sgas makes {n} decisions per cell type after epochs {s.sgas_warmup_epochs + 1}"
            f", {s.sgas_warmup_epochs + 1 + s.sgas_decision_freq}, ... {last}; search.epochs="
            f"{s.epochs} ends before the last: set search.epochs >= {last} (the authors train "
            f"5 more after it), or fewer sgas_warmup_epochs / sgas_decision_freq"
        )


def _did_you_mean(key: str, keys: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, keys, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _check_strategy_args(config: ml_collections.ConfigDict) -> None:
    """Every strategy_args entry is an argument of the strategy's factory (`strategies.build`
    checks the same later), of its default's type where that has one."""
    args = _as_dict(config.strategy_args)
    try:
        strategies.check_args(config.strategy, args)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for name, param in strategies.arguments(config.strategy).items():
        if name not in args:
            continue
        value, default = args[name], param.default
        if isinstance(default, bool):
            check = BOOL
        elif _is_int(default):
            check = Check(_is_int, lambda: "an integer")
        elif isinstance(default, float):
            check = Check(_is_number, lambda: "a number")
        elif isinstance(default, str):
            check = TEXT
        elif isinstance(default, tuple):
            check = Check(lambda v: isinstance(v, list | tuple), lambda: "a tuple")
        else:  # None or no default: the factory checks
            continue
        refusal = Field("", check).refusal(f"strategy_args.{name}", value)
        if refusal:
            raise ConfigError(
                f"{refusal} (the default of strategy {config.strategy!r}: {default!r})"
            )


MEASURE = "measure"  # hardware.lut: measured by the search on its device
OBJECTIVE_ARGS = ("a", "b", "scale")  # hardware.* fields passed to the objective's factory


def objective_args(config: ml_collections.ConfigDict) -> dict[str, float]:
    """The `hardware.OBJECTIVES` factory's arguments set in `config.hardware` (none: the
    paper's values)."""
    return {k: float(config.hardware[k]) for k in OBJECTIVE_ARGS if config.hardware[k] is not None}


def _check_hardware(config: ml_collections.ConfigDict) -> None:
    h = config.hardware
    if not (h.objective or h.discretise):
        return
    _check_table(h)
    if h.discretise:
        _check_budget(config)
    if not h.objective:
        return
    takes = inspect.signature(hardware.OBJECTIVES[h.objective]).parameters
    for name in objective_args(config):
        if name not in takes:
            raise ConfigError(
                f"hardware.{name} is not an argument of objective {h.objective!r} (it takes "
                f"{', '.join(takes) or 'none'})"
            )
    if h.objective not in hardware.TARGETLESS and h.target <= 0:
        raise ConfigError(
            f"hardware.objective={h.objective!r} needs hardware.target > 0, the cost's target in "
            f"its unit (e.g. --config.hardware.target=5.0 for 5 ms)"
        )
    if h.objective == "mul_log" and h.target == 1:
        raise ConfigError("hardware.target=1 makes mul_log's log(E) / log(T) undefined (log 1 = 0)")
    if not _strategy(config).update_alphas:
        raise ConfigError(
            f"hardware.objective is an objective of the alphas; strategy {config.strategy!r} "
            f"learns none"
        )


def _check_table(h: ml_collections.ConfigDict) -> None:
    """The cost table of `hardware` (an objective's or a budget's) has `hardware.resource`."""
    if h.lut == MEASURE and h.resource != "latency_ms":
        raise ConfigError(
            f"hardware.lut=measure times latency; hardware.resource={h.resource!r} needs a table "
            f"that has it (hardware.lut=FILE) or the space's cost model (hardware.lut='')"
        )
    if not h.lut and h.resource not in hardware.COST_RESOURCES:
        raise ConfigError(
            f"hardware.resource={h.resource!r} needs a cost table (hardware.lut; `dnas lut` "
            f"measures latency_ms); without one the space's cost model has "
            f"{', '.join(hardware.COST_RESOURCES)}"
        )
    if h.lut and h.lut != MEASURE and not os.path.isfile(h.lut):
        raise ConfigError(
            f"hardware.lut={h.lut!r} is not a file (`dnas lut --out FILE` writes one)"
        )


def _check_budget(config: ml_collections.ConfigDict) -> None:
    h = config.hardware
    if h.target <= 0:
        raise ConfigError(
            "hardware.discretise=budget needs hardware.target > 0, the budget in the resource's "
            "unit (e.g. --config.hardware.target=4.0 for 4 ms)"
        )
    if spaces.get(config.space).keep_per_node is not None:
        raise ConfigError(
            f"hardware.discretise=budget chooses one op per row; space {config.space!r} keeps "
            "some inputs of each node (its own rule): use a space of one op per row or "
            "hardware.discretise=''"
        )
    if config.search.selection:
        raise ConfigError(
            f"hardware.discretise=budget chooses from the alphas; search.selection="
            f"{config.search.selection!r} chooses with the supernet: set one of them"
        )


def _check_combinations(config: ml_collections.ConfigDict) -> None:
    _check_hardware(config)
    s, t = config.search, config.train
    space = spaces.get(config.space)
    table = config.benchmark.table
    if table and space.ground_truth is None:
        benchmarks = [s.name for s in spaces.SPACES.values() if s.ground_truth is not None]
        raise ConfigError(
            f"benchmark.table: search space {space.name!r} has no benchmark of published "
            f"results (spaces with one: {', '.join(benchmarks)}); set --config.benchmark.table=''"
        )
    if table and not os.path.isfile(os.path.expanduser(table)):
        raise ConfigError(
            f"benchmark.table={table!r} is not a file: give the path of the space's benchmark "
            f"table (NAS-Bench-201: scripts/nb201_to_csv.py writes it from the official files)"
        )
    text = config.dataset not in data.DATASETS
    if (space.modality == "text") != text:
        kind = "a text dataset (dnas.text.CORPORA, e.g. pydoc)" if not text else "an image dataset"
        raise ConfigError(
            f"search space {space.name!r} models {'text' if not text else 'images'} but "
            f"dataset={config.dataset!r} is {'images' if not text else 'text'}: set "
            f"--config.dataset to {kind}, or choose a space for it"
        )
    for group in ("search", "train"):
        g = config[group]
        if g.layers < space.min_layers:
            raise ConfigError(
                f"{group}.layers={g.layers} is out of range for search space {space.name!r}: an "
                f"integer >= {space.min_layers} (the depth at which every cell type has a cell)"
            )
        if g.lr_min > g.lr:
            raise ConfigError(
                f"{group}.lr_min={g.lr_min} exceeds {group}.lr={g.lr}: the cosine anneals the "
                "learning rate from lr down to lr_min"
            )
    if s.C % s.partial_channels:
        raise ConfigError(
            f"search.partial_channels={s.partial_channels} does not divide search.C={s.C}: 1/K "
            "of every edge's channels go through its ops"
        )
    length = s.lr_schedule_epochs or s.epochs
    if s.lr_offset_epochs + s.epochs > length:
        raise ConfigError(
            f"search.lr_offset_epochs + search.epochs = {s.lr_offset_epochs + s.epochs} exceeds "
            f"the cosine's length, {length} epochs (search.lr_schedule_epochs, or search.epochs "
            "when it is 0)"
        )
    if s.alpha_warmup_epochs >= s.epochs:
        raise ConfigError(
            f"search.alpha_warmup_epochs={s.alpha_warmup_epochs} leaves no alpha step in "
            f"search.epochs={s.epochs}: the genotype would come from the initial alphas"
        )
    if s.explain_every_epochs and spaces.get(config.space).topology is None:
        raise ConfigError(
            f"search.explain_every_epochs logs the op shares of the cell spaces' mixed edges; "
            f"space {config.space!r} has no cells: set it to 0"
        )
    if text:
        _check_text(config)
        return
    n = data.get_info(config.dataset).train_examples
    if n is not None:
        weights = data.search_split_size(n, s.train_portion)
        alphas = n - weights
        if s.batch_size > min(weights, alphas):
            half = "each"
            if weights != alphas:
                half = "the weights'" if weights < alphas else "the alphas'"
            raise ConfigError(
                f"search.batch_size={s.batch_size} exceeds the {min(weights, alphas)} examples "
                f"of {half} half of the search split ({n} training examples of {config.dataset}, "
                f"train_portion={s.train_portion})"
            )
        if t.batch_size > n:
            raise ConfigError(
                f"train.batch_size={t.batch_size} exceeds the {n} training examples of "
                f"{config.dataset}"
            )


def _check_text(config: ml_collections.ConfigDict) -> None:
    """What a language-model search and retraining (`dnas.lm`) cannot do."""
    s, x = config.search, config.text
    if config.dataset == "text_dir" and not config.data.text_dir:
        raise ConfigError(
            "dataset=text_dir reads train.txt, valid.txt and test.txt from data.text_dir: set "
            "--config.data.text_dir=DIR"
        )
    refused = {
        "search.partial_channels": (s.partial_channels, 1),
        "search.single_op": (s.single_op, False),
        "search.hessian_every_epochs": (s.hessian_every_epochs, 0),
        "hardware.discretise": (config.hardware.discretise, ""),
        "precision": (config.precision, "float32"),
        "train.teacher": (config.train.teacher, ""),
        "search.teacher": (config.search.teacher, ""),
    }
    if config.hardware.lut == MEASURE and spaces.get(config.space).candidates is None:
        raise ConfigError(
            f"hardware.lut=measure times a space's candidate ops; {config.space!r} lists none "
            "(its recurrent cell's ops share one matrix product): use the space's cost model "
            "(hardware.lut='': params, macs, memory_access per token)"
        )
    if s.selection == "pt":
        raise ConfigError(
            "search.selection='pt' (DARTS-PT's perturbation of convolutional edges) is not "
            "supported for language models; random or evolution select with the supernet"
        )
    for key, (value, default) in refused.items():
        if value != default:
            raise ConfigError(
                f"{key}={show(value)} is not supported for language models (the text spaces); "
                f"leave it at {show(default)}"
            )
    for key in ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute"):
        if x[key] is not None and not 0 <= x[key] < 1:
            raise ConfigError(f"text.{key}={show(x[key])} is out of range: a number 0 <= x < 1")


def explain(config: ml_collections.ConfigDict) -> str:
    """The config one field a line, `key = value  # doc (valid values)`, in `FIELDS`' order and
    grouped as the ConfigDict is (`dnas config`). Call it on a validated config."""
    keys = leaf_keys(config)
    groups: dict[str, list[str]] = {}
    for key in sorted(keys, key=lambda k: list(FIELDS).index(k) if k in FIELDS else len(FIELDS)):
        groups.setdefault(key.rpartition(".")[0], []).append(key)
    lines = []
    for head, members in sorted(groups.items(), key=lambda item: item[0] != ""):
        lines += [f"# {head}"] if head else []
        for key in members:
            if key == "strategy_args":
                lines += _explain_strategy_args(config)
                continue
            field = FIELDS.get(key)
            comment = f"{field.doc} ({field.check.words()})" if field else "(undocumented)"
            lines.append(f"{key} = {_get(config, key)!r}  # {comment}")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _explain_strategy_args(config: ml_collections.ConfigDict) -> list[str]:
    args = strategies.arguments(config.strategy)
    takes = ", ".join(f"{n}={p.default!r}" for n, p in args.items()) or "no argument"
    given = _as_dict(config.strategy_args)
    if not given:
        return [f"strategy_args = {{}}  # {FIELDS['strategy_args'].doc} ({config.strategy} "
                f"takes {takes})"]  # fmt: skip
    return [
        f"strategy_args.{name} = {value!r}  # an argument of strategy {config.strategy!r} "
        f"(default {args[name].default!r})"
        for name, value in given.items()
    ]


def _as_dict(value: Any) -> dict:
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value)


# ---------------------------------------------------------------------------------------------
# Protocols shared by the configs in experiments/ (each config file says which it follows). The
# protocols themselves are the spaces' (`space.protocols`, e.g. `darts_cnn.cifar10_protocol`).


def protocol(
    c: ml_collections.ConfigDict, space: str, dataset: str | None = None
) -> ml_collections.ConfigDict:
    """`c` edited to the published protocol of `space` on `dataset` (default: the space's first
    protocol, e.g. DARTS on CIFAR-10, NAS-Bench-201 on CIFAR-10)."""
    protocols = spaces.get(space).protocols
    if not protocols:
        raise ConfigError(f"search space {space!r} has no published protocol")
    dataset = dataset or next(iter(protocols))
    if dataset not in protocols:
        raise ConfigError(
            f"search space {space!r} has no protocol for dataset {dataset!r}; "
            f"valid: {', '.join(protocols)}"
        )
    return protocols[dataset](c)


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config to a seconds-long run on the embedded digits, keeping its method: tiny
    supernet, 2 epochs (so per-epoch schedules move), no random baseline. Warm-ups of alpha
    updates shrink to 1 epoch."""
    c.dataset = "digits"
    s = c.search
    s.C, s.layers = 4, spaces.get(c.space).tiny_layers
    s.epochs, s.batch_size, s.train_portion = 2, 64, 0.5
    s.crop_padding, s.cutout_length, s.remat, s.flip = -1, 0, False, None
    s.alpha_warmup_epochs = min(s.alpha_warmup_epochs, 1)
    if s.partial_channels > 1:
        s.C = 4 * s.partial_channels
    t = c.train
    t.C, t.layers, t.epochs, t.batch_size = 4, 3, 1, 32
    t.crop_padding, t.cutout_length, t.flip = -1, 0, None
    c.baseline = False
    c.hardware.lut_batch = 1  # hardware.lut=measure: the cheapest table
    c.checkpoint_every_steps = 200
    c.log_every_steps = 20
    return c


def chain_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`smoke` for a search over a chain of MBConv blocks (21-22 rows), whose steps cost seconds
    on a CPU (XLA:CPU computes a depthwise conv's weight gradient as a dense conv): one epoch of
    7 steps of 16 examples (a tenth of the digits train the weights), no warm-up, so
    ProxylessNAS' alphas (updated every 5 steps) move once."""
    c.search.epochs, c.search.batch_size, c.search.train_portion = 1, 16, 0.1
    c.search.alpha_warmup_epochs = 0
    return c


def digits(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A method config on the embedded digits with the default config's sizes and schedules
    (what `dnas run` runs by default), keeping the method's own fields (strategy, its arguments,
    partial channels, single op, selection). Warm-ups are capped at a third of the epochs."""
    d = default_config()
    c.dataset = d.dataset
    for key in ("C", "layers", "epochs", "batch_size", "train_portion", "lr", "lr_min",
                "weight_decay", "crop_padding", "flip", "cutout_length", "remat",
                "sep_impl"):  # fmt: skip
        c.search[key] = d.search[key]
    if c.search.partial_channels > 1:
        c.search.C = 4 * c.search.partial_channels
    c.search.alpha_warmup_epochs = min(c.search.alpha_warmup_epochs, c.search.epochs // 3)
    # Selection budgets sized to the few hundred validation digits.
    c.search.selection_archs = min(c.search.selection_archs, 100)
    c.search.pt_eval_batches = min(c.search.pt_eval_batches, 4)
    c.search.selection_batches = min(c.search.selection_batches, 4)
    c.train = d.train
    c.checkpoint_every_steps, c.log_every_steps = d.checkpoint_every_steps, d.log_every_steps
    return c


def method_variant(
    c: ml_collections.ConfigDict,
    arg: str | None,
    variants: dict | None = None,
    space_changes: dict | None = None,
    smoke_changes: Callable[[ml_collections.ConfigDict], Any] | None = None,
) -> ml_collections.ConfigDict:
    """The `:arg` of a method config: '' (the config as written), '<space>' or
    '<space>_<dataset>' for another space than the config's, e.g. 'nb201', 'nb201_cifar100' (that
    space's published protocol on that dataset, then `space_changes[space](c)`: the method's own
    settings for it), 'digits' (the method at `dnas run`'s default sizes on the embedded digits,
    for the methods table), a method-specific variant from `variants` (name -> function editing the
    config), each optionally followed by '_smoke' ('smoke' alone: the default variant), which
    `smoke` shrinks and then `smoke_changes` edits further (a method whose steps are costlier
    than a cell search's)."""
    variants = variants or {}
    space_changes = space_changes or {}
    arg = arg or ""
    smoke_run = arg == "smoke" or arg.endswith("_smoke")
    name = arg.removesuffix("smoke").removesuffix("_") if smoke_run else arg
    protocols = {
        f"{sp}_{dataset}" if i else sp: (sp, dataset)
        for sp, space in spaces.SPACES.items()
        if sp != c.space
        for i, dataset in enumerate(space.protocols)
    }
    valid = list(dict.fromkeys(["", *variants, *protocols, "digits"]))
    if name not in valid:
        shown = ", ".join(repr(v) for v in valid[1:])
        raise ValueError(f"unknown argument {arg!r}; valid: {shown}, and smoke or <that>_smoke")
    if name in variants:  # a method's own variant, its own `digits` included
        variants[name](c)
    elif name == "digits":
        digits(c)
    elif name in protocols:
        space, dataset = protocols[name]
        protocol(c, space, dataset)
        if space in space_changes:
            space_changes[space](c)
    if smoke_run:
        smoke(c)
        if smoke_changes is not None:  # what the method's smoke run needs besides
            smoke_changes(c)
    return c


def call_user_file(path: str, function: str, what: str, error: type[Exception], *args: Any) -> Any:
    """Executes the Python file at `path` (a config or a study: the user's code) and returns its
    `function(*args)`; whatever goes wrong is `error` with a one-line message naming the file."""
    if not os.path.isfile(path):
        raise error(f"{what} {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"dnas_user_{function}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # the user's file: report it, whatever it raised
        raise error(f"{what} {path!r} failed to load: {type(err).__name__}: {err}") from err
    if not hasattr(module, function):
        raise error(f"{what} {path!r} has no {function}() function")
    try:
        return getattr(module, function)(*args)
    except Exception as err:  # the user's code: report it, whatever it raised
        raise error(f"{function}() in {path!r} failed: {type(err).__name__}: {err}") from err


def load(spec: str | None) -> ml_collections.ConfigDict:
    """`None` -> the default; `path.py` or `path.py:arg` -> that file's `get_config(arg)`;
    `path.json`, or a workdir holding `config.json` -> that config (`load_json`)."""
    if not spec:
        return default_config()
    if os.path.isdir(spec):
        return load_json(os.path.join(spec, workdir_lib.CONFIG))
    if spec.endswith(".json"):
        return load_json(spec)
    path, _, arg = spec.partition(":")
    if not path.endswith(".py"):
        raise ConfigError(
            f"--config expects a Python file path[.py][:arg], a config.json or a workdir holding "
            f"one, got {spec!r}"
        )
    config = call_user_file(path, "get_config", "config file", ConfigError, *([arg] if arg else []))
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() in {path!r} must return an ml_collections.ConfigDict")
    return config


def load_json(path: str) -> ml_collections.ConfigDict:
    """The config a workdir's `config.json` holds (as `prepare_workdir` wrote it). Fields the
    file lacks (added to dnas since it was written) take the values its run had (`_defaults_of`:
    their defaults, unless a default changed what older code did); a key this version does not
    know is refused."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as err:
        raise ConfigError(f"config file {path!r} is not readable JSON: {err}") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"config file {path!r} holds {show(saved)}, not a config (a JSON object)")
    saved.pop(workdir_lib.AUTOTUNE, None)  # what the run's autotuner chose (autotune.py)
    known = leaf_keys(default_config())

    def merge(into: dict, new: dict, prefix: str) -> None:
        for key, value in new.items():
            name = prefix + key
            if name == "strategy_args" or (key in into and not isinstance(into[key], dict)):
                if isinstance(into.get(key), float) and _is_int(value):
                    value = float(value)  # a hand-edited 1 for 1.0: overrides stay floats
                into[key] = value
            elif key in into and isinstance(value, dict):
                merge(into[key], value, name + ".")
            elif key in into:
                raise ConfigError(f"{path}: {name} is a group of fields, got {show(value)}")
            else:
                hint = _did_you_mean(name, known)
                raise ConfigError(f"{path}: unknown config key {name!r}{hint}")

    config = _defaults_of(saved)
    merge(config, saved, "")
    return ml_collections.ConfigDict(config)


def _keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        out.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            out += _keys(value, prefix + key + ".")
    return out


# Words an override may use for a bool field (and, without the digits, for a None field).
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_NONE_FIELD_WORDS = {w: v for w, v in _BOOLS.items() if not w.isdigit()} | {
    "none": None,
    "null": None,
}


def _parse(text: str, current, key: str):
    lowered = text.strip().lower()
    if current is None and lowered in _NONE_FIELD_WORDS:
        return _NONE_FIELD_WORDS[lowered]
    if isinstance(current, bool):
        if lowered in _BOOLS:
            return _BOOLS[lowered]
        raise ConfigError(f"--config.{key} expects true or false, got {text!r}")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)  # literals only: numbers, tuples, lists; never code
    except (ValueError, SyntaxError):
        if current is None:  # e.g. search.flip: FIELDS knows what it takes
            words = FIELDS[key].check.words() if key in FIELDS else "true, false, none or a literal"
            raise ConfigError(f"--config.{key} expects {words}, got {text!r}") from None
        raise ConfigError(
            f"--config.{key} expects a value of type {type(current).__name__}, got {text!r}"
        ) from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigError(
            f"--config.{key} expects a value of type {type(current).__name__}, got {text!r} "
            f"({type(value).__name__})"
        )
    return value


def _parse_argument(text: str) -> Any:
    """A strategy argument's value: true, false or none, a Python literal, else the text."""
    words = {"true": True, "false": False, "none": None, "null": None}
    if text.strip().lower() in words:
        return words[text.strip().lower()]
    try:
        return ast.literal_eval(text)  # literals only: numbers, tuples, lists; never code
    except (ValueError, SyntaxError):
        return text


def override(config: ml_collections.ConfigDict, assignments: Sequence[str]):
    """Applies `a.b=value` assignments (from `--config.a.b=value`) to a copy of `config`."""
    config = ml_collections.ConfigDict(config.to_dict())
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--config.{assignment} needs a value: --config.{key}=VALUE")
        node = config
        *path, leaf = key.split(".")
        if path == ["strategy_args"]:  # any name: `validate` checks it against the strategy
            if leaf in config.strategy_args:
                del config.strategy_args[leaf]  # its new value may be of another type
            config.strategy_args[leaf] = _parse_argument(text)
            continue
        for part in path:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            close = difflib.get_close_matches(key, _keys(config), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ConfigError(f"config key {key!r} is a group; set one of its fields")
        node[leaf] = _parse(text, current, key)
    return config


# Fields that do not change a run's results (batch sizes are global, so the device count does
# not change them either): a workdir may be resumed with other values.
RESULT_NEUTRAL = (
    "progress", "log_every_steps", "checkpoint_every_steps", "compilation_cache_dir",
    "num_devices", "data_dir", "search.sep_impl", "train.sep_impl", "benchmark.table",
)  # fmt: skip
# Fields a stage's workdir does not read (prefixes end with "."): they may differ too.
UNREAD = {
    "search": ("train.", "sweep.", "baseline"),
    "sweep": ("train.", "baseline"),
    "train": ("search.", "sweep.", "strategy", "strategy_args.", "order", "baseline", "hardware.",
              "benchmark."),
}  # fmt: skip


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, stage: str = "search") -> str:
    """Creates `workdir` and writes its `config.json`; refuses to resume a run of another config
    (`workdir.prepare`; fields dnas added since the workdir was written are not a difference at
    their default). What may differ on resume: `RESULT_NEUTRAL` fields, the fields `stage`
    (search | sweep | train) does not read, and more epochs where the schedules allow it
    (`epoch_extension_refusal`). Returns the absolute path."""
    if stage not in UNREAD:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(UNREAD)}")

    def judge(previous: dict, changed: list[str]) -> dict[str, str]:
        refused = {}
        for key in changed:
            if key in RESULT_NEUTRAL or any(
                key == p or (p.endswith(".") and key.startswith(p)) for p in UNREAD[stage]
            ):
                continue
            if key in ("search.epochs", "train.epochs"):
                reason = epoch_extension_refusal(previous, config, key, workdir)
                if reason is None:
                    continue
                refused[key] = reason
            else:
                refused[key] = ""
        return refused

    def defaults(previous: dict) -> dict:
        # A strategy argument set to its factory's default is no change from leaving it out.
        d = _defaults_of(previous)
        if previous.get("strategy") in strategies.STRATEGIES:
            args = strategies.arguments(previous["strategy"]).items()
            d["strategy_args"] = {k: p.default for k, p in args if p.default is not p.empty}
        return d

    return workdir_lib.prepare(workdir, config.to_dict(), defaults, judge=judge)


def epoch_extension_refusal(
    previous: dict, config: ml_collections.ConfigDict, key: str, workdir: str | None = None
) -> str | None:
    """None when a run of `previous` may go on to `config`'s `key` (search.epochs or
    train.epochs), else why not.

    The epochs already run must have followed the schedule the longer run follows. The cosine
    learning rate spans the epochs unless fixed: a search is extendable when
    `search.lr_schedule_epochs` (the cosine's length) was set, is unchanged and covers the new
    epochs, and its strategy has no schedule over the search's length (`Strategy.reads_epochs`:
    GDAS' and SNAS' temperatures, DARTS-' beta, beta-DARTS' lambda, SDARTS' epsilon, P-DARTS' skip
    dropout), and nothing was decided from its end yet: not a staged search (P-DARTS, DrNAS set
    each stage's epochs), no DARTS+ early stopping (it may have ended the search), no DARTS-PT
    fine-tuning begun in `workdir`. A retraining's cosine and drop-path ramp always span
    `train.epochs`: not extendable."""
    group = key.split(".")[0]
    old, new = previous[group]["epochs"], config[group]["epochs"]
    if new < old:
        return f"{old} -> {new}: epochs can only grow on a resume"
    if group == "train":
        return (
            f"{old} -> {new}: the retraining's cosine learning rate and drop-path ramp span "
            "train.epochs, so the epochs already run followed another schedule"
        )
    s, length = config.search, config.search.lr_schedule_epochs
    if not length or previous["search"].get("lr_schedule_epochs") != length:
        return (
            f"{old} -> {new}: the cosine learning rate spans search.epochs, so the epochs already "
            "run followed another schedule; a search started with search.lr_schedule_epochs=L "
            "(the cosine's length, fixed) can be extended up to L epochs"
        )
    if s.lr_offset_epochs + new > length:
        return (
            f"{old} -> {new}: beyond search.lr_schedule_epochs={length} "
            f"(offset {s.lr_offset_epochs})"
        )
    if workdir and any(re.fullmatch(r"stage_\d+", n) for n in os.listdir(workdir)):
        return f"{old} -> {new}: a staged search ({config.strategy}) sets each stage's epochs"
    if config.search.early_stop:
        return (
            f"{old} -> {new}: with early stopping (search.early_stop={config.search.early_stop}) "
            "the search may have ended already"
        )
    if workdir and workdir_lib.has_checkpoints(os.path.join(workdir, "pt")):
        return f"{old} -> {new}: DARTS-PT's fine-tuning has begun from the search's last epoch"
    try:
        strategy = _strategy(config)
    except (KeyError, ValueError) as err:
        return f"{old} -> {new}: the strategy's schedules could not be checked ({err})"
    if strategy.reads_epochs:
        return (
            f"{old} -> {new}: strategy {config.strategy!r} has a schedule over search.epochs "
            "(temperature, regulariser weight or perturbation), which more epochs would change"
        )
    return None


def _defaults_of(previous: dict) -> dict:
    """The values that a config written before a field existed ran with: the default config,
    except where a field added since changed what the old code did."""
    d = default_config().to_dict()
    # search.fd_clip (issue 13): finite_difference used to clip its virtual step.
    d["search"]["fd_clip"] = previous.get("order") == "finite_difference"
    return d
