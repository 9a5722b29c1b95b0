"""One persistent XLA compilation cache for the whole test session and the subprocesses it
starts (set before JAX is imported), so a step compiled by one test is loaded by the next; the
autotuner off unless a test turns it on; the slowest tests are started first, so the two workers
end together.

(XLA's backend optimisation off, `--xla_backend_optimization_level=0`, compiles the suite's
small programs about a fifth faster but runs the chain supernets' steps several times slower,
and moves sharded and vmapped steps further from the single-device step than the tests'
tolerances: measured, not used.)"""

import json
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
# The autotuner (dnas/autotune.py) is off in tests: every op computes its kind's default form,
# so results do not depend on timings. tests/test_autotune.py and the :smoke tests turn it on,
# with one choice cache for the session (a temporary directory, never the user's).
os.environ.setdefault("DNAS_AUTOTUNE", "0")
if "DNAS_CACHE_DIR" not in os.environ:
    _TUNE_CACHE = tempfile.mkdtemp(prefix="dnas-tests-autotune-")
    os.environ["DNAS_CACHE_DIR"] = _TUNE_CACHE
else:
    _TUNE_CACHE = None
# Tests of a minute or more on 2 cores (`--durations`), started first: a long test started last
# would run alone at the end.
SLOW_FIRST = (
    "test_notebooks.py::test_a_killed_study_resumed_by_notebook_3_ends_with_the_uninterrupted_table",
    "test_hardware_strategies.py::test_smoke_config_measures_its_table_and_prices_its_alphas",
    "test_parallel.py::test_on_8_simulated_devices",
    "test_precision.py::test_a_short_bfloat16_search_and_retraining_end_within_2pct_of_float32",
    "test_search_methods.py::test_early_stop_hessian_and_evolution",
    "test_search_methods.py::test_pdarts_stages",
    "test_chain_spaces.py::test_active_paths_equal_the_full_mixture_and_its_gradients",
    "test_strategies.py::test_pdarts_skip_dropout_mask_and_schedule",
    "test_search_methods.py::test_darts_pt_selection",
    "test_search_methods.py::test_drnas_progressive_stages",
    "test_lm_search.py::test_text_sweep_members_match_their_own_searches",
    "test_notebooks.py::test_explain_a_cell_logs_the_op_shares_and_explains_the_retraining",
)


# DNAS_TEST_COMPILE_LOG=FILE: each test phase's wall time and the XLA compilations in this process
# during it (JAX's own events; not a subprocess's), one JSON line per phase appended to FILE: the
# seconds spent compiling or loading from the persistent cache, how many programs, how many the
# cache held and missed, and the slowest programs by name (which tests are compilation, which
# computation, and which programs several tests compile alike).
_COMPILE_LOG = os.environ.get("DNAS_TEST_COMPILE_LOG")
_compiles: list = []
_cache = {"hits": 0, "misses": 0}
if _COMPILE_LOG:
    import jax

    def _on_duration(event: str, seconds: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            _compiles.append((kwargs.get("fun_name", "?"), seconds))

    def _on_event(event: str, **kwargs) -> None:
        for name in _cache:
            if event == f"/jax/compilation_cache/cache_{name}":
                _cache[name] += 1

    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    jax.monitoring.register_event_listener(_on_event)

    def pytest_runtest_logreport(report):
        if getattr(report, "node", None) is not None:  # an xdist worker's, forwarded: it wrote it
            return
        slowest = sorted(_compiles, key=lambda c: -c[1])[:8]
        record = {
            "test": report.nodeid,
            "when": report.when,
            "wall_s": round(report.duration, 2),
            "compile_s": round(sum(s for _, s in _compiles), 2),
            "compiles": len(_compiles),
            "cache_hits": _cache["hits"],
            "cache_misses": _cache["misses"],
            "slowest": [[name, round(s, 2)] for name, s in slowest if s >= 0.5],
        }
        _compiles.clear()
        _cache.update(hits=0, misses=0)
        with open(_COMPILE_LOG, "a") as f:
            f.write(json.dumps(record) + "\n")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = f"{item.path.name}::{item.originalname}"
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


def pytest_sessionfinish(session, exitstatus):
    if not hasattr(session.config, "workerinput"):
        for cache in (_CACHE, _TUNE_CACHE):
            if cache is not None:
                shutil.rmtree(cache, ignore_errors=True)


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
