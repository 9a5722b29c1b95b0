"""NAS-Bench-201 ground truth: the published accuracies of all 15,625 architectures of the
`nb201` space, read from a table the user provides, so a search can report the true accuracy of
the cell it derives (`--config.benchmark.nb201=FILE`: `nb201/<column>` in the metrics at every
epoch) and `dnas info --benchmark FILE` can add them to a genotype's figures.

The table is a CSV file with a header: `arch` (the NAS-Bench-201 arch string,
`|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|`),
the test accuracies `cifar10_test`, `cifar100_test`, `imagenet16_120_test` (percent, as the
benchmark reports them), and optionally the validation accuracies `cifar10_valid`,
`cifar100_valid`, `imagenet16_120_valid`. One row per architecture, all 15,625 of them.
`scripts/nb201_to_csv.py` writes it from the official NAS-Bench-201 or NATS-Bench files with
their own API; this module reads text only (no pickle, no torch).

A table that is not exactly the benchmark (a column missing or unknown, an arch string that is
not one, a repeated or missing architecture, an accuracy that is not a number in [0, 100]) is
refused with a one-line `BenchmarkError` naming the file, the line and what to do.
"""

from __future__ import annotations

import csv
import functools
import itertools
import math
import os
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from dnas.genotype import Genotype
from dnas.spaces import nb201

NUM_ARCHS = len(nb201.PRIMITIVES) ** nb201.TOPOLOGY.num_edges  # 5^6 = 15,625
TEST_COLUMNS = ("cifar10_test", "cifar100_test", "imagenet16_120_test")
VALID_COLUMNS = ("cifar10_valid", "cifar100_valid", "imagenet16_120_valid")
COLUMNS = TEST_COLUMNS + VALID_COLUMNS
HOW_TO_MAKE = "write it with scripts/nb201_to_csv.py from the official NAS-Bench-201 files"


class BenchmarkError(ValueError):
    """A benchmark table that cannot be used, or a genotype it cannot answer for."""


def arch_string(genotype: Genotype) -> str:
    """The canonical NAS-Bench-201 arch string of an `nb201` genotype: each node's edges in the
    order of their inputs (the benchmark's own order)."""
    if genotype.space != nb201.SPACE.name:
        raise BenchmarkError(
            f"NAS-Bench-201's table answers for genotypes of the nb201 space, got a "
            f"{genotype.space} genotype"
        )
    nodes = (sorted(node, key=lambda edge: edge[1]) for node in genotype.normal)
    return "+".join("|" + "".join(f"{op}~{src}|" for op, src in node) for node in nodes)


def all_arch_strings() -> Iterator[str]:
    """Every architecture of the benchmark, as canonical arch strings (15,625)."""
    nodes = nb201.TOPOLOGY.nodes  # (1, 2, 3): node j has an edge from each of 0..j-1
    for choice in itertools.product(nb201.PRIMITIVES, repeat=nb201.TOPOLOGY.num_edges):
        ops = iter(choice)
        yield "+".join(
            "|" + "".join(f"{next(ops)}~{src}|" for src in range(node)) for node in nodes
        )


class NB201Table(NamedTuple):
    """The accuracies of every architecture: `rows[arch string][column]`, percent."""

    path: str
    columns: tuple[str, ...]
    rows: Mapping[str, Mapping[str, float]]

    def lookup(self, genotype: Genotype | str) -> dict[str, float]:
        """column -> accuracy of `genotype` (an nb201 genotype or an arch string)."""
        if isinstance(genotype, str):
            try:
                genotype = nb201.from_string(genotype)
            except ValueError as err:
                raise BenchmarkError(str(err)) from None
        return dict(self.rows[arch_string(genotype)])


def load_nb201(path: str | os.PathLike[str]) -> NB201Table:
    """The table at `path`, checked whole (module docstring); read once per file version."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    try:
        stat = os.stat(path)
    except OSError as err:
        raise BenchmarkError(
            f"NAS-Bench-201 table {path!r} cannot be read ({err.strerror}); {HOW_TO_MAKE}"
        ) from None
    return _load(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int, size: int) -> NB201Table:
    del mtime_ns, size  # the cache key: a rewritten file is read again
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's BOM too
            return _parse(path, csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BenchmarkError(f"NAS-Bench-201 table {path!r} cannot be read: {err}") from None


def _parse(path: str, reader) -> NB201Table:
    def fail(line: int, message: str) -> BenchmarkError:
        return BenchmarkError(f"{path}:{line}: {message}")

    header = next(reader, None)
    if not header:
        raise fail(1, f"empty file; expected a header 'arch,{','.join(TEST_COLUMNS)}'")
    header = [h.strip() for h in header]
    unknown = [h for h in header if h != "arch" and h not in COLUMNS]
    if unknown:
        raise fail(1, f"unknown column {unknown[0]!r}; the columns are arch, {', '.join(COLUMNS)}")
    missing = [h for h in ("arch", *TEST_COLUMNS) if h not in header]
    if missing:
        raise fail(1, f"no column {missing[0]!r}; a table has arch, {', '.join(TEST_COLUMNS)}")
    if len(set(header)) != len(header):
        repeated = next(h for h in header if header.count(h) > 1)
        raise fail(1, f"column {repeated!r} appears twice")
    columns = tuple(c for c in COLUMNS if c in header)
    index = {h: i for i, h in enumerate(header)}
    known = set(all_arch_strings())
    rows: dict[str, dict[str, float]] = {}
    first_line: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise fail(line, f"{len(row)} fields; the header has {len(header)}")
        arch = row[index["arch"]].strip()
        if arch not in known:  # not canonical: parse it (a one-line error if it is not one)
            try:
                arch = arch_string(nb201.from_string(arch))
            except ValueError as err:
                raise fail(line, str(err)) from None
        if arch in rows:
            raise fail(line, f"{arch} repeats line {first_line[arch]}")
        values = {}
        for column in columns:
            text = row[index[column]].strip()
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 100.0:
                raise fail(line, f"{column} is {text!r}; expected an accuracy in percent, 0-100")
            values[column] = value
        rows[arch] = values
        first_line[arch] = line
    if len(rows) != NUM_ARCHS:
        absent = next(a for a in all_arch_strings() if a not in rows)
        raise BenchmarkError(
            f"{path}: {len(rows):,} of NAS-Bench-201's {NUM_ARCHS:,} architectures (missing, "
            f"e.g., {absent}); a table lists them all: {HOW_TO_MAKE}"
        )
    return NB201Table(path, columns, rows)


__all__ = [
    "COLUMNS",
    "NUM_ARCHS",
    "TEST_COLUMNS",
    "VALID_COLUMNS",
    "BenchmarkError",
    "NB201Table",
    "all_arch_strings",
    "arch_string",
    "load_nb201",
]
