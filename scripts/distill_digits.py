"""Distillation on the embedded digits (BENCHMARKS.md): a teacher retrained once, then the small
student retrained with it (KD) and without it (plain), the same budget, for each seed; a paired
table of the students' test accuracies.

    python scripts/distill_digits.py --out runs/distill_digits                # seeds 0, 1, 2
    python scripts/distill_digits.py --out runs/distill_digits --seeds 0-4 --max-concurrent 2

The teacher is `experiments/distill/digits.py:teacher` (seed 0) in `<out>/teacher`; the students
are a `dnas study` of kind "retrain" (`<out>/study`: groups `plain` and `kd`, resumable: a killed
run picks up where it stopped). Writes `<out>/distill.md` and `<out>/distill.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "distill", "digits.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/distill_digits")
    parser.add_argument("--seeds", default="0,1,2", help="the students' seeds (dnas's syntax)")
    parser.add_argument("--max-concurrent", type=int, default=None)
    args = parser.parse_args(argv)
    from dnas import configlib, results, stats, study, train, workdir

    out = os.path.abspath(args.out)
    teacher_dir = os.path.join(out, "teacher")
    if not os.path.exists(os.path.join(teacher_dir, "results.json")):
        print(f"training the teacher in {teacher_dir} ...", flush=True)
        train.run(configlib.load(f"{CONFIG}:teacher"), teacher_dir)
    with open(os.path.join(teacher_dir, "results.json")) as f:
        teacher = json.load(f)
    seeds = tuple(configlib.parse_seeds(args.seeds))
    plan = study.Study(
        groups=[
            study.Group("plain", f"{CONFIG}:plain", genotype="darts_v2"),
            study.Group("kd", CONFIG, {"train.teacher": teacher_dir}, genotype="darts_v2"),
        ],
        seeds=seeds, kind="retrain", baseline=False,
    )  # fmt: skip
    failed = study.run(plan, os.path.join(out, "study"), max_concurrent=args.max_concurrent)
    if failed:
        return 1
    runs = {
        g: [results.read_run(os.path.join(out, "study", g, f"seed{s}"), g, s) for s in seeds]
        for g in ("plain", "kd")
    }
    acc = {g: [r.value for r in rs] for g, rs in runs.items()}
    d = stats.paired(acc["kd"], acc["plain"])
    rows = [
        "| network | params | seeds | test accuracy % (mean +- std) | per seed | retrain s |",
        "|---|---:|---:|---|---|---:|",
        f"| teacher (C=16, 8 cells, seed 0) | {teacher['params']:,} | 1 | "
        f"{100 * teacher['test_accuracy']:.2f} | | {teacher['wall_s']:.0f} |",
    ]
    for g, label in (("plain", "student alone"), ("kd", "student + KD, a 0.9 T 4")):
        desc = stats.describe(acc[g])
        per_seed = ", ".join(f"{v:.2f}" for v in acc[g])
        wall = sum(r.retrain_s for r in runs[g]) / len(runs[g])
        rows.append(f"| {label} (C=2, 3 cells) | {int(runs[g][0].params):,} | {desc.n} | "
                    f"{desc.mean:.2f} +- {desc.std:.2f} | {per_seed} | {wall:.0f} |")  # fmt: skip
    rows.append(
        f"\nKD - alone, paired by seed: {d.mean_diff:+.2f} points (95% CI {d.ci_low:+.2f} to "
        f"{d.ci_high:+.2f}; paired t-test p = {d.p_value:.3f}, n = {d.n})."
    )
    text = "\n".join(rows) + "\n"
    workdir.atomic_write_text(os.path.join(out, "distill.md"), text)
    summary = {
        "teacher": {k: teacher[k] for k in ("params", "test_accuracy", "wall_s", "genotype")},
        "students": {g: {"seeds": list(seeds), "test_accuracy": acc[g]} for g in acc},
        "paired_kd_minus_plain": d._asdict(),
    }
    workdir.atomic_write_text(os.path.join(out, "distill.json"), json.dumps(summary, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
