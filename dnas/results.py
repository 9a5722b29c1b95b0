"""Result tables of many `dnas run` workdirs (a study's trials): per group of runs (a method, a
setting) the searched cell's test accuracy (or perplexity) as mean +- std with a 95% interval
over seeds, its parameters and multiply-adds, the search and retraining times, and the paired
comparison with the random genotypes retrained for the same seeds (`stats.paired`: the
difference, its interval and the paired t-test). Written as Markdown, CSV and JSON.

A run is read from its `summary.json` (what `dnas run` writes last), so only finished runs
count; the random genotype of a seed may have been retrained by any run of that seed
(`--config.baseline`: a study, `dnas.study`, retrains it once per seed).
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

from dnas import spaces, stats
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
    benchmark: dict[str, float] = {}  # noqa: RUF012  the searched cell's published results
    random_benchmark: dict[str, float] = {}  # noqa: RUF012  the random cell's, if it counts


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
    truth = summary.get("benchmark", {})  # the benchmark table's results, percent
    if "retrain" not in summary:  # a search alone (a study's "search" trials)
        if not truth.get("searched"):
            raise ValueError(
                "a search without retraining has a result only from the space's benchmark table: "
                "set --config.benchmark.table (or retrain the cells)"
            )
        column = next(iter(truth["searched"]))  # the table's first: e.g. cifar10_test
        random = truth.get("random", {})
        return RunResult(
            group=group, seed=int(seed), workdir=workdir, metric=f"benchmark/{column}",
            value=float(truth["searched"][column]),
            random_value=float(random[column]) if column in random else None,
            params=math.nan, macs=math.nan, search_s=float(summary.get("search_wall_s", math.nan)),
            retrain_s=math.nan, genotype=spaces.from_json(summary["genotype"]).to_string(),
            benchmark=dict(truth["searched"]), random_benchmark=dict(random),
        )  # fmt: skip
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
        benchmark=dict(truth.get("searched", {})),
        random_benchmark=dict(truth.get("random", {})) if random is not None else {},
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
    random_truth: dict[int, dict[str, float]] = {}
    for r in runs:
        if r.random_value is not None:
            random.setdefault(r.seed, r.random_value)
            random_truth.setdefault(r.seed, r.random_benchmark)
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
        } | _benchmark_means([r.benchmark for r in members])
        pairs = [(r.value, random[r.seed]) for r in members if r.seed in random]
        if pairs:
            p = stats.paired([a for a, _ in pairs], [b for _, b in pairs], confidence)
            row |= {"vs_random_pairs": p.n, "vs_random_diff": p.mean_diff,
                    "vs_random_ci_low": p.ci_low, "vs_random_ci_high": p.ci_high,
                    "vs_random_t": p.t, "vs_random_p": p.p_value}  # fmt: skip
        rows.append(row)
    if random:
        seeds = sorted(random)
        row = _row(RANDOM_GROUP, seeds, [random[s] for s in seeds], confidence)
        rows.append(row | _benchmark_means([random_truth[s] for s in seeds]))
    return rows


def _benchmark_means(truths: list[dict[str, float]]) -> dict[str, float]:
    """`benchmark/<column>`: the mean of the benchmark table's results over runs that have them."""
    columns = dict.fromkeys(c for t in truths for c in t)
    return {f"benchmark/{c}": _mean([t[c] for t in truths if c in t]) for c in columns}


def _row(group: str, seeds: list[int], values: list[float], confidence: float) -> dict:
    d = stats.describe(values, confidence)
    return {"group": group, "n": d.n, "seeds": seeds, "values": values, "mean": d.mean,
            "std": d.std, "ci_low": d.ci_low, "ci_high": d.ci_high}  # fmt: skip


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _unit(metric: str) -> str:
    if metric.startswith("benchmark/"):
        return f"{metric.removeprefix('benchmark/')} (%, published)"
    return "test acc (%)" if metric == "test_accuracy" else "test ppl"


def _benchmark_columns(rows: Sequence[dict], metric: str) -> list[str]:
    keys = dict.fromkeys(k for r in rows for k in r if k.startswith("benchmark/"))
    return [k for k in keys if k != metric]


def markdown(rows: Sequence[dict], metric: str = "test_accuracy") -> str:
    """The rows as a Markdown table: the metric, its interval, cost, the paired comparison with
    the random genotypes, and the benchmark table's published results (percent) if any."""
    extra = _benchmark_columns(rows, metric)
    lines = [
        f"| group | seeds | {_unit(metric)} mean +- std | 95% CI | params | M MACs | search s "
        f"| retrain s | vs random (paired) |{''.join(f' {_unit(k)} |' for k in extra)}",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |" + " ---: |" * len(extra),
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
            + "".join(f" {_num(r.get(k))} |" for k in extra)
        )
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("group", "n", "mean", "std", "ci_low", "ci_high", "params", "macs", "search_s",
               "retrain_s", "vs_random_pairs", "vs_random_diff", "vs_random_ci_low",
               "vs_random_ci_high", "vs_random_t", "vs_random_p", "seeds", "values")  # fmt: skip


def to_csv(rows: Sequence[dict], metric: str = "test_accuracy") -> str:
    """The rows as CSV: `CSV_COLUMNS`, then the benchmark table's columns, if any."""
    columns = [*CSV_COLUMNS, *_benchmark_columns(rows, metric)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            cells.append(" ".join(map(str, v)) if isinstance(v, list) else "" if v is None else v)
        writer.writerow(cells)
    return out.getvalue()


def write_tables(rows: Sequence[dict], directory: str, metric: str = "test_accuracy") -> list[str]:
    """`results.md`, `results.csv`, `results.json` in `directory`, each written atomically."""
    finite = [{k: None if isinstance(v, float) and not math.isfinite(v) else v
               for k, v in r.items()} for r in rows]  # fmt: skip  # JSON has no NaN: null
    texts = (markdown(rows, metric), to_csv(rows, metric),
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
