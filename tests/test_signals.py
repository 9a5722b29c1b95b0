"""SIGINT and SIGTERM end a run cleanly (issue 14): `dnas search` in a subprocess, stopped during
its compilation, mid-epoch, and by a second signal while its checkpoint is being saved, exits
130/143 with one line on stderr (no traceback), and resumed to the end finds what an
uninterrupted run finds, bit for bit. Timings after a resume sum every process's
(`loop.Clock`): compared with the times the processes recorded in metrics.jsonl, never with a
wall-clock threshold. The `signals` machinery itself is tested in-process."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from dnas import configlib, loop, pipeline, signals, train
from dnas import workdir as workdir_lib
from dnas.metrics import read_metrics

# 9 steps per epoch on the digits' search split; 54 steps leave a SIGTERM sent after the first
# logged step (3) time to land mid-run. Only epoch ends are checkpointed (every 1000 steps
# otherwise), so a mid-epoch checkpoint is the interruption's. progress=True prints "compiling
# the search step" just before the compilation, which the compilation test waits for.
TINY = textwrap.dedent(
    """
    from dnas import configlib

    def get_config():
        c = configlib.default_config()
        c.space = "nb201"
        c.search.C, c.search.layers, c.search.epochs, c.search.batch_size = 2, 1, 6, 64
        c.train.C, c.train.layers, c.train.epochs, c.train.batch_size = 4, 1, 1, 64
        c.checkpoint_every_steps = 1000
        c.log_every_steps = 3
        c.progress = True
        return c
    """
)
TOTAL_STEPS = 54

# The driver of the second-signal test: `dnas` whose checkpoint saves, once a signal has been
# received, hold before orbax renames the step's temporary directory into place, so that the
# second signal finds the loop waiting for a half-written save.
HOLD_SAVES = textwrap.dedent(
    """
    import asyncio, sys
    from orbax.checkpoint._src.path import atomicity
    from dnas import cli, signals

    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def held(self):
        if signals.received() is not None:
            print("test: checkpoint save held", file=sys.stderr, flush=True)
            await asyncio.sleep(600)
        await finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = held
    sys.exit(cli.main(sys.argv[1:]))
    """
)

# The driver of the Ctrl-C-during-a-save test: the first checkpoint save (step 9, the first
# epoch's end) holds before its rename until a signal has been received, so that the signal
# lands while that save is in progress.
HOLD_FIRST_SAVE = textwrap.dedent(
    """
    import asyncio, sys
    from orbax.checkpoint._src.path import atomicity
    from dnas import cli, signals

    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    first = [True]

    async def held(self):
        if first[0]:
            first[0] = False
            print("test: first save held", file=sys.stderr, flush=True)
            while signals.received() is None:
                await asyncio.sleep(0.02)
        await finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = held
    sys.exit(cli.main(sys.argv[1:]))
    """
)

LINE = re.compile(
    r"^dnas search: interrupted by (SIGINT|SIGTERM) (.*); resume: dnas search --config \S+ "
    r"--workdir (\S+)$"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    path = root / "tiny.py"
    path.write_text(TINY)
    # A cache of this module's own: the first compilation here (the compilation test's, which
    # runs first) is a real one, and the later processes load it.
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(root / "xla_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}  # fmt: skip
    return root, path, env


def _search(tiny, workdir, *, script=None) -> subprocess.Popen:
    """`dnas search` (or the `script` of a `dnas` in `python -c`) on `workdir`, stderr to a
    file beside it."""
    _, path, env = tiny
    program = ["-c", script] if script else ["-m", "dnas.cli"]
    cmd = [sys.executable, *program, "search", "--config", str(path), "--workdir", str(workdir)]
    stderr_path = workdir.parent / f"{workdir.name}.{time.monotonic_ns()}.stderr"
    with open(stderr_path, "w") as stderr:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    proc.stderr_path = stderr_path
    return proc


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def _stderr(proc) -> str:
    return proc.stderr_path.read_text()


def _logged_a_step(workdir) -> bool:
    path = workdir / "metrics.jsonl"
    return path.exists() and "train/loss" in path.read_text()


def _finish(tiny, workdir) -> None:
    """Resumes `workdir` to the end, as the one line says."""
    proc = _search(tiny, workdir)
    assert proc.wait(timeout=600) == 0, _stderr(proc)[-3000:]


def _check_line(proc, code: int, name: str, workdir) -> str:
    """The exit code, a last stderr line that is the one line, no traceback; returns where the
    run stood (the line's middle)."""
    assert proc.wait(timeout=600) == code, _stderr(proc)[-3000:]
    text = _stderr(proc)
    assert "Traceback" not in text, text[-3000:]
    match = LINE.match(text.strip().splitlines()[-1])
    assert match, text[-1000:]
    assert match[1] == name and match[3] == str(workdir)
    return match[2]


def _steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def reference(tiny):
    workdir = tiny[0] / "reference"
    _finish(tiny, workdir)
    return workdir


def _assert_same_search(workdir, reference) -> None:
    assert (workdir / "genotype.json").read_text() == (reference / "genotype.json").read_text()
    got = workdir_lib.load_arrays(workdir / "alphas.npz")
    want = workdir_lib.load_arrays(reference / "alphas.npz")
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


@pytest.fixture(scope="module")
def interrupted_while_compiling(tiny):
    """SIGINT once the search step's compilation has begun; the time it was sent."""
    workdir = tiny[0] / "sigint"
    proc = _search(tiny, workdir)
    _wait_for(proc, lambda: "compiling the search step" in _stderr(proc))
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    return proc, workdir, sent


@pytest.fixture(scope="module")
def interrupted_mid_epoch(tiny):
    workdir = tiny[0] / "sigterm"
    proc = _search(tiny, workdir)
    _wait_for(proc, lambda: _logged_a_step(workdir))
    proc.send_signal(signal.SIGTERM)
    return proc, workdir


def test_sigint_during_compilation_ends_on_one_line_and_resumes_bit_identically(
    tiny, interrupted_while_compiling, reference
):
    # It used to print a 46-100 line traceback, and twice a segmentation fault (exit 139).
    proc, workdir, sent = interrupted_while_compiling
    where = _check_line(proc, 130, "SIGINT", workdir)
    assert where == f"before search step 1 of {TOTAL_STEPS}; checkpoint saved"
    # Noticed right after the compilation returned: it was recorded (its time bracketing the
    # signal's), and no step ran.
    records = read_metrics(workdir)
    (compiled,) = [r for r in records if "search/compile_s" in r]
    assert compiled["time"] - compiled["search/compile_s"] <= sent <= compiled["time"]
    assert not any("train/loss" in r for r in records)
    assert _steps(workdir) == [0]
    _finish(tiny, workdir)
    _assert_same_search(workdir, reference)


def test_sigterm_mid_epoch_saves_the_step_ends_on_one_line_and_resumes_bit_identically(
    tiny, interrupted_mid_epoch, reference
):
    proc, workdir = interrupted_mid_epoch
    where = _check_line(proc, 143, "SIGTERM", workdir)
    match = re.fullmatch(
        rf"at search step (\d+) of {TOTAL_STEPS} \(epoch (\d+) of 6\); checkpoint saved", where
    )
    assert match, where
    step = int(match[1])
    assert 3 <= step < TOTAL_STEPS and int(match[2]) == -(-step // 9)
    assert _steps(workdir)[-1] == step  # the interrupted step itself, mid-epoch or not
    _finish(tiny, workdir)
    _assert_same_search(workdir, reference)


def test_a_second_signal_while_saving_exits_at_once_and_the_abandoned_save_is_ignored(
    tiny, reference
):
    workdir = tiny[0] / "twice"
    proc = _search(tiny, workdir, script=HOLD_SAVES)
    _wait_for(proc, lambda: _logged_a_step(workdir))
    proc.send_signal(signal.SIGINT)
    _wait_for(proc, lambda: "checkpoint save held" in _stderr(proc))
    proc.send_signal(signal.SIGINT)
    where = _check_line(proc, 130, "SIGINT", workdir)
    assert where.endswith("stopped at once by a second signal (a checkpoint save in progress is "
                          "abandoned: a resume starts from the latest complete one)")  # fmt: skip
    step = int(re.match(r"at search step (\d+) ", where)[1])
    # The half-written save is a temporary directory, not a checkpoint.
    leftovers = [p.name for p in (workdir / "checkpoints").iterdir() if not p.name.isdigit()]
    assert any(name.startswith(f"{step}.orbax-checkpoint-tmp") for name in leftovers), leftovers
    assert step not in _steps(workdir)
    _finish(tiny, workdir)
    _assert_same_search(workdir, reference)


def test_ctrl_c_during_a_checkpoint_save_keeps_that_checkpoint(tiny, reference):
    # Ctrl-C used to drop the checkpoint being saved (KeyboardInterrupt inside orbax's wait).
    workdir = tiny[0] / "during_save"
    proc = _search(tiny, workdir, script=HOLD_FIRST_SAVE)
    _wait_for(proc, lambda: "first save held" in _stderr(proc))
    proc.send_signal(signal.SIGINT)
    where = _check_line(proc, 130, "SIGINT", workdir)
    step = int(re.match(r"at search step (\d+) of \d+ .*; checkpoint saved$", where)[1])
    assert step >= 9 and 9 in _steps(workdir) and _steps(workdir)[-1] == step
    _finish(tiny, workdir)
    _assert_same_search(workdir, reference)


def _processes(records: list[dict], start_key: str) -> list[list[dict]]:
    """The records split by process: each process writes `start_key` (its compile time) first."""
    out: list[list[dict]] = []
    for r in records:
        if start_key in r or not out:
            out.append([])
        out[-1].append(r)
    return out


def test_timings_after_a_resume_sum_every_process(
    tiny, interrupted_while_compiling, interrupted_mid_epoch
):
    # A resumed search used to report the last process's time alone.
    config = configlib.load(str(tiny[1]))
    for proc, workdir, *_ in (interrupted_while_compiling, interrupted_mid_epoch):
        if not (workdir / "genotype.json").exists():  # the resume tests above did not run
            proc.wait(timeout=600)
            _finish(tiny, workdir)
        records = read_metrics(workdir)
        processes = _processes(records, "search/compile_s")
        assert len(processes) == 2
        elapsed = [p[-1]["time"] - p[0]["time"] for p in processes]
        final = records[-1]
        compiles = [p[0]["search/compile_s"] for p in processes]
        # Each process compiled before its first record: the sum holds both compilations (the
        # first a real one, seconds long) and both processes' recorded spans; the last process
        # alone would miss the first compilation.
        assert final["search/wall_s"] >= sum(elapsed) + sum(compiles) > compiles[0] > 0
        assert final["search/compile_total_s"] == pytest.approx(sum(compiles))
        assert pipeline.search_wall_s(config, str(workdir)) == final["search/wall_s"]


def test_a_resumed_finished_retraining_reports_the_time_of_every_process(tiny, reference):
    # It used to report train_wall_s 0.0: the resumed process runs no step.
    root, path, _ = tiny
    config = configlib.override(
        configlib.load(str(path)), [f"train.genotype={reference / 'genotype.json'}"]
    )
    workdir = root / "retrain"
    train.run(config, str(workdir))
    again = train.run(config, str(workdir))
    saved = json.loads((workdir / "results.json").read_text())
    assert saved == again
    first, second = _processes(read_metrics(workdir), "train/compile_s")
    # The first process's loop, as recorded: from its first step's record to its last record
    # before the test evaluation. Results are rounded to 0.1 s.
    steps = [r for r in first if "train/loss" in r or "eval_val/loss" in r]
    first_loop = steps[-1]["time"] - steps[0]["time"]
    assert again["train_wall_s"] + 0.05 >= first_loop > 0
    second_elapsed = second[-1]["time"] - second[0]["time"]
    assert again["wall_s"] + 0.05 >= first_loop + second_elapsed
    assert again["compile_s"] + 0.05 >= sum(p[0]["train/compile_s"] for p in (first, second))


# --------------------------------------------------------------------------------------------------
# The machinery, in-process.


@pytest.fixture
def main_thread():
    # Elsewhere Python installs no handler, and the signals below would end the test process.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed in the main thread")


def test_deferred_records_a_signal_and_restores_the_previous_handlers(main_thread):
    before = {s: signal.getsignal(s) for s in signals.SIGNALS}
    with signals.deferred():
        with signals.deferred():  # nested: the outer handler stays
            assert signals.received() is None
            os.kill(os.getpid(), signal.SIGTERM)
            assert signals.received() == signal.SIGTERM  # recorded, nothing raised
        with pytest.raises(signals.Interrupted) as info:
            signals.check("between two phases", "/runs/w")
    assert {s: signal.getsignal(s) for s in signals.SIGNALS} == before
    assert signals.received() is None
    stopped = info.value
    assert (stopped.exit_code, stopped.signal_name) == (143, "SIGTERM")
    assert str(stopped) == "interrupted by SIGTERM between two phases in /runs/w"
    assert stopped.describe(root="/runs/w") == "interrupted by SIGTERM between two phases"
    assert stopped.replace(workdir="/runs/w/retrain_a").describe(root="/runs/w") == (
        f"interrupted by SIGTERM between two phases in retrain_a{os.sep}"
    )
    assert not isinstance(stopped, Exception)  # `except Exception` does not swallow it


def test_a_second_signal_calls_on_second_or_raises_at_once(main_thread):
    seen = []
    with pytest.raises(signals.Interrupted) as info, signals.deferred(on_second=seen.append):
        os.kill(os.getpid(), signal.SIGINT)
        abandoned = signals.Interrupted(signal.SIGINT, "at x step 3 of 9", saved=False)
        with signals.saving(abandoned):
            os.kill(os.getpid(), signal.SIGINT)
    assert seen == [abandoned] and info.value is abandoned
    assert "second signal" in str(abandoned)
    with pytest.raises(signals.Interrupted) as info, signals.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    # No save was in progress: the line does not say one was abandoned.
    assert str(info.value) == "interrupted by SIGINT (a second signal: stopped at once)"


def test_the_clock_continues_from_restored_sums():
    clock = loop.Clock()
    clock.restore({"wall_s": 100.0, "compile_s": 7.0, "epoch": 3})  # no loop_s: written before
    clock.add("compile_s", 2.0)
    totals = clock.totals(running={"loop_s": time.monotonic()})
    assert totals["compile_s"] == 9.0 and 100.0 <= totals["wall_s"] < 200.0
    assert 0.0 <= totals["loop_s"] < totals["wall_s"] - 100.0 + 1e-6
