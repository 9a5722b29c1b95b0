"""`dnas run` of a text config over seeds, and its table: search time, the searched and the
random cell's validation and test perplexity (mean +- std), wall time.

    python scripts/lm_table.py experiments/darts_rnn/ptb_search.py:embedded --seeds 0 1 2
    python scripts/lm_table.py experiments/transformer/char_search.py:embedded --seeds 0 1 2

Each run goes to runs/lm_table/<config>-seed<N> (resumed if it is there); prints one JSON line per
run, then a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("config")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--root", default=os.path.join("runs", "lm_table"))
    args = p.parse_args()
    name = os.path.basename(args.config.replace(".py", "").replace(":", "-"))
    rows = []
    for seed in args.seeds:
        workdir = os.path.join(args.root, f"{name}-seed{seed}")
        if not os.path.exists(os.path.join(workdir, "summary.json")):
            cmd = [sys.executable, "-m", "dnas.cli", "run", "--config", args.config,
                   f"--config.seed={seed}", "--config.progress=false",
                   "--workdir", workdir]  # fmt: skip
            subprocess.run(cmd, check=True)
        with open(os.path.join(workdir, "summary.json")) as f:
            summary = json.load(f)
        row = {"seed": seed, "search_s": summary["search_wall_s"],
               "total_s": summary["total_wall_s"]}  # fmt: skip
        for cell, r in summary["retrain"].items():
            row |= {f"{cell}_val_ppl": r["val_perplexity"],
                    f"{cell}_test_ppl": r["test_perplexity"], f"{cell}_params": r["params"],
                    f"{cell}_genotype": r["genotype"]}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)

    def stat(key: str) -> str:
        v = np.array([r[key] for r in rows if key in r], float)
        return f"{v.mean():.2f} +- {v.std():.2f}" if len(v) else "-"

    print(f"\n| cell | val ppl | test ppl | search s | total s |  ({args.config}, seeds "
          f"{args.seeds})\n|---|---|---|---|---|")  # fmt: skip
    for cell in ("searched", "random"):
        print(f"| {cell} | {stat(f'{cell}_val_ppl')} | {stat(f'{cell}_test_ppl')} | "
              f"{stat('search_s')} | {stat('total_s')} |")  # fmt: skip


if __name__ == "__main__":
    main()
