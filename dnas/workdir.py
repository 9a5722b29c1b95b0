"""A run's on-disk layout: the files beside the checkpoints, written atomically, and the config
check that guards resuming.

A workdir of `dnas search` holds `config.json`, `checkpoints/` (`checkpoint.py`),
`metrics.jsonl` (`metrics.py`), `alpha_history/epoch_<N>.npz` (each epoch's mixing weights and
alphas), `genotype.json`, `alphas.npz` and the cell diagrams (DARTS-PT adds `pt/`, its
fine-tuning's own workdir, and `pt_decisions.jsonl`; staged methods one `stage_<i>/` workdir per
stage); `dnas train` adds `results.json`, `dnas run` `summary.json` and one `retrain_<name>/`
workdir per retraining. Every small file here is written by `atomic_write_bytes`: a reader (or
a run killed mid-write) sees the old file or the whole new one, never half of it.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dnas import errors

CONFIG = "config.json"
GENOTYPE = "genotype.json"
ALPHAS = "alphas.npz"
CHECKPOINTS = "checkpoints"
ALPHA_HISTORY = "alpha_history"  # epoch_<N>.npz: the search's mixing weights and alphas


def alpha_history_path(workdir: str, epoch: int) -> str:
    """Where the search writes the mixing weights and alphas of the end of `epoch`."""
    return os.path.join(workdir, ALPHA_HISTORY, f"epoch_{epoch:04d}.npz")


def read_alpha_history(workdir: str) -> list[tuple[int, dict[str, np.ndarray]]]:
    """(epoch, arrays) of every epoch the search recorded, in epoch order ([] when none)."""
    directory = os.path.join(workdir, ALPHA_HISTORY)
    if not os.path.isdir(directory):
        return []
    out = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("epoch_") and name.endswith(".npz"):
            epoch = int(name[len("epoch_") : -len(".npz")])
            out.append((epoch, load_arrays(os.path.join(directory, name))))
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` so that readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same directory (so the rename stays on one file
    system), are fsynced, and replace `path` with `os.replace`, which is atomic on POSIX and
    Windows. The directory is fsynced too where the OS allows it, so the rename survives a power
    cut. Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as `open(path, 'w')` would;
    # tempfile would create the file 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> None:
    """`atomic_write_bytes` for text (no newline translation: what you pass is what is stored)."""
    atomic_write_bytes(path, text.encode(encoding))


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its rename is durable enough.
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Writes `records` as JSON lines, atomically."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """Writes named arrays (e.g. the alphas, one per group) to an .npz file, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an .npz file written by `save_arrays`."""
    with np.load(path) as f:
        return {name: f[name] for name in f.files}


# --------------------------------------------------------------------------------------------------
# The config check.


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: tree}


_NEUTRAL = (None, False, 0, 0.0, "", [], {})


def config_changes(previous: dict, current: dict, defaults: dict) -> list[str]:
    """The fields (dotted keys) in which `current` differs from a workdir's `previous` config.
    A field the previous config lacks (added to dnas since) counts as unchanged when its value is
    the `defaults` config's, or neutral (0, False, "", empty) where the defaults have no such
    field."""
    defaults = _flatten(json.loads(json.dumps(defaults)))
    old, new = _flatten(previous), _flatten(json.loads(json.dumps(current)))
    changed = []
    for key in sorted(set(old) | set(new)):
        if key in old and key in new:
            if old[key] != new[key]:
                changed.append(key)
        elif key in new:
            if new[key] != defaults.get(key, new[key]) or (
                key not in defaults and new[key] not in _NEUTRAL
            ):
                changed.append(key)
        else:
            changed.append(key)
    return changed


def prepare(workdir: str, config: dict, defaults: dict | Callable[[dict], dict]) -> str:
    """Creates `workdir` and writes `config.json` (a plain dict of the config); refuses to resume
    a run of a different config (fields dnas added since the workdir was written are not a
    difference at their `defaults` value; `defaults(previous_config)` when it depends on the old
    config). Returns the absolute path."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG)
    if os.path.exists(path) and os.path.isdir(os.path.join(workdir, CHECKPOINTS)):
        with open(path) as f:
            previous = json.load(f)
        implied = defaults(previous) if callable(defaults) else defaults
        changed = config_changes(previous, config, implied)
        if changed:
            shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
            raise errors.ConfigError(
                f"{workdir} holds a run whose config.json differs in {shown}; resuming it with "
                "this config would mix two experiments. Use a new --workdir (or the workdir's "
                "config.json as --config values to resume it)."
            )
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return workdir


def has_checkpoints(workdir: str) -> bool:
    """Whether `workdir` holds a run to resume."""
    return os.path.isdir(os.path.join(workdir, CHECKPOINTS))
