"""The NAS-Bench-201 cell space (Dong & Yang, "NAS-Bench-201: Extending the Scope of
Reproducible Neural Architecture Search", ICLR 2020, Sec. 2.1; D-X-Y/AutoDL-Projects).

Everything that is this space's own:
- topology: 4 nodes (input 0, nodes 1..3, node 3 the output), 6 edges, 5 primitives, one cell type;
  every edge keeps its best op (`none` included): 5^6 = 15,625 cells;
- `NB201Supernet` (AutoDL-Projects `TinyNetworkDarts`) built on `supernet.MixedCell`, and
  `NB201Network` (`TinyNetwork`) built from a genotype: 3x3 stem, three stages of N cells
  separated by ResNet reduction blocks, BN-ReLU, pooling, classifier;
- the genotype field `normal` and the benchmark's arch string (`to_string` / `from_string`), e.g.
  `|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|`:
  `op~input` per edge, `+` between nodes, the key of the benchmark's `query_index_by_arch`;
- published cells (`KNOWN`), the benchmark's search protocol (`protocol`) and `SPACE`.
"""

from __future__ import annotations

import csv
import functools
import itertools
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dnas import literals, network, ops, supernet
from dnas.genotype import Genotype
from dnas.spaces import cells
from dnas.spaces.base import CellTopology, TextFormat
from dnas.types import Array, MixWeights

PRIMITIVES = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

TOPOLOGY = CellTopology(
    name="nb201",
    primitives=PRIMITIVES,
    num_inputs=1,
    num_intermediate=3,
    cell_types=("normal",),
    edges_per_node=None,
    concat=(3,),
)


# --------------------------------------------------------------------------------------------------
# The networks.


