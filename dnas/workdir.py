"""A run's on-disk layout: the files beside the checkpoints, written atomically, and the config
check that guards resuming.

A workdir of `dnas search` holds `config.json`, `checkpoints/` (`checkpoint.py`),
`metrics.jsonl` (`metrics.py`), `alpha_history/epoch_<N>.npz` (each epoch's mixing weights and
alphas), `genotype.json`, `alphas.npz` and the cell diagrams (DARTS-PT adds `pt/`, its
fine-tuning's own workdir, and `pt_decisions.jsonl`; staged methods one `stage_<i>/` workdir per
stage); `dnas train` adds `results.json`, `dnas run` `summary.json` and one `retrain_<name>/`
workdir per retraining. Every small file here is written by `atomic_write_bytes`: a reader (or
a run killed mid-write) sees the old file or the whole new one, never half of it. While a stage
runs, its process holds the workdir's `.lock` (`locked`): one process per workdir.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dnas import errors

try:
    import fcntl
except ImportError:  # Windows: workdirs are not locked
    fcntl = None

CONFIG = "config.json"
GENOTYPE = "genotype.json"
ALPHAS = "alphas.npz"
CHECKPOINTS = "checkpoints"
ALPHA_HISTORY = "alpha_history"  # epoch_<N>.npz: the search's mixing weights and alphas
LUT = "lut.json"  # hardware.lut=measure: the latency table the search measured at its start


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
    try:
        # os.open with mode 0o666 lets the umask decide the permissions, as `open(path, 'w')`
        # would; tempfile would create the file 0o600.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        if not e.errno:
            raise
        # Named by the file meant, not the temporary one (a failed write() names none), so that
        # the CLI's one-line error says which file could not be written.
        raise OSError(e.errno, e.strerror, os.fspath(path)) from e
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


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file written by `write_jsonl` ([] when there is none)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
# One process per workdir.

LOCK = ".lock"  # flock'ed by the process running in the workdir, which writes its PID into it

_held: dict[str, list[int]] = {}  # real path of a workdir this process holds -> [fd, depth]
_held_guard = threading.Lock()
Run = TypeVar("Run", bound=Callable[..., Any])


@contextlib.contextmanager
def locked(workdir: str | os.PathLike) -> Iterator[str]:
    """Holds `workdir`'s exclusive lock while the block runs (creating the folder); yields its
    absolute path. Raises `errors.WorkdirLocked`, naming the holder, if another process has it.

    The lock is an `fcntl.flock` on `<workdir>/.lock`, into which the holder writes its PID and
    start time. The kernel releases it when the process ends, however it ends (`kill -9`
    included), so it is never stale; the file such an end leaves is simply reused. It is
    re-entrant within a process (`dnas run` holds its workdir while the search it runs takes it
    again). Not locked: without `fcntl` (Windows), and on processes other than 0 of a multi-host
    run, which by design all run in one shared workdir.
    """
    workdir = os.path.abspath(workdir)
    if fcntl is None or _process_index() != 0:
        yield workdir
        return
    created = not os.path.exists(workdir)
    os.makedirs(workdir, exist_ok=True)
    key = os.path.realpath(workdir)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
        else:
            _held[key] = [_acquire(key), 1]
    try:
        yield workdir
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                _release(key, _held.pop(key)[0])
                # A run refused before writing anything (a bad config) leaves no empty folder.
                if created and not os.listdir(workdir):
                    with contextlib.suppress(OSError):
                        os.rmdir(workdir)


def exclusive(run: Run) -> Run:
    """Makes a stage's `run(config, workdir, ...)` hold `locked(workdir)` while it runs, so that
    the lock is taken before it writes anything."""
    signature = inspect.signature(run)

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with locked(signature.bind(*args, **kwargs).arguments["workdir"]):
            return run(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _acquire(directory: str) -> int:
    path = os.path.join(directory, LOCK)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.WorkdirLocked(
                f"workdir {directory} is in use by {_holder(path)}; wait for it or use another "
                "--workdir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # A holder unlinks the file as it releases it (`_release`): if that happened between our
        # open and flock, this lock is on a file nobody else will open. Take the current one.
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            break
        os.close(fd)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return fd


def _release(directory: str, fd: int) -> None:
    # Unlinked while still locked (see `_acquire`), so a finished run leaves no file behind.
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(directory, LOCK))
    os.close(fd)


def _holder(path: str) -> str:
    """'process PID (started TIME)' from a held lock file, read as its holder writes it."""
    for _ in range(20):  # the holder writes its PID just after locking: give it a second
        try:
            with open(path, encoding="utf-8") as f:
                info = json.loads(f.read())
            pid, started, host = info["pid"], info["started"], info["host"]
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
            continue
        on = f" on {host}" if host != socket.gethostname() else ""
        return f"process {pid}{on} (started {started})"
    return "another process"


def _process_index() -> int:
    """This process's index in a multi-host run (0 when JAX is not even imported)."""
    jax = sys.modules.get("jax")
    return jax.process_index() if jax is not None else 0


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
    field; a strategy argument the current config leaves out when the previous value is the
    `defaults` one."""
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
        elif not (key.startswith("strategy_args.") and old[key] == defaults.get(key, _ABSENT)):
            changed.append(key)
    return changed


_ABSENT = object()


def prepare(
    workdir: str,
    config: dict,
    defaults: dict | Callable[[dict], dict],
    *,
    judge: Callable[[dict, list[str]], dict[str, str]] | None = None,
) -> str:
    """Creates `workdir` and writes `config.json` (a plain dict of the config); refuses to resume
    a run of a different config. Returns the absolute path.

    Fields dnas added since the workdir was written are not a difference at their `defaults`
    value (`defaults(previous_config)` when it depends on the old config). `judge(previous,
    changed_keys)` returns the changes that matter, each with the reason (the others are allowed:
    fields that do not change results, or an extension the schedule allows); default: all. A
    workdir whose run has not completed a step yet (`has_progress`: a run that failed or was
    stopped before it, e.g. on NaN or by Ctrl-C while compiling) takes any config: what it holds
    moves to `attempts/<N>/`, so two configs' records and checkpoints never mix.
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG)
    tuned = None  # the autotuner's record of a run being resumed, kept (`recorded_autotune`)
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        tuned = previous.pop(AUTOTUNE, None)  # what the run measured, not part of the config
        implied = defaults(previous) if callable(defaults) else defaults
        changed = config_changes(previous, config, implied)
        if changed and not has_progress(workdir):
            _set_aside_attempt(workdir)
        elif changed:
            refused = judge(previous, changed) if judge else dict.fromkeys(changed, "")
            if refused:
                keys = list(refused)
                shown = ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "")
                reasons = "".join(f"; {k}: {r}" for k, r in refused.items() if r)
                raise errors.ConfigError(
                    f"{workdir} holds a run whose config.json differs in {shown}; resuming it "
                    f"with this config would mix two experiments{reasons}. Use a new --workdir, "
                    f"or resume with --config {path}."
                )
    if tuned is not None and has_progress(workdir):
        config = {**config, AUTOTUNE: tuned}
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return workdir


