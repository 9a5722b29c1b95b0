"""What the cell spaces (DARTS, NAS-Bench-201) share: their genotype schema and its checks, the
discretisation rule, sampling and mutation, one-hot mixing weights, and `cell_space`, which
builds a `Space` from a `CellTopology` and the space's own models and formats.

A cell genotype has, for every cell type, a field of that name: per intermediate node, in node
order, its incoming edges as (op_name, input_node) pairs; with `concat_field=True` (DARTS) also
`<cell>_concat`, the nodes concatenated into the cell output.

Discretisation (`discretise_cell`):
- `edges_per_node=k` (DARTS, Liu et al. 2019, Sec. 2.4; quark0/darts `model_search.genotype`):
  every edge's strength is its strongest op other than `none`; each node keeps its k strongest
  incoming edges, each with that op. Ties go to the earlier edge / op, as Python's stable sort and
  `argmax` do in the reference.
- `edges_per_node=None` (NAS-Bench-201, AutoDL-Projects `genotype()`): every edge keeps its
  strongest op, `none` included.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnas.genotype import Genotype, show
from dnas.spaces.base import Candidate, CellTopology, Space, TextFormat
from dnas.supernet import cell_candidates, edge_costs
from dnas.types import Alphas, MixWeights, PRNGKey

Edge = tuple[str, int]  # (operation name, input node)
Cell = tuple[tuple[Edge, ...], ...]  # per intermediate node, in node order: its incoming edges


# --------------------------------------------------------------------------------------------------
# Checks shared by the constructor and the string parsers (which add a character position).


def node_sizes(topology: CellTopology) -> tuple[int, ...]:
    """Incoming edges of each intermediate node of a discrete cell: `edges_per_node`, or, when the
    space keeps every edge (NAS-Bench-201), one from each earlier node, i.e. the node's number."""
    return tuple(topology.edges_per_node or node for node in topology.nodes)


def describe_sizes(topology: CellTopology) -> str:
    nodes = topology.nodes
    if topology.edges_per_node is not None:
        return f"{topology.edges_per_node} per node for nodes {nodes[0]}..{nodes[-1]}"
    return f"one from each earlier node for nodes {nodes[0]}..{nodes[-1]}"


def op_error(topology: CellTopology, op: Any) -> str | None:
    if op in topology.primitives:
        return None
    return f"unknown operation {show(op)}; expected one of {', '.join(topology.primitives)}"


def input_error(node: int, src: int) -> str | None:
    if 0 <= src < node:
        return None
    return f"input {src} is not an earlier node; expected an input in 0..{node - 1}"


def concat_error(topology: CellTopology, concat: tuple[int, ...]) -> str | None:
    nodes = topology.nodes
    if not concat:
        return f"is empty; expected intermediate nodes from {nodes[0]}..{nodes[-1]}"
    for node in concat:
        if node not in nodes:
            return (
                f"contains {node}, not an intermediate node; "
                f"expected nodes in {nodes[0]}..{nodes[-1]}"
            )
    if list(concat) != sorted(set(concat)):
        return f"is {list(concat)}; expected strictly increasing node numbers"
    return None


def _as_int(value: Any, where: str) -> int:
    # numpy integers pass (discretisation produces them); bools do not, although `bool` is an int.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"invalid genotype: {where} must be an integer, got {show(value)}")
    return int(value)


def _looks_like_edge(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)


def _as_edge(value: Any, where: str) -> Edge:
    if not _looks_like_edge(value):
        raise ValueError(
            f"invalid genotype: {where} must be an (op_name, input_node) pair, got {show(value)}"
        )
    return (value[0], _as_int(value[1], f"{where}[1]"))


def _as_cell(value: Any, name: str) -> Cell:
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"invalid genotype: {name} must be a sequence of nodes' edge tuples, got {show(value)}"
        )
    nodes = []
    for i, node in enumerate(value):
        where = f"{name}[{i}]"
        if _looks_like_edge(node):
            # The commonest mistake: passing quark0/darts' flat edge list.
            raise ValueError(
                f"invalid genotype: {where} is the edge {show(tuple(node))}; expected the tuple "
                f"of one node's incoming edges (for a flat edge list use the space's from_flat)"
            )
        if not isinstance(node, (list, tuple)):
            raise ValueError(
                f"invalid genotype: {where} must be a sequence of edges, got {show(node)}"
            )
        nodes.append(tuple(_as_edge(edge, f"{where}[{k}]") for k, edge in enumerate(node)))
    return tuple(nodes)


def _as_concat(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple, range)):
        raise ValueError(
            f"invalid genotype: {name} must be a sequence of node numbers, got {show(value)}"
        )
    return tuple(_as_int(node, f"{name}[{i}]") for i, node in enumerate(value))


