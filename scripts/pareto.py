"""A latency-target sweep and its Pareto front: one `dnas run` (search under a latency target,
then retrain the found network) per (target, seed), the found networks timed on this device with
`dnas latency`, and the published networks of the space retrained and timed the same way as
reference points.

    dnas lut --config experiments/proxylessnas/imagenet_search.py:digits --out runs/pareto/lut.json
    python scripts/pareto.py --config experiments/proxylessnas/imagenet_search.py:digits \
        --lut runs/pareto/lut.json --targets 3,3.5,4,4.5 --seeds 0,1 --root runs/pareto \
        --reference proxyless_gpu,proxyless_cpu,proxyless_mobile
    dnas plot runs/pareto            # draws runs/pareto/pareto.json (also written here)

Each run is its own `dnas run` process under `--root` (`t<target>-seed<seed>/`), resumed where it
stopped; the search uses `--objective` (default mul_log, ProxylessNAS') on `latency_ms` of the
table. `pareto.json` holds one row per run and per reference network: target, seed, genotype,
test accuracy, predicted and measured latency (ms, median with its spread), parameters and
multiply-adds; the script prints them as a Markdown table (for BENCHMARKS.md) and checks whether
the measured latencies fall in the targets' order and within `--tolerance` of each target.
Timings depend on what else runs on the machine: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys

import numpy as np

from dnas import workdir as workdir_lib


def _run(cmd: list[str], log_path: str) -> bool:
    print("#", " ".join(cmd), file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        with open(log_path) as log:
            tail = "".join(log.readlines()[-15:])
        print(f"# FAILED ({done.returncode}): {log_path}:\n{tail}", file=sys.stderr, flush=True)
    return done.returncode == 0


def measure(genotype: str, lut: str, runs: int) -> dict:
    """`dnas latency` of one genotype (a file or text): its JSON line."""
    cmd = ["dnas", "latency", "--lut", lut, "--genotype", genotype, "--runs", str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[0])


def search(args, target: float, seed: int) -> dict | None:
    workdir = os.path.join(args.root, f"t{target:g}-seed{seed}")
    summary = os.path.join(workdir, "summary.json")
    if not os.path.exists(summary):
        cmd = ["dnas", "run", "--config", args.config, "--workdir", workdir,
               f"--config.seed={seed}", "--config.progress=false", "--config.baseline=false",
               f"--config.hardware.objective={args.objective}", f"--config.hardware.lut={args.lut}",
               "--config.hardware.resource=latency_ms", f"--config.hardware.target={target}",
               *args.overrides]  # fmt: skip
        if not _run(cmd, workdir + ".log"):
            return None
    with open(summary) as f:
        retrained = json.load(f)["retrain"]["searched"]
    timing = measure(os.path.join(workdir, "genotype.json"), args.lut, args.runs)
    row = {"target_ms": target, "seed": seed, "workdir": workdir} | _row(retrained, timing)
    budget = os.path.join(workdir, "budget.json")  # hardware.discretise=budget
    if os.path.exists(budget):
        with open(budget) as f:
            row["argmax_predicted_ms"] = json.load(f)["argmax"]["latency_ms"]
    return row


def reference(args, name: str) -> dict | None:
    workdir = os.path.join(args.root, f"ref-{name}")
    results = os.path.join(workdir, "results.json")
    if not os.path.exists(results):
        cmd = ["dnas", "train", "--config", args.config, "--workdir", workdir,
               f"--config.train.genotype={name}", "--config.progress=false",
               *args.overrides]  # fmt: skip
        if not _run(cmd, workdir + ".log"):
            return None
    with open(results) as f:
        retrained = json.load(f)
    return {"label": name, "workdir": workdir} | _row(retrained, measure(name, args.lut, args.runs))


def _row(retrained: dict, timing: dict) -> dict:
    return {
        "genotype": retrained["genotype"], "test_accuracy": retrained["test_accuracy"],
        "params": retrained["params"], "macs": retrained["macs"],
        "predicted_ms": timing["predicted_ms"], "measured_ms": timing["measured_ms"],
        "spread_ms": timing["spread_ms"],
    }  # fmt: skip


def check(points: list[dict], tolerance: float) -> list[str]:
    """What the sweep shows against its targets: per target the mean measured latency, whether
    the means rise with the targets, and the runs further than `tolerance` from their target."""
    lines = []
    targets = sorted({p["target_ms"] for p in points})
    means = [np.mean([p["measured_ms"] for p in points if p["target_ms"] == t]) for t in targets]
    ordered = all(a <= b for a, b in itertools.pairwise(means))
    lines.append("mean measured latency per target: "
                 + ", ".join(f"{t:g} ms -> {m:.2f} ms" for t, m in zip(targets, means, strict=True))
                 + f" ({'in' if ordered else 'NOT in'} the targets' order)")  # fmt: skip
    for p in points:
        off = p["measured_ms"] / p["target_ms"] - 1
        if abs(off) > tolerance:
            lines.append(f"target {p['target_ms']:g} ms seed {p['seed']}: measured "
                         f"{p['measured_ms']:.2f} ms, {100 * off:+.0f}% off")  # fmt: skip
    return lines


def markdown(points: list[dict], refs: list[dict]) -> str:
    """The sweep as a Markdown table; `argmax ms` is the predicted latency of the alphas'
    argmax where the genotype was chosen under a budget (hardware.discretise=budget)."""
    head = ("| network | target ms | seed | test acc % | predicted ms | measured ms | "
            "argmax ms | params | MACs |")  # fmt: skip
    lines = [head, "|" + "---|" * 9]
    for p in points:
        argmax = p.get("argmax_predicted_ms")
        lines.append(f"| searched | {p['target_ms']:g} | {p['seed']} | "
                     f"{100 * p['test_accuracy']:.2f} | {p['predicted_ms']:.2f} | "
                     f"{p['measured_ms']:.2f} +- {p['spread_ms']:.2f} | "
                     f"{'-' if argmax is None else f'{argmax:.2f}'} | {p['params']:,} | "
                     f"{p['macs']:,} |")  # fmt: skip
    for r in refs:
        lines.append(f"| {r['label']} | - | - | {100 * r['test_accuracy']:.2f} | "
                     f"{r['predicted_ms']:.2f} | {r['measured_ms']:.2f} +- {r['spread_ms']:.2f} | "
                     f"- | {r['params']:,} | {r['macs']:,} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a search config (file.py[:arg])")
    p.add_argument("--lut", required=True, help="the latency table (dnas lut)")
    p.add_argument("--targets", required=True, help="latency targets in ms, e.g. 3,3.5,4,4.5")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--root", default="runs/pareto")
    p.add_argument("--objective", default="mul_log")
    p.add_argument("--reference", default="", help="published genotypes to retrain and time")
    p.add_argument("--runs", type=int, default=50, help="timed runs per network")
    p.add_argument("--tolerance", type=float, default=0.15)
    args, args.overrides = p.parse_known_args(argv)  # --config.KEY=VALUE for every run
    bad = [a for a in args.overrides if not a.startswith("--config.")]
    if bad:
        p.error(f"unrecognised arguments: {' '.join(bad)}")
    args.lut = os.path.abspath(args.lut)
    os.makedirs(args.root, exist_ok=True)
    targets = [float(t) for t in args.targets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    points = [r for t in targets for s in seeds if (r := search(args, t, s)) is not None]
    names = [n for n in args.reference.split(",") if n]
    refs = [r for n in names if (r := reference(args, n)) is not None]
    data = {"config": args.config, "lut": args.lut, "points": points, "reference": refs}
    from dnas import viz

    workdir_lib.atomic_write_text(os.path.join(args.root, viz.PARETO), json.dumps(data, indent=2))
    print(markdown(points, refs))
    for line in check(points, args.tolerance):
        print(line)
    print(f"figure: {viz.save_pareto(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
