"""Studies: many `dnas run`-like trials (groups of configs x a grid of overrides x seeds) executed
on Ray, and their result tables (`dnas study STUDY.py`).

A study file is Python, like a config: its `get_study()` returns a `Study`.

    from dnas.study import Group, Study

    def get_study():
        return Study(
            groups=[Group("darts", "../darts/cifar10_search.py:digits"),
                    Group("gdas", "../gdas/cifar10_search.py:digits")],
            seeds=(0, 1, 2),
            grid={"search.alpha_lr": (3e-4, 1e-3)},  # every group at each value
        )

Each trial is one `pipeline.run` (search + retraining; `kind="search"`: the search alone, scored
by the space's benchmark table; `kind="retrain"`: given genotypes retrained) in its own workdir,
`<study dir>/<group>/seed<k>`, with its output in `<study dir>/logs/<group>__seed<k>.log`. A trial
is idempotent: a workdir holding `summary.json` is finished and is skipped; any other resumes from
its own checkpoints. So restoring a study is running it again, and Ray may retry a trial whose
worker died (`max_retries`) without losing more than the steps since its last checkpoint.

Ray runs the trials as tasks with the study's resource request (`Study.resources`: one CPU by
default, `{"num_gpus": 1}` for a GPU each, `{"resources": {"TPU": 4}}` for a TPU host);
`ray.init()` starts a local cluster, `address=` joins a running one (`ray start --head` on one
machine, `ray start --address=HEAD:6379` on the others, the study dir on a filesystem they all
mount). Ray Tune is not used: its grid, trial resources and experiment restore would duplicate
what the workdirs already are (the trials' own resumable state), and its experiment state could
disagree with them; plain tasks and a `ray.wait` loop are 100 lines.

The random genotype of a seed depends only on the seed and the space, so `baseline=True` retrains
it once per seed, in the first group's trial, and the tables pair each group's seeds with it
(`results.group_rows`). The study writes `study.json` (its trials) and, when trials finish,
`results.md`, `results.csv` and `results.json` (`results.write_tables`); `dnas plot STUDYDIR`
draws them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from dnas import configlib, results
from dnas import workdir as workdir_lib

STUDY = "study.json"
KINDS = ("run", "search", "retrain")
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type")
# Environment a trial on a Ray worker takes from the driver: where the persistent caches are,
# JAX's and XLA's settings (a local cluster's workers inherit the driver's environment; a remote
# cluster's do not).
ENV_PREFIXES = ("DNAS_", "JAX_", "XLA_", "TF_CPP_", "TFDS_")


class StudyError(ValueError):
    """A study file or study directory that cannot be run: the message says what and how to fix
    it."""


@dataclasses.dataclass(frozen=True)
class Group:
    """One row of the study's table: a config and its overrides.

    Attributes:
      name: the row's name, and its trials' directory (letters, digits, `.`, `_`, `-`, `=`).
      config: `path.py[:arg]` (relative to the study file's directory) or a `config.json`.
      overrides: `{"key": value}` or `("key=value", ...)`, as `--config.key=value` would set.
      genotype: with `kind="retrain"`, the cell to retrain (any text `dnas.spaces.load` reads:
        a published name, a genotype file or string).
    """

    name: str
    config: str
    overrides: Mapping[str, Any] | Sequence[str] = ()
    genotype: str | None = None


@dataclasses.dataclass(frozen=True)
class Study:
    """What a study runs: every group at every point of `grid`, for every seed.

    Attributes:
      groups: the rows.
      seeds: each group's seeds (`config.seed`).
      kind: "run" (search, then retrain the found cell: `dnas run`), "search" (the search alone;
        its score is the benchmark table's accuracy of the cell: `benchmark.table`) or "retrain"
        (each group's `genotype`, retrained).
      grid: `{"key": (value, ...)}`: every group at every combination of the values, each its
        own row ("darts search.alpha_lr=0.001").
      overrides: applied to every trial before the group's own.
      baseline: retrain each seed's random genotype (once per seed) and compare with it.
      resources: each trial's Ray resource request.
    """

    groups: Sequence[Group]
    seeds: Sequence[int] = (0, 1, 2)
    kind: str = "run"
    grid: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    overrides: Mapping[str, Any] | Sequence[str] = ()
    baseline: bool = True
    resources: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"num_cpus": 1})


@dataclasses.dataclass(frozen=True)
class Trial:
    """One job of a study: a config (loaded, overridden and validated by the driver) and its
    workdir."""

    name: str  # "<group dir>/seed<k>"
    group: str
    seed: int
    workdir: str
    config: Any  # ml_collections.ConfigDict
    genotype: str | None = None  # kind "retrain"

    @property
    def log(self) -> str:
        study_dir = os.path.dirname(os.path.dirname(self.workdir))
        return os.path.join(study_dir, "logs", self.name.replace("/", "__") + ".log")

    @property
    def finished(self) -> bool:
        return os.path.isfile(os.path.join(self.workdir, results.SUMMARY))


def load(path: str) -> Study:
    """The `Study` of a study file's `get_study()`; a `StudyError` saying what is wrong."""
    study = configlib.call_user_file(path, "get_study", "study file", StudyError)
    if not isinstance(study, Study):
        raise StudyError(
            f"get_study() in {path!r} must return a dnas.study.Study, got {type(study).__name__}"
        )
    return study


def methods(root: str, config: str = "cifar10_search.py", first: str = "darts") -> list[str]:
    """The method folders under `root` (e.g. `experiments/`) that hold a `config` file, sorted,
    `first` first (the first group's trials retrain the random cells)."""
    names = sorted(m for m in os.listdir(root) if os.path.isfile(os.path.join(root, m, config)))
    return sorted(names, key=lambda m: m != first)


def _assignments(overrides: Mapping[str, Any] | Sequence[str], where: str) -> list[str]:
    if isinstance(overrides, str):
        raise StudyError(f"{where}: overrides must be a dict or a list of 'key=value', not a str")
    if isinstance(overrides, Mapping):
        return [f"{k}={_value_text(v)}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def trials(study: Study, study_dir: str, base_dir: str = ".") -> list[Trial]:
    """The study's trials, seed-major (an interrupted study has whole seeds first), each config
    loaded and validated now: an unknown key or bad value is refused before anything runs."""
    if study.kind not in KINDS:
        raise StudyError(f"Study.kind must be one of {KINDS}, got {study.kind!r}")
    if not study.groups:
        raise StudyError("Study.groups is empty: give at least one Group")
    seeds = list(study.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise StudyError(f"Study.seeds must be distinct integers, got {seeds}")
    unknown = sorted(set(study.resources) - set(RESOURCE_KEYS))
    if unknown:
        raise StudyError(f"Study.resources: unknown {unknown}; valid keys: {RESOURCE_KEYS}")
    for key, values in study.grid.items():
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise StudyError(f"Study.grid[{key!r}] must be a non-empty list of values")
    points = [dict(zip(study.grid, combo, strict=True))
              for combo in itertools.product(*study.grid.values())]  # fmt: skip
    rows: list[tuple[str, Group, dict]] = []
    for group in study.groups:
        if not re.fullmatch(r"[A-Za-z0-9._=-]+", group.name):
            raise StudyError(f"group name {group.name!r}: use letters, digits, '.', '_', '-', '='")
        if study.kind == "retrain" and not group.genotype:
            raise StudyError(f"group {group.name!r}: a 'retrain' study needs Group(genotype=...)")
        for point in points:
            suffix = " ".join(f"{k}={_value_text(v)}" for k, v in point.items())
            rows.append((f"{group.name} {suffix}".strip(), group, point))
    names = [name for name, _, _ in rows]
    if len(set(names)) != len(names):
        raise StudyError(f"group names repeat: {names}")
    study_dir = os.path.abspath(study_dir)
    out = []
    for seed in seeds:
        for i, (name, group, point) in enumerate(rows):
            where = f"group {name!r}"
            spec = group.config
            path, sep, arg = spec.partition(":")
            if not os.path.isabs(path):
                spec = os.path.join(os.path.abspath(base_dir), path) + sep + arg
            assignments = [
                *_assignments(study.overrides, "Study.overrides"),
                *_assignments(group.overrides, where),
                *_assignments(point, "Study.grid"),
                f"seed={seed}", "progress=false",
                f"baseline={str(study.baseline and i == 0 and study.kind != 'search').lower()}",
            ]  # fmt: skip
            try:
                config = configlib.validate(configlib.override(configlib.load(spec), assignments))
            except configlib.ConfigError as err:
                raise StudyError(f"{where}: {err}") from None
            if study.kind == "search" and not config.benchmark.table:
                raise StudyError(
                    f"{where}: a 'search' study scores each cell by the space's benchmark table: "
                    "set benchmark.table (Study.overrides), or use kind='run'"
                )
            directory = re.sub(r"[^A-Za-z0-9._=-]", "_", name)  # a grid value may hold '/
            out.append(Trial(name=f"{directory}/seed{seed}", group=name, seed=seed,
                             workdir=os.path.join(study_dir, directory, f"seed{seed}"),
                             config=config, genotype=group.genotype))  # fmt: skip
    return out


@contextlib.contextmanager
def _output_to(path: str) -> Iterator[None]:
    """The process's stdout and stderr (file descriptors 1 and 2: XLA's logs too) appended to
    `path` while inside."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@contextlib.contextmanager
def _logging_to_stderr() -> Iterator[None]:
    """dnas's INFO records (a resume: "resumed <dir> at step N") on stderr while inside."""
    logger = logging.getLogger("dnas")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # once: Ray's workers give the root logger a handler too
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def run_trial(trial: Trial, kind: str) -> dict:
    """Runs (or resumes, or skips if finished) one trial; returns its `summary.json`. Stops where
    its files are consistent on SIGINT/SIGTERM (`signals.deferred`), as `ray.cancel` sends."""
    from dnas import pipeline, signals

    if not trial.finished:
        with _output_to(trial.log), _logging_to_stderr(), signals.deferred():
            print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} trial {trial.name} on "
                  f"{os.uname().nodename} pid {os.getpid()}", flush=True)  # fmt: skip
            genotype = None
            if kind == "retrain":
                from dnas import spaces

                genotype = spaces.load(trial.genotype)
            try:
                pipeline.run(trial.config, trial.workdir, genotype, retrain=kind != "search")
            except signals.Interrupted as stopped:  # ray.cancel, Ctrl-C: say where it stood
                print(f"# stopped: {stopped.describe(root=trial.workdir)}", flush=True)
                raise
    with open(os.path.join(trial.workdir, results.SUMMARY)) as f:
        return json.load(f)


def _describe(trial: Trial) -> dict:
    return {"name": trial.name, "group": trial.group, "seed": trial.seed,
            "workdir": os.path.relpath(trial.workdir, os.path.dirname(os.path.dirname(
                trial.workdir))),
            "genotype": trial.genotype, "config": trial.config.to_dict()}  # fmt: skip


def write_description(study: Study, all_trials: Sequence[Trial], study_dir: str, source: str):
    """`study.json`: the study's kind, groups and trials with their full configs, which `table`
    and `dnas plot STUDYDIR` read (the study file is not needed again)."""
    groups = list(dict.fromkeys(t.group for t in all_trials))
    data = {"version": 1, "source": os.path.abspath(source), "kind": study.kind,
            "groups": groups, "seeds": list(study.seeds),
            "trials": [_describe(t) for t in all_trials]}  # fmt: skip
    workdir_lib.atomic_write_text(
        os.path.join(study_dir, STUDY), json.dumps(data, indent=1, default=str) + "\n"
    )


def read_description(study_dir: str) -> dict:
    path = os.path.join(study_dir, STUDY)
    if not os.path.isfile(path):
        raise StudyError(f"{study_dir} is not a study directory: it has no {STUDY}")
    try:
        with open(path) as f:
            data = json.load(f)
        data["trials"] = [dict(t, workdir=os.path.join(study_dir, t["workdir"]))
                          for t in data["trials"]]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"{type(err).__name__}: {err}"
        raise StudyError(f"{path} is not a study description ({problem})") from None
    return data


def table(study_dir: str) -> tuple[list[dict], list[results.RunResult], str]:
    """The study's rows (`results.group_rows`), its finished trials and their metric, written
    to `results.md|csv|json` in `study_dir`."""
    description = read_description(study_dir)
    finished = [t for t in description["trials"]
                if os.path.isfile(os.path.join(t["workdir"], results.SUMMARY))]  # fmt: skip
    if not finished:
        raise StudyError(f"no trial of {study_dir} has finished yet")
    runs = [results.read_run(t["workdir"], t["group"], t["seed"]) for t in finished]
    rows = results.group_rows(runs)
    results.write_tables(rows, study_dir, runs[0].metric)
    return rows, runs, runs[0].metric


def _status(trial: Trial, since: float) -> str:
    """Where a submitted trial stands: queued (its log not written since `since`), or its newest
    metrics file's phase and last step."""
    if not os.path.isfile(trial.log) or os.path.getmtime(trial.log) < since:
        return "queued"
    newest, when = None, -1.0
    for root, dirs, files in os.walk(trial.workdir):
        dirs[:] = [d for d in dirs if d not in ("checkpoints", "tb", "alpha_history")]
        if "metrics.jsonl" in files:
            mtime = os.path.getmtime(os.path.join(root, "metrics.jsonl"))
            if mtime > when:
                newest, when = os.path.join(root, "metrics.jsonl"), mtime
    if newest is None:
        return "starting (compiling)"
    phase = os.path.relpath(os.path.dirname(newest), trial.workdir)
    phase = "search" if phase == "." else phase
    with open(newest, "rb") as f:
        start = max(0, os.path.getsize(newest) - 4096)
        f.seek(start)
        lines = f.read().decode(errors="replace").splitlines()[1 if start else 0 :]
    step, epoch = None, None
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            step = record.get("step") if step is None else step
            epoch = record.get("epoch") if epoch is None else epoch
    if step is None:
        return f"{phase}: compiling"
    return f"{phase} step {step}" + (f" epoch {epoch}" if epoch is not None else "")


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


def run(
    study: Study,
    study_dir: str,
    *,
    source: str = "",
    address: str | None = None,
    max_concurrent: int | None = None,
    report_every_s: float = 60.0,
    print_fn: Callable[[str], None] = print,
) -> int:
    """Runs the study's unfinished trials on Ray and writes its tables; returns the number of
    trials that failed (each with its log's last lines printed). SIGINT/SIGTERM cancel the
    running trials, which checkpoint and stop (`signals`); running the study again resumes
    them."""
    try:
        import ray
    except ImportError:
        raise ImportError("dnas study runs its trials on Ray: pip install 'dnas[study]'") from None

    base_dir = os.path.dirname(os.path.abspath(source)) if source else "."
    all_trials = trials(study, study_dir, base_dir)
    todo = [t for t in all_trials if not t.finished]
    print_fn(f"study {study_dir}: {len(all_trials)} trials, {len(all_trials) - len(todo)} "
             f"finished, {len(todo)} to run")  # fmt: skip
    failed = 0
    if not todo:
        write_description(study, all_trials, study_dir, source)
    else:
        started = time.time()
        with warnings.catch_warnings():  # JAX's, as Ray forks and executes its processes
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": _environment()})  # fmt: skip
        try:
            _check_resources(ray, study.resources, address, print_fn)  # before any file
            os.makedirs(study_dir, exist_ok=True)
            write_description(study, all_trials, study_dir, source)
            failed = _drive(ray, study, todo, max_concurrent, report_every_s, print_fn, started)
        finally:
            ray.shutdown()
    with contextlib.suppress(StudyError):  # no trial finished: no table
        rows, _, metric = table(study_dir)
        print_fn(results.markdown(rows, metric))
    return failed


def _check_resources(ray, resources: Mapping[str, Any], address, print_fn) -> None:
    """A trial's request that no node of the cluster can meet: refused on a local cluster (it
    would wait forever), a warning on a joined one (an autoscaler may add such nodes)."""
    names = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
    wanted = {names[k]: v for k, v in resources.items() if k in names}
    wanted |= dict(resources.get("resources", {}))
    have = ray.cluster_resources()
    short = {k: v for k, v in wanted.items() if v and have.get(k, 0) < v}
    if not short:
        return
    message = (
        f"each trial asks for {dict(resources)} but the cluster has "
        f"{ {k: have.get(k, 0) for k in short} }: set Study.resources to what a node has "
        "(e.g. {'num_cpus': 1} without GPUs)"
    )
    if address is None:
        raise StudyError(message)
    print_fn(f"warning: {message}; the trials wait until such a node joins")


def _drive(ray, study, todo, max_concurrent, report_every_s, print_fn, started) -> int:
    from dnas import signals

    task = ray.remote(run_trial).options(**dict(study.resources), max_retries=3)
    window = max_concurrent or len(todo)
    pending, running, failed, done = list(todo), {}, 0, 0
    last_report = time.time()
    try:
        while pending or running:
            while pending and len(running) < window:
                trial = pending.pop(0)
                running[task.remote(trial, study.kind)] = (trial, time.time())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=5.0)
            signals.check("while its trials ran")
            for ref in ready:
                trial, since = running.pop(ref)
                try:
                    summary = ray.get(ref)
                except Exception as err:  # the trial's error: report it, go on with the others
                    failed += 1
                    print_fn(f"FAILED {trial.name}: {_first_line(err)}\n{_tail(trial.log)}")
                    continue
                done += 1
                print_fn(f"[{done}/{len(todo)}] {trial.name} finished in "
                         f"{time.time() - since:.0f} s: {_score(summary)}")  # fmt: skip
            if running and time.time() - last_report >= report_every_s:
                last_report = time.time()
                print_fn(f"study: {done} done, {failed} failed, {len(running)} submitted to "
                         f"Ray, {len(pending)} waiting, {time.time() - started:.0f} s")  # fmt: skip
                for trial, since in running.values():
                    status = _status(trial, since)
                    print_fn(f"  {trial.name}: {status} ({time.time() - since:.0f} s)")
    except BaseException:  # a signal (KeyboardInterrupt, dnas.signals) or an error: stop them
        for ref in running:
            ray.cancel(ref)  # SIGINT in the worker: the trial checkpoints its step and stops
        with contextlib.suppress(Exception):
            ray.wait(list(running), num_returns=len(running), timeout=60.0)
        raise
    return failed


def _score(summary: dict) -> str:
    retrained = summary.get("retrain", {}).get("searched")
    if retrained is None:
        truth = summary.get("benchmark", {}).get("searched", {})
        return ", ".join(f"{k} {v:.2f}%" for k, v in truth.items())
    if "test_perplexity" in retrained:
        return f"test perplexity {retrained['test_perplexity']:.2f}"
    return f"test accuracy {100 * retrained['test_accuracy']:.2f}%"


def _first_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err  # a RayTaskError wraps the trial's exception
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


def _tail(path: str, lines: int = 15) -> str:
    if not os.path.isfile(path):
        return f"  (no log at {path})"
    with open(path, errors="replace") as f:
        tail = f.readlines()[-lines:]
    return "".join(f"  | {line}" for line in tail) + f"  log: {path}"


__all__ = ["KINDS", "STUDY", "Group", "Study", "StudyError", "Trial", "load", "methods", "run",
           "table", "trials"]  # fmt: skip
