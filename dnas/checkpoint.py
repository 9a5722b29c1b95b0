"""Checkpoints of a run's state (orbax); the small files beside them are `workdir.py`'s.

This is the only module in dnas that imports orbax. One `Checkpointer` owns one workdir's
`<workdir>/checkpoints/` through one `orbax.checkpoint.CheckpointManager` (STYLE rule 10). Each
checkpoint step holds two items:

* `state`: the whole state pytree (flax `struct.PyTreeNode`s, dicts of arrays, optax states with
  their NamedTuples, new-style `jax.random.key` arrays), restored into the structure of a target;
* `metadata`: a small JSON dict (epoch, data position, genotype, ...) saved in the same step, so
  the two can never disagree.

What this wrapper adds to orbax 0.12.8 (measured, see shared/FACTS.md):

* The path is made absolute: a relative one fails only at `wait_until_finished` and leaves a
  temporary directory behind.
* Orbax writes a step into `<step>.orbax-checkpoint-tmp*` and renames it when complete, so an
  interrupted save never shows up in `latest_step()`. Those leftovers are deleted when a
  `Checkpointer` opens the directory (a workdir has one writer at a time).
* Restoring goes through an abstract target (shapes, dtypes, shardings), so optax NamedTuples come
  back as NamedTuples rather than lists; the stored shapes and dtypes are compared with the target
  first, because orbax raises on a shape mismatch but silently casts a dtype mismatch. An
  incompatible checkpoint raises `CheckpointError` saying what differs and what to do.
* An unreadable latest checkpoint falls back to the previous one with a warning, and is moved out of
  the way (to `<workdir>/checkpoints_corrupt/`) so that the next save is not refused by orbax,
  which never writes a step at or below its latest one. If no checkpoint is readable,
  `CheckpointError`: a run never restarts from scratch silently.
* Every save records the SHA-256 of each array in the step's `metadata` item (same atomic step as
  the data), and restore recomputes them: changed bytes inside a data file that still parses
  (orbax's zstd chunks carry no checksum of their own) count as an unreadable checkpoint.
  Checkpoints written before this existed restore unverified (logged once).
* A background save that fails (a full disk, a read-only or vanished file system) is raised in
  the main thread at the next `save`, `wait_until_finished` or `close` as one `OSError` naming
  the step (or a `CheckpointError` when orbax's error names no OS error); orbax's own reports of
  it, an ERROR record with a traceback from every thread involved, go to this module's DEBUG log.
  A failed save leaves only its temporary directory, which `latest_step()` never lists.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp

_log = logging.getLogger(__name__)

State = TypeVar("State")

_STATE = "state"
_METADATA = "metadata"
_TMP_SUFFIX = ocp.path.step.TMP_DIR_SUFFIX  # '.orbax-checkpoint-tmp'
_MAX_LISTED = 5  # differences named in an incompatibility message
# The key of the `metadata` item under which `save` records {array path: SHA-256 hex digest}.
_CHECKSUMS = "_state_sha256"


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be restored (incompatible with the target, or unreadable)."""


class ChecksumMismatch(CheckpointError):
    """A checkpoint's arrays restored, but differ from the checksums saved with them."""


# --------------------------------------------------------------------------------------------------
# Checkpointer.


