"""What every search space provides: the `Space` interface, and the cell topology that the cell
spaces share.

A `Space` is a NamedTuple of values and pure functions, as a `Strategy` is (`strategies.py`): one
module under `dnas/spaces/` builds it and holds everything that is that space's own (candidate
ops, supernet and discrete network, genotype schema and text formats, published genotypes,
discretisation, sampling, cost model). The shared machinery (search, strategies, selection,
retraining, figures) reaches a space only through these fields and knows no space by name.

Alphas and mixing weights are dicts: alpha group (a cell type such as `normal`, or `blocks` for a
chain) -> (rows, ops) array; row r of a group is one mixed edge or block, column k weights
`ops[k]`. Entries whose key contains a `/` (e.g. PC-DARTS' `beta/normal`) belong to a strategy,
not to the space.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnas.types import Alphas, MixWeights, PRNGKey

if TYPE_CHECKING:  # the annotations only: genotype.py depends on nothing of a space
    import flax.linen as nn

    from dnas.genotype import Genotype


class TextFormat(NamedTuple):
    """A text form of a space's genotypes (e.g. the DARTS genotype string). `parse` raises a
    one-line ValueError naming the position of what is wrong; `detect` says whether a text looks
    like this format (`spaces.parse` picks the format with it)."""

    name: str
    parse: Callable[[str], Genotype]
    write: Callable[[Genotype], str]
    detect: Callable[[str], bool]
    description: str = ""


class Diagram(NamedTuple):
    """A figure of a genotype for spaces that are neither DARTS-style cells nor chains of
    blocks (`Space.diagrams`; `dnas.viz` draws it with graphviz or matplotlib): nodes in drawing
    order, each (name, kind) with kind 'input', 'node' or 'output', and labelled edges
    (source, destination, label; '' for none)."""

    nodes: tuple[tuple[str, str], ...]
    edges: tuple[tuple[str, str, str], ...]


class Candidate(NamedTuple):
    """One candidate op at one mixed position of a supernet, as a standalone module: what a
    latency table times (`dnas lut`) and a cost model counts.

    group, position, row, op: where it sits (alpha group, unit of that group: a cell of that type
      or 0 for a chain of blocks, alpha row, op name); the coordinates of a `hardware.CostTable`.
    module: the op alone, applied as `module.apply(variables, x, False)` (inference) to inputs
      of `input_shape` (H, W, C of one example) with a leading batch axis.
    """

    group: str
    position: int
    row: int
    op: str
    module: nn.Module
    input_shape: tuple[int, int, int]


class Space(NamedTuple):
    """A search space. Build one with the space module's own functions (see `dnas/spaces/`);
    `spaces.register` makes it known to configs and the command line.

    Topology and alphas:
      name: registry key (`config.space`, a genotype's `space`).
      ops: candidate operation names, the column order of every alpha row.
      alpha_shapes: alpha group -> (rows, len(ops)).
      row_labels: alpha group -> a label per row (an edge `src_dst`, a block `b3`), used in
        logged metric names and figures.
      node_rows: per node of a cell, the rows of its incoming edges (PC-DARTS normalises the
        edges of a node against each other); () where rows are not edges into nodes (a chain).
      keep_per_node: inputs a node keeps in a discrete genotype (DARTS: 2; DARTS-PT prunes the
        others); None: all (NAS-Bench-201).
      discrete_ops: the ops a discrete genotype may choose (DARTS leaves out `none`).
      mask: alpha group -> (rows, ops) bool, True where the op is a candidate of that row (a
        chain's `zero` only where a block can be skipped); None: every op in every row. The
        strategies mix masked alphas (`relaxations.mask`: weight exactly 0, no gradient).
    Models:
      supernet: (num_classes, *, C, layers, sep_impl, remat, partial_channels, single_op) ->
        a Linen module applied as `apply(variables, x, mix_weights, train=, skip_dropout=)`.
      network: (genotype, num_classes, *, input_shape, C, layers, auxiliary, sep_impl) -> the
        discrete network, applied as `apply(variables, x, train=, drop_path_rate=)` ->
        (logits, auxiliary logits or None). None for C or layers: the space's paper setting.
        A cell space's network also takes `edits=` (`network.py`: edges removed or their ops
        replaced at apply time, what `dnas explain` measures).
      op_costs: (supernet, input_shape) -> alpha group -> (units, rows, ops, 3) cost per image of
        every candidate op of every mixed edge: parameters, multiply-adds, memory access.
      candidates: (supernet, input_shape) -> the `Candidate`s of every mixed row (ops that
        compute nothing, `none` and `zero`, left out), what `dnas lut` times; None if the space
        cannot list them.
    Genotypes:
      genotype: (**fields) -> a validated `Genotype` (one-line ValueError otherwise).
      discretise: mixing weights -> genotype (the space's rule).
      random_genotype: numpy Generator -> a uniformly random genotype (the random baseline).
      genotype_mix: genotype -> one-hot mixing weights (numpy) under which the supernet computes
        exactly that network.
      formats: text formats, the first the space's native one (`Genotype.to_string`).
      known: published genotypes by name.
      upgrade: (fields, schema_version) -> fields of the current schema (older genotype.json).
      mutate: (genotype, Generator) -> a neighbouring genotype (regularised evolution); None if
        the space has no mutation.
      sample_mix: (key, alphas) -> one-hot mixing weights of a uniformly random genotype, inside
        jit (random search with weight sharing); None if the space cannot sample in jit.
    Retraining and configs:
      auxiliary_head, drop_path: whether the discrete network has them (the DARTS protocol).
      tiny_layers: the smallest useful depth, for smoke and test configs.
      min_layers: the smallest `layers` (search and retraining) at which every alpha group has
        a cell (DARTS: 3, its reduction cells sitting at layers // 3 and 2 * layers // 3;
        NAS-Bench-201: 1 cell per stage); `configlib.validate` refuses configs with fewer.
      protocols: dataset -> function editing a config to the space's published protocol.
      topology: the `CellTopology` of a cell space (figures draw its cells), else None.
      diagrams: genotype -> {figure name: `Diagram`}, the space's own figures of a genotype
        (the recurrent cell, a transformer's layers); None: `topology` cells or chain blocks.
      modality: 'image' (classifiers of images: `supernet` and `network` as above) or 'text'
        (language models; `num_classes` is the vocabulary size, `C` the embedding width, and
        the models follow `dnas.text`'s calling convention: `apply(variables, inputs_BL,
        [mix_weights,] carry=, mask=, train=)` -> (logits_BLV, carry, hiddens_BLH), with
        `init_carry(batch_size)`; `op_costs` and `candidates` take `input_shape` = (seq_len,)
        and count per token).
      ground_truth: path -> the published results of every architecture of a benchmark space,
        read from a user's table: an object with `columns` and `lookup(genotype)` -> {column:
        value} (NAS-Bench-201: `nb201.py`); None where the space has no benchmark.
    """

    name: str
    ops: tuple[str, ...]
    alpha_shapes: Mapping[str, tuple[int, int]]
    row_labels: Mapping[str, tuple[str, ...]]
    supernet: Callable[..., nn.Module]
    network: Callable[..., nn.Module]
    op_costs: Callable[[nn.Module, tuple[int, ...]], Mapping[str, np.ndarray]]
    genotype: Callable[..., Genotype]
    discretise: Callable[[MixWeights], Genotype]
    random_genotype: Callable[[np.random.Generator], Genotype]
    genotype_mix: Callable[[Genotype], dict[str, np.ndarray]]
    formats: tuple[TextFormat, ...] = ()
    known: Mapping[str, Genotype] = types.MappingProxyType({})
    upgrade: Callable[[dict, int], dict] | None = None
    mutate: Callable[[Genotype, np.random.Generator], Genotype] | None = None
    sample_mix: Callable[[PRNGKey, Alphas], MixWeights] | None = None
    node_rows: tuple[tuple[int, ...], ...] = ()
    keep_per_node: int | None = None
    discrete_ops: tuple[str, ...] | None = None
    auxiliary_head: bool = False
    drop_path: bool = False
    tiny_layers: int = 1
    min_layers: int = 1
    protocols: Mapping[str, Callable[[Any], Any]] = types.MappingProxyType({})
    topology: CellTopology | None = None
    candidates: Callable[[nn.Module, tuple[int, ...]], list[Candidate]] | None = None
    mask: Mapping[str, np.ndarray] | None = None
    modality: str = "image"
    diagrams: Callable[[Genotype], Mapping[str, Diagram]] | None = None
    ground_truth: Callable[[str], Any] | None = None

    @property
    def groups(self) -> tuple[str, ...]:
        """The alpha groups, in order (e.g. ('normal', 'reduce'))."""
        return tuple(self.alpha_shapes)

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    def op_index(self, op: str) -> int:
        """Column of `op` in an alpha row; a KeyError listing the valid ops otherwise."""
        return op_index(self.name, self.ops, op)

    def check_op(self, op: str) -> None:
        op_index(self.name, self.ops, op)

    def init_alphas(self, key: PRNGKey, scale: float = 1e-3) -> Alphas:
        """DARTS initialisation: `scale * N(0, 1)` for every alpha (Liu et al. 2019, Sec. 3)."""
        return init_alphas(self, key, scale)

    def check_mix(self, mix_weights: MixWeights) -> None:
        """A one-line ValueError unless `mix_weights` has exactly the space's alpha shapes (keys
        with a `/` are a strategy's, e.g. the paths a binarised strategy computes, and are not
        checked here)."""
        expected = {k: tuple(v) for k, v in self.alpha_shapes.items()}
        got = {k: tuple(getattr(v, "shape", ())) for k, v in mix_weights.items() if "/" not in k}
        if got != expected:
            raise ValueError(
                f"mixing weights for the {self.name} space must be {expected} "
                f"(alpha group -> (rows, ops)), got {got}"
            )

    def ops_used(self, genotype: Genotype) -> dict[str, list[str]]:
        """Alpha group -> the ops the genotype chose, one per chosen edge or block."""
        return {
            group: [self.ops[k] for _, k in np.argwhere(w > 0)]
            for group, w in self.genotype_mix(genotype).items()
        }

    def to_string(self, genotype: Genotype) -> str:
        """The genotype in the space's native text format (compact JSON where it has none)."""
        if self.formats:
            return self.formats[0].write(genotype)
        return genotype.to_compact_json()


def op_index(space: str, ops: tuple[str, ...], op: str) -> int:
    """Column of `op` among `ops` of search space `space`; a KeyError listing them otherwise."""
    if op not in ops:
        raise KeyError(
            f"unknown operation {op!r} for search space {space!r}; "
            f"valid operations: {', '.join(ops)}"
        )
    return ops.index(op)


def init_alphas(space: Space, key: PRNGKey, scale: float = 1e-3) -> Alphas:
    """`scale * N(0, 1)` for every alpha of `space`, one key per group."""
    keys = jax.random.split(key, len(space.alpha_shapes))
    return {
        group: scale * jax.random.normal(k, shape, jnp.float32)
        for (group, shape), k in zip(space.alpha_shapes.items(), keys, strict=True)
    }


@dataclasses.dataclass(frozen=True)
class CellTopology:
    """The graph of a cell (DARTS, NAS-Bench-201), shared by the cell spaces.

    Nodes are numbered as in the papers: `num_inputs` input nodes first (DARTS: c_{k-2}, c_{k-1}),
    then the intermediate nodes. Every intermediate node has an edge from every earlier node; edges
    are ordered by destination, then source, which is the row order of the alphas in the reference
    implementations (DARTS `_arch_parameters`, NAS-Bench-201 `edge2index`).

    Attributes:
      name: the space's name (for messages).
      primitives: candidate operation names; row `k` of an alpha matrix weights `primitives[k]`.
      num_inputs: input nodes of a cell.
      num_intermediate: intermediate nodes of a cell.
      cell_types: the cell types that carry their own alphas (`normal`, `reduce`).
      edges_per_node: discretisation keeps this many strongest incoming edges per node (DARTS: 2);
        `None` keeps every edge and picks its best op (NAS-Bench-201).
      concat: the nodes whose outputs form the cell output in a discrete cell.
    """

    name: str
    primitives: tuple[str, ...]
    num_inputs: int
    num_intermediate: int
    cell_types: tuple[str, ...]
    edges_per_node: int | None
    concat: tuple[int, ...]

    @functools.cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(source, destination) of every edge, in alpha row order."""
        return tuple(
            (src, dst)
            for dst in range(self.num_inputs, self.num_inputs + self.num_intermediate)
            for src in range(dst)
        )

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_ops(self) -> int:
        return len(self.primitives)

    @property
    def nodes(self) -> range:
        """The intermediate nodes."""
        return range(self.num_inputs, self.num_inputs + self.num_intermediate)

    def edge_index(self, src: int, dst: int) -> int:
        """Row of edge src -> dst in an alpha matrix."""
        try:
            return self.edges.index((src, dst))
        except ValueError:
            raise ValueError(f"{self.name} has no edge {src} -> {dst}") from None

    def op_index(self, op: str) -> int:
        """Column of primitive `op` in an alpha matrix."""
        return op_index(self.name, self.primitives, op)

    def node_rows(self) -> tuple[tuple[int, ...], ...]:
        """Per intermediate node, the rows of its incoming edges."""
        return tuple(tuple(self.edge_index(src, dst) for src in range(dst)) for dst in self.nodes)

    @property
    def alpha_shapes(self) -> dict[str, tuple[int, int]]:
        return {cell: (self.num_edges, self.num_ops) for cell in self.cell_types}
