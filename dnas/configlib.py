"""Configurations: the embedded default, config files and command-line overrides.

A config file is a Python file with `get_config(arg=None) -> ml_collections.ConfigDict` (big_vision,
flax examples); `path.py:arg` passes `arg`. It usually starts from `default_config()` and overrides
what differs. Overrides `--config.a.b=value` are parsed with the type of the existing field; an
unknown key or a value of the wrong type is a one-line `ConfigError`.

The ConfigDict stops at the `run()` functions: library code takes typed arguments.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from collections.abc import Sequence

import ml_collections


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message says what to change."""


def default_config() -> ml_collections.ConfigDict:
    """The embedded default: DARTS space, first order, on the 8x8 digits (no download).

    `dnas run` with it searches for ~2 minutes and retrains the searched and a random cell for
    ~1 minute each on a 2-core CPU; the searched cell reaches ~98% test accuracy.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = "digits"
    c.data_dir = ""  # tensorflow-datasets data_dir; "" uses TFDS_DATA_DIR or ~/tensorflow_datasets
    c.space = "darts_cnn"
    c.strategy = "darts"
    c.order = "first"  # first | second | finite_difference

    c.search = ml_collections.ConfigDict()
    s = c.search
    s.C = 4
    s.layers = 5  # DARTS: cells; NAS-Bench-201: cells per stage
    s.epochs = 15
    s.batch_size = 64
    s.train_portion = 0.5  # DARTS split: this fraction of the training set trains the weights
    s.lr = 0.025
    s.lr_min = 0.001
    s.momentum = 0.9
    s.weight_decay = 3e-4
    s.grad_clip = 5.0
    s.alpha_lr = 3e-4
    s.alpha_b1 = 0.5
    s.alpha_b2 = 0.999
    s.alpha_weight_decay = 1e-3
    s.alpha_init_scale = 1e-3
    s.sep_impl = "fused"  # fused | depthwise (ops.py)
    s.remat = False  # jax.checkpoint per edge; the CIFAR configs turn it on (BENCHMARKS.md)
    s.crop_padding = -1  # -1: the dataset's default
    s.flip = True
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
    t.flip = True
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


def _parse(text: str, current, key: str):
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
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