def nb201_layout(C: int, N: int) -> list[tuple[int, bool]]:
    """(channels, is_reduction_block) of the NAS-Bench-201 macro skeleton: 3 stages of N cells."""
    return (
        [(C, False)] * N
        + [(2 * C, True)]
        + [(2 * C, False)] * N
        + [(4 * C, True)]
        + [(4 * C, False)] * N
    )


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's reduction block: two 3x3 ReLUConvBNs (the first with stride 2) plus a
    shortcut of 2x2 average pooling and a 1x1 convolution."""

    C_out: int
    stride: int = 2
    track_running_stats: bool = True

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        C_in, trs = x.shape[-1], self.track_running_stats
        y = ops.ReLUConvBN(C_in, self.C_out, 3, self.stride, 1, 1, True, trs, name="conv_a")(
            x, train
        )
        y = ops.ReLUConvBN(self.C_out, self.C_out, 3, 1, 1, 1, True, trs, name="conv_b")(y, train)
        if self.stride == 2:
            kernel = self.param(
                "shortcut_kernel", ops.uniform_fan_in(C_in), (1, 1, C_in, self.C_out)
            )
            shortcut = ops.conv2d(ops.avg_pool(x, 2, 2, 0), kernel)
        elif C_in != self.C_out:
            shortcut = ops.ReLUConvBN(C_in, self.C_out, 1, 1, 0, 1, True, trs, name="shortcut")(
                x, train
            )
        else:
            shortcut = x
        return shortcut + y


class NB201Supernet(nn.Module):
    """The NAS-Bench-201 search network (AutoDL-Projects `TinyNetworkDarts`): 3x3 stem, three
    stages of N search cells separated by ResNet reduction blocks, BN-ReLU, pooling, classifier."""

    num_classes: int
    C: int = 16
    N: int = 5
    remat: bool = False
    partial_channels: int = 1
    single_op: bool = False
    impl: ops.Impl = "views"  # the pooling ops' form (`ops.choose_form`)
    active: supernet.Active | None = None  # the ops computed (`supernet.active_table`)

    @nn.compact
    def __call__(
        self, x: Array, mix_weights: MixWeights, *, train: bool = True,
        skip_dropout: Array | None = None,
    ) -> Array:  # fmt: skip
        SPACE.check_mix(mix_weights)
        x = ops.StemConv(self.C, False, name="stem")(x, train)
        for i, (C_curr, reduction) in enumerate(nb201_layout(self.C, self.N)):
            if reduction:
                x = ResNetBasicBlock(C_curr, 2, False, name=f"cell_{i}")(x, train)
            else:
                cell = supernet.MixedCell(
                    TOPOLOGY, C_curr, sep_impl=self.impl, remat=self.remat,
                    partial_channels=self.partial_channels, single_op=self.single_op,
                    active=supernet.group_active(self.active, "normal"), name=f"cell_{i}",
                )  # fmt: skip
                x = cell([x], mix_weights["normal"], train, skip_dropout)[-1]
        x = jax.nn.relu(ops.BatchNorm(track_running_stats=False, name="lastact")(x, train))
        return ops.Linear(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2)))


class NB201Cell(nn.Module):
    """A discrete NAS-Bench-201 cell (AutoDL-Projects `InferCell`): node j sums op(node i) over
    its incoming edges; `none` edges contribute nothing."""

    genotype: Genotype
    C: int
    impl: ops.Impl = "views"  # the average pooling's form (`ops.choose_form`)

    @nn.compact
    def __call__(self, x: Array, train: bool, edits: Array | None = None) -> Array:
        """`edits`: the (6, 1 + ops) rows of `network`'s edits of the cell's edges, or None."""
        states = [x]
        index = 0
        for node, edges in enumerate(self.genotype.normal, start=1):
            total = jnp.zeros_like(x)
            for op, src in edges:
                index += 1
                if op == "none" and edits is None:
                    continue
                if op == "none":
                    h = jnp.zeros_like(states[src])
                else:
                    module = ops.make_op(
                        op, self.C, self.C, 1, impl=self.impl, name=f"edge_{src}_{node}_{op}"
                    )
                    h = module(states[src], train)
                if edits is not None:
                    h = network.edited(
                        h, states[src], edits[index - 1], ("normal", index - 1, op, src, node),
                        candidates=TOPOLOGY.primitives, C=self.C, stride=1, impl=self.impl,
                        name=f"edge_{src}_{node}", train=train,
                    )  # fmt: skip
                total = total + h
            states.append(total)
        return states[-1]


class NB201Network(nn.Module):
    """The NAS-Bench-201 network (AutoDL-Projects `TinyNetwork`): 3x3 stem of C channels, three
    stages of N cells separated by ResNet reduction blocks, BN-ReLU, pooling, classifier."""

    genotype: Genotype
    num_classes: int
    C: int = 16
    N: int = 5
    impl: ops.Impl = "views"

    @nn.compact
    def __call__(
        self, x: Array, *, train: bool = False, drop_path_rate: Array | float = 0.0,
        edits: Mapping[str, Array] | None = None,
    ) -> tuple[Array, None]:  # fmt: skip
        """`edits`: `network`'s apply-time edits of the cells' edges (`dnas explain`), or None."""
        del drop_path_rate  # NAS-Bench-201 trains without drop-path
        cells.check_space(TOPOLOGY, self.genotype)
        x = ops.StemConv(self.C, name="stem")(x, train)
        for i, (C_curr, reduction) in enumerate(nb201_layout(self.C, self.N)):
            if reduction:
                x = ResNetBasicBlock(C_curr, 2, name=f"cell_{i}")(x, train)
            else:
                cell = NB201Cell(self.genotype, C_curr, self.impl, name=f"cell_{i}")
                x = cell(x, train, None if edits is None else edits["normal"])
        x = jax.nn.relu(ops.BatchNorm(name="lastact")(x, train))
        return ops.Linear(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2))), None


def build_supernet(
    num_classes: int, *, C: int = 16, layers: int = 5, sep_impl: ops.Impl = "fused",
    remat: bool = False, partial_channels: int = 1, single_op: bool = False,
    active: Mapping[str, np.ndarray] | None = None,
) -> NB201Supernet:  # fmt: skip
    """The search network: `layers` (N) cells per stage (the benchmark: 5) of C (16) channels;
    `sep_impl` gives the pooling ops' form (there are no separable convolutions here); `active`:
    the ops computed (`supernet.active_table`; None: all)."""
    return NB201Supernet(
        num_classes, C, layers, remat=remat, partial_channels=partial_channels,
        single_op=single_op, impl=sep_impl, active=supernet.active_table(active),
    )  # fmt: skip


def build_network(
    genotype: Genotype, num_classes: int, *, input_shape: Sequence[int] = (32, 32, 3),
    C: int | None = None, layers: int | None = None, auxiliary: bool = False,
    sep_impl: ops.Impl = "fused",
) -> NB201Network:  # fmt: skip
    """The network of `genotype`: N = `layers` cells per stage (default 5) of C (16) channels.
    It has no auxiliary head; `input_shape` does not change it, `sep_impl` is the pooling's form."""
    del input_shape
    if auxiliary:
        raise ValueError("the NAS-Bench-201 network has no auxiliary head")
    kw = {k: v for k, v in (("C", C), ("N", layers)) if v is not None}
    return NB201Network(genotype, num_classes, **kw, impl=sep_impl)


# --------------------------------------------------------------------------------------------------
# The arch string.


def to_string(genotype: Genotype) -> str:
    """The NAS-Bench-201 arch string, e.g. `|nor_conv_3x3~0|+|none~0|skip_connect~1|+...`, the
    key of the benchmark's `query_index_by_arch`."""
    cells.check_space(TOPOLOGY, genotype)
    return _arch_text(genotype.normal)


