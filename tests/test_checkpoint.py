"""Tests for dnas.checkpoint: round trips, compatibility errors, corruption fallback, checksums,
atomicity."""

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from dnas import workdir as workdir_lib
from dnas.checkpoint import Checkpointer, CheckpointError


class State(struct.PyTreeNode):
    step: jax.Array
    params: dict
    weights_opt: optax.OptState
    alphas_opt: optax.OptState
    key: jax.Array


def make_state(seed: int = 0, w_shape: tuple[int, ...] = (3, 4)) -> State:
    k = jax.random.key(seed)
    params = {"conv": {"kernel": jax.random.normal(k, w_shape), "bias": jnp.arange(4.0) + seed}}
    weights_tx = optax.chain(optax.clip_by_global_norm(5.0), optax.sgd(0.1, momentum=0.9))
    alphas_tx = optax.adam(3e-4)
    # Non-trivial optimiser contents: one update of each, so momentum/mu/nu are not zeros.
    grads = jax.tree.map(jnp.ones_like, params)
    w_state = weights_tx.update(grads, weights_tx.init(params), params)[1]
    a_state = alphas_tx.update(grads, alphas_tx.init(params), params)[1]
    return State(
        step=jnp.array(seed + 7, jnp.int32),
        params=params,
        weights_opt=w_state,
        alphas_opt=a_state,
        key=jax.random.fold_in(k, 3),
    )


