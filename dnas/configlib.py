"""Configurations: the embedded default, config files and command-line overrides.

A config file is a Python file with `get_config(arg=None) -> ml_collections.ConfigDict` (big_vision,
flax examples); `path.py:arg` passes `arg`. It usually starts from `default_config()` and overrides
what differs. Overrides `--config.a.b=value` are parsed with the type of the existing field (a
field that is None takes true, false, none or a Python literal); an unknown key or a value of the
wrong type is a one-line `ConfigError`.

The ConfigDict stops at the `run()` functions: library code takes typed arguments.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from collections.abc import Sequence

import ml_collections

from dnas import errors, spaces
from dnas import workdir as workdir_lib

ConfigError = errors.ConfigError


def default_config() -> ml_collections.ConfigDict:
    """The embedded default: DARTS space, first order, on the 8x8 digits (no download).

    `dnas run` with it searches for ~2 minutes and retrains the searched and a random cell for
    ~1 minute each on a 2-core CPU; the searched cell reaches ~98% test accuracy.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = "digits"
    c.data_dir = ""  # tensorflow-datasets data_dir; "" uses TFDS_DATA_DIR or ~/tensorflow_datasets
    c.space = spaces.DEFAULT  # the DARTS cell space
    c.strategy = "darts"
    c.order = "first"  # first | second | finite_difference
    # The strategy's own keyword arguments (strategies.py; e.g. gdas: tau_max, tau_min).
    c.strategy_args = ml_collections.ConfigDict()

    c.search = ml_collections.ConfigDict()
    s = c.search
    s.C = 4
    s.layers = 5  # DARTS: cells; NAS-Bench-201: cells per stage
    s.epochs = 15
    s.batch_size = 64
    s.train_portion = 0.5  # DARTS split: this fraction of the training set trains the weights
    s.lr = 0.025
    s.lr_min = 0.001
    # One cosine over several searches (DrNAS' progressive stages): its length in epochs (0: this
    # search's) and the epochs of it already run before this search.
    s.lr_schedule_epochs = 0
    s.lr_offset_epochs = 0
    s.momentum = 0.9
    s.weight_decay = 3e-4
    s.grad_clip = 5.0
    s.alpha_lr = 3e-4
    s.alpha_b1 = 0.5
    s.alpha_b2 = 0.999
    s.alpha_weight_decay = 1e-3
    s.alpha_init_scale = 1e-3
    s.alpha_warmup_epochs = 0  # weights-only epochs before the first alpha step (PC-DARTS: 15)
    # order=finite_difference: clip the virtual step's gradient at grad_clip too (the DARTS
    # reference does not; order=second differentiates through the real, clipped weight step).
    s.fd_clip = False
    s.sep_impl = "fused"  # fused | depthwise | shifted (ops.py)
    s.remat = False  # jax.checkpoint per edge; the CIFAR configs turn it on (BENCHMARKS.md)
    s.partial_channels = 1  # PC-DARTS' K: 1/K of the channels go through the mixed ops
    s.single_op = False  # compute only each edge's largest-weight op (GDAS: one-hot mixing)
    # Collapse diagnostics and DARTS+ early stopping (search.EpochMonitor).
    s.hessian_every_epochs = 0  # dominant Hessian eigenvalue w.r.t. alphas; 0: off
    s.hessian_iters = 20  # power iterations (one Hessian-vector product each)
    s.early_stop = ""  # "" | skip | stable (DARTS+)
    s.early_stop_skips = 2
    s.early_stop_patience = 10
    # Selection by the trained supernet instead of the alphas: "" (alphas), random (random
    # search with weight sharing), evolution (regularised evolution; dnas/selection.py) or pt
    # (DARTS-PT, dnas/pt.py).
    s.selection = ""
    s.selection_archs = 100  # architectures evaluated
    s.selection_batches = 4  # validation batches per architecture
    s.selection_rerank = 0  # > 0: re-score this many of the best on the whole validation split
    s.evolution_population = 20
    s.evolution_sample_size = 5
    s.pt_interval = 5  # DARTS-PT: fine-tuning epochs between decisions
    s.pt_eval_batches = 10  # validation batches per DARTS-PT evaluation
    s.crop_padding = -1  # -1: the dataset's default
    s.flip = None  # None: the dataset's default (no flip for digits and SVHN); true/false force it
    s.cutout_length = 0

    c.train = ml_collections.ConfigDict()
    t = c.train
    t.genotype = ""  # dnas train: a published name, a genotype string or a genotype.json path
    t.C = 8
    t.layers = 5
    t.epochs = 30
    t.batch_size = 64
    t.lr = 0.05  # DARTS uses 0.025 with batch 96 for 600 epochs; digits trains for 30
    t.lr_min = 0.0
    t.momentum = 0.9
    t.weight_decay = 3e-4
    t.grad_clip = 5.0
    t.auxiliary = True
    t.auxiliary_weight = 0.4
    t.drop_path_prob = 0.1  # ramped linearly from 0 over the epochs, as the reference does
    t.crop_padding = -1
    t.flip = None  # None: the dataset's default
    t.cutout_length = -1  # -1: the dataset's default (16 on CIFAR, the DARTS protocol)
    t.sep_impl = "fused"

    # dnas sweep: seeds (e.g. "0-7" or "0,3,5") x values of one search hyper-parameter, as one
    # vmapped program (dnas/sweep.py).
    c.sweep = ml_collections.ConfigDict()
    c.sweep.seeds = ""
    c.sweep.param = ""  # e.g. "search.alpha_weight_decay"
    c.sweep.param_values = ""  # e.g. "1e-3,1e-2"

    c.num_devices = 0  # data parallel over this many devices (0: all); batch sizes are global
    # Persistent XLA compilation cache: a rerun of the same config skips compilation. "" turns
    # it off; JAX_COMPILATION_CACHE_DIR, when set, wins.
    c.compilation_cache_dir = "~/.cache/dnas/xla"
    c.baseline = True  # dnas run: also retrain a random genotype of the space
    c.checkpoint_every_steps = 200
    c.log_every_steps = 20
    c.progress = True
    return c


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
    s.sep_impl = "fused"
    s.alpha_warmup_epochs = min(s.alpha_warmup_epochs, 1)
    if s.partial_channels > 1:
        s.C = 4 * s.partial_channels
    t = c.train
    t.C, t.layers, t.epochs, t.batch_size = 4, 3, 1, 32
    t.crop_padding, t.cutout_length, t.flip = -1, 0, None
    c.baseline = False
    c.checkpoint_every_steps = 200
    c.log_every_steps = 20
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
) -> ml_collections.ConfigDict:
    """The `:arg` of a method config: '' (the config as written), '<space>' or
    '<space>_<dataset>' for another space than the config's, e.g. 'nb201', 'nb201_cifar100' (that
    space's published protocol on that dataset, then `space_changes[space](c)`: the method's own
    settings for it), 'digits' (the method at `dnas run`'s default sizes on the embedded digits,
    for the methods table), a method-specific variant from `variants` (name -> function editing the
    config), each optionally followed by '_smoke' ('smoke' alone: the default variant)."""
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
    valid = ["", *variants, *protocols, "digits"]
    if name not in valid:
        shown = ", ".join(repr(v) for v in valid[1:])
        raise ValueError(f"unknown argument {arg!r}; valid: {shown}, and smoke or <that>_smoke")
    if name == "digits":
        digits(c)
    elif name in protocols:
        space, dataset = protocols[name]
        protocol(c, space, dataset)
        if space in space_changes:
            space_changes[space](c)
    elif name:
        variants[name](c)
    return smoke(c) if smoke_run else c


