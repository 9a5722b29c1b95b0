"""`dnas run`: search, retrain the found cell and a random cell of the same space under the same
budget, and summarise (`<workdir>/summary.json`)."""

from __future__ import annotations

import json
import os
import time

import ml_collections
import numpy as np

from dnas import checkpoint, search, spaces, train
from dnas.genotype import Genotype, random_genotype


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    workdir = os.path.abspath(workdir)
    t0 = time.time()
    found = search.run(config, workdir)
    search_s = time.time() - t0
    runs: dict[str, Genotype] = {"searched": found}
    if config.baseline:
        rng = np.random.default_rng(config.seed)
        runs["random"] = random_genotype(spaces.get(config.space), rng)
    results = {}
    for name, geno in runs.items():
        t1 = time.time()
        results[name] = train.run(config, os.path.join(workdir, f"retrain_{name}"), geno)
        results[name]["wall_s"] = round(time.time() - t1, 1)
    summary = {
        "dataset": config.dataset,
        "space": config.space,
        "strategy": config.strategy,
        "order": config.order,
        "genotype": found.to_json(),
        "search_wall_s": round(search_s, 1),
        "total_wall_s": round(time.time() - t0, 1),
        "retrain": results,
    }
    text = json.dumps(summary, indent=2) + "\n"
    checkpoint.atomic_write_text(os.path.join(workdir, "summary.json"), text)
    return summary


def format_summary(summary: dict) -> str:
    """A small table for the terminal."""
    lines = [
        f"dataset {summary['dataset']}  space {summary['space']}  strategy "
        f"{summary['strategy']} ({summary['order']} order)  search {summary['search_wall_s']} s",
        f"{'cell':10} {'test acc':>9} {'params':>9} {'MFLOPs':>8} {'train s':>8}  genotype",
    ]
    for name, r in summary["retrain"].items():
        lines.append(
            f"{name:10} {100 * r['test_accuracy']:8.2f}% {r['params']:>9,} "
            f"{r['flops'] / 1e6:>8.2f} {r['train_wall_s']:>8}  {r['genotype']}"
        )
    return "\n".join(lines)