def _check_cell(topology: CellTopology, cell: str, edges: Cell) -> None:
    nodes = topology.nodes
    if len(edges) != topology.num_intermediate:
        raise ValueError(
            f"invalid genotype: {cell} has {len(edges)} nodes; expected "
            f"{topology.num_intermediate} (intermediate nodes {nodes[0]}..{nodes[-1]} of space "
            f"{topology.name!r})"
        )
    for node, node_edges, size in zip(nodes, edges, node_sizes(topology), strict=True):
        where = f"invalid genotype: {cell} node {node}"
        if len(node_edges) != size:
            raise ValueError(
                f"{where} has {len(node_edges)} incoming edges; expected {size} "
                f"({describe_sizes(topology)})"
            )
        for op, src in node_edges:
            error = op_error(topology, op) or input_error(node, src)
            if error:
                raise ValueError(f"{where}: {error}")
        inputs = sorted(src for _, src in node_edges)
        if topology.edges_per_node is None and inputs != list(range(node)):
            raise ValueError(
                f"{where} has inputs {inputs}; expected each of 0..{node - 1} exactly once"
            )


def field_names(topology: CellTopology, concat_field: bool) -> tuple[str, ...]:
    """The genotype fields of a cell space, in order."""
    if not concat_field:
        return topology.cell_types
    return tuple(f for cell in topology.cell_types for f in (cell, f"{cell}_concat"))


def check_fields(
    topology: CellTopology, fields: Mapping[str, Any], concat_field: bool
) -> dict[str, Any]:
    """The canonical fields of a cell genotype (tuples; NAS-Bench-201 edges in input order, so
    equal cells compare and hash equal), or a one-line ValueError saying what does not fit the
    space: unknown or missing fields, op names, inputs from later nodes, the number of nodes and
    of edges per node (NAS-Bench-201: one from each earlier node), concat nodes."""
    expected = field_names(topology, concat_field)
    missing = [f for f in expected if f not in fields]
    extra = sorted(str(f) for f in fields if f not in expected)
    if missing or extra:
        problems = [f"missing fields {missing}"] if missing else []
        problems += [f"unknown fields {extra}"] if extra else []
        raise ValueError(
            f"invalid {topology.name} genotype: {'; '.join(problems)}; expected exactly "
            f"{list(expected)}"
        )
    out: dict[str, Any] = {}
    for cell in topology.cell_types:
        edges = _as_cell(fields[cell], cell)
        _check_cell(topology, cell, edges)
        if topology.edges_per_node is None:
            edges = tuple(tuple(sorted(node, key=lambda e: e[1])) for node in edges)
        out[cell] = edges
        if concat_field:
            name = f"{cell}_concat"
            concat = _as_concat(fields[name], name)
            error = concat_error(topology, concat)
            if error:
                raise ValueError(f"invalid genotype: {name} {error}")
            out[name] = concat
    return {f: out[f] for f in expected}


def group_flat(topology: CellTopology, flat: Sequence[Edge], name: str) -> Cell:
    """Splits a flat edge list (quark0/darts' layout: node 2's edges, then node 3's, ...) into
    nodes of `node_sizes(topology)` edges."""
    if not isinstance(flat, (list, tuple)):
        raise ValueError(f"invalid genotype: {name} must be a list of edges, got {show(flat)}")
    sizes = node_sizes(topology)
    if len(flat) != sum(sizes):
        raise ValueError(
            f"invalid genotype: {name} has {len(flat)} edges; expected {sum(sizes)} "
            f"({describe_sizes(topology)})"
        )
    starts = list(itertools.accumulate(sizes, initial=0))
    return tuple(tuple(flat[a:b]) for a, b in itertools.pairwise(starts))


def check_space(topology: CellTopology, genotype: Genotype) -> None:
    """A one-line ValueError unless `genotype` is of the space of `topology` (a network or a
    text format of one space given another space's genotype)."""
    if genotype.space != topology.name:
        raise ValueError(
            f"expected a {topology.name} genotype, got a {genotype.space} one (its own format: "
            "genotype.to_string())"
        )


def flat(genotype: Genotype, cell: str) -> tuple[Edge, ...]:
    """The edges of `cell` as one flat tuple in node order (quark0/darts' layout)."""
    return tuple(edge for node in genotype[cell] for edge in node)


def concat(genotype: Genotype, topology: CellTopology, cell: str) -> tuple[int, ...]:
    """The nodes concatenated into the output of `cell` (the topology's when the genotype has no
    concat field)."""
    fields = genotype.fields()
    return fields.get(f"{cell}_concat", topology.concat)


# --------------------------------------------------------------------------------------------------
# Discretisation, sampling, mutation, one-hot mixing weights.


def discrete_ops(topology: CellTopology) -> tuple[str, ...]:
    """The ops a discrete cell may use: a cell that keeps k edges per node never keeps a zero
    edge (`none`); NAS-Bench-201 cells may."""
    if topology.edges_per_node is None:
        return topology.primitives
    return tuple(op for op in topology.primitives if op != "none")


