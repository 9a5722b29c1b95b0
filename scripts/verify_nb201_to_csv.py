"""Checks scripts/nb201_to_csv.py against NATS-Bench's own API on a synthetic archive.

The official benchmark files (NATS-tss-v1_0-3ffb9-simple, 15,625 pickles; or NAS-Bench-201's
2 GB .pth) cannot be downloaded where dnas's tests run, and the tests feed the converter a stand-in
API object. This script goes one step closer to the real thing: it writes a complete archive in
the `-simple` folder format with `nats_bench`'s own classes (`ArchResults`, `ResultsCount`,
`pickle_save`), every accuracy a known function of (architecture, dataset, evaluation split,
seed, epoch), converts it with `nb201_to_csv.py --nats` (which opens it with `nats_bench.create`
exactly as for the real folder) and compares every cell of the CSV with the value the official
protocol should give: the last of the 200-epoch (`hp='200'`) results, averaged over the seeds;
`cifar10_test` from `cifar10` on `ori-test`, `cifar10_valid` from `cifar10-valid` on `x-valid`,
CIFAR-100 and ImageNet16-120 test / valid on `x-test` / `x-valid`.

    pip install nats_bench            # pure Python (numpy only)
    python scripts/verify_nb201_to_csv.py [--epochs 3]

About 30 s on one core. Prints the number of mismatching cells (0 expected) and exits 1 if any.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import os
import sys
import tempfile

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# The evaluation splits each of the benchmark's datasets was evaluated on.
SPLITS = {
    "cifar10-valid": ("x-valid", "ori-test"),
    "cifar10": ("ori-test",),
    "cifar100": ("x-valid", "x-test", "ori-test"),
    "ImageNet16-120": ("x-valid", "x-test", "ori-test"),
}
ALL_SPLITS = ("x-valid", "x-test", "ori-test")
SEEDS = (777, 888)
# The CSV column -> the (dataset, split) the converter must read it from.
EXPECTED = {
    "cifar10_test": ("cifar10", "ori-test"),
    "cifar100_test": ("cifar100", "x-test"),
    "imagenet16_120_test": ("ImageNet16-120", "x-test"),
    "cifar10_valid": ("cifar10-valid", "x-valid"),
    "cifar100_valid": ("cifar100", "x-valid"),
    "imagenet16_120_valid": ("ImageNet16-120", "x-valid"),
}


def archs():
    """All 15,625 NAS-Bench-201 cells as the benchmark writes them."""
    for o in itertools.product(OPS, repeat=6):
        yield f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


def accuracy(index: int, dataset: str, split: str, seed: int, epoch: int, epochs: int) -> float:
    """Distinct in every argument the converter must pick right, and within 0-100 for any
    number of epochs: the epoch moves it by up to 10 (so an earlier epoch is caught), the seed
    by 0.5 (so one seed instead of the mean is caught), the dataset by 0.01 and the split by
    0.001."""
    return (
        (index % 70)
        + 10 * epoch / (epochs - 1)
        + (0.5 if seed == SEEDS[1] else 0.0)
        + 0.01 * list(SPLITS).index(dataset)
        + 0.001 * ALL_SPLITS.index(split)
    )


def write_archive(root: str, epochs: int) -> list[str]:
    from nats_bench.api_utils import ArchResults, ResultsCount, pickle_save

    meta = list(archs())
    pickle_save({"meta_archs": meta}, os.path.join(root, "meta.pickle"))
    for i, arch in enumerate(meta):
        results = ArchResults(i, arch)
        for dataset, splits in SPLITS.items():
            for seed in SEEDS:
                r = ResultsCount(dataset, None, [0.0] * epochs, [0.0] * epochs, 1.0, 1.0, None,
                                 seed, epochs, None)  # fmt: skip
                accs = {
                    f"{s}@{e}": accuracy(i, dataset, s, seed, e, epochs)
                    for s in splits
                    for e in range(epochs)
                }
                r.update_eval(accs, dict.fromkeys(accs, 0.0), dict.fromkeys(accs, 1.0))
                results.update(dataset, seed, r)
        pickle_save({"200": results.state_dict()}, os.path.join(root, f"{i:06d}.pickle"))
    return meta


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="epochs per result (>= 2)")
    args = p.parse_args()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nb201_to_csv.py")
    spec = importlib.util.spec_from_file_location("nb201_to_csv", path)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "NATS-tss-synthetic-simple")
        os.makedirs(archive)
        meta = write_archive(archive, args.epochs)
        out = os.path.join(tmp, "nb201.csv")
        api = converter._api(argparse.Namespace(nats=archive, nb201=None))
        converter.write_table(api, out)
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
    assert [r["arch"] for r in rows] == meta, "the rows are not the archive's architectures"
    bad = 0
    for i, row in enumerate(rows):
        for column, (dataset, split) in EXPECTED.items():
            want = sum(accuracy(i, dataset, split, s, args.epochs - 1, args.epochs) for s in SEEDS)
            bad += abs(float(row[column]) - want / len(SEEDS)) > 5e-5
    print(f"{len(rows):,} architectures x {len(EXPECTED)} columns: {bad} mismatching cells")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