class Checkpointer:
    """Saves and restores one workdir's state pytree and JSON metadata under `checkpoints/`.

    Usage (the loop in `search.run`):

        ckpt = checkpoint.Checkpointer(workdir)
        if ckpt.latest_step() is not None:
            state, meta = ckpt.restore(state)  # `state` only gives the structure
        ...
        ckpt.save(step, state, metadata={"epoch": epoch})
        ...
        ckpt.close()

    Saving is asynchronous in orbax; `save(..., wait=False)` returns once the arrays are copied to
    host memory (so the caller may donate their buffers to the next step) and writes to disk in
    the background. `save` waits for the previous save to finish before starting the next.
    """

    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int | None = 2):
        self.workdir = Path(workdir).absolute()
        self.directory = self.workdir / "checkpoints"
        self.corrupt_directory = self.workdir / "checkpoints_corrupt"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_tmp_leftovers()
        _quiet_orbax_errors()
        self._max_to_keep = max_to_keep
        self._manager = self._open_manager()
        self._closed = False
        self._pending: int | None = None  # the step of a save that may still run in background
        self._unverified_logged = False

    def _open_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self._max_to_keep,
            create=True,
            # Removed synchronously by `_remove_tmp_leftovers`; orbax's own clean-up runs in a
            # background thread.
            cleanup_tmp_directories=False,
            # A step's folders are made before `save` returns (a few ms). Made in the background
            # (orbax's default), a failure to make them (full disk, read-only file system)
            # leaves the writer threads waiting for a "created" signal that never comes: the
            # process then hangs for orbax's 20-minute timeout after its error.
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
        )
        # Handlers given up front, so `item_metadata` can read a step before any restore call.
        handlers = {_STATE: ocp.StandardCheckpointHandler(), _METADATA: ocp.JsonCheckpointHandler()}
        return ocp.CheckpointManager(
            os.fspath(self.directory), options=options, item_handlers=handlers
        )

    # ----------------------------------------------------------------------------------------------
    # Queries.

    def latest_step(self) -> int | None:
        """The newest finalised step (unfinished saves are never listed), or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Finalised steps on disk, ascending."""
        return sorted(self._manager.all_steps())

    def step_path(self, step: int) -> Path:
        """The directory of checkpoint `step` (for messages and tests)."""
        return self.directory / str(step)

    # ----------------------------------------------------------------------------------------------
    # Save.

    def save(
        self,
        step: int,
        state: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
        wait: bool = True,
    ) -> bool:
        """Saves `state` and `metadata` as checkpoint `step`; returns False if `step` exists.

        A step that is already on disk is left alone (the loop may save the last step twice, e.g.
        at the end of an epoch and at the end of training). A step below the latest one raises
        `CheckpointError`. `metadata` must be JSON-serialisable;
        numpy/jax scalars and small arrays are converted to Python numbers and lists. With
        `wait=False` the write finishes in the background: call `wait_until_finished()` (or
        `close()`) before reading the files.

        Raises:
          OSError: this save, or the previous one still running in the background, could not be
            written (e.g. ENOSPC, EROFS); `filename` is the step's directory. Nothing of the
            failed step is visible: `latest_step()` is still the previous step.
          CheckpointError: the background write failed with an error naming no OS error.
        """
        step = int(step)
        metadata = dict(metadata or {})
        if _CHECKSUMS in metadata:
            raise ValueError(f"checkpoint metadata key {_CHECKSUMS!r} is reserved for checksums")
        metadata_json = _to_json(metadata)
        # A save still in flight is not listed yet: wait first, so that the existence check below
        # sees it (orbax would wait at this point anyway).
        self._wait()
        if step in self._manager.all_steps():
            _log.info(
                "checkpoint step %d already exists in %s; not saved again", step, self.directory
            )
            return False
        latest = self._manager.latest_step()
        if latest is not None and step < latest:
            # Orbax would skip this save silently; and if forced, the newer step would stay the
            # resume point while max_to_keep deleted an older one. Only a deliberate roll-back gets
            # here (unreadable newer steps are moved aside by `restore`).
            raise CheckpointError(
                f"Cannot save step {step} in {self.directory}: it already holds the later step "
                f"{latest}, which a resume would pick instead. To continue from an older step, "
                f"move the later step directories out of {self.directory}, or use a new --workdir."
            )
        # In the metadata item, so checksums and data are committed by the same atomic rename.
        # Computed before `save` returns: the caller may donate the arrays right after.
        metadata_json[_CHECKSUMS] = _checksums(state)
        args = ocp.args.Composite(
            **{_STATE: ocp.args.StandardSave(state), _METADATA: ocp.args.JsonSave(metadata_json)}
        )
        # force=True: the caller decides when to save; orbax's save-decision policy stays out.
        try:
            self._manager.save(step, args=args, force=True)
        except Exception as e:
            self._raise_save_error(step, e, background=False)
        self._pending = step
        if wait:
            self._wait()
        return True

    # ----------------------------------------------------------------------------------------------
    # Restore.

    def restore(self, target_state: State, step: int | None = None) -> tuple[State, dict[str, Any]]:
        """Restores checkpoint `step` (default: the latest readable one) into `target_state`'s
        structure; returns `(state, metadata)`.

        `target_state` may hold arrays or `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`);
        only its tree structure, shapes, dtypes and shardings are used. Numpy leaves come back as
        numpy arrays, everything else as jax arrays (keys as new-style keys).

        Raises:
          CheckpointError: there is no checkpoint; the checkpoint does not match `target_state`
            (structure, shape or dtype); or no candidate checkpoint is readable. With `step=None`
            an unreadable latest checkpoint falls back to the previous one, with a warning, and
            once an older one restores the unreadable ones are moved to `checkpoints_corrupt/`.
            A step whose arrays differ from the checksums saved with them counts as unreadable.
        """
        self._wait()
        if step is not None:
            candidates = [int(step)]
            if candidates[0] not in self._manager.all_steps():
                raise CheckpointError(
                    f"No checkpoint for step {step} in {self.directory}; "
                    f"available steps: {self.all_steps() or 'none'}."
                )
        else:
            candidates = sorted(self._manager.all_steps(), reverse=True)
            if not candidates:
                raise CheckpointError(f"No checkpoint in {self.directory} to restore.")
        abstract = _abstract_tree(target_state)
        target_leaves = _leaf_specs(abstract)
        failures: list[tuple[int, BaseException]] = []
        for candidate in candidates:
            try:
                stored = self._stored_leaf_specs(candidate)
            except Exception as e:  # whatever the reader trips on, the step is unreadable
                failures.append((candidate, e))
                self._warn_unreadable(candidate, e, more=candidate != candidates[-1])
                continue
            differences = _differences(stored, target_leaves)
            if differences:
                raise CheckpointError(self._incompatible_message(candidate, differences))
            try:
                restored = self._manager.restore(
                    candidate,
                    args=ocp.args.Composite(
                        **{
                            _STATE: ocp.args.StandardRestore(abstract),
                            _METADATA: ocp.args.JsonRestore(),
                        }
                    ),
                )
                metadata = dict(restored[_METADATA] or {})
                self._verify(candidate, restored[_STATE], metadata.pop(_CHECKSUMS, None))
            except Exception as e:
                failures.append((candidate, e))
                self._warn_unreadable(candidate, e, more=candidate != candidates[-1])
                continue
            if failures:
                self._quarantine([s for s, _ in failures])
            return restored[_STATE], metadata
        details = "; ".join(f"step {s}: {_one_line(e)}" for s, e in failures)
        raise CheckpointError(
            f"No readable checkpoint in {self.directory} ({details}). The files are truncated, "
            f"damaged or changed since they were saved (a full disk, a crash during a copy?). To "
            f"restart this run from scratch, delete {self.directory}; to keep it, use a new "
            f"--workdir."
        )

    def _verify(self, step: int, state: Any, expected: Any) -> None:
        """Raises `ChecksumMismatch` unless `state`'s arrays have the `expected` checksums."""
        if expected is None:  # written before checksums were recorded
            if not self._unverified_logged:
                self._unverified_logged = True
                _log.warning(
                    "checkpoint %s has no checksums (an older dnas wrote it): restored without "
                    "verification; the checkpoints this run writes carry them",
                    self.step_path(step),
                )
            return
        if not isinstance(expected, dict):
            raise ChecksumMismatch(f"its checksum record is not a mapping: {expected!r:.80}")
        actual = _checksums(state)
        # A path hashed at save but not now (an array sharded over hosts) is not compared.
        bad = [p for p, digest in expected.items() if p in actual and actual[p] != digest]
        if bad:
            listed = ", ".join(bad[:_MAX_LISTED]) + (" ..." if len(bad) > _MAX_LISTED else "")
            raise ChecksumMismatch(
                f"{len(bad)} of its {len(expected)} arrays differ from the SHA-256 checksums "
                f"saved with them ({listed}): the data files changed after the save"
            )

    def _stored_leaf_specs(self, step: int) -> dict[str, tuple[tuple[int, ...], np.dtype | None]]:
        """Paths, shapes and dtypes of the arrays stored in `step`, from orbax's metadata."""
        item = self._manager.item_metadata(step)[_STATE]
        if item is None:  # orbax returns None rather than raising when _METADATA is missing
            raise CheckpointError("the state's metadata file is missing")
        tree = getattr(item, "tree", item)
        flat, _ = jax.tree_util.tree_flatten_with_path(tree)
        return {
            _path_str(path): (
                tuple(getattr(leaf, "shape", ())),
                None if getattr(leaf, "dtype", None) is None else np.dtype(leaf.dtype),
            )
            for path, leaf in flat
        }

    def _warn_unreadable(self, step: int, error: BaseException, *, more: bool) -> None:
        _log.warning(
            "checkpoint %s is unreadable (%s)%s",
            self.step_path(step),
            _one_line(error),
            "; trying the previous one" if more else "",
        )

    def _incompatible_message(self, step: int, differences: list[str]) -> str:
        listed = "; ".join(differences[:_MAX_LISTED])
        if len(differences) > _MAX_LISTED:
            listed += f"; and {len(differences) - _MAX_LISTED} more"
        return (
            f"Checkpoint {self.step_path(step)} does not match the state this run builds: "
            f"{listed}. It was written by a run with a different configuration (model, search "
            f"space, optimiser or dtype). To start a new run, use a new --workdir; to restart this "
            f"one from scratch, delete {self.directory}."
        )

    def _quarantine(self, steps: list[int]) -> None:
        """Moves unreadable steps out of orbax's directory, once an older one restored.

        Orbax refuses (silently) to save a step at or below its latest, so a corrupt newest step
        left in place would block every later save below it, and warn on every resume. Moved, not
        deleted: the files may matter for finding what broke them.
        """
        self.corrupt_directory.mkdir(parents=True, exist_ok=True)
        for step in steps:
            destination = self.corrupt_directory / f"{step}.{int(time.time())}"
            try:
                os.replace(self.step_path(step), destination)
            except OSError as e:
                _log.warning("could not move %s aside: %s", self.step_path(step), e)
                continue
            _log.warning("moved unreadable checkpoint %s to %s", self.step_path(step), destination)
        self._manager.reload()

    # ----------------------------------------------------------------------------------------------
    # Lifetime.

    def _remove_tmp_leftovers(self) -> None:
        """Deletes directories of saves that never finished (a crash or kill during a save)."""
        for path in self.directory.iterdir():
            if _TMP_SUFFIX in path.name and path.is_dir():
                _log.info("removing unfinished checkpoint %s", path)
                shutil.rmtree(path, ignore_errors=True)

    def wait_until_finished(self) -> None:
        """Blocks until any background save has been written and renamed into place; raises
        its failure as `save` does (OSError or CheckpointError)."""
        self._wait()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads; safe to call twice. Raises a
        failed background save's error as `save` does (orbax's threads are released anyway)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._wait()
        finally:
            self._manager.close()

    def _wait(self) -> None:
        """Orbax's `wait_until_finished`, with a background save's failure raised as one error.

        Orbax raises a failed background save in the waiting thread (once; it also logs it from
        every thread involved, which `_quiet_orbax_errors` demotes to DEBUG). Tensorstore reports
        an OS error as a ValueError carrying `os_error_code`; it becomes the OSError it stands
        for. A save orbax reports as finished but did not rename into place raises too: orbax
        logs some finalisation failures instead of raising them.
        """
        step, self._pending = self._pending, None
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            self._reopen()
            self._raise_save_error(step, e, background=True)
        if step is not None and not self.step_path(step).is_dir():
            raise CheckpointError(
                f"Saving checkpoint {self.step_path(step)} failed: orbax finished without writing "
                f"it (see the DEBUG log of {__name__}). The previous checkpoint is intact; rerun "
                f"the same command to resume from it."
            )

    def _reopen(self) -> None:
        """A new orbax manager after a failed background save, so that the next save (once the
        disk has room again) starts clean: orbax keeps the failures of the save's other threads
        and raises them at the next save. Closing the old manager waits for those threads."""
        # The failure also left orbax's coroutines for the rest of that save unawaited; Python
        # warns about each when it collects them (a dozen lines, at exit).
        warnings.filterwarnings(
            "ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning
        )
        with contextlib.suppress(Exception):
            self._manager.close()
        self._remove_tmp_leftovers()
        self._manager = self._open_manager()

    def _raise_save_error(self, step: int | None, error: Exception, *, background: bool) -> None:
        """Raises `error` of saving `step` as an OSError naming the step's directory when it is
        (or wraps) an OS error; else as a CheckpointError if it happened in the background, or
        unchanged (a bug in the caller's state keeps its traceback)."""
        where = self.directory if step is None else self.step_path(step)
        code = _os_error_code(error)
        if code is not None:
            raise OSError(code, os.strerror(code), os.fspath(where)) from error
        if not background:
            raise error
        raise CheckpointError(
            f"Saving checkpoint {where} failed in the background ({_one_line(error)}). The "
            f"previous checkpoint is intact; rerun the same command to resume from it."
        ) from error

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpointer({os.fspath(self.workdir)!r}, steps={self.all_steps()})"


