"""The methods table: every method config's `:digits` variant through `dnas run` (search, then
retrain the searched cell) for several seeds, summarised as mean +- std, with the random-genotype
baseline of the same seeds beside.

    python scripts/methods_table.py                       # every method, seeds 0 1 2
    python scripts/methods_table.py --methods darts gdas --seeds 0 1
    python scripts/methods_table.py --jobs 2              # two runs at a time
    python scripts/methods_table.py --table-only          # re-read finished workdirs

Each (method, seed) runs in its own `dnas run` process under `--root` (default runs/methods/) and
resumes if interrupted. The random cell of a seed depends only on the seed and the space (and every
`:digits` variant retrains under the same settings), so it is retrained once per seed, in the first
method's run (`--baseline-method`, default darts); the other runs pass
`--config.baseline=false`.
The table goes to stdout as Markdown (for BENCHMARKS.md) and one JSON line per method;
`--results FILE` also writes the rows (per-seed accuracies, times, full genotypes) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dnas import spaces
from dnas import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def methods() -> list[str]:
    base = os.path.join(ROOT, "experiments")
    return sorted(
        m for m in os.listdir(base) if os.path.isfile(os.path.join(base, m, "cifar10_search.py"))
    )


def run(method: str, seed: int, root: str, baseline: bool) -> str:
    workdir = os.path.join(root, f"{method}-seed{seed}")
    if not os.path.exists(os.path.join(workdir, "summary.json")):
        config = os.path.join(ROOT, "experiments", method, "cifar10_search.py") + ":digits"
        cmd = ["dnas", "run", "--config", config, "--workdir", workdir, f"--config.seed={seed}",
               "--config.progress=false", f"--config.baseline={str(baseline).lower()}"]  # fmt: skip
        print("#", " ".join(cmd), file=sys.stderr, flush=True)
        log_path = os.path.join(root, f"{method}-seed{seed}.log")
        with open(log_path, "w") as log:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode:  # report, and let the other runs and the table go on
            with open(log_path) as log:
                tail = "".join(log.readlines()[-15:])
            print(f"# FAILED ({done.returncode}): {method} seed {seed}; {log_path}:\n{tail}",
                  file=sys.stderr, flush=True)  # fmt: skip
    return workdir


def summaries_of(workdirs: list[str]) -> list[dict]:
    out = []
    for w in workdirs:
        with open(os.path.join(w, "summary.json")) as f:
            out.append(json.load(f))
    return out


def row(method: str, workdirs: list[str]) -> dict:
    summaries = summaries_of(workdirs)
    return {
        "method": method,
        "seeds": len(summaries),
        "searched_acc": [100 * s["retrain"]["searched"]["test_accuracy"] for s in summaries],
        "search_s": [s["search_wall_s"] for s in summaries],
        "genotypes": [s["retrain"]["searched"]["genotype"] for s in summaries],
    }


def random_row(workdirs: list[str]) -> dict:
    """The random genotypes retrained in the baseline method's runs."""
    summaries = [s for s in summaries_of(workdirs) if "random" in s["retrain"]]
    return {
        "method": "random genotype",
        "seeds": len(summaries),
        "searched_acc": [100 * s["retrain"]["random"]["test_accuracy"] for s in summaries],
        "search_s": [0.0 for _ in summaries],
        "genotypes": [s["retrain"]["random"]["genotype"] for s in summaries],
    }


SHORT = {"sep_conv_3x3": "sep3", "sep_conv_5x5": "sep5", "dil_conv_3x3": "dil3",
         "dil_conv_5x5": "dil5", "max_pool_3x3": "max", "avg_pool_3x3": "avg",
         "skip_connect": "skip", "none": "none"}  # fmt: skip


def short_cell(text: str, cell: str = "normal") -> str:
    """A genotype string's cell (DARTS or NAS-Bench-201) as `op:input` per edge, nodes separated
    by `/`."""
    geno = spaces.parse(text)
    return " / ".join(
        " ".join(f"{SHORT.get(op, op)}:{src}" for op, src in node) for node in geno[cell]
    )


def markdown(rows: list[dict]) -> str:
    ms = lambda v: f"{np.mean(v):.2f} +- {np.std(v):.2f}" if v else "-"
    lines = [
        "| method | seeds | test acc (%) mean +- std | per seed | search s "
        "| normal cell (first seed) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        seeds = " / ".join(f"{a:.2f}" for a in r["searched_acc"])
        lines.append(
            f"| {r['method']} | {r['seeds']} | {ms(r['searched_acc'])} | {seeds} "
            f"| {np.mean(r['search_s']):.0f} | `{short_cell(r['genotypes'][0])}` |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", nargs="+", default=None, help="default: every experiments/ dir")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--root", default=os.path.join("runs", "methods"))
    p.add_argument("--baseline-method", default="darts", help="whose runs retrain the random cell")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument("--table-only", action="store_true", help="only read finished workdirs")
    p.add_argument("--results", help="also write the rows (full genotypes) to this JSON file")
    args = p.parse_args()
    names = args.methods or methods()
    if not args.table_only:
        os.makedirs(args.root, exist_ok=True)
        # Seed-major, the baseline method first: an interrupted table has whole seeds.
        order = sorted(names, key=lambda m: m != args.baseline_method)
        todo = [(m, s, m == args.baseline_method) for s in args.seeds for m in order]
        with ThreadPoolExecutor(args.jobs) as pool:
            for f in [pool.submit(run, m, s, args.root, b) for m, s, b in todo]:
                f.result()
    rows = []
    for method in [*names, None]:
        name = method or args.baseline_method
        dirs = [os.path.join(args.root, f"{name}-seed{s}") for s in args.seeds]
        dirs = [d for d in dirs if os.path.exists(os.path.join(d, "summary.json"))]
        if dirs:
            rows.append(row(method, dirs) if method else random_row(dirs))
    rows = [r for r in rows if r["seeds"]]
    print(markdown(rows))
    for r in rows:
        print(json.dumps(r))
    if args.results:
        workdir_lib.atomic_write_text(args.results, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
