"""The DARTS convolutional cell space (Liu et al., "DARTS: Differentiable Architecture Search",
ICLR 2019, Sec. 2.1, 3.1 and A.1-A.2; quark0/darts `cnn/`).

Everything that is this space's own:
- topology: 2 input nodes (c_{k-2}, c_{k-1}), 4 intermediate nodes, 14 edges, 8 primitives, normal
  and reduction cells; a discrete cell keeps 2 incoming edges per node (never `none`) and
  concatenates all 4 nodes;
- `DartsSupernet`, the search network (`model_search.Network`), built on `supernet.MixedCell`;
- `NetworkCIFAR` and `NetworkImageNet`, the evaluation networks (`model.NetworkCIFAR`,
  `model.NetworkImageNet`) built from a genotype;
- the genotype fields `normal`, `normal_concat`, `reduce`, `reduce_concat`, and the DARTS genotype
  string that DARTS-family papers publish (`to_string` / `from_string`), e.g.
  `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], ...)`,
  read with `ast` and never `eval`;
- the published genotypes (`KNOWN`), the CIFAR-10 protocol (`cifar10_protocol`) and `SPACE`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dnas import literals, network, ops, supernet
from dnas.genotype import Genotype
from dnas.spaces import cells
from dnas.spaces.base import CellTopology, TextFormat
from dnas.spaces.cells import Cell, Edge
from dnas.types import Array, MixWeights

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

TOPOLOGY = CellTopology(
    name="darts_cnn",
    primitives=PRIMITIVES,
    num_inputs=2,
    num_intermediate=4,
    cell_types=("normal", "reduce"),
    edges_per_node=2,
    concat=(2, 3, 4, 5),
)


# --------------------------------------------------------------------------------------------------
# The supernet.


class DartsSearchCell(nn.Module):
    """A DARTS search cell: preprocessing of c_{k-2} and c_{k-1}, mixed edges, concatenated
    intermediate nodes."""

    C: int
    reduction: bool
    reduction_prev: bool
    sep_impl: ops.Impl = "fused"
    remat: bool = False
    partial_channels: int = 1
    single_op: bool = False
    active: tuple[tuple[bool, ...], ...] | None = None  # `supernet.MixedCell.active`

    @nn.compact
    def __call__(
        self, s0: Array, s1: Array, w_ExK: Array, train: bool = True,
        skip_dropout: Array | None = None,
    ) -> Array:  # fmt: skip
        space = TOPOLOGY
        bn = dict(affine=False, track_running_stats=False)
        if self.reduction_prev:
            s0 = ops.FactorizedReduce(s0.shape[-1], self.C, **bn, name="preprocess0")(s0, train)
        else:
            s0 = ops.ReLUConvBN(s0.shape[-1], self.C, 1, 1, 0, **bn, name="preprocess0")(s0, train)
        s1 = ops.ReLUConvBN(s1.shape[-1], self.C, 1, 1, 0, **bn, name="preprocess1")(s1, train)
        nodes = supernet.MixedCell(
            space, self.C, self.reduction, "reduce" if self.reduction else "normal",
            bn_after_pool=True, sep_impl=self.sep_impl,
            remat=self.remat, partial_channels=self.partial_channels, single_op=self.single_op,
            active=self.active, name="mixed",
        )([s0, s1], w_ExK, train, skip_dropout)  # fmt: skip
        return jnp.concatenate([nodes[i - space.num_inputs] for i in space.concat], axis=-1)


def reduction_layers(layers: int) -> tuple[int, int]:
    """DARTS: reduction cells at 1/3 and 2/3 of the depth."""
    return layers // 3, 2 * layers // 3


def cell_layout(C: int, layers: int) -> list[tuple[int, bool]]:
    """(channels, is_reduction) of every cell: each reduction cell doubles the channels."""
    out = []
    for i in range(layers):
        reduction = i in reduction_layers(layers)
        C *= 2 if reduction else 1
        out.append((C, reduction))
    return out


class DartsSupernet(nn.Module):
    """The DARTS search network (`model_search.Network`): stem of 3C channels, `layers` cells with
    reductions at 1/3 and 2/3 doubling the channels, global average pooling, linear classifier."""

    num_classes: int
    C: int = 16
    layers: int = 8
    stem_multiplier: int = 3
    sep_impl: ops.Impl = "fused"
    remat: bool = False
    partial_channels: int = 1  # PC-DARTS' K
    single_op: bool = False  # run only each edge's largest-weight op (one-hot mixing: GDAS)
    active: supernet.Active | None = None  # the ops computed per group (`supernet.active_table`)

    @nn.compact
    def __call__(
        self, x: Array, mix_weights: MixWeights, *, train: bool = True,
        skip_dropout: Array | None = None,
    ) -> Array:  # fmt: skip
        """`skip_dropout`: the dropout rate on identity skip connections (P-DARTS; needs a
        "dropout" rng); None: none."""
        SPACE.check_mix(mix_weights)
        s0 = s1 = ops.StemConv(self.stem_multiplier * self.C, False, name="stem")(x, train)
        reduction_prev = False
        for i, (C_curr, reduction) in enumerate(cell_layout(self.C, self.layers)):
            group = "reduce" if reduction else "normal"
            cell = DartsSearchCell(
                C_curr, reduction, reduction_prev, self.sep_impl, self.remat,
                self.partial_channels, self.single_op, supernet.group_active(self.active, group),
                name=f"cell_{i}",
            )  # fmt: skip
            w = mix_weights["reduce" if reduction else "normal"]
            s0, s1 = s1, cell(s0, s1, w, train, skip_dropout)
            reduction_prev = reduction
        return ops.Linear(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))


# --------------------------------------------------------------------------------------------------
# The discrete networks.


class DartsCell(nn.Module):
    """A discrete DARTS cell (the reference `model.Cell`)."""

    genotype: Genotype
    C: int
    reduction: bool
    reduction_prev: bool
    sep_impl: ops.Impl = "fused"

    @nn.compact
    def __call__(
        self, s0: Array, s1: Array, train: bool, masks: Array | None = None,
        edits: Array | None = None,
    ) -> Array:  # fmt: skip
        """`masks`: (8, N) drop-path masks for the cell's ops (`drop_path_masks`), or None;
        `edits`: this cell type's (8, 1 + ops) rows of `network`'s edits, or None."""
        cell = "reduce" if self.reduction else "normal"
        nodes, concat = self.genotype[cell], self.genotype[f"{cell}_concat"]
        if self.reduction_prev:
            s0 = ops.FactorizedReduce(s0.shape[-1], self.C, name="preprocess0")(s0, train)
        else:
            s0 = ops.ReLUConvBN(s0.shape[-1], self.C, 1, 1, 0, name="preprocess0")(s0, train)
        s1 = ops.ReLUConvBN(s1.shape[-1], self.C, 1, 1, 0, name="preprocess1")(s1, train)
        states = [s0, s1]
        for node, edges in enumerate(nodes, start=2):
            total = None
            for slot, (op, src) in enumerate(edges):
                stride = 2 if self.reduction and src < 2 else 1
                module = ops.make_op(
                    op, self.C, self.C, stride, impl=self.sep_impl, name=f"node{node}_{slot}_{op}"
                )
                h = module(states[src], train)
                index = 2 * (node - 2) + slot
                if masks is not None and not isinstance(module, ops.Identity):
                    h = h * masks[index, :, None, None, None].astype(h.dtype)
                if edits is not None:
                    h = network.edited(
                        h, states[src], edits[index], (cell, index, op, src, node),
                        candidates=TOPOLOGY.primitives, C=self.C, stride=stride,
                        impl=self.sep_impl, name=f"node{node}_{slot}", train=train,
                    )  # fmt: skip
                total = h if total is None else total + h
            states.append(total)
        return jnp.concatenate([states[i] for i in concat], axis=-1)


class AuxiliaryHead(nn.Module):
    """The reference auxiliary heads: ReLU, 5x5 average pooling (stride 3 for 8x8 CIFAR maps, 2 for
    7x7 ImageNet maps), 1x1 conv to 128, BN, ReLU, conv to 768 over the remaining map, BN, ReLU,
    linear. The pooling is skipped on maps smaller than 5x5 (8x8 digits)."""

    num_classes: int
    pool_stride: int = 3
    bn_after_second_conv: bool = True  # the reference ImageNet head omits it

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        x = jax.nn.relu(x)
        if min(x.shape[1:3]) >= 5:
            x = ops.avg_pool(x, 5, self.pool_stride, 0)
        k1 = self.param("conv1", ops.uniform_fan_in(x.shape[-1]), (1, 1, x.shape[-1], 128))
        x = jax.nn.relu(ops.BatchNorm(name="bn1")(ops.conv2d(x, k1), train))
        kh, kw = min(x.shape[1], 2), min(x.shape[2], 2)
        k2 = self.param("conv2", ops.uniform_fan_in(kh * kw * 128), (kh, kw, 128, 768))
        x = ops.conv2d(x, k2)
        if self.bn_after_second_conv:
            x = ops.BatchNorm(name="bn2")(x, train)
        x = jnp.mean(jax.nn.relu(x), axis=(1, 2))
        return ops.Linear(self.num_classes, name="classifier")(x)


def _cells_and_classifier(
    net: nn.Module, s0: Array, s1: Array, train: bool, masks: Array | None,
    reduction_prev: bool, head: nn.Module | None, edits: Mapping[str, Array] | None = None,
) -> tuple[Array, Array | None]:  # fmt: skip
    """The DARTS evaluation networks after their stems: `net.layers` cells (reductions at 1/3 and
    2/3), the auxiliary head after the 2/3 cell, global pooling, the classifier."""
    aux_logits = None
    for i, (C_curr, reduction) in enumerate(cell_layout(net.C, net.layers)):
        cell = DartsCell(
            net.genotype, C_curr, reduction, reduction_prev, net.sep_impl, name=f"cell_{i}"
        )
        group = "reduce" if reduction else "normal"
        s0, s1 = s1, cell(
            s0, s1, train, None if masks is None else masks[i],
            None if edits is None else edits[group],
        )  # fmt: skip
        reduction_prev = reduction
        if head is not None and i == 2 * net.layers // 3 and (train or net.is_initializing()):
            aux_logits = head(s1, train)
    logits = ops.Linear(net.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))
    return logits, aux_logits


class _EvalNetwork(nn.Module):
    """The DARTS evaluation networks: a stem (`stem`, per network), `layers` cells with
    reductions at 1/3 and 2/3, the auxiliary head after the 2/3 cell, pooling, classifier."""

    genotype: Genotype
    num_classes: int
    C: int = 36
    layers: int = 20
    auxiliary: bool = False
    sep_impl: ops.Impl = "fused"

    @nn.compact
    def __call__(
        self, x: Array, *, train: bool = False, drop_path_rate: Array | float = 0.0,
        edits: Mapping[str, Array] | None = None,
    ) -> tuple[Array, Array | None]:  # fmt: skip
        """`edits`: `network`'s apply-time edits of the cells' edges (`dnas explain`), or None."""
        cells.check_space(TOPOLOGY, self.genotype)
        shape = (self.layers, 8, x.shape[0])
        masks = network.drop_path_inputs(self, shape, train, drop_path_rate)
        s0, s1, reduction_prev, head = self.stem(x, train)
        return _cells_and_classifier(self, s0, s1, train, masks, reduction_prev, head, edits)

    def stem(self, x: Array, train: bool) -> tuple[Array, Array, bool, nn.Module | None]:
        """(s0, s1, whether the first cell follows a reduction, the auxiliary head or None)."""
        raise NotImplementedError


class NetworkCIFAR(_EvalNetwork):
    stem_multiplier: int = 3

    def stem(self, x: Array, train: bool):
        s0 = ops.StemConv(self.stem_multiplier * self.C, name="stem")(x, train)
        head = AuxiliaryHead(self.num_classes, 3, name="auxiliary_head") if self.auxiliary else None
        return s0, s0, False, head


class NetworkImageNet(_EvalNetwork):
    C: int = 48
    layers: int = 14

    def stem(self, x: Array, train: bool):
        C = self.C
        s0 = ops.StemConv(C // 2, stride=2, name="stem0_conv1")(x, train)
        s0 = ops.StemConv(C, stride=2, name="stem0_conv2")(jax.nn.relu(s0), train)
        s1 = ops.StemConv(C, stride=2, name="stem1")(jax.nn.relu(s0), train)
        head = None
        if self.auxiliary:
            head = AuxiliaryHead(self.num_classes, 2, False, name="auxiliary_head")
        return s0, s1, True, head


def build_supernet(
    num_classes: int, *, C: int = 16, layers: int = 8, sep_impl: ops.Impl = "fused",
    remat: bool = False, partial_channels: int = 1, single_op: bool = False,
    active: Mapping[str, np.ndarray] | None = None,
) -> DartsSupernet:  # fmt: skip
    """The search network: `layers` cells (the paper: 8) of C (16) channels; `active`: the ops
    computed, per alpha group (`supernet.active_table`; None: all)."""
    return DartsSupernet(
        num_classes, C, layers, sep_impl=sep_impl, remat=remat,
        partial_channels=partial_channels, single_op=single_op,
        active=supernet.active_table(active),
    )  # fmt: skip


def build_network(
    genotype: Genotype, num_classes: int, *, input_shape: Sequence[int] = (32, 32, 3),
    C: int | None = None, layers: int | None = None, auxiliary: bool = False,
    sep_impl: ops.Impl = "fused",
) -> nn.Module:  # fmt: skip
    """The evaluation network of `genotype`: the ImageNet network for inputs of 128 pixels or
    more, the CIFAR network otherwise; `C` and `layers` default to the paper's settings (CIFAR
    36/20, ImageNet 48/14)."""
    cls = NetworkImageNet if input_shape[0] >= 128 else NetworkCIFAR
    kw = {k: v for k, v in (("C", C), ("layers", layers)) if v is not None}
    return cls(genotype, num_classes, auxiliary=auxiliary, sep_impl=sep_impl, **kw)


# --------------------------------------------------------------------------------------------------
# The DARTS genotype string. `literals.read_call` parses the small literal language of the
# namedtuple repr (and of hand-edited genotypes.py files) with `ast`; never eval: the strings are
# pasted from papers' repositories and logs.

FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
# A call of Genotype(...), maybe after comments and `NAME = `: what `spaces.parse` reads as this
# format (anything else is another space's, or not a genotype).
# A `Genotype(` call that does not start with `recurrent=` (the DARTS recurrent cell's format,
# `darts_rnn`).
_DARTS_START = re.compile(
    r"\s*(#[^\n]*\n\s*)*([A-Za-z_]\w*\s*=\s*)?\(?\s*Genotype\s*\((?!\s*(#[^\n]*\n\s*)*recurrent\s*=)"
)


def _looks_like_darts(text: str) -> bool:
    return _DARTS_START.match(text) is not None


_DARTS = "DARTS genotype string"


def to_string(genotype: Genotype) -> str:
    """The one-line form quark0/darts prints (namedtuple repr), concat written as a list."""
    cells.check_space(TOPOLOGY, genotype)
    parts = []
    for cell in TOPOLOGY.cell_types:
        edges = ", ".join(f"({op!r}, {src})" for op, src in cells.flat(genotype, cell))
        parts.append(f"{cell}=[{edges}]")
        parts.append(f"{cell}_concat={list(genotype[f'{cell}_concat'])}")
    return f"Genotype({', '.join(parts)})"


def from_string(text: str) -> Genotype:
    """Parses a DARTS genotype string as printed by quark0/darts and published by its successors.

    Accepts `normal_concat=range(2, 6)` or a list, tuples or lists, single or double quotes,
    trailing commas, any whitespace and newlines, `#` comments, keywords in any order (after any
    positional arguments in field order), an optional `NAME = ` prefix, and cells given either as
    the flat edge list (2 edges per node, in node order) or as one tuple of edges per node.
    Any other input raises a one-line `ValueError` naming the character position and what was
    expected there.
    """
    if not isinstance(text, str):
        raise ValueError(f"a DARTS genotype string must be a str, got {type(text).__name__}")
    args, close = literals.read_call(text, "Genotype", FIELDS, _DARTS)
    missing = [field for field in FIELDS if field not in args]
    if missing:
        raise literals.position_error(
            text, close, f"missing {', '.join(missing)}; expected all of {', '.join(FIELDS)}",
            _DARTS,
        )  # fmt: skip
    fields = {}
    for cell in TOPOLOGY.cell_types:
        fields[cell] = _cell_from_value(text, TOPOLOGY, args[cell], cell)
        concat = f"{cell}_concat"
        fields[concat] = _concat_from_value(text, TOPOLOGY, args[concat], concat)
    return SPACE.genotype(**fields)


def _cell_from_value(text: str, space: CellTopology, value: literals.Node, name: str) -> Cell:
    def fail(pos: int, message: str) -> ValueError:
        return literals.position_error(text, pos, message, _DARTS)

    if value.kind != "seq":
        raise fail(value.pos, f"expected {name} to be a list of ('op_name', input) edges")
    items = value.value
    sizes = cells.node_sizes(space)
    nested = bool(items) and items[0].kind == "seq" and any(v.kind == "seq" for v in items[0].value)
    if nested:  # one tuple of edges per node (D-X-Y's genotypes.py layout)
        if len(items) != space.num_intermediate:
            raise fail(
                value.pos,
                f"{name} has {len(items)} nodes; expected {space.num_intermediate} "
                f"(nodes {space.nodes[0]}..{space.nodes[-1]})",
            )
        groups = []
        for node, group, size in zip(space.nodes, items, sizes, strict=True):
            if group.kind != "seq" or len(group.value) != size:
                raise fail(
                    group.pos, f"expected node {node} of {name} to be a tuple of {size} edges"
                )
            groups.append(group.value)
    else:  # quark0/darts' flat list: `edges_per_node` edges per node, in node order
        if len(items) != sum(sizes):
            raise fail(
                value.pos,
                f"{name} has {len(items)} edges; expected {sum(sizes)} "
                f"({cells.describe_sizes(space)})",
            )
        starts = list(itertools.accumulate(sizes, initial=0))
        groups = [items[a:b] for a, b in itertools.pairwise(starts)]
    cell = []
    for node, group in zip(space.nodes, groups, strict=True):
        edges = []
        for edge in group:
            parts = edge.value if edge.kind == "seq" else ()
            if len(parts) != 2 or parts[0].kind != "str" or parts[1].kind != "int":
                raise fail(edge.pos, "expected an edge ('op_name', input_node)")
            op, src = parts
            error = cells.op_error(space, op.value)
            if error:
                raise fail(op.pos, f"{name} node {node}: {error}")
            error = cells.input_error(node, src.value)
            if error:
                raise fail(src.pos, f"{name} node {node}: {error}")
            edges.append((op.value, src.value))
        cell.append(tuple(edges))
    return tuple(cell)


def _concat_from_value(
    text: str, space: CellTopology, value: literals.Node, name: str
) -> tuple[int, ...]:
    if value.kind == "range":
        concat = value.value
    elif value.kind == "seq" and all(item.kind == "int" for item in value.value):
        concat = tuple(item.value for item in value.value)
    else:
        raise literals.position_error(
            text, value.pos, f"expected {name} to be a list of node numbers or range(...)", _DARTS
        )
    error = cells.concat_error(space, concat)
    if error:
        raise literals.position_error(text, value.pos, f"{name} {error}", _DARTS)
    return concat


def from_flat(
    normal: Sequence[Edge], normal_concat: Sequence[int], reduce: Sequence[Edge],
    reduce_concat: Sequence[int],
) -> Genotype:  # fmt: skip
    """A genotype from flat edge lists as quark0/darts stores them: node 2's two edges, then node
    3's, ..."""
    return SPACE.genotype(
        normal=cells.group_flat(TOPOLOGY, normal, "normal"), normal_concat=normal_concat,
        reduce=cells.group_flat(TOPOLOGY, reduce, "reduce"), reduce_concat=reduce_concat,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The CIFAR-10 protocol.


def cifar10_protocol(c):
    """DARTS' CIFAR-10 protocol (Liu et al. 2019, A.1-A.2): search 8 cells, C=16, 50 epochs,
    batch 64 on half of the training set (the other half trains the alphas); SGD 0.025 cosine to
    0.001, momentum 0.9, wd 3e-4, clip 5; alphas Adam 3e-4 (0.5, 0.999), wd 1e-3; crop + flip.
    Retraining: 20 cells, C=36, 600 epochs, batch 96, cutout 16, drop-path 0.2, auxiliary 0.4.
    `c`: a config (`configlib.default_config()` or a method's), edited and returned."""
    c.dataset, c.space = "cifar10", TOPOLOGY.name
    s = c.search
    s.C, s.layers, s.epochs, s.batch_size = 16, 8, 50, 64
    s.lr, s.lr_min, s.momentum, s.weight_decay, s.grad_clip = 0.025, 0.001, 0.9, 3e-4, 5.0
    s.alpha_lr, s.alpha_b1, s.alpha_b2, s.alpha_weight_decay = 3e-4, 0.5, 0.999, 1e-3
    s.crop_padding, s.cutout_length = 4, 0  # flip: CIFAR's default, on
    s.remat = True  # per-edge jax.checkpoint: batch 64 needs it for second order (BENCHMARKS.md)
    t = c.train
    t.C, t.layers, t.epochs, t.batch_size = 36, 20, 600, 96
    t.lr, t.lr_min = 0.025, 0.0
    t.crop_padding = 4
    t.cutout_length, t.drop_path_prob, t.auxiliary, t.auxiliary_weight = 16, 0.2, True, 0.4
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 50
    return c


# --------------------------------------------------------------------------------------------------
# The space.

KNOWN: dict[str, Genotype] = {}  # filled below, once the space exists
DARTS_STRING = TextFormat(
    "darts", lambda text: from_string(text), to_string, detect=lambda text: _looks_like_darts(text),
    description="DARTS genotype string, Genotype(normal=[...], normal_concat=[...], ...)",
)  # fmt: skip
SPACE = cells.cell_space(
    TOPOLOGY, supernet=build_supernet, network=build_network, concat_field=True,
    formats=(DARTS_STRING,), known=KNOWN, auxiliary_head=True, drop_path=True, tiny_layers=3,
    min_layers=3,  # 1 or 2 cells are all reduction cells (`reduction_layers`): no normal cell
    protocols={"cifar10": cifar10_protocol},
)  # fmt: skip


# Published genotypes. Each was read from the repository and file named above it; the flat edge
# lists are in the order of the source (node 2's two edges, node 3's, ...), concat nodes 2..5
# (written `[2, 3, 4, 5]` or `range(2, 6)` there). NASNet and AmoebaNet, also in quark0/darts'
# genotypes.py, are left out: they use sep_conv_7x7 and conv_7x1_1x7 and 5-node cells, outside the
# DARTS space.


def _darts(normal: list[Edge], reduce: list[Edge]) -> Genotype:
    return from_flat(normal, (2, 3, 4, 5), reduce, (2, 3, 4, 5))


# fmt: off  (one line per four edges, as in the sources, is easier to check against them)
KNOWN |= {
    # DARTS (Liu et al., ICLR 2019), first-order search. quark0/darts cnn/genotypes.py (there
    # `DARTS`, at commit 8876e79); the same `DARTS_V1` line is in yuhuixu1993/PC-DARTS and
    # chenxin061/pdarts genotypes.py, which copy quark0/darts' file.
    "darts_v1": _darts(
        normal=[
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 2),
        ],
        reduce=[
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("avg_pool_3x3", 0),
        ],
    ),
    # DARTS (Liu et al., ICLR 2019), second-order search: the paper's 2.76% CIFAR-10 cell.
    # `DARTS_V2` of quark0/darts cnn/genotypes.py as copied verbatim into yuhuixu1993/PC-DARTS and
    # chenxin061/pdarts genotypes.py; D-X-Y/AutoDL-Projects lib/nas_infer_model/DXYs/genotypes.py
    # holds the same cell grouped per node.
    "darts_v2": _darts(
        normal=[
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("skip_connect", 0),
            ("dil_conv_3x3", 2),
        ],
        reduce=[
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
        ],
    ),
    # PC-DARTS (Xu et al., ICLR 2020), searched on CIFAR-10: yuhuixu1993/PC-DARTS genotypes.py,
    # `PC_DARTS_cifar` (aliased `PCDARTS` there).
    "pcdarts": _darts(
        normal=[
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 0),
            ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 1),
            ("avg_pool_3x3", 0),
            ("dil_conv_3x3", 1),
        ],
        reduce=[
            ("sep_conv_5x5", 1),
            ("max_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
        ],
    ),
    # PC-DARTS searched directly on ImageNet: yuhuixu1993/PC-DARTS genotypes.py, `PC_DARTS_image`.
    "pcdarts_imagenet": _darts(
        normal=[
            ("skip_connect", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 0),
            ("skip_connect", 1),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
            ("dil_conv_5x5", 4),
        ],
        reduce=[
            ("sep_conv_3x3", 0),
            ("skip_connect", 1),
            ("dil_conv_5x5", 2),
            ("max_pool_3x3", 1),
            ("sep_conv_3x3", 2),
            ("sep_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 3),
        ],
    ),
    # P-DARTS (Chen et al., ICCV 2019), CIFAR-10: chenxin061/pdarts genotypes.py, `PDARTS`.
    "pdarts": _darts(
        normal=[
            ("skip_connect", 0),
            ("dil_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 0),
            ("dil_conv_5x5", 4),
        ],
        reduce=[
            ("avg_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_3x3", 0),
            ("dil_conv_5x5", 2),
            ("max_pool_3x3", 0),
            ("dil_conv_3x3", 1),
            ("dil_conv_3x3", 1),
            ("dil_conv_5x5", 3),
        ],
    ),
    # GDAS (Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019):
    # D-X-Y/AutoDL-Projects lib/nas_infer_model/DXYs/genotypes.py, `GDAS_V1` (grouped per node
    # there, flattened here).
    "gdas_v1": _darts(
        normal=[
            ("skip_connect", 0),
            ("skip_connect", 1),
            ("skip_connect", 0),
            ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 3),
            ("skip_connect", 0),
            ("sep_conv_5x5", 4),
            ("sep_conv_3x3", 3),
        ],
        reduce=[
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_5x5", 2),
            ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 2),
            ("sep_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_5x5", 1),
        ],
    ),
    # DrNAS (Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021), CIFAR-10:
    # xiangning-chen/DrNAS DARTS-space/genotypes.py, `DrNAS_cifar10` (the default `--arch` of
    # DARTS-space/train.py; an older top-level genotypes.py has a different `DrNAS_cifar`).
    "drnas": _darts(
        normal=[
            ("sep_conv_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
            ("dil_conv_5x5", 3),
        ],
        reduce=[
            ("max_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 2),
            ("sep_conv_5x5", 1),
            ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 3),
            ("skip_connect", 4),
            ("sep_conv_5x5", 1),
        ],
    ),
    # DrNAS searched on ImageNet: xiangning-chen/DrNAS DARTS-space/genotypes.py, `DrNAS_imagenet`.
    "drnas_imagenet": _darts(
        normal=[
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("dil_conv_3x3", 3),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
        ],
        reduce=[
            ("max_pool_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 2),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 2),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
        ],
    ),
}
# fmt: on
