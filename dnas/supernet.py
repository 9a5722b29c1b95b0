"""The mixed-edge machinery that cell supernets share: `MixedCell`, whose edges mix every
candidate operation, and the cost tables of its ops. Each space builds its supernet around it
(`dnas/spaces/`).

A supernet takes the mixing weights as an explicit input, `model.apply(variables, x, mix_weights,
train=...)`, a dict alpha group -> (num_edges, num_ops) array in the space's edge and op order; the
alphas and the relaxation that turns them into mixing weights live outside (`relaxations.py`).

Structure, for XLA. Every edge of a cell applies the same candidate modules (`ops.py`) to its source
node, so a cell is a `lax.scan` over its edges: XLA compiles one edge and runs it 14 times, instead
of compiling 14 copies (XLA:CPU's compile time grows faster than linearly with the number of
operations; an unrolled 8-cell DARTS supernet takes minutes to compile). The scan carries the
intermediate nodes' sums; edges are visited in alpha row order (by destination), so a node is
complete before its first outgoing edge reads it. Edges leaving the input nodes and edges leaving
intermediate nodes are two scans, since in a reduction cell the former have stride 2. `none` is not
computed: it contributes exactly zero, and its alpha still gets its gradient through the
normalisation of the mixing weights. Each op kind's parameters are stacked over the edges of a scan
(`edge_params` slices out one edge's).

Variants. `partial_channels=K` (PC-DARTS) sends the first C/K channels of an edge's input through
the candidate ops (built for C/K channels) and lets the rest bypass them, weighted by the sum of
the edge's mixing weights (1 for a softmax; the normalised edge beta under PC-DARTS' edge
normalisation), then shuffles the channels in K groups. `single_op=True` (GDAS, random search)
computes only the op of largest weight on each edge with `lax.switch`: the full mixture's value
when the mixing weights are one-hot, at the cost of one op per edge; the ops not run get no
gradient for their (zero) weights, which is what GDAS' DARTS-space code does (its
NAS-Bench-201 cell adds those weights as scalars instead). The search refuses it for
strategies whose weights are not one-hot. `skip_dropout=rate` (a call argument, so schedules can
be traced; needs a "dropout" rng) drops entries of the identity skip connections' outputs
(P-DARTS' search-space regularisation).

Precision. A cell computes its ops in its inputs' dtype (bfloat16 under `precision=bfloat16`)
and sums a node's edges, each times its float32 mixing weight, in float32, so the alphas'
gradient accumulates in float32; its outputs are cast back to the inputs' dtype.

Batch normalisation. Every BatchNorm in a supernet normalises with the statistics of the batch it is
given, in training and in evaluation, and keeps no running averages (NAS-Bench-201's
`track_running_stats=False`). The reference DARTS code tracks running statistics but only reads
them to report supernet validation accuracy; without them the supernet is a pure function of
(params, x, mix_weights), which is what exact second-order hypergradients differentiate through.
Edge BatchNorms have no affine parameters (DARTS `MixedOp`, NAS-Bench-201 search cells); the stem's
and the NAS-Bench-201 reduction blocks' have.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from dnas import hardware, ops
from dnas.types import Array

if TYPE_CHECKING:  # annotations only: the spaces build on this module
    from dnas.spaces.base import CellTopology


def edge_group(topology: CellTopology, from_inputs: bool) -> list[int]:
    """Alpha rows of the edges leaving the input nodes (or the intermediate nodes): one scan each,
    their parameters stacked in this order."""
    return [
        i for i, (src, _) in enumerate(topology.edges)
        if (src < topology.num_inputs) == from_inputs
    ]  # fmt: skip


class MixedCell(nn.Module):
    """The edges and intermediate nodes of a search cell.

    Node j is the sum over its incoming edges (i, j) of sum_k w[(i, j), k] * op_k(node_i). Returns
    the intermediate nodes' states stacked, (num_intermediate, N, H, W, C).
    """

    topology: CellTopology
    C: int
    reduction: bool = False
    group: str = "normal"  # the alpha group whose mixing weights this cell takes (cost tables)
    bn_after_pool: bool = False  # DARTS MixedOp appends BatchNorm(affine=False) to pooling ops
    sep_impl: ops.Impl = "fused"
    remat: bool = False
    partial_channels: int = 1
    single_op: bool = False
    # Which ops of which edges are computed (SGAS' decided and pruned edges; `active_table`):
    # rows x ops of the topology, True where computed; None: every op of every edge.
    active: tuple[tuple[bool, ...], ...] | None = None

    @property
    def op_channels(self) -> int:
        return self.C // self.partial_channels

    def _ops(self, stride: int, track_running_stats: bool = False) -> dict[str, nn.Module]:
        """Unbound candidate modules (not `none`), applied with each edge's parameters; with
        `track_running_stats`, as a discrete network runs them at inference (`cell_candidates`)."""
        return {
            op: ops.make_op(
                op,
                self.op_channels,
                self.op_channels,
                stride,
                affine=False,
                track_running_stats=track_running_stats,
                impl=self.sep_impl,
                parent=None,
            )
            for op in self.topology.primitives
            if op != "none"
        }

    def _stacked_params(self, group: str, modules: dict[str, nn.Module], num_edges: int) -> dict:
        def init(rng):
            dummy = jnp.zeros((1, 4, 4, self.op_channels), jnp.float32)
            keys = jax.random.split(rng, num_edges)
            stacked = {}
            for i, (op, module) in enumerate(modules.items()):
                with ops.not_recording():
                    variables = jax.vmap(lambda k, m=module: m.init(k, dummy, True))(
                        jax.vmap(jax.random.fold_in, (0, None))(keys, i)
                    )
                if "params" in variables:
                    stacked[op] = variables["params"]
            return stacked

        return self.param(group, init)

    @nn.compact
    def __call__(
        self, inputs: Sequence[Array], w_ExK: Array, train: bool, skip_dropout: Array | None = None
    ) -> Array:
        space = self.topology
        if w_ExK.shape != (space.num_edges, space.num_ops):
            raise ValueError(
                f"mixing weights of a {space.name} cell must have shape "
                f"{(space.num_edges, space.num_ops)}, got {w_ExK.shape}"
            )
        if len(inputs) != space.num_inputs:
            raise ValueError(f"a {space.name} cell takes {space.num_inputs} inputs")
        K = self.partial_channels
        if K < 1 or self.C % K:
            raise ValueError(
                f"partial_channels={K} must be a positive divisor of the cell's {self.C} channels"
            )
        active = None
        if self.active is not None:
            active = np.asarray(self.active, bool)
            if active.shape != (space.num_edges, space.num_ops):
                raise ValueError(
                    f"the active table of a {space.name} cell must have shape "
                    f"{(space.num_edges, space.num_ops)}, got {active.shape}"
                )
            if self.single_op:
                raise ValueError("single_op and an active table do not combine")
        cells = _CELLS.get()
        if cells is not None:
            cells.append((self, tuple(inputs[0].shape[1:3])))
        dtype = inputs[0].dtype
        acc = jnp.promote_types(dtype, jnp.float32)  # nodes sum their edges in float32 at least
        # `op_shares`: each op's output norm per edge, computed only when the caller collects it
        # (not in `init`, where every collection is mutable).
        observe = self.is_mutable_collection(OP_NORMS) and not self.is_initializing()
        if observe and self.single_op:
            raise ValueError("op norms need every op computed: apply supernet.full_mixture(model)")
        if observe:
            norms_ExK = jnp.zeros((space.num_edges, space.num_ops), acc)
        inputs_I = jnp.stack(inputs)
        nodes = None
        for group, from_inputs in (("input_edges", True), ("node_edges", False)):
            rows = edge_group(space, from_inputs)
            stride = 2 if self.reduction and from_inputs else 1
            modules = self._ops(stride)
            params = self._stacked_params(group, modules, len(rows))
            srcs = jnp.array([space.edges[r][0] for r in rows], jnp.int32)
            dsts = jnp.array([space.edges[r][1] - space.num_inputs for r in rows], jnp.int32)
            w_GxK = w_ExK[jnp.array(rows)]  # float32: ops.weighted casts per term
            # P-DARTS: dropout on the identity skip connections (stride 1), a key per edge.
            drop_skip = skip_dropout is not None and stride == 1 and "skip_connect" in modules
            keys = jax.random.split(self.make_rng("dropout"), len(rows)) if drop_skip else None
            # How many of this scan's edges compute each op, and each edge's flags (scanned).
            runs = {op: len(rows) for op in modules}
            flags = None
            if active is not None:
                on = active[np.asarray(rows)]
                runs = {op: int(on[:, space.op_index(op)].sum()) for op in modules}
                flags = jnp.asarray(on)

            def edge(nodes, xs, modules=modules, from_inputs=from_inputs, stride=stride,
                     drop_skip=drop_skip, runs=runs, n=len(rows)):  # noqa: B008  # fmt: skip
                params_e, w_K, src, dst, key, on_K = xs
                if from_inputs:
                    x = lax.dynamic_index_in_dim(inputs_I, src, keepdims=False)
                else:
                    x = lax.dynamic_index_in_dim(nodes, src - space.num_inputs, keepdims=False)
                    x = x.astype(dtype)
                x_ops = x[..., : self.op_channels]

                def term(op):
                    variables = {"params": params_e[op]} if op in params_e else {}
                    y = modules[op].apply(variables, x_ops, train)
                    if self.bn_after_pool and op.endswith("pool_3x3"):
                        y = ops.batch_normalize(y)
                    if drop_skip and op == "skip_connect":
                        rate = jnp.asarray(skip_dropout, y.dtype)
                        keep = jax.random.bernoulli(key, 1.0 - rate, y.shape)
                        y = jnp.where(keep, y / (1.0 - rate), 0.0)
                    return w_K[space.op_index(op)] * y.astype(acc)

                shape = (*nodes.shape[1:-1], self.op_channels)

                def computed(op):
                    """The op's term where this edge computes it (`active`), else zeros;
                    its multiply-adds counted on the edges that compute it."""
                    with ops.mac_scale(runs[op]):
                        if runs[op] == n:
                            return term(op).astype(acc)
                        return lax.cond(
                            on_K[space.op_index(op)], lambda: term(op).astype(acc),
                            lambda: jnp.zeros(shape, acc),
                        )  # fmt: skip

                if self.single_op:  # run only the op of largest weight (one-hot mixing)
                    names = list(modules)
                    branches = [lambda op=op: term(op) for op in names]
                    columns = [space.op_index(op) for op in names]
                    if "none" in space.primitives:
                        shape = (*nodes.shape[1:-1], self.op_channels)
                        branches.append(lambda: jnp.zeros(shape, dtype))
                        columns.append(space.op_index("none"))
                    which = jnp.argmax(w_K[jnp.array(columns)])
                    with ops.mac_scale(n):
                        out = lax.switch(which, branches).astype(acc)
                else:
                    terms = {op: computed(op) for op in modules if runs[op]}
                    # The sum traced as before the active table; a pruned edge's is 0.
                    out = sum(terms.values()) if terms else jnp.zeros(shape, acc)
                    if observe:  # each op's weighted output: its norm per example, batch mean
                        norms = jnp.stack([
                            jnp.mean(jnp.sqrt(jnp.sum(jnp.square(terms[op]), axis=(1, 2, 3))))
                            if op in terms else jnp.zeros((), acc)
                            for op in space.primitives
                        ])  # fmt: skip
                if K > 1:  # PC-DARTS: the other channels bypass, weighted by the edge's total
                    bypass = x[..., self.op_channels :]
                    if stride == 2:
                        even = bypass.shape[1] % 2 == 0 and bypass.shape[2] % 2 == 0
                        bypass = (
                            ops.max_pool(bypass, 2, 2, 0) if even else ops.max_pool(bypass, 3, 2, 1)
                        )
                    out = jnp.concatenate([out, ops.weighted(jnp.sum(w_K), bypass)], axis=-1)
                    out = ops.channel_shuffle(out, K)
                node = lax.dynamic_index_in_dim(nodes, dst, keepdims=False)
                nodes = lax.dynamic_update_index_in_dim(nodes, node + out, dst, 0)
                return nodes, norms if observe else None

            if self.remat:
                edge = jax.checkpoint(edge)
            if nodes is None:  # every op maps (N, H, W, C) to the pooling's output shape
                shape = jax.eval_shape(lambda x, s=stride: ops.max_pool(x, 3, s, 1), inputs[0])
                nodes = jnp.zeros((space.num_intermediate, *shape.shape), acc)
            nodes, norms_GxK = lax.scan(edge, nodes, (params, w_GxK, srcs, dsts, keys, flags))
            if observe:
                norms_ExK = norms_ExK.at[jnp.array(rows)].set(norms_GxK)
        if observe:
            self.sow(OP_NORMS, self.group, norms_ExK)
        return nodes.astype(dtype)


OP_NORMS = "op_norms"  # the collection `MixedCell` sows its ops' output norms into


def op_shares(
    model: nn.Module, variables: Mapping, x: Array, mix_weights: Mapping[str, Array], **kwargs
) -> dict[str, Array]:
    """Each op's share of each mixed edge's output, per alpha group: ||w_k op_k(x)|| / sum_j
    ||w_j op_j(x)|| (L2 norm over an example's output, averaged over the batch), averaged over
    the cells of the group; (rows, ops), every row summing to 1 (0 where nothing is computed).
    `mix_weights` are what the supernet mixes (a strategy's final weights, e.g. PC-DARTS' with
    its edge normalisation); under PC-DARTS the norms are of the channels through the ops (the
    bypass is not an op's). `model` computes every op (`full_mixture`: a single-op model's
    memory then is the full mixture's); `variables` are its params only; `kwargs` go to its
    apply (`train=`)."""
    _, state = full_mixture(model).apply(
        variables, x, mix_weights, mutable=[OP_NORMS], **kwargs
    )  # fmt: skip
    return shares_of(state[OP_NORMS])


def shares_of(norms: Mapping) -> dict[str, Array]:
    """`op_shares` from the `op_norms` collection a supernet sowed: per cell, each row's norms
    over their sum; averaged over the cells of each alpha group."""
    by_group: dict[str, list] = {}
    for path, value in traverse_util.flatten_dict(dict(norms)).items():
        for norms_ExK in value:  # `sow` appends to a tuple
            total = jnp.sum(norms_ExK, axis=-1, keepdims=True)
            share = jnp.where(total > 0, norms_ExK / jnp.where(total > 0, total, 1.0), 0.0)
            by_group.setdefault(path[-1], []).append(share)
    return {group: jnp.mean(jnp.stack(v), axis=0) for group, v in by_group.items()}


def full_mixture(model: nn.Module) -> nn.Module:
    """`model` computing every op of every edge (`single_op` off), so mixing weights that are
    not one-hot are honoured (evaluation, selection, a supernet teacher)."""
    return model.clone(single_op=False) if getattr(model, "single_op", False) else model


# The hashable form of a supernet's active table: (alpha group, rows x ops of bools) pairs.
Active = tuple[tuple[str, tuple[tuple[bool, ...], ...]], ...]


def active_table(active: Mapping[str, np.ndarray] | None) -> Active | None:
    """{alpha group: (rows, ops) bool array, True where the op is computed} as the cell
    supernets take it (`active=`: a static module attribute, so hashable); None stays None."""
    if active is None:
        return None
    return tuple(
        (group, tuple(tuple(bool(v) for v in row) for row in np.asarray(table, bool)))
        for group, table in sorted(active.items())
    )


def group_active(active: Active | None, group: str) -> tuple[tuple[bool, ...], ...] | None:
    """One alpha group's rows x ops of `active` (`MixedCell.active`); None: all computed."""
    return None if active is None else dict(active).get(group)


# ---------------------------------------------------------------------------------------------
# The candidate ops of every mixed edge, standalone (latency tables), and their resource costs
# (SNAS' resource constraint).

_CELLS: contextvars.ContextVar[list | None] = contextvars.ContextVar("dnas_cells", default=None)

RESOURCES = hardware.COST_RESOURCES


def traced_cells(
    model: nn.Module, alpha_shapes: dict[str, tuple[int, int]], input_shape: tuple[int, ...]
) -> list[tuple[MixedCell, tuple[int, int]]]:
    """Every `MixedCell` of `model` (a supernet built of them), in call order, with the (H, W)
    of its inputs on inputs of `input_shape` (H, W, C). Traced abstractly (no FLOPs)."""
    mix = {c: jnp.zeros(shape) for c, shape in alpha_shapes.items()}
    box: list = []
    token = _CELLS.set(box)
    try:
        x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
        jax.eval_shape(lambda k, x: model.init(k, x, mix, train=True), jax.random.key(0), x)
    finally:
        _CELLS.reset(token)
    return box


def cell_candidates(
    model: nn.Module, alpha_shapes: dict[str, tuple[int, int]], input_shape: tuple[int, ...]
) -> list[tuple[str, int, int, str, nn.Module, tuple[int, int, int]]]:
    """The candidate ops of every mixed edge of `model`, standalone: (group, position, row, op,
    module, input shape (H, W, C)), the fields of `spaces.base.Candidate` in its order (the cell
    spaces wrap them). position is the cell's index among the cells of its group, row the edge;
    `none` is left out (the cell does not compute it).

    The module is the op as a discrete network runs it at inference, which is what a latency
    table predicts: its BatchNorms normalise with running statistics (the cell's normalise with
    the batch's, two more reductions per call), and the BatchNorm the DARTS search cell appends
    to pooling ops is left out (the discrete cell has none). Its parameters are the edge's
    (`edge_params`: no affine BatchNorm, whose scale and shift XLA would fuse into the
    normalisation anyway), so it counts as the cell's op does; under partial channels it sees
    the edge's 1/K of the channels."""
    return _candidates(traced_cells(model, alpha_shapes, input_shape))


def _candidates(cells: list[tuple[MixedCell, tuple[int, int]]]) -> list[tuple]:
    out = []
    positions: dict[str, int] = {}
    for cell, hw in cells:
        topology = cell.topology
        position = positions[cell.group] = positions.get(cell.group, -1) + 1
        modules = {stride: cell._ops(stride, track_running_stats=True) for stride in (1, 2)}
        for row, (src, _) in enumerate(topology.edges):
            from_inputs = src < topology.num_inputs
            stride = 2 if cell.reduction and from_inputs else 1
            # The intermediate nodes of a reduction cell are at the reduced resolution.
            src_hw = hw if from_inputs or not cell.reduction else tuple(-(-n // 2) for n in hw)
            for op, module in modules[stride].items():
                out.append((cell.group, position, row, op, module, (*src_hw, cell.op_channels)))
    return out


def edge_costs(
    model: nn.Module, alpha_shapes: dict[str, tuple[int, int]], input_shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Alpha group -> (cells of that group, num_edges, num_ops, 3) costs per image of every
    candidate op of every mixed edge of `model` (`cell_candidates`, counted by
    `hardware.candidate_costs`): parameters, multiply-adds and memory access, in `RESOURCES`
    order, zeros for `none`; with partial channels, the costs of the ops on their 1/K of the
    channels. Traced abstractly (no FLOPs)."""
    cells = traced_cells(model, alpha_shapes, input_shape)
    if not cells:
        return {}
    primitives = cells[0][0].topology.primitives
    return hardware.candidate_costs(_candidates(cells), primitives, alpha_shapes)


def edge_params(cell_params: dict, topology: CellTopology, src: int, dst: int, op: str) -> dict:
    """The parameters of op `op` on edge src -> dst, from a `MixedCell`'s parameters; they are the
    parameters of the standalone module `ops.make_op(op, ...)`."""
    topology.op_index(op)
    from_inputs = src < topology.num_inputs
    position = edge_group(topology, from_inputs).index(topology.edge_index(src, dst))
    group = cell_params["input_edges" if from_inputs else "node_edges"]
    if op not in group:
        return {}
    return jax.tree.map(lambda p: p[position], group[op])
