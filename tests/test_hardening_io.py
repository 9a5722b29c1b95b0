"""Faults of the file system and of sharing a workdir end in one line (issue 14): a read-only
workdir, a full disk (a real one on a small tmpfs when this machine lets us mount one, and a
patched writer that always runs), a save that fails in orbax's background threads, and a second
process on a workdir another one is using."""

import asyncio
import builtins
import errno
import gc
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dnas import checkpoint, cli, configlib, errors, pipeline, progressive, search, sweep, train
from dnas import workdir as workdir_lib
from dnas.checkpoint import Checkpointer

# The smallest search there is (NB201, C=2, one cell, one epoch of 9 steps), for the CLI runs.
TINY = [
    "--config.space=nb201", "--config.search.C=2", "--config.search.layers=1",
    "--config.search.epochs=1", "--config.search.batch_size=64", "--config.progress=false",
]  # fmt: skip


def failing_writes(monkeypatch, root: Path, code: int, *, spare: tuple[str, ...] = ()) -> None:
    """Makes every file or folder created under `root` (except those named in `spare`) fail with
    OSError `code`, as a read-only or full file system would: os.open and os.mkdir (dnas's own
    writes), builtins.open (orbax's JSON files, written from its background threads)."""
    root = os.path.abspath(root)

    def blocked(path) -> bool:
        path = os.path.abspath(os.fspath(path))
        return path.startswith(root + os.sep) and os.path.basename(path) not in spare

    def patch(module, name: str, write_only) -> None:
        real = getattr(module, name)

        def fake(path, *args, **kwargs):
            if blocked(path) and write_only(*args, **kwargs):
                raise OSError(code, os.strerror(code), os.fspath(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(module, name, fake)

    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    patch(os, "open", lambda flags, *a, **k: bool(flags & writes))
    patch(os, "mkdir", lambda *a, **k: True)
    patch(builtins, "open", lambda mode="r", *a, **k: any(c in mode for c in "wax+"))


@pytest.mark.parametrize("spare", [(), (".lock",)], ids=["lock", "config"])
def test_read_only_workdir_is_one_line_error(tmp_path, monkeypatch, capsys, spare):
    """An OSError traceback before; now one line naming the file (not a temporary name) and the
    cause, exit code 2, and nothing written. Tests run as root, which chmod does not stop, so the
    file system's refusal is patched in."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    # Sparing the lock file: the first refused write is then the run's own.
    failing_writes(monkeypatch, workdir, errno.EROFS, spare=spare)
    assert cli.main(["search", "--workdir", str(workdir), *TINY]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and not out, err
    path = re.fullmatch(rf"dnas search: error: cannot write ({re.escape(str(workdir))}/\S+): "
                        r"Read-only file system", lines[0])  # fmt: skip
    assert path, lines[0]
    assert not path.group(1).endswith(".tmp")
    assert (path.group(1) == str(workdir / ".lock")) == (not spare)
    assert os.listdir(workdir) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 128 KB tmpfs: room for a tiny search's config and records, not for its checkpoint."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(disk)]
    try:
        mounted = subprocess.run(mount, capture_output=True, timeout=30).returncode == 0
    except OSError:
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root); the patched-writer tests cover it")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def test_full_disk_is_one_line_error_without_orbax_thread_noise(small_disk):
    """A full disk printed ~930 lines of orbax thread output before its one-line error; now the
    checkpoint's failure is that one line, and no half-written checkpoint is left visible."""
    workdir = small_disk / "run"
    cmd = [sys.executable, "-m", "dnas.cli", "search", "--workdir", str(workdir), *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    pattern = r"error|Traceback|absl|orbax|Exception|Warning"
    noise = [line for line in proc.stderr.splitlines() if re.search(pattern, line, re.I)]
    assert len(noise) == 1, proc.stderr[-3000:]
    assert re.fullmatch(
        rf"dnas search: error: cannot write {re.escape(str(workdir))}/checkpoints/\d+: "
        r"No space left on device",
        noise[0],
    ), noise[0]
    assert proc.stderr.splitlines()[-1] == noise[0]
    # Orbax writes a step under a temporary name and renames it when complete: nothing to resume
    # from, and the leftover goes when the workdir is next opened.
    names = os.listdir(workdir / "checkpoints")
    assert not [n for n in names if n.isdigit()], names
    with Checkpointer(workdir) as ckpt:
        assert ckpt.latest_step() is None
        assert os.listdir(ckpt.directory) == []


# Run in a process of its own, whose whole stderr (at exit too) must stay empty.
BACKGROUND_FAILURE = textwrap.dedent(
    """
    import builtins, errno, json, os, sys
    import jax.numpy as jnp
    from dnas.checkpoint import Checkpointer

    root = os.path.join(sys.argv[1], "checkpoints") + os.sep
    real_open, real_mkdir = builtins.open, os.mkdir

    def full(path):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

    def open_(path, mode="r", *args, **kwargs):  # orbax's JSON files, from its threads
        if os.path.abspath(os.fspath(path)).startswith(root) and set(mode) & set("wax+"):
            raise full(path)
        return real_open(path, mode, *args, **kwargs)

    def mkdir(path, *args, **kwargs):  # a step's folders
        if os.path.abspath(os.fspath(path)).startswith(root):
            raise full(path)
        return real_mkdir(path, *args, **kwargs)

    def failure(step, wait):
        try:
            ckpt.save(step, state, wait=False)
            wait()
        except OSError as e:
            return {"errno": e.errno, "filename": e.filename, "latest": ckpt.latest_step()}

    state = {"x": jnp.arange(1000.0)}
    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(1, state)
    out = {}
    builtins.open = open_  # files: their writes fail in orbax's background threads
    out["at_wait"] = failure(2, ckpt.wait_until_finished)
    out["at_next_save"] = failure(3, lambda: ckpt.save(4, state))  # names step 3
    os.mkdir = mkdir  # folders: made before `save` returns, so it raises
    out["at_save"] = failure(4, lambda: None)
    builtins.open, os.mkdir = real_open, real_mkdir
    out["saved"] = ckpt.save(5, state)  # room again: no stale error of the failed saves
    ckpt.close()
    with Checkpointer(sys.argv[1]) as ckpt:
        out["steps"] = ckpt.all_steps()
        out["restored"] = ckpt.restore(state)[0]["x"].tolist() == state["x"].tolist()
    print(json.dumps(out))
    """
)


def test_full_disk_during_a_save_is_one_oserror_and_no_orbax_noise(tmp_path):
    """A save that fails in orbax's background threads (here: no room for its JSON files) is
    raised once, in the main thread, at the next wait or save, as the OSError it is, naming the
    step; one that cannot make its folders raises at `save`. Nothing of orbax's thread reports
    reaches stderr, the process exits at once (with folders made in the background, orbax's
    writers waited 20 minutes for them), the failed step never becomes visible, and once there
    is room again saving works."""
    cmd = [sys.executable, "-c", BACKGROUND_FAILURE, str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    for when, step in [("at_wait", 2), ("at_next_save", 3), ("at_save", 4)]:
        path = str(tmp_path / "checkpoints" / str(step))
        assert out[when] == {"errno": errno.ENOSPC, "filename": path, "latest": 1}, when
    assert out["saved"] and out["steps"] == [1, 5] and out["restored"]


def _lost_task_exception(filename):
    """Runs a task, compiled as if from `filename`, that fails and whose exception nobody
    retrieves: asyncio logs "Task exception was never retrieved" when the task is collected."""
    source = "async def write_fragment():\n    raise ValueError('RESOURCE_EXHAUSTED')\n"
    namespace = {}
    exec(compile(source, filename, "exec"), namespace)
    loop = asyncio.new_event_loop()
    task = loop.create_task(namespace["write_fragment"]())
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    del task
    gc.collect()


def test_asyncio_reports_of_lost_orbax_tasks_are_demoted(caplog):
    """One CI run of the full-disk test printed asyncio's "Task exception was never retrieved"
    for one of orbax's failed write tasks (it depends on when the task is collected). asyncio
    logs through its own logger, whose records the root logger's filter never sees; now the
    filter is on asyncio's logger too, and it lets through reports of tasks not orbax's."""
    checkpoint._quiet_orbax_errors()
    with caplog.at_level(logging.DEBUG):
        _lost_task_exception(os.path.join(checkpoint._ORBAX_DIR, "checkpoint", "fake.py"))
        _lost_task_exception(os.path.join(os.path.dirname(__file__), "ours.py"))
    lost = [r for r in caplog.records if r.name == "asyncio" and "never retrieved" in r.msg]
    assert [r.levelno for r in lost] == [logging.ERROR], caplog.text
    assert "ours.py" in lost[0].getMessage()
    demoted = [r for r in caplog.records if r.name == "dnas.checkpoint" and "orbax [" in r.msg]
    assert len(demoted) == 1 and demoted[0].levelno == logging.DEBUG


def test_tensorstore_os_errors_become_oserrors():
    """Tensorstore reports a failed write as a ValueError carrying the errno."""
    ts_error = ValueError(
        'RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database at local file "/w/ocdbt/": '
        'Failed writing: "/w/ocdbt/d/40db": Failed to write 508284 bytes to file 7: No space '
        "left on device [os_error_code='28']"
    )
    assert checkpoint._os_error_code(ts_error) == errno.ENOSPC
    wrapped = RuntimeError("commit failed")
    wrapped.__cause__ = ts_error
    assert checkpoint._os_error_code(wrapped) == errno.ENOSPC
    assert checkpoint._os_error_code(PermissionError(errno.EACCES, "Permission denied")) == 13
    assert checkpoint._os_error_code(ValueError("DATA_LOSS: bad chunk")) is None


# --------------------------------------------------------------------------------------------------
# One process per workdir.


def test_second_process_on_a_workdir_exits_at_once_naming_the_holder(tmp_path, lock_holder):
    """Two processes on one workdir: the second died with a 362-line orbax traceback after both
    had written metrics.jsonl. Now it exits at once with one line naming the holder; the lock
    dies with its holder, even under kill -9."""
    workdir = tmp_path / "run"
    holder = lock_holder(workdir)
    cmd = [sys.executable, "-m", "dnas.cli", "search", "--workdir", str(workdir), *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and not proc.stdout, proc.stderr[-3000:]
    assert re.fullmatch(
        rf"dnas search: error: workdir {re.escape(str(workdir))} is in use by process "
        rf"{holder.pid} \(started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\); wait for it or use "
        r"another --workdir\n",
        proc.stderr,
    ), proc.stderr[-3000:]
    assert os.listdir(workdir) == [".lock"]  # nothing written
    in_use = pytest.raises(errors.WorkdirLocked, match=f"process {holder.pid} ")
    with in_use, workdir_lib.locked(workdir):
        pass
    holder.kill()  # SIGKILL: no clean-up runs in the holder
    holder.wait()
    with workdir_lib.locked(workdir):
        info = json.loads((workdir / ".lock").read_text())
        assert info["pid"] == os.getpid()
    assert os.listdir(workdir) == []


def test_workdir_lock_is_reentrant_and_leaves_no_file(tmp_path):
    workdir = tmp_path / "run"
    with workdir_lib.locked(workdir) as path:
        assert path == str(workdir)
        with workdir_lib.locked(str(workdir) + "/"):  # `dnas run` around its own search
            assert (workdir / ".lock").exists()
        assert (workdir / ".lock").exists()  # still held by the outer block
    assert not workdir.exists()  # created by the lock, nothing written: removed with it
    workdir.mkdir()
    with workdir_lib.locked(workdir):
        pass
    assert os.listdir(workdir) == []  # an existing folder stays, without the lock file


@pytest.mark.parametrize(
    "run",
    [search.run, train.run, sweep.run, pipeline.run, progressive.run_pdarts,
     progressive.run_drnas],
    ids=lambda f: f"{f.__module__}.{f.__name__}",
)  # fmt: skip
def test_every_stage_that_writes_a_workdir_locks_it_first(tmp_path, monkeypatch, run):
    class Locked(Exception):
        pass

    taken = []

    def refuse(workdir):
        taken.append(os.fspath(workdir))
        raise Locked

    monkeypatch.setattr(workdir_lib, "locked", refuse)
    workdir = tmp_path / "run"
    with pytest.raises(Locked):
        run(configlib.default_config(), workdir=str(workdir))
    assert taken == [str(workdir)]
    assert not workdir.exists()
