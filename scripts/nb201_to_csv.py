"""Writes the NAS-Bench-201 table dnas reads (`dnas/spaces/nb201.py`) from the
official files, with their own API packages (the files are pickles and torch archives; dnas reads
only the CSV).

    pip install nats_bench          # NATS-Bench's topology search space (= NAS-Bench-201)
    python scripts/nb201_to_csv.py --nats ~/.torch/NATS-tss-v1_0-3ffb9-simple --out nb201.csv

    pip install nas-bench-201 torch # the original NAS-Bench-201 v1.1 file
    python scripts/nb201_to_csv.py --nb201 NAS-Bench-201-v1_1-096897.pth --out nb201.csv

Then: `dnas search ... --config.space=nb201 --config.benchmark.table=nb201.csv` logs the true
accuracy of the derived cell every epoch, and `dnas info --genotype ARCH --benchmark nb201.csv`
prints an architecture's.

Columns, all percent after 200 epochs (`hp='200'`), the mean over the benchmark's seeds
(`is_random=False`), as the papers report them:
- cifar10_test: `cifar10` (trained on train+valid), test accuracy;
- cifar10_valid: `cifar10-valid` (trained on train), validation accuracy;
- cifar100_test / cifar100_valid, imagenet16_120_test / imagenet16_120_valid: test and
  validation accuracy of `cifar100` and `ImageNet16-120`.

The table is written to a temporary file and renamed when complete, then read back with
`dnas.spaces.nb201.load_table`, which checks all 15,625 architectures are there.

`scripts/verify_nb201_to_csv.py` checks this script against `nats_bench`'s own API on a
synthetic archive in the official `-simple` format (every cell of the CSV; nats_bench 1.8:
0 mismatches). The `--nb201` path's `get_more_info` (nas-bench-201 2.1's `nas_201_api`)
answers these queries with the same code as NATS-Bench's: read, not run (it needs torch).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile

from dnas.spaces import nb201 as benchmarks

# column -> (the API's dataset name, the key of get_more_info's result)
SOURCES = {
    "cifar10_test": ("cifar10", "test-accuracy"),
    "cifar100_test": ("cifar100", "test-accuracy"),
    "imagenet16_120_test": ("ImageNet16-120", "test-accuracy"),
    "cifar10_valid": ("cifar10-valid", "valid-accuracy"),
    "cifar100_valid": ("cifar100", "valid-accuracy"),
    "imagenet16_120_valid": ("ImageNet16-120", "valid-accuracy"),
}


def rows(api, hp: str = "200"):
    """(arch string, {column: accuracy}) of every architecture the API holds. `api` is the
    official API object: `len(api)`, `api.arch(i)`, `api.get_more_info(i, dataset, hp=,
    is_random=False)`."""
    for i in range(len(api)):
        infos = {}
        values = {}
        for column, (dataset, key) in SOURCES.items():
            if dataset not in infos:
                infos[dataset] = api.get_more_info(i, dataset, hp=hp, is_random=False)
            values[column] = float(infos[dataset][key])
        yield api.arch(i), values


def write_table(api, out: str, hp: str = "200") -> benchmarks.NB201Table:
    """Writes the CSV atomically and returns it as dnas reads it (checked whole)."""
    out = os.path.abspath(out)
    fd, tmp = tempfile.mkstemp(prefix=".nb201-", suffix=".csv", dir=os.path.dirname(out))
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            columns = list(benchmarks.COLUMNS)
            writer.writerow(["arch", *columns])
            for arch, values in rows(api, hp):
                writer.writerow([arch, *(f"{values[c]:.4f}" for c in columns)])
        table = benchmarks.load_table(tmp)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    return table._replace(path=out)


def _api(args: argparse.Namespace):
    if args.nats:
        from nats_bench import create  # pip install nats_bench

        return create(args.nats, "tss", fast_mode=True, verbose=False)
    from nas_201_api import NASBench201API  # pip install nas-bench-201 (needs torch)

    return NASBench201API(args.nb201, verbose=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--nats", help="NATS-Bench tss file or folder (e.g. NATS-tss-v1_0-3ffb9-simple)"
    )
    source.add_argument(
        "--nb201", help="NAS-Bench-201 .pth file (e.g. NAS-Bench-201-v1_1-096897.pth)"
    )
    p.add_argument("--out", required=True, help="the CSV to write")
    p.add_argument("--hp", default="200", help="training epochs of the results (200 or 12)")
    args = p.parse_args()
    try:
        table = write_table(_api(args), args.out, args.hp)
    except (ImportError, OSError, ValueError, KeyError) as err:
        print(f"nb201_to_csv: error: {err}", file=sys.stderr)
        return 2
    best = max(table.rows, key=lambda a: table.rows[a]["cifar10_test"])
    print(f"wrote {table.path}: {len(table.rows):,} architectures; best on CIFAR-10: {best} "
          f"{table.rows[best]['cifar10_test']:.2f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