def discretise_cell(topology: CellTopology, w_ExK: np.ndarray) -> Cell:
    w_ExK = np.asarray(w_ExK, np.float64)
    if w_ExK.shape != (topology.num_edges, topology.num_ops):
        raise ValueError(
            f"{topology.name} weights must have shape {(topology.num_edges, topology.num_ops)}, "
            f"got {w_ExK.shape}"
        )
    allowed = np.isin(np.array(topology.primitives), discrete_ops(topology))
    masked = np.where(allowed, w_ExK, -np.inf)
    k = topology.edges_per_node
    nodes = []
    for rows in topology.node_rows():  # row i of a node is its edge from node i
        best_ops = [int(np.argmax(masked[r])) for r in rows]
        strength = [masked[r, op] for r, op in zip(rows, best_ops, strict=True)]
        order = sorted(range(len(rows)), key=lambda i: -strength[i])  # stable: earlier wins ties
        keep = order[:k] if k else range(len(rows))
        nodes.append(tuple((topology.primitives[best_ops[i]], i) for i in keep))
    return tuple(nodes)


def discretise_cells(topology: CellTopology, weights: MixWeights) -> dict[str, Cell]:
    return {c: discretise_cell(topology, np.asarray(weights[c])) for c in topology.cell_types}


def random_cells(topology: CellTopology, rng: np.random.Generator) -> dict[str, Cell]:
    """Uniformly random cells: the random-architecture baseline of the DARTS paper (Liu et al.
    2019, Table 1) and of NAS-Bench-201 (Dong & Yang 2020, Sec. 5).

    Spaces that keep `edges_per_node` edges (DARTS): every node draws that many distinct inputs
    uniformly and, for each, an operation uniformly among the non-`none` primitives, since a
    discrete DARTS cell never keeps a zero edge. Spaces that keep every edge (NAS-Bench-201): each
    edge draws an operation uniformly among all primitives, `none` included, as the benchmark's
    15,625 cells do.
    """
    k = topology.edges_per_node
    ops = discrete_ops(topology)
    cells: dict[str, Cell] = {}
    for cell in topology.cell_types:
        nodes = []
        for node in topology.nodes:
            inputs = range(node) if k is None else sorted(rng.choice(node, k, replace=False))
            nodes.append(tuple((ops[rng.integers(len(ops))], int(src)) for src in inputs))
        cells[cell] = tuple(nodes)
    return cells


def mutated_cells(
    topology: CellTopology, genotype: Genotype, rng: np.random.Generator
) -> dict[str, Cell]:
    """Regularised evolution's mutation: in one random cell, either one edge's op or (DARTS) one
    edge's input changes to a different random choice."""
    cells = {c: [list(node) for node in genotype[c]] for c in topology.cell_types}
    cell = topology.cell_types[rng.integers(len(topology.cell_types))]
    node_i = int(rng.integers(topology.num_intermediate))
    node = cells[cell][node_i]
    slot = int(rng.integers(len(node)))
    op, src = node[slot]
    dst = topology.nodes[node_i]
    ops = [o for o in discrete_ops(topology) if o != op]
    free_srcs = [s for s in range(dst) if s not in {e[1] for e in node}]
    if topology.edges_per_node and free_srcs and rng.random() < 0.5:
        node[slot] = (op, int(rng.choice(free_srcs)))
    else:
        node[slot] = (str(rng.choice(ops)), src)
    cells[cell][node_i] = sorted(node, key=lambda e: e[1]) if topology.edges_per_node else node
    return {c: tuple(tuple(n) for n in nodes) for c, nodes in cells.items()}


def genotype_mix(topology: CellTopology, genotype: Genotype) -> dict[str, np.ndarray]:
    """One-hot mixing weights of a genotype: edge (src, node) gets 1 at its op, every other edge
    0, so a supernet computes exactly that cell with its shared weights."""
    out = {}
    for cell in topology.cell_types:
        w = np.zeros((topology.num_edges, topology.num_ops), np.float32)
        for node, edges in zip(topology.nodes, genotype[cell], strict=True):
            for op, src in edges:
                w[topology.edge_index(src, node), topology.op_index(op)] += 1.0
        out[cell] = w
    return out


