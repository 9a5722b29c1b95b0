"""One persistent XLA compilation cache for the whole test session and the subprocesses it
starts (set before JAX is imported), so a step compiled by one test is loaded by the next."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="dnas-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
else:
    _CACHE = None


def pytest_sessionfinish(session, exitstatus):
    if _CACHE is not None and not hasattr(session.config, "workerinput"):
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture
def search_killed_at_checkpoint():
    """search(config_path, workdir, checkpoints) runs `dnas search` in a subprocess (sharing the
    session's compilation cache), kills it with SIGKILL once `checkpoints` holds a complete step
    (orbax renames a step to its bare number when complete), and returns the steps saved."""

    def run(config_path, workdir, checkpoints, timeout: float = 600) -> list[int]:
        env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
        cmd = [sys.executable, "-m", "dnas.cli", "search", "--config", str(config_path)]
        proc = subprocess.Popen([*cmd, "--workdir", str(workdir)], env=env)
        deadline = time.time() + timeout
        try:
            while time.time() < deadline and proc.poll() is None:
                if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before it could be interrupted"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        return [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()]

    return run


@pytest.fixture
def lock_holder():
    """hold(workdir) starts a process that takes `workdir`'s lock (`workdir.locked`) and keeps
    it; returns its Popen once it holds it. Killed at teardown (SIGKILL: no clean-up runs)."""
    program = (
        "import sys, time\nfrom dnas import workdir\nwith workdir.locked(sys.argv[1]):\n"
        "    print('held', flush=True)\n    time.sleep(600)\n"
    )
    holders = []

    def hold(workdir) -> subprocess.Popen:
        cmd = [sys.executable, "-c", program, str(workdir)]
        holder = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout.readline() == "held\n"
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()