def load(spec: str | None) -> ml_collections.ConfigDict:
    """`None` -> the default; `path.py` or `path.py:arg` -> that file's `get_config(arg)`."""
    if not spec:
        return default_config()
    path, _, arg = spec.partition(":")
    if not path.endswith(".py"):
        raise ConfigError(f"--config expects a Python file path[.py][:arg], got {spec!r}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location("dnas_user_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # the user's file: report it, whatever it raised
        message = f"config file {path!r} failed to load: {type(err).__name__}: {err}"
        raise ConfigError(message) from err
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} has no get_config() function")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except Exception as err:  # the user's code: report it, whatever it raised
        message = f"get_config() in {path!r} failed: {type(err).__name__}: {err}"
        raise ConfigError(message) from err
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() in {path!r} must return an ml_collections.ConfigDict")
    return config


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


def override(config: ml_collections.ConfigDict, assignments: Sequence[str]):
    """Applies `a.b=value` assignments (from `--config.a.b=value`) to a copy of `config`."""
    config = ml_collections.ConfigDict(config.to_dict())
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--config.{assignment} needs a value: --config.{key}=VALUE")
        node = config
        *path, leaf = key.split(".")
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


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> str:
    """Creates `workdir` and writes its `config.json`; refuses to resume a run of another config
    (`workdir.prepare`; fields dnas added since the workdir was written are not a difference at
    their default). Returns the absolute path."""
    return workdir_lib.prepare(workdir, config.to_dict(), _defaults_of)


def _defaults_of(previous: dict) -> dict:
    """The values that a config written before a field existed ran with: the default config,
    except where a field added since changed what the old code did."""
    d = default_config().to_dict()
    # search.fd_clip (issue 13): finite_difference used to clip its virtual step.
    d["search"]["fd_clip"] = previous.get("order") == "finite_difference"
    return d