ATTEMPTS = "attempts"  # what earlier attempts that completed no step left
AUTOTUNE = "autotune"  # config.json's record of the forms the autotuner chose, per stage


def record_autotune(workdir: str, stage: str, record: dict) -> None:
    """Adds `record` (`autotune.tuned`'s: device, site -> form chosen, the timings) to the
    workdir's `config.json` under `autotune.<stage>` (atomically); nothing when it is empty."""
    if not record:
        return
    path = os.path.join(workdir, CONFIG)
    with open(path) as f:
        saved = json.load(f)
    kept = {k: record[k] for k in ("device", "sites", "ms", "disabled") if k in record}
    saved.setdefault(AUTOTUNE, {})[stage] = kept
    atomic_write_text(path, json.dumps(saved, indent=2, sort_keys=True) + "\n")


def recorded_autotune(workdir: str, stage: str) -> dict | None:
    """The autotuner's record at `stage` (`record_autotune`) of the run `workdir` holds, when
    that run has completed a step (`has_progress`; `prepare` keeps the record then): a resume
    takes its forms again (`autotune.tuned`'s `prior`). None for a new run, or a record
    missing, unreadable or malformed."""
    path = os.path.join(workdir, CONFIG)
    if not os.path.isfile(path) or not has_progress(workdir):
        return None
    try:
        with open(path) as f:
            record = json.load(f).get(AUTOTUNE, {}).get(stage)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(record, dict):
        return None
    sites, ms = record.get("sites", {}), record.get("ms", {})
    if not isinstance(sites, dict) or not isinstance(ms, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in sites.items()):
        return None
    return record


def _set_aside_attempt(workdir: str) -> None:
    moving = sorted(n for n in os.listdir(workdir) if n not in (ATTEMPTS, LOCK))
    if not moving:
        return
    root = os.path.join(workdir, ATTEMPTS)
    os.makedirs(root, exist_ok=True)
    n = len(os.listdir(root))
    while os.path.exists(os.path.join(root, str(n))):
        n += 1
    target = os.path.join(root, str(n))
    os.makedirs(target)
    for name in moving:
        os.replace(os.path.join(workdir, name), os.path.join(target, name))


def _steps(directory: str) -> list[int]:
    """The completed checkpoint steps in a `checkpoints/` folder (orbax names a step's folder by
    its number; an interrupted save leaves only a temporary folder)."""
    if not os.path.isdir(directory):
        return []
    return [int(n) for n in os.listdir(directory) if n.isdigit()]


def has_progress(workdir: str) -> bool:
    """Whether a run in `workdir` has completed a step: a checkpoint of a step > 0 in its
    `checkpoints/` or in a stage's (`stage_<i>/`, DARTS-PT's `pt/`, a retraining's). A lone
    step 0 (saved when a signal stopped the run before its first step) is the seed's state."""
    folders = [os.path.join(workdir, CHECKPOINTS)]
    folders += [
        os.path.join(workdir, n, CHECKPOINTS)
        for n in os.listdir(workdir)
        if n not in (ATTEMPTS, CHECKPOINTS) and os.path.isdir(os.path.join(workdir, n))
    ]
    return any(step > 0 for folder in folders for step in _steps(folder))


def has_checkpoints(workdir: str) -> bool:
    """Whether `workdir` holds a run to resume: a completed checkpoint step."""
    return bool(_steps(os.path.join(workdir, CHECKPOINTS)))
