"""The methods table: every method config's `:digits` variant through `dnas run` (search, then
retrain the searched cell and a random cell) for several seeds, summarised as mean +- std.

    python scripts/methods_table.py                       # every method, seeds 0 1 2
    python scripts/methods_table.py --methods darts gdas --seeds 0 1
    python scripts/methods_table.py --table-only          # re-read finished workdirs

Each (method, seed) runs in its own `dnas run` process under `--root` (default runs/methods/) and
resumes if interrupted; the table goes to stdout as Markdown (for BENCHMARKS.md) and one JSON line
per method.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def methods() -> list[str]:
    base = os.path.join(ROOT, "experiments")
    return sorted(
        m for m in os.listdir(base) if os.path.isfile(os.path.join(base, m, "cifar10_search.py"))
    )


def run(method: str, seed: int, root: str) -> str:
    workdir = os.path.join(root, f"{method}-seed{seed}")
    if not os.path.exists(os.path.join(workdir, "summary.json")):
        config = os.path.join(ROOT, "experiments", method, "cifar10_search.py") + ":digits"
        cmd = ["dnas", "run", "--config", config, "--workdir", workdir, f"--config.seed={seed}",
               "--config.progress=false"]  # fmt: skip
        print("#", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
    return workdir


def row(method: str, workdirs: list[str]) -> dict:
    summaries = []
    for w in workdirs:
        with open(os.path.join(w, "summary.json")) as f:
            summaries.append(json.load(f))
    acc = lambda cell: [100 * s["retrain"][cell]["test_accuracy"] for s in summaries]
    out = {
        "method": method,
        "seeds": len(summaries),
        "searched_acc": acc("searched"),
        "search_s": [s["search_wall_s"] for s in summaries],
        "genotypes": [s["retrain"]["searched"]["genotype"] for s in summaries],
    }
    if all("random" in s["retrain"] for s in summaries):
        out["random_acc"] = acc("random")
    return out


def markdown(rows: list[dict]) -> str:
    ms = lambda v: f"{np.mean(v):.2f} +- {np.std(v):.2f}" if v else "-"
    lines = [
        "| method | seeds | searched test acc (%) | random cell test acc (%) | search s "
        "| genotype (seed 0) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['seeds']} | {ms(r['searched_acc'])} | "
            f"{ms(r.get('random_acc', []))} | {np.mean(r['search_s']):.0f} "
            f"| `{r['genotypes'][0]}` |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", nargs="+", default=None, help="default: every experiments/ dir")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--root", default=os.path.join("runs", "methods"))
    p.add_argument("--table-only", action="store_true", help="only read finished workdirs")
    args = p.parse_args()
    rows = []
    for method in args.methods or methods():
        if args.table_only:
            dirs = [os.path.join(args.root, f"{method}-seed{s}") for s in args.seeds]
            dirs = [d for d in dirs if os.path.exists(os.path.join(d, "summary.json"))]
        else:
            dirs = [run(method, s, args.root) for s in args.seeds]
        if dirs:
            rows.append(row(method, dirs))
    print(markdown(rows))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