# --------------------------------------------------------------------------------------------------
# Helpers.


def _abstract_tree(tree: Any) -> Any:
    """Shapes, dtypes and shardings of `tree`'s arrays, as orbax's restore target.

    Like `ocp.utils.to_shape_dtype_struct`, except that key arrays keep their key dtype (it turns
    them into their uint32 data) and a `ShapeDtypeStruct` without a sharding gets the default
    device's (without one orbax restores a numpy array). Numpy arrays stay shardless on purpose, so
    they come back as numpy; Python scalars pass through.
    """
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def leaf(x: Any) -> Any:
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, jax.ShapeDtypeStruct):
            return x if x.sharding is not None else x.update(sharding=default)
        if isinstance(x, np.ndarray | np.generic):
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
        return x

    return jax.tree.map(leaf, tree)


def _leaf_specs(abstract: Any) -> dict[str, tuple[tuple[int, ...], np.dtype | None]]:
    """Paths, shapes and dtypes as orbax stores them: key arrays as their uint32 key data."""
    specs = {}
    for path, x in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        if isinstance(x, jax.ShapeDtypeStruct):
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                x = jax.eval_shape(jax.random.key_data, x)
            specs[_path_str(path)] = (tuple(x.shape), np.dtype(x.dtype))
        else:  # a Python scalar: stored as a 0-d value whose dtype depends on jax_enable_x64
            specs[_path_str(path)] = ((), None)
    return specs