def _arch_text(nodes) -> str:
    """Nodes of (op, input) edges as an arch string: `|op~input|...` per node, joined by `+`."""
    return "+".join("|" + "".join(f"{op}~{src}|" for op, src in node) for node in nodes)


_NB201 = "NAS-Bench-201 arch string"
_NB201_EDGE_RE = re.compile(r"([A-Za-z0-9_]+)~([0-9]{1,4})\|")


def from_string(text: str) -> Genotype:
    """Parses a NAS-Bench-201 arch string (Dong & Yang 2020; `CellStructure.str2structure` format):
    nodes separated by `+`, each `|op~input|op~input|`, node j listing one edge from each of
    0..j-1. Surrounding whitespace is ignored; anything else malformed raises a one-line
    `ValueError` with the character position."""
    if not isinstance(text, str):
        raise ValueError(f"a NAS-Bench-201 arch string must be a str, got {type(text).__name__}")
    search_space = TOPOLOGY

    def fail(pos: int, message: str) -> ValueError:
        return literals.position_error(text, pos, message, _NB201)

    pos = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    nodes: list[tuple[int, list[tuple[str, int, int, int]]]] = []  # (start, [(op, src, pos, pos)])
    while True:
        if pos >= end or text[pos] != "|":
            raise fail(pos, "expected '|' opening a node")
        nodes.append((pos, []))
        pos += 1
        while True:
            match = _NB201_EDGE_RE.match(text, pos, end)
            if match is None:
                raise fail(pos, "expected an edge 'op_name~input|'")
            nodes[-1][1].append((match[1], int(match[2]), match.start(1), match.start(2)))
            pos = match.end()
            if pos == end or text[pos] == "+":
                break
        if pos == end:
            break
        pos += 1  # the '+'
    if len(nodes) != search_space.num_intermediate:
        # Point at the first extra node, or at the end when nodes are missing.
        extra = len(nodes) > search_space.num_intermediate
        raise fail(
            nodes[search_space.num_intermediate][0] if extra else end,
            f"found {len(nodes)} nodes; expected {search_space.num_intermediate} separated by '+'",
        )
    cell = []
    for node, (start, edges) in zip(search_space.nodes, nodes, strict=True):
        seen: set[int] = set()
        for op, src, op_pos, src_pos in edges:
            error = cells.op_error(search_space, op)
            if error:
                raise fail(op_pos, f"node {node}: {error}")
            error = cells.input_error(node, src)
            if error:
                raise fail(src_pos, f"node {node}: {error}")
            if src in seen:
                raise fail(src_pos, f"node {node}: input {src} repeated; expected each input once")
            seen.add(src)
        if len(edges) != node:
            raise fail(
                start,
                f"node {node} has {len(edges)} edges; expected {node}, one from each of "
                f"0..{node - 1}",
            )
        cell.append(tuple((op, src) for op, src, _, _ in edges))
    return SPACE.genotype(normal=tuple(cell))


# --------------------------------------------------------------------------------------------------
# The benchmark's protocol.

DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16": "imagenet16-120"}


