"""Result tables of many `dnas run` workdirs (a study's trials): per group of runs (a method, a
setting) the searched cell's test accuracy (or perplexity) as mean +- std with a 95% interval
over seeds, its parameters and multiply-adds, the search and retraining times, and the paired
comparison with the random genotypes retrained for the same seeds (`stats.paired`: the
difference, its interval and the paired t-test). Written as Markdown, CSV and JSON.

A run is read from its `summary.json` (what `dnas run` writes last), so only finished runs
count; the random genotype of a seed may have been retrained by any run of that seed
(`--config.baseline`: `scripts/methods_table.py` retrains it once per seed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from dnas import stats
from dnas import workdir as workdir_lib

SUMMARY = "summary.json"
RANDOM_GROUP = "random genotype"
FILES = ("results.md", "results.csv", "results.json")


class RunResult(NamedTuple):
    """What a table needs of one finished `dnas run` workdir."""

    group: str
    seed: int
    workdir: str
    metric: str  # "test_accuracy" (percent) or "test_perplexity"
    value: float  # the searched cell's metric
    random_value: float | None  # the random genotype's, if this run retrained it
    params: float
    macs: float  # per image, or per token for language models
    search_s: float
    retrain_s: float
    genotype: str


def read_run(workdir: str, group: str, seed: int) -> RunResult:
    """`workdir`'s summary as a `RunResult`; a clear error if the run has not finished."""
    path = os.path.join(workdir, SUMMARY)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{workdir} has no {SUMMARY}: the run has not finished (the same dnas run command "
            f"resumes it)"
        )
    try:
        with open(path) as f:
            summary = json.load(f)
        return _result(summary, workdir, group, seed)
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"{type(err).__name__}: {err}"
        raise ValueError(f"{path} is not a dnas run summary ({problem})") from None


def _result(summary: dict, workdir: str, group: str, seed: int) -> RunResult:
    searched = summary["retrain"]["searched"]
    text = "test_perplexity" in searched
    metric = "test_perplexity" if text else "test_accuracy"

    def value(result: dict) -> float:
        return float(result[metric]) if text else 100.0 * float(result[metric])

    random = summary["retrain"].get("random")
    return RunResult(
        group=group, seed=int(seed), workdir=workdir, metric=metric, value=value(searched),
        random_value=None if random is None else value(random),
        params=float(searched["params"]),
        macs=float(searched.get("macs", searched.get("macs_per_token", math.nan))),
        search_s=float(summary.get("search_wall_s", math.nan)),
        retrain_s=float(searched.get("wall_s", math.nan)), genotype=str(searched["genotype"]),
    )  # fmt: skip


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def group_rows(runs: Sequence[RunResult], confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per group (in order of first appearance), then the random genotypes' row."""
    if not runs:
        raise ValueError("no finished runs to tabulate")
    metrics = {r.metric for r in runs}
    if len(metrics) != 1:
        raise ValueError(f"runs report different metrics {sorted(metrics)}: tabulate them apart")
    random: dict[int, float] = {}
    for r in runs:
        if r.random_value is not None:
            random.setdefault(r.seed, r.random_value)
    groups: dict[str, list[RunResult]] = {}
    for r in runs:
        groups.setdefault(r.group, []).append(r)
    rows = []
    for group, members in groups.items():
        members = sorted(members, key=lambda r: r.seed)
        seeds = [r.seed for r in members]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"group {group!r} has seed {seeds} more than once")
        row = _row(group, seeds, [r.value for r in members], confidence)
        row |= {
            "params": _mean([r.params for r in members]),
            "macs": _mean([r.macs for r in members]),
            "search_s": _mean([r.search_s for r in members]),
            "retrain_s": _mean([r.retrain_s for r in members]),
            "genotypes": [r.genotype for r in members],
        }
        pairs = [(r.value, random[r.seed]) for r in members if r.seed in random]
        if pairs:
            p = stats.paired([a for a, _ in pairs], [b for _, b in pairs], confidence)
            row |= {"vs_random_pairs": p.n, "vs_random_diff": p.mean_diff,
                    "vs_random_ci_low": p.ci_low, "vs_random_ci_high": p.ci_high,
                    "vs_random_t": p.t, "vs_random_p": p.p_value}  # fmt: skip
        rows.append(row)
    if random:
        seeds = sorted(random)
        rows.append(_row(RANDOM_GROUP, seeds, [random[s] for s in seeds], confidence))
    return rows


def _row(group: str, seeds: list[int], values: list[float], confidence: float) -> dict:
    d = stats.describe(values, confidence)
    return {"group": group, "n": d.n, "seeds": seeds, "values": values, "mean": d.mean,
            "std": d.std, "ci_low": d.ci_low, "ci_high": d.ci_high}  # fmt: skip


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def markdown(rows: Sequence[dict], metric: str = "test_accuracy") -> str:
    unit = "test acc (%)" if metric == "test_accuracy" else "test ppl"
    lines = [
        f"| group | seeds | {unit} mean +- std | 95% CI | params | M MACs | search s | retrain s "
        "| vs random (paired) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        vs = "-"
        if "vs_random_diff" in r:
            vs = (f"{r['vs_random_diff']:+.2f} [{_num(r['vs_random_ci_low'])}, "
                  f"{_num(r['vs_random_ci_high'])}], p={_num(r['vs_random_p'], 3)}, "
                  f"{r['vs_random_pairs']} pairs")  # fmt: skip
        macs = r.get("macs")
        lines.append(
            f"| {r['group']} | {r['n']} | {_num(r['mean'])} +- {_num(r['std'])} "
            f"| [{_num(r['ci_low'])}, {_num(r['ci_high'])}] | {_num(r.get('params'), 0)} "
            f"| {_num(None if macs is None else macs / 1e6)} | {_num(r.get('search_s'), 0)} "
            f"| {_num(r.get('retrain_s'), 0)} | {vs} |"
        )
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("group", "n", "mean", "std", "ci_low", "ci_high", "params", "macs", "search_s",
               "retrain_s", "vs_random_pairs", "vs_random_diff", "vs_random_ci_low",
               "vs_random_ci_high", "vs_random_t", "vs_random_p", "seeds", "values")  # fmt: skip


def to_csv(rows: Sequence[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        cells = []
        for c in CSV_COLUMNS:
            v = r.get(c)
            cells.append(" ".join(map(str, v)) if isinstance(v, list) else "" if v is None else v)
        writer.writerow(cells)
    return out.getvalue()


def write_tables(rows: Sequence[dict], directory: str, metric: str = "test_accuracy") -> list[str]:
    """`results.md`, `results.csv`, `results.json` in `directory`, each written atomically."""
    finite = [{k: None if isinstance(v, float) and not math.isfinite(v) else v
               for k, v in r.items()} for r in rows]  # fmt: skip  # JSON has no NaN: null
    texts = (markdown(rows, metric), to_csv(rows),
             json.dumps({"metric": metric, "rows": finite}, indent=1) + "\n")  # fmt: skip
    paths = [os.path.join(directory, name) for name in FILES]
    for path, text in zip(paths, texts, strict=True):
        workdir_lib.atomic_write_text(path, text)
    return paths


__all__ = [
    "FILES",
    "RANDOM_GROUP",
    "RunResult",
    "group_rows",
    "markdown",
    "read_run",
    "to_csv",
    "write_tables",
]