def _differences(stored: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two {path: (shape, dtype)} maps, in the target's leaf
    order (so a model's parameters come before their copies in the optimiser state)."""
    out = []
    for path in [*target, *(p for p in stored if p not in target)]:
        if path not in stored:
            out.append(f"{path} is not in the checkpoint")
        elif path not in target:
            out.append(f"{path} is in the checkpoint but not in the state")
        else:
            (s_shape, s_dtype), (t_shape, t_dtype) = stored[path], target[path]
            if s_shape != t_shape or (None not in (s_dtype, t_dtype) and s_dtype != t_dtype):
                out.append(
                    f"{path} is {_spec_str(s_shape, s_dtype)} in the checkpoint but "
                    f"{_spec_str(t_shape, t_dtype)} in the state"
                )
    return out


def _spec_str(shape: tuple[int, ...], dtype: np.dtype | None) -> str:
    return f"{dtype or 'scalar'}{list(shape)}"


def _path_str(path: tuple[Any, ...]) -> str:
    """A key path as orbax names it on disk: 'opt_state.0.mu.conv.kernel'."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def _checksums(tree: Any) -> dict[str, str]:
    """SHA-256 of each array leaf (its dtype, shape and bytes), keyed by its path.

    The arrays are read from host memory with one `jax.device_get` of them all (on CPU a view;
    on an accelerator one batched device-to-host copy, besides the one orbax makes for writing);
    Python scalars are not hashed. Multi-host: a replicated array is hashed from this process's
    replica, so a data-parallel state is verified on any number of hosts; an array sharded over
    hosts is skipped, since hashing it would need every process to hash its own shards
    (`addressable_shards`, keyed by shard index) into a record of its own, and the JSON metadata
    item is written by the primary process only.
    """
    paths, arrays = [], []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = _hashable(leaf)
        if array is not None:
            paths.append(_path_str(path))
            arrays.append(array)
    out = {}
    for path, host in zip(paths, jax.device_get(arrays), strict=True):
        host = np.asarray(host)
        if host.dtype.hasobject:
            continue
        digest = hashlib.sha256(f"{host.dtype.name}{list(host.shape)}".encode())
        digest.update(np.ascontiguousarray(host).reshape(-1).view(np.uint8))
        out[path] = digest.hexdigest()
    return out


def _hashable(x: Any) -> Any:
    """`x` as an array to hash (key arrays as their key data, a replicated array over hosts as
    this process's replica), or None if not hashed."""
    if isinstance(x, jax.Array):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if x.is_fully_addressable:
            return x
        return x.addressable_data(0) if x.is_fully_replicated else None
    return x if isinstance(x, np.ndarray | np.generic) else None


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _os_error_code(error: BaseException) -> int | None:
    """The errno of `error` or of an error it wraps: an OSError's, or the `os_error_code` in a
    tensorstore error's message (e.g. "... No space left on device [os_error_code='28']")."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno:
            return error.errno
        match = _OS_ERROR_CODE.search(str(error))
        if match and int(match.group(1)) in errno.errorcode:
            return int(match.group(1))
        error = error.__cause__ or error.__context__
    return None


# Orbax reports a failed background save with an ERROR record and its traceback from each thread
# involved (~930 lines for a full disk in a search), through absl's logger (a few modules use the
# root logger), then raises it in the main thread, where `Checkpointer._wait` makes one error of
# it. Those records are re-logged at DEBUG level by this module's logger instead. So is the
# "RuntimeError: Event loop is closed" that tensorstore's completion callbacks print (as an
# unraisable exception) when the other writes or reads of a failed save or restore finish after
# orbax has closed its event loop, and the "Task exception was never retrieved" that asyncio logs
# (through its own logger) when one of orbax's write tasks that failed too is garbage collected.
_ORBAX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(ocp.__file__)))  # .../orbax
_QUIET_LOCK = threading.Lock()


class _OrbaxErrorsToDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not _from_orbax(record):
            return True
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("orbax [%s]: %s", record.threadName, record.getMessage(),
                       exc_info=record.exc_info)  # fmt: skip
        return False


def _from_orbax(record: logging.LogRecord) -> bool:
    if record.pathname.startswith(_ORBAX_DIR):
        return True
    # asyncio's report of an orbax task names the coroutine's file in its message ("future: <Task
    # finished ... coro=<...write_fragment() defined at .../orbax/...>"); its traceback runs there.
    if record.name != "asyncio":
        return False
    tb = record.exc_info[2] if record.exc_info else None
    files = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(tb)]
    return any(f.startswith(_ORBAX_DIR) for f in files) or _ORBAX_DIR in record.getMessage()


_ORBAX_FILTER = _OrbaxErrorsToDebug()


def _quiet_orbax_errors() -> None:
    """Installs `_OrbaxErrorsToDebug` on absl's, asyncio's and the root logger (a logger's filters
    see only the records logged through it, not those propagated from its children), and
    `_closed_loop_hook` before the current `sys.unraisablehook` (once)."""
    with _QUIET_LOCK:
        for name in ("absl", "asyncio", None):
            logger = logging.getLogger(name)
            if _ORBAX_FILTER not in logger.filters:
                logger.addFilter(_ORBAX_FILTER)
        if not getattr(sys.unraisablehook, "_dnas_closed_loop", False):
            sys.unraisablehook = _closed_loop_hook(sys.unraisablehook)


def _closed_loop_hook(previous: Any) -> Any:
    def hook(unraisable: Any) -> None:
        error, tb = unraisable.exc_value, unraisable.exc_traceback
        frames = {frame.f_code.co_name for frame, _ in traceback.walk_tb(tb)}
        if (
            isinstance(error, RuntimeError)
            and str(error) == "Event loop is closed"
            and "call_soon_threadsafe" in frames
        ):
            _log.debug("ignored after a failed save or restore: RuntimeError: %s", error)
            return
        previous(unraisable)

    hook._dnas_closed_loop = True
    return hook


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    text = f"{type(error).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


def _to_json(metadata: dict[str, Any]) -> dict[str, Any]:
    """`metadata` with numpy/jax values as Python ones; TypeError naming what is not JSON."""

    def default(x: Any) -> Any:
        if isinstance(x, np.generic | np.ndarray | jax.Array):
            return np.asarray(x).tolist()
        raise TypeError(f"checkpoint metadata must be JSON-serialisable; got {type(x).__name__}")

    # allow_nan=False: NaN and Infinity are not JSON; other readers of the file would choke.
    return json.loads(json.dumps(metadata, default=default, allow_nan=False))


__all__ = ["CheckpointError", "Checkpointer", "ChecksumMismatch"]