def assert_same(a, b) -> None:
    """Equal trees, leaf types and dtypes included (keys compared through their data)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert type(x) is type(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def garble(step_dir: Path, mode: str) -> None:
    """Damages every file of a checkpoint step, as a crash during a copy or a full disk would."""
    for path in step_dir.rglob("*"):
        if not path.is_file():
            continue
        size = path.stat().st_size
        if mode == "truncate":
            os.truncate(path, size // 2)
        else:
            path.write_bytes(b"\xff" * max(size, 1))


def test_round_trip_preserves_values_and_types(tmp_path):
    state = make_state(1)
    meta = {"epoch": 3, "data_position": 1234, "genotype": "Genotype(...)", "config": {"lr": 0.1}}
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(10, state, metadata=meta)
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 10
        restored, restored_meta = ckpt.restore(make_state(0))
    assert_same(restored, state)
    assert isinstance(restored, State)
    # NamedTuples (not lists) inside the optax chain and the adam state.
    assert isinstance(restored.weights_opt[1][0], optax.TraceState)
    assert isinstance(restored.alphas_opt[0], optax.ScaleByAdamState)
    assert restored.key.dtype == jax.random.key(0).dtype
    assert restored_meta == meta


def test_restore_into_abstract_target_and_numpy_leaves(tmp_path):
    state = {"w": jnp.ones((2, 3), jnp.bfloat16), "table": np.arange(5, dtype=np.int64), "n": 4}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state)
        # From jax.eval_shape: ShapeDtypeStructs without sharding still restore to jax arrays.
        abstract = {"w": jax.eval_shape(lambda: jnp.zeros((2, 3), jnp.bfloat16))}
        abstract |= {"table": np.zeros(5, np.int64), "n": 0}
        restored, meta = ckpt.restore(abstract)
    assert isinstance(restored["w"], jax.Array) and restored["w"].dtype == jnp.bfloat16
    assert isinstance(restored["table"], np.ndarray)
    np.testing.assert_array_equal(restored["table"], state["table"])
    assert restored["n"] == 4
    assert meta == {}


def test_save_without_waiting_then_donate(tmp_path):
    """`save(wait=False)` returns once arrays are on the host: deleting them (as donation does)
    must not damage the checkpoint."""
    state = {"w": jnp.arange(10_000.0)}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, wait=False)
        state["w"].delete()
        ckpt.wait_until_finished()
        restored, _ = ckpt.restore({"w": jnp.zeros(10_000)})
    np.testing.assert_array_equal(restored["w"], np.arange(10_000.0))


def test_latest_step_max_to_keep_and_repeated_step(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for step in (1, 2, 3):
            assert ckpt.save(step, make_state(step), metadata={"step": step})
        assert ckpt.all_steps() == [2, 3]
        assert ckpt.latest_step() == 3
        assert not ckpt.save(3, make_state(0))  # already saved: left alone
        with pytest.raises(CheckpointError, match="later step 3"):
            ckpt.save(1, make_state(0))  # below the latest: a resume would not see it
        _, meta = ckpt.restore(make_state(0))
        assert meta == {"step": 3}
        restored, meta = ckpt.restore(make_state(0), step=2)
        assert meta == {"step": 2}
        assert_same(restored, make_state(2))
        with pytest.raises(CheckpointError, match="No checkpoint for step 1"):
            ckpt.restore(make_state(0), step=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]


def test_metadata_must_be_json(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"x": jnp.ones(2)}, metadata={"loss": np.float32(0.5), "v": jnp.arange(2)})
        assert ckpt.restore({"x": jnp.ones(2)})[1] == {"loss": 0.5, "v": [0, 1]}
        with pytest.raises(TypeError, match="JSON"):
            ckpt.save(2, {"x": jnp.ones(2)}, metadata={"bad": object()})
        with pytest.raises(ValueError, match="reserved"):
            ckpt.save(2, {"x": jnp.ones(2)}, metadata={"_state_sha256": {}})
        assert ckpt.all_steps() == [1]


def test_no_checkpoint_raises(tmp_path):
    with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError, match="No checkpoint"):
        ckpt.restore(make_state())


@pytest.mark.parametrize(
    ("target", "names"),
    [
        (make_state(0, w_shape=(5, 4)), ["params.conv.kernel", "(5, 4)", "[3, 4]"]),
        (make_state(0).replace(step=jnp.array(0.0)), ["step", "float32", "int32"]),
        (make_state(0).replace(params={"conv": {"kernel": jnp.ones((3, 4))}}), ["conv.bias"]),
    ],
    ids=["shape", "dtype", "structure"],
)
def test_incompatible_target_names_the_difference(tmp_path, target, names):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(5, make_state(0))
        with pytest.raises(CheckpointError) as info:
            ckpt.restore(target)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "checkpoints" / "5") in message
    for name in names:
        assert name.replace("(5, 4)", "[5, 4]") in message
    assert "--workdir" in message and "delete" in message


@pytest.mark.parametrize("mode", ["truncate", "garble"])
def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog, mode):
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        ckpt.save(1, make_state(1), metadata={"step": 1})
        ckpt.save(2, make_state(2), metadata={"step": 2})
    garble(tmp_path / "checkpoints" / "2", mode)
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        assert ckpt.latest_step() == 2
        with caplog.at_level(logging.WARNING, logger="dnas.checkpoint"):
            restored, meta = ckpt.restore(make_state(0))
        assert meta == {"step": 1}
        assert_same(restored, make_state(1))
        assert "checkpoints/2 is unreadable" in caplog.text
        # Moved aside, so the run can save step 2 again and the next resume does not warn.
        assert ckpt.all_steps() == [1]
        assert [p.name.split(".")[0] for p in (tmp_path / "checkpoints_corrupt").iterdir()] == ["2"]
        assert ckpt.save(2, make_state(2))
        assert ckpt.restore(make_state(0))[1] == {}


# When one array read fails, tensorstore completes the others after orbax has closed its event loop;
# the resulting "Event loop is closed" is printed from a callback, harmlessly.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_data_file_only(tmp_path, caplog):
    """Damage in every data file of a step (not the metadata) is caught: here by orbax's reader
    (its index nodes no longer parse); inside a chunk, by the checksums (`flip_bytes` below)."""
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, make_state(1))
        ckpt.save(2, make_state(2))
    chunks = [p for p in (tmp_path / "checkpoints" / "2" / "state").rglob("d/*") if p.is_file()]
    assert chunks
    for chunk in chunks:
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(bytes(data))
    with Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING):
        restored, _ = ckpt.restore(make_state(0))
    assert_same(restored, make_state(1))
    assert "unreadable" in caplog.text


def flip_bytes(step_dir: Path, n: int = 16) -> Path:
    """Inverts `n` bytes in the middle of the largest array data file of a checkpoint step (an
    OCDBT data file, `state/ocdbt.process_0/d/<hash>`). Orbax's zstd chunks carry no checksum of
    their own and random data is stored as a raw block, so the file still parses and restores to
    other values: only dnas's checksums can tell."""
    files = [p for p in (step_dir / "state").rglob("d/*") if p.is_file()]
    path = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def random_state(seed: int) -> dict:
    """A 256 KB array of random values (incompressible) and a small one."""
    return {"w": jax.random.normal(jax.random.key(seed), (65_536,)), "n": jnp.arange(3) + seed}


def test_changed_bytes_in_data_files_fall_back_to_the_previous_step(tmp_path, caplog):
    """16 changed bytes inside a data file restored with no warning (and the search then found
    another genotype): now the checksum saved with the step catches them."""
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        ckpt.save(1, random_state(1), metadata={"step": 1})
        ckpt.save(2, random_state(2), metadata={"step": 2})
    flip_bytes(tmp_path / "checkpoints" / "2")
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        with caplog.at_level(logging.WARNING, logger="dnas.checkpoint"):
            restored, meta = ckpt.restore(random_state(0))
        assert meta == {"step": 1}
        assert_same(restored, random_state(1))
        # Orbax read the damaged file without complaint; the checksum named the array.
        assert (
            "checkpoints/2 is unreadable (ChecksumMismatch: 1 of its 2 arrays differ from the "
            "SHA-256 checksums saved with them (w)" in caplog.text
        )
        # Moved aside like any unreadable step: the run saves step 2 again and resumes quietly.
        assert ckpt.all_steps() == [1]
        assert [p.name.split(".")[0] for p in (tmp_path / "checkpoints_corrupt").iterdir()] == ["2"]
        assert ckpt.save(2, random_state(2))
        caplog.clear()
        assert_same(ckpt.restore(random_state(0))[0], random_state(2))
        assert not caplog.records


