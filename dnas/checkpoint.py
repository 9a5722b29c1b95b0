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
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
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


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be restored (incompatible with the target, or unreadable)."""


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
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            # Removed synchronously above; orbax's own clean-up runs in a background thread.
            cleanup_tmp_directories=False,
        )
        # Handlers given up front, so `item_metadata` can read a step before any restore call.
        handlers = {_STATE: ocp.StandardCheckpointHandler(), _METADATA: ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(
            os.fspath(self.directory), options=options, item_handlers=handlers
        )
        self._closed = False

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
        """
        step = int(step)
        metadata_json = _to_json(dict(metadata or {}))
        # A save still in flight is not listed yet: wait first, so that the existence check below
        # sees it (orbax would wait at this point anyway).
        self._manager.wait_until_finished()
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
        args = ocp.args.Composite(
            **{_STATE: ocp.args.StandardSave(state), _METADATA: ocp.args.JsonSave(metadata_json)}
        )
        # force=True: the caller decides when to save; orbax's save-decision policy stays out.
        self._manager.save(step, args=args, force=True)
        if wait:
            self._manager.wait_until_finished()
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
        """
        self._manager.wait_until_finished()
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
            except Exception as e:
                failures.append((candidate, e))
                self._warn_unreadable(candidate, e, more=candidate != candidates[-1])
                continue
            if failures:
                self._quarantine([s for s, _ in failures])
            return restored[_STATE], dict(restored[_METADATA] or {})
        details = "; ".join(f"step {s}: {_one_line(e)}" for s, e in failures)
        raise CheckpointError(
            f"No readable checkpoint in {self.directory} ({details}). The files are truncated or "
            f"damaged (a full disk or a crash during a copy?). To restart this run from scratch, "
            f"delete {self.directory}; to keep it, use a new --workdir."
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
        """Blocks until any background save has been written and renamed into place."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._manager.wait_until_finished()
        self._manager.close()

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


__all__ = ["CheckpointError", "Checkpointer"]
