"""How well a latency table measured by dnas predicts whole networks on this device: for each
(input size, batch), `dnas lut`'s table of a chain space's supernet, then N random networks of
the space timed whole (`dnas latency`'s `time_network`), their predicted latency against the
measured one: Spearman's rank correlation, mean absolute percentage error, and the same after a
linear correction fitted on the first half and scored on the second (held out).

    python scripts/bench_latency.py                                    # proxyless, 30 networks
    python scripts/bench_latency.py --space fbnet --networks 40 --out runs/bench_latency.json

Settings (`--settings`, dataset:C:batch): digits 8x8x1 at C=4 (the `:digits` configs' search
supernet) and CIFAR 32x32x3 at C=16 (half the paper's widths), each at batch 1 and 64. Timings
are medians of `--runs` calls after warm-up; run on a quiet machine (other processes inflate
and scatter them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from dnas import data, latency, spaces

SETTINGS = "digits:4:1,digits:4:64,cifar10:16:1,cifar10:16:64"


def bench(space, dataset: str, C: int, batch: int, networks: int, runs: int, seed: int) -> dict:
    info = data.get_info(dataset)
    opts = dict(num_classes=info.num_classes, C=C, layers=1, batch=batch, runs=runs, warmup=5)
    start = time.perf_counter()
    table = latency.measure_table(space, info.input_shape, seed=seed, **opts)
    lut_s = time.perf_counter() - start
    rng = np.random.default_rng(seed + 1)  # other networks than the fixed part's estimate
    genotypes = [space.random_genotype(rng) for _ in range(networks)]
    measured = np.array([
        latency.time_network(space, g, input_shape=info.input_shape, **opts)[0] for g in genotypes
    ])  # fmt: skip
    predicted = np.array([latency.predict(space, table, g)[latency.RESOURCE] for g in genotypes])
    half = networks // 2
    fit = latency.fit_correction(predicted[:half], measured[:half])
    corrected = fit["scale"] * predicted[half:] + fit["offset"]
    return {
        "space": space.name, "dataset": dataset, "input_shape": list(info.input_shape), "C": C,
        "batch": batch, "networks": networks, "runs": runs, "lut_s": round(lut_s, 1),
        "fixed_ms": float(table.fixed[0]),
        "measured_ms": [float(np.min(measured)), float(np.max(measured))],
        "spearman": latency.rank_correlation(predicted, measured),
        "mape": latency.mape(predicted, measured),
        "bias": float(np.mean(predicted / measured - 1)),
        "held_out_mape_raw": latency.mape(predicted[half:], measured[half:]),
        "held_out_mape_corrected": latency.mape(corrected, measured[half:]),
        "correction": {"scale": fit["scale"], "offset": fit["offset"]},
        "backend": table.meta["backend"], "device_kind": table.meta["device_kind"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="proxyless")
    p.add_argument(
        "--settings", default=SETTINGS, help="dataset:C:batch,... (default: %(default)s)"
    )
    p.add_argument("--networks", type=int, default=30)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the rows as JSON")
    args = p.parse_args(argv)
    space = spaces.get(args.space)
    if space.candidates is None:
        p.error(f"space {space.name!r} lists no candidates (Space.candidates)")
    rows = []
    for setting in args.settings.split(","):
        dataset, C, batch = setting.split(":")
        row = bench(space, dataset, int(C), int(batch), args.networks, args.runs, args.seed)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| input | C | batch | networks | measured ms | spearman | MAPE | bias | held-out "
          "MAPE raw / corrected | table s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        shape = "x".join(map(str, r["input_shape"]))
        print(f"| {shape} | {r['C']} | {r['batch']} | {r['networks']} | "
              f"{r['measured_ms'][0]:.2f}-{r['measured_ms'][1]:.2f} | {r['spearman']:.3f} | "
              f"{100 * r['mape']:.1f}% | {100 * r['bias']:+.1f}% | "
              f"{100 * r['held_out_mape_raw']:.1f}% / {100 * r['held_out_mape_corrected']:.1f}% | "
              f"{r['lut_s']:.0f} |")  # fmt: skip
    if args.out:
        from dnas import workdir

        workdir.atomic_write_text(args.out, json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