def test_changed_bytes_in_the_only_checkpoint_raise(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, random_state(1))
    flip_bytes(tmp_path / "checkpoints" / "1")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError, match="No readable checkpoint") as info:
            ckpt.restore(random_state(0))
        message = str(info.value)
        assert "step 1: ChecksumMismatch" in message and "SHA-256" in message
        assert f"delete {tmp_path / 'checkpoints'}" in message and "new --workdir" in message
        assert ckpt.all_steps() == [1]  # not moved: the next run fails the same way


def test_checkpoint_without_checksums_restores_unverified_and_says_so_once(tmp_path, caplog):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, make_state(1), metadata={"epoch": 1})
    # The metadata item as dnas wrote it before checksums existed.
    path = tmp_path / "checkpoints" / "1" / "metadata" / "metadata"
    metadata = json.loads(path.read_text())
    assert set(metadata.pop("_state_sha256")) >= {"params.conv.kernel", "key", "step"}
    path.write_text(json.dumps(metadata))
    with Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING, logger="dnas.checkpoint"):
        for _ in range(2):
            restored, meta = ckpt.restore(make_state(0))
            assert meta == {"epoch": 1}
            assert_same(restored, make_state(1))
    assert caplog.text.count("has no checksums") == 1


def test_only_corrupt_checkpoints_raise(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, make_state(1))
        ckpt.save(2, make_state(2))
    garble(tmp_path / "checkpoints" / "1", "garble")
    garble(tmp_path / "checkpoints" / "2", "truncate")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError, match="No readable checkpoint") as info:
            ckpt.restore(make_state(0))
        message = str(info.value)
        assert "step 2: " in message and "step 1: " in message and "delete" in message
        # Nothing was moved: the next run must fail the same way, not start from scratch.
        assert ckpt.all_steps() == [1, 2]


def test_relative_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Checkpointer("run") as ckpt:
        assert ckpt.directory == tmp_path / "run" / "checkpoints"
        ckpt.save(1, {"x": jnp.ones(3)}, wait=False)
    assert not list((tmp_path / "run" / "checkpoints").glob("*tmp*"))
    with Checkpointer("run") as ckpt:
        np.testing.assert_array_equal(ckpt.restore({"x": jnp.zeros(3)})[0]["x"], np.ones(3))


def test_tmp_leftovers_are_ignored_and_removed(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, make_state(1))
    root = tmp_path / "checkpoints"
    # What a save killed half-way leaves (see test_killed_save): a partial copy under a tmp name.
    leftover = root / "2.orbax-checkpoint-tmp-1700000000"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "manifest.ocdbt").write_bytes(b"\x00" * 10)
    with Checkpointer(tmp_path) as ckpt:
        assert not leftover.exists()
        assert ckpt.all_steps() == [1]
        assert ckpt.save(2, make_state(2))
        assert ckpt.latest_step() == 2


def test_killed_save_leaves_nothing_latest_step_picks_up(tmp_path):
    """A process killed while orbax writes in the background: the next run sees the old step."""
    script = textwrap.dedent(
        f"""
        import os, jax.numpy as jnp
        from dnas.checkpoint import Checkpointer
        ckpt = Checkpointer({str(tmp_path)!r})
        ckpt.save(1, {{"x": jnp.ones(3)}})
        ckpt.save(2, {{f"x{{i}}": jnp.arange(2_000_000.0) for i in range(8)}}, wait=False)
        os._exit(3)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == 3, result.stderr.decode()[-2000:]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["1", "2.orbax-checkpoint-tmp"], names  # orbax's unfinished-save directory
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 1
        assert sorted(p.name for p in ckpt.directory.iterdir()) == ["1"]


def test_atomic_write(tmp_path):
    path = tmp_path / "sub" / "genotype.json"
    workdir_lib.atomic_write_text(path, "first\n")
    assert path.read_text() == "first\n"
    workdir_lib.atomic_write_text(path, "second")
    assert path.read_text() == "second"
    workdir_lib.atomic_write_bytes(os.fspath(path), b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in path.parent.iterdir()] == ["genotype.json"]
    # Permissions follow the umask, as for a plain open(); not tempfile's 0o600.
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    workdir_lib.atomic_write_text(path, "old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        workdir_lib.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_retraining_workdir_of_another_genotype_is_refused(tmp_path):
    """Same config, other genotype: refused before anything is written (DARTS cells with the
    same ops on other inputs have the same parameter tree, so restoring would succeed)."""
    from dnas import configlib, spaces, train

    v1, v2 = spaces.load("DARTS_V1"), spaces.load("DARTS_V2")
    v1.save(tmp_path / "genotype.json")
    (tmp_path / "checkpoints" / "1").mkdir(parents=True)  # a completed step: a run to resume
    before = (tmp_path / "genotype.json").read_text()
    with pytest.raises(configlib.ConfigError, match=r"another genotype.*Use a new --workdir"):
        train.run(configlib.default_config(), str(tmp_path), genotype=v2)
    assert (tmp_path / "genotype.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "genotype.json"]