def protocol(c, dataset: str = "cifar10"):
    """NAS-Bench-201's search protocol for weight-sharing methods (Dong & Yang 2020, Sec. 5;
    AutoDL-Projects configs/nas-benchmark/algos): C=16, N=5 cells per stage, 50 epochs, batch 64,
    SGD 0.025 cosine to 0.001, wd 5e-4 (the benchmark uses Nesterov momentum; dnas' SGD is plain
    momentum), alphas Adam 3e-4 (0.5, 0.999), wd 1e-3. Retraining follows the benchmark's
    200-epoch schedule (lr 0.1 cosine, batch 256, wd 5e-4). `dataset`: cifar10, cifar100,
    imagenet16. `c`: a config, edited and returned."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown NAS-Bench-201 dataset {dataset!r}; valid: {list(DATASETS)}")
    c.dataset, c.space = DATASETS[dataset], TOPOLOGY.name
    s = c.search
    s.C, s.layers, s.epochs, s.batch_size = 16, 5, 50, 64
    s.lr, s.lr_min, s.momentum, s.weight_decay, s.grad_clip = 0.025, 0.001, 0.9, 5e-4, 5.0
    s.alpha_lr, s.alpha_b1, s.alpha_b2, s.alpha_weight_decay = 3e-4, 0.5, 0.999, 1e-3
    s.crop_padding, s.cutout_length = -1, 0  # flip: the dataset's default, on
    t = c.train
    t.C, t.layers, t.epochs, t.batch_size = 16, 5, 200, 256
    t.lr, t.lr_min, t.weight_decay, t.auxiliary, t.drop_path_prob = 0.1, 0.0, 5e-4, False, 0.0
    t.cutout_length = 0
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 50
    return c


# --------------------------------------------------------------------------------------------------
# The space.


# --------------------------------------------------------------------------------------------------
# NAS-Bench-201's ground truth (the space's `ground_truth`): the published accuracies of all
# 15,625 architectures, read from a table the user provides, so a search can report the true
# accuracy of the cell it derives (`--config.benchmark.table=FILE`: `benchmark/<column>` in the
# metrics at every epoch) and `dnas info --benchmark FILE` can add them to a genotype's figures.
#
# The table is a CSV file with a header: `arch` (the arch string), the test accuracies
# `cifar10_test`, `cifar100_test`, `imagenet16_120_test` (percent, as the benchmark reports them)
# and optionally the validation accuracies `cifar10_valid`, `cifar100_valid`,
# `imagenet16_120_valid`; one row per architecture, all 15,625 of them.
# `scripts/nb201_to_csv.py` writes it from the official NAS-Bench-201 or NATS-Bench files with
# their own API; dnas reads text only (no pickle, no torch). A table that is not exactly the
# benchmark (a column missing or unknown, an arch string that is not one, a repeated or missing
# architecture, an accuracy that is not a number in [0, 100]) is refused with a one-line
# `BenchmarkError` naming the file, the line and what to do.

NUM_ARCHS = len(PRIMITIVES) ** TOPOLOGY.num_edges  # 5^6 = 15,625
TEST_COLUMNS = ("cifar10_test", "cifar100_test", "imagenet16_120_test")
VALID_COLUMNS = ("cifar10_valid", "cifar100_valid", "imagenet16_120_valid")
COLUMNS = TEST_COLUMNS + VALID_COLUMNS
HOW_TO_MAKE = "write it with scripts/nb201_to_csv.py from the official NAS-Bench-201 files"


class BenchmarkError(ValueError):
    """A benchmark table that cannot be used, or a genotype it cannot answer for."""


def arch_string(genotype: Genotype) -> str:
    """The canonical NAS-Bench-201 arch string of an `nb201` genotype: each node's edges in the
    order of their inputs (the benchmark's own order)."""
    if genotype.space != SPACE.name:
        raise BenchmarkError(
            f"NAS-Bench-201's table answers for genotypes of the nb201 space, got a "
            f"{genotype.space} genotype"
        )
    return _arch_text(sorted(node, key=lambda edge: edge[1]) for node in genotype.normal)


def all_arch_strings() -> Iterator[str]:
    """Every architecture of the benchmark, as canonical arch strings (15,625)."""
    nodes = TOPOLOGY.nodes  # (1, 2, 3): node j has an edge from each of 0..j-1
    for choice in itertools.product(PRIMITIVES, repeat=TOPOLOGY.num_edges):
        ops = iter(choice)
        yield _arch_text([[(next(ops), src) for src in range(node)] for node in nodes])


class NB201Table(NamedTuple):
    """The accuracies of every architecture: `rows[arch string][column]`, percent."""

    path: str
    columns: tuple[str, ...]
    rows: Mapping[str, Mapping[str, float]]

    def lookup(self, genotype: Genotype | str) -> dict[str, float]:
        """column -> accuracy of `genotype` (an nb201 genotype or an arch string)."""
        if isinstance(genotype, str):
            try:
                genotype = from_string(genotype)
            except ValueError as err:
                raise BenchmarkError(str(err)) from None
        return dict(self.rows[arch_string(genotype)])


def load_table(path: str | os.PathLike[str]) -> NB201Table:
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
                arch = arch_string(from_string(arch))
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


KNOWN: dict[str, Genotype] = {}  # filled below, once the space exists
ARCH_STRING = TextFormat(
    "nb201", lambda text: from_string(text), to_string,
    detect=lambda text: text.lstrip().startswith("|"),
    description="NAS-Bench-201 arch string, |op~0|+|op~0|op~1|+...",
)  # fmt: skip
SPACE = cells.cell_space(
    TOPOLOGY, supernet=build_supernet, network=build_network, concat_field=False,
    formats=(ARCH_STRING,), known=KNOWN, tiny_layers=1, ground_truth=load_table,
    protocols={d: (lambda c, d=d: protocol(c, d)) for d in DATASETS},
)  # fmt: skip

# fmt: off
KNOWN |= {
    # NAS-Bench-201's ResNet cell (Dong & Yang 2020, the hand-designed reference in the space):
    # D-X-Y/AutoDL-Projects exps/experimental/visualize-nas-bench-x.py, `resnet`.
    "nb201_resnet": from_string(
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    ),
    # Arch index 9930: D-X-Y/AutoDL-Projects exps/NATS-Bench/main-sss.py says "this genotype is the
    # architecture with the highest accuracy on CIFAR-100 validation set"; NATS-Bench fixes its
    # size-search-space topology to it.
    "nb201_best_cifar100_valid": from_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    ),
}
# fmt: on