def sample_mix(topology: CellTopology) -> Callable[[PRNGKey, Alphas], MixWeights]:
    """(key, alphas) -> one-hot mixing weights of a uniformly random cell per call, inside jit,
    as `random_cells` samples them: `edges_per_node` distinct inputs per node, each with a
    discrete op (NAS-Bench-201: a random op, `none` included, on every edge); the other edges get
    weight 0. `alphas` gives the dtype."""
    k = topology.edges_per_node
    ops = np.array([topology.op_index(op) for op in discrete_ops(topology)])

    def sample(key: PRNGKey, alphas: Alphas) -> MixWeights:
        out = {}
        for cell, key_c in zip(topology.cell_types,
                               jax.random.split(key, len(topology.cell_types)),
                               strict=True):  # fmt: skip
            k_op, k_src = jax.random.split(key_c)
            choice = jnp.asarray(ops)[jax.random.randint(k_op, (topology.num_edges,), 0, len(ops))]
            w = jax.nn.one_hot(choice, topology.num_ops, dtype=alphas[cell].dtype)
            if k is not None:
                keep = []
                for node_key, dst in zip(jax.random.split(k_src, topology.num_intermediate),
                                         topology.nodes, strict=True):  # fmt: skip
                    order = jax.random.permutation(node_key, dst)
                    keep.append(jnp.zeros(dst).at[order[:k]].set(1.0))
                w = w * jnp.concatenate(keep)[:, None].astype(w.dtype)
            out[cell] = w
        return out

    return sample


# --------------------------------------------------------------------------------------------------
# A Space from a cell topology.


def upgrade_v1(topology: CellTopology, concat_field: bool) -> Callable[[dict, int], dict]:
    """Reads the fields of a schema-1 genotype.json (dnas before spaces were modules): every
    space had `normal`, `normal_concat`, `reduce`, `reduce_concat`, empty where the space has no
    such cell, and the fixed output node as `normal_concat` where it has no concatenation."""

    def upgrade(fields: dict, version: int) -> dict:
        if version >= 2:
            return fields
        fields = dict(fields)
        for cell in ("normal", "reduce"):
            concat_name = f"{cell}_concat"
            if cell not in topology.cell_types:
                for name in (cell, concat_name):
                    if fields.get(name, ()) not in ((), []):
                        raise ValueError(
                            f"invalid genotype: space {topology.name!r} has no {cell} cell; "
                            f"expected {name}=[]"
                        )
                    fields.pop(name, None)
            elif not concat_field and concat_name in fields:
                value = fields.pop(concat_name)
                if not isinstance(value, (list, tuple)) or list(value) != list(topology.concat):
                    raise ValueError(
                        f"invalid genotype: {concat_name} is {show(value)}; expected "
                        f"{list(topology.concat)}, the cell's output node"
                    )
        return fields

    return upgrade


def cell_space(
    topology: CellTopology,
    *,
    supernet: Callable,
    network: Callable,
    concat_field: bool,
    formats: tuple[TextFormat, ...] = (),
    known: Mapping[str, Genotype] | None = None,
    **options: Any,
) -> Space:
    """A `Space` whose genotypes are cells of `topology`; `supernet` and `network` are the space's
    builders, `formats` its text formats, `known` a dict the space module fills
    with its published genotypes once the space exists; `options` are further `Space` fields
    (auxiliary_head, drop_path, tiny_layers, min_layers, protocols). Its `op_costs` and
    `candidates` are the supernet's mixed edges (`supernet.edge_costs`, `cell_candidates`)."""
    box: list[Space] = []  # the finished space, which its genotypes point to

    def make(**fields: Any) -> Genotype:
        return Genotype(box[0], check_fields(topology, fields, concat_field))

    def from_cells(cells: Mapping[str, Cell]) -> Genotype:
        fields: dict[str, Any] = {}
        for cell in topology.cell_types:
            fields[cell] = cells[cell]
            if concat_field:
                fields[f"{cell}_concat"] = topology.concat
        return make(**fields)

    def mutate(genotype: Genotype, rng: np.random.Generator) -> Genotype:
        return genotype.replace(**mutated_cells(topology, genotype, rng))

    space = Space(
        name=topology.name,
        ops=topology.primitives,
        alpha_shapes=topology.alpha_shapes,
        row_labels={c: tuple(f"{s}_{d}" for s, d in topology.edges) for c in topology.cell_types},
        supernet=supernet,
        network=network,
        op_costs=lambda model, input_shape: edge_costs(model, topology.alpha_shapes, input_shape),
        candidates=lambda model, input_shape: [
            Candidate(*c) for c in cell_candidates(model, topology.alpha_shapes, input_shape)
        ],
        genotype=make,
        discretise=lambda weights: from_cells(discretise_cells(topology, weights)),
        random_genotype=lambda rng: from_cells(random_cells(topology, rng)),
        genotype_mix=lambda genotype: genotype_mix(topology, genotype),
        formats=formats,
        known={} if known is None else known,
        upgrade=upgrade_v1(topology, concat_field),
        mutate=mutate,
        sample_mix=sample_mix(topology),
        node_rows=topology.node_rows(),
        keep_per_node=topology.edges_per_node,
        discrete_ops=discrete_ops(topology),
        topology=topology,
        **options,
    )
    box.append(space)
    return space
