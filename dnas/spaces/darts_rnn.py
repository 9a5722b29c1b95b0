"""The DARTS recurrent cell space (Liu et al., "DARTS: Differentiable Architecture Search",
ICLR 2019, Sec. 3 and A.1.2; quark0/darts `rnn/`), for language modelling (Penn Treebank).

Everything that is this space's own:
- the cell: at time t an input node s_0 = h_{t-1} + sigmoid(c_0) * (tanh(h_0) - h_{t-1}) with
  [c_0, h_0] = [x_t, h_{t-1}] W_0, then `steps` nodes, node i taking one earlier node s_j through
  [c, h] = s_j W_i and s_i = s_j + sigmoid(c) * (f(h) - s_j), f one of tanh, relu, sigmoid and
  identity (`none`: no contribution); the cell output h_t is the mean of the `concat` nodes;
- `DartsRNNSupernet` (`model_search.RNNModelSearch`): 8 nodes, node i mixing every earlier node
  0..i-1 (36 edges, alpha rows ordered by destination then source) with the 5 ops, one matrix
  W_i per node shared by its incoming edges, and a BatchNorm without affine parameters on the
  batch's own statistics after s_0 and after every node;
- `DartsRNNNetwork` (`model.RNNModel` with a `DARTSCell`), built from a genotype;
- both as language models with dnas' text calling convention (`Space.modality == 'text'`):
  `apply(variables, inputs_BxL, [mix_weights,] carry=, mask=, train=, rngs={'dropout': key})`
  -> (logits_BxLxV, carry_BxN, hiddens_BxLxN), an embedding tied to the decoder, and the
  reference's dropouts (embedding rows, locked input and output dropout, per-sequence masks on
  the cell's x and hidden states);
- the genotype fields `recurrent` (per node, in node order, its (op, predecessor)) and `concat`,
  and the text form of `rnn/genotypes.py`, `Genotype(recurrent=[('sigmoid', 0), ...],
  concat=range(1, 9))`, read with `literals.read_call` and never `eval`;
- the published genotypes (`KNOWN`) and `SPACE`.

Discrete genotypes may have any number of nodes and any concat (ENAS' cell has 11 nodes and
averages 6 of them); the supernet's own genotypes (`discretise`, `random_genotype`,
`sample_mix`) have 8 nodes averaged together, and only those have one-hot mixing weights
(`genotype_mix`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dnas import literals, ops
from dnas.genotype import Genotype, show
from dnas.spaces import cells
from dnas.spaces.base import CellTopology, Diagram, Space, TextFormat
from dnas.types import Array, MixWeights

PRIMITIVES = ("none", "tanh", "relu", "sigmoid", "identity")
DISCRETE_OPS = PRIMITIVES[1:]  # a discrete node never takes `none`
STEPS = 8  # the supernet's nodes (reference `STEPS`)
GROUP = "recurrent"  # the one alpha group
FIELDS = ("recurrent", "concat")
INIT_RANGE = 0.04  # every weight U(-0.04, 0.04) (reference `INITRANGE`)
BN_EPSILON = 1e-5  # PyTorch BatchNorm1d's
SEARCH_SIZE = 300  # ninp = nhid of the search (rnn/train_search.py)
EVAL_SIZE = 850  # ninp = nhid of the evaluation network (rnn/train.py)
RATES = ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute")

TOPOLOGY = CellTopology(
    name="darts_rnn",
    primitives=PRIMITIVES,
    num_inputs=1,
    num_intermediate=STEPS,
    cell_types=(GROUP,),
    edges_per_node=1,
    concat=tuple(range(1, STEPS + 1)),
)

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda h: h,
}
_MIXED = tuple(TOPOLOGY.op_index(op) for op in DISCRETE_OPS)  # alpha columns that compute

Edge = tuple[str, int]  # (operation name, predecessor node)


# --------------------------------------------------------------------------------------------------
# The cell.


def init_state(W0: Array, x_BxN: Array, h_BxN: Array, x_mask: Array | None,
               h_mask: Array | None) -> Array:  # fmt: skip
    """The input node s_0 = h + sigmoid(c_0) * (tanh(h_0) - h), [c_0, h_0] = [x, h] W_0, with the
    dropout masks on the matrix product's inputs only (`DARTSCell._compute_init_state`)."""
    x_in = x_BxN if x_mask is None else x_BxN * x_mask
    h_in = h_BxN if h_mask is None else h_BxN * h_mask
    c0, h0 = jnp.split(jnp.concatenate([x_in, h_in], axis=-1) @ W0, 2, axis=-1)
    return h_BxN + jax.nn.sigmoid(c0) * (jnp.tanh(h0) - h_BxN)


def masked_batch_norm(x_BxN: Array, valid_B: Array) -> Array:
    """BatchNorm1d without affine parameters on the batch's own statistics (biased variance),
    taken over the rows that hold a real token at this time step: with every row real it is
    `ops.batch_normalize` of the (B, N) array; padding rows, whose state is not updated, do
    not move the statistics of the others (at least one real row is assumed; otherwise the
    result is discarded anyway)."""
    w_Bx1 = valid_B.astype(x_BxN.dtype)[:, None]
    count = jnp.maximum(jnp.sum(w_Bx1), 1.0)
    mean_N = jnp.sum(w_Bx1 * x_BxN, axis=0) / count
    var_N = jnp.sum(w_Bx1 * jnp.square(x_BxN - mean_N), axis=0) / count
    return ops.normalize(x_BxN, mean_N, var_N, BN_EPSILON)


class CellFn(NamedTuple):
    """One time step of a cell: (W0, Ws, x_BxN, h_BxN, x_mask, h_mask, valid_B) -> h_t."""

    steps: int
    step: Callable[..., Array]


def discrete_cell(recurrent: Sequence[Edge], concat: Sequence[int]) -> CellFn:
    """The discrete cell of a genotype (`DARTSCell.cell`): node i takes node `pred` through its
    own matrix Ws[i - 1] and op; the output is the mean of the `concat` nodes."""

    def step(W0, Ws, x_BxN, h_BxN, x_mask, h_mask, valid_B):
        states = [init_state(W0, x_BxN, h_BxN, x_mask, h_mask)]
        for i, (op, pred) in enumerate(recurrent):
            s = states[pred]
            s_in = s if h_mask is None else s * h_mask
            c, h = jnp.split(s_in @ Ws[i], 2, axis=-1)
            states.append(s + jax.nn.sigmoid(c) * (ACTIVATIONS[op](h) - s))
        return jnp.mean(jnp.stack([states[i] for i in concat]), axis=0)

    return CellFn(len(recurrent), step)


def mixed_cell(w_ExK: Array, node_norm: bool) -> CellFn:
    """The search cell (`DARTSCellSearch.cell`): node i computes its matrix product for all its
    predecessors at once (stacked), every non-`none` op on each, and sums them weighted by the
    mixing weights of its edges; `node_norm`: BatchNorm after s_0 and after every node."""
    rows = [np.asarray(r) for r in TOPOLOGY.node_rows()]  # row p of node i: its edge from p
    w_ExM = w_ExK[:, np.asarray(_MIXED)]

    def step(W0, Ws, x_BxN, h_BxN, x_mask, h_mask, valid_B):
        s0 = init_state(W0, x_BxN, h_BxN, x_mask, h_mask)
        states_PxBxN = (masked_batch_norm(s0, valid_B) if node_norm else s0)[None]
        for i in range(STEPS):
            s_in = states_PxBxN if h_mask is None else states_PxBxN * h_mask
            c, h = jnp.split(jnp.einsum("pbn,nm->pbm", s_in, Ws[i]), 2, axis=-1)
            c = jax.nn.sigmoid(c)
            f_MxPxBxN = jnp.stack([ACTIVATIONS[op](h) for op in DISCRETE_OPS])
            candidates = states_PxBxN + c * (f_MxPxBxN - states_PxBxN)
            s = jnp.einsum("pm,mpbn->bn", w_ExM[rows[i]], candidates)
            s = masked_batch_norm(s, valid_B) if node_norm else s
            states_PxBxN = jnp.concatenate([states_PxBxN, s[None]], axis=0)
        return jnp.mean(states_PxBxN[1:], axis=0)  # nodes 1..8: TOPOLOGY.concat

    return CellFn(STEPS, step)


# --------------------------------------------------------------------------------------------------
# The language model around a cell (`RNNModel`).


def _uniform(scale: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


class Dropouts(NamedTuple):
    """Inverted-dropout masks (kept entries scaled by 1 / (1 - rate)), None where off."""

    embedding: Array | None  # (V, 1): whole rows of the embedding matrix (`embedded_dropout`)
    inputs: Array | None  # (B, 1, N): locked over time (`LockedDropout`, dropouti)
    x: Array | None  # (B, N): the cell's input at every step (`mask2d`, dropoutx)
    h: Array | None  # (B, N): the cell's hidden states at every step (`mask2d`, dropouth)
    outputs: Array | None  # (B, 1, N): locked over time (`LockedDropout`, dropout)


def check_rates(module: Any) -> None:
    """A one-line ValueError unless every dropout rate of `module` is in [0, 1)."""
    for name in RATES:
        rate = getattr(module, name)
        if not (isinstance(rate, (int, float)) and 0 <= rate < 1):
            raise ValueError(f"{name} must be a dropout rate in [0, 1), got {show(rate)}")


def draw_dropouts(module: nn.Module, batch: int, dtype: Any, train: bool) -> Dropouts:
    """The masks of one forward pass, from the 'dropout' rng (one key split in five, in the
    field order, so that two models with the same rates draw the same masks)."""
    rates = [getattr(module, name) for name in ("dropoute", "dropouti", "dropoutx", "dropouth",
                                                "dropout")]  # fmt: skip
    if not train or not any(rates):
        return Dropouts(None, None, None, None, None)
    N = module.ninp
    shapes = [(module.vocab_size, 1), (batch, 1, N), (batch, N), (batch, N), (batch, 1, N)]
    keys = jax.random.split(module.make_rng("dropout"), len(shapes))
    masks = []
    for key, rate, shape in zip(keys, rates, shapes, strict=True):
        if rate:
            keep = 1.0 - rate
            masks.append(jax.random.bernoulli(key, keep, shape).astype(dtype) / keep)
        else:
            masks.append(None)
    return Dropouts(*masks)


def language_model(module: nn.Module, cell: CellFn, inputs_BxL: Array, carry: Array | None,
                   mask: Array | None, train: bool) -> tuple[Array, Array, Array]:  # fmt: skip
    """Embedding, the cell scanned over time, tied decoder: (logits_BxLxV, carry_BxN,
    hiddens_BxLxN). Where `mask` is 0 the state is not updated (its hidden is the carried
    state), so the returned carry is the state after each row's last real token."""
    check_rates(module)
    inputs_BxL = jnp.asarray(inputs_BxL)
    if inputs_BxL.ndim != 2 or not jnp.issubdtype(inputs_BxL.dtype, jnp.integer):
        raise ValueError(
            f"inputs must be (batch, length) integer token ids, got {inputs_BxL.dtype} "
            f"{inputs_BxL.shape}"
        )
    B, L = inputs_BxL.shape
    N, V = module.ninp, module.vocab_size
    uniform = _uniform(INIT_RANGE)
    embedding_VxN = module.param("embedding", uniform, (V, N))
    decoder_bias_V = module.param("decoder_bias", nn.initializers.zeros, (V,))
    W0 = module.param("W0", uniform, (2 * N, 2 * N))
    Ws = module.param("Ws", uniform, (cell.steps, N, 2 * N))
    dtype = embedding_VxN.dtype
    drop = draw_dropouts(module, B, dtype, train)

    table_VxN = embedding_VxN if drop.embedding is None else embedding_VxN * drop.embedding
    x_BxLxN = jnp.take(table_VxN, inputs_BxL, axis=0)
    if drop.inputs is not None:
        x_BxLxN = x_BxLxN * drop.inputs
    h_BxN = module.init_carry(B, dtype) if carry is None else jnp.asarray(carry, dtype)
    if h_BxN.shape != (B, N):
        raise ValueError(f"carry must have shape {(B, N)} (batch, ninp), got {h_BxN.shape}")
    if mask is None:
        valid_BxL = jnp.ones((B, L), bool)
    else:
        mask = jnp.asarray(mask)
        if mask.shape != (B, L):
            raise ValueError(f"mask must have the inputs' shape {(B, L)}, got {mask.shape}")
        valid_BxL = mask > 0

    def step(h, xs):
        x, valid_B = xs
        # Padding rows enter as zeros: at a step where no row is real the normalised cell then
        # stays at 0 (instead of scaling its states by 1/sqrt(eps) node after node until they
        # overflow, whose discarded inf would still turn the gradient into NaN).
        keep = valid_B[:, None]
        zero = lambda v: jnp.where(keep, v, jnp.zeros_like(v))
        new = cell.step(W0, Ws, zero(x), zero(h), drop.x, drop.h, valid_B).astype(h.dtype)
        h = jnp.where(keep, new, h)
        return h, h

    if getattr(module, "remat", False):
        step = jax.checkpoint(step)
    h_BxN, hiddens_LxBxN = jax.lax.scan(step, h_BxN, (x_BxLxN.swapaxes(0, 1), valid_BxL.T))
    hiddens_BxLxN = hiddens_LxBxN.swapaxes(0, 1)
    out = hiddens_BxLxN if drop.outputs is None else hiddens_BxLxN * drop.outputs
    logits_BxLxV = out @ embedding_VxN.T + decoder_bias_V
    return logits_BxLxV, h_BxN, hiddens_BxLxN


class DartsRNNSupernet(nn.Module):
    """The DARTS recurrent search model (`model_search.RNNModelSearch`): embedding of `ninp`
    (= nhid), one search cell, tied decoder. Dropout defaults: rnn/train_search.py's."""

    vocab_size: int
    ninp: int = SEARCH_SIZE
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.0
    node_norm: bool = True
    remat: bool = False

    def init_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((batch_size, self.ninp), dtype)

    @nn.compact
    def __call__(
        self, inputs_BxL: Array, mix_weights: MixWeights, *, carry: Array | None = None,
        mask: Array | None = None, train: bool = True,
    ) -> tuple[Array, Array, Array]:  # fmt: skip
        """`mix_weights`: {'recurrent': (36, 5)}; returns (logits, carry, hiddens)."""
        SPACE.check_mix(mix_weights)
        cell = mixed_cell(jnp.asarray(mix_weights[GROUP]), self.node_norm)
        return language_model(self, cell, inputs_BxL, carry, mask, train)


class DartsRNNNetwork(nn.Module):
    """The DARTS recurrent evaluation model (`model.RNNModel` with `DARTSCell`) of `genotype`.
    Dropout defaults: rnn/train.py's."""

    genotype: Genotype
    vocab_size: int
    ninp: int = EVAL_SIZE
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.1
    remat: bool = False

    def init_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((batch_size, self.ninp), dtype)

    @nn.compact
    def __call__(
        self, inputs_BxL: Array, *, carry: Array | None = None, mask: Array | None = None,
        train: bool = False,
    ) -> tuple[Array, Array, Array]:  # fmt: skip
        cells.check_space(TOPOLOGY, self.genotype)
        cell = discrete_cell(self.genotype.recurrent, self.genotype.concat)
        return language_model(self, cell, inputs_BxL, carry, mask, train)


def _rates(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(RATES))
    if unknown:  # a TypeError, as for any unexpected keyword argument
        raise TypeError(
            f"unknown options {unknown} for the {TOPOLOGY.name} models; expected dropout rates "
            f"among {', '.join(RATES)}"
        )
    return dict(options)


def build_supernet(
    num_classes: int, *, C: int = SEARCH_SIZE, layers: int = 1, sep_impl: str = "fused",
    remat: bool = False, partial_channels: int = 1, single_op: bool = False, **options: float,
) -> DartsRNNSupernet:  # fmt: skip
    """The search model: vocabulary `num_classes`, ninp = nhid = `C` (the paper: 300); `options`
    are dropout rates. `layers` and `sep_impl` do not apply (one recurrent cell, no
    convolutions); partial channels and single-op supernets are refused."""
    if partial_channels != 1:
        raise ValueError(
            f"partial_channels={partial_channels}: the {TOPOLOGY.name} supernet has no partial "
            "channel connections (PC-DARTS); use partial_channels=1"
        )
    if single_op:
        raise ValueError(
            f"single_op: the {TOPOLOGY.name} supernet runs every op of every edge; it has no "
            "single-op mode"
        )
    model = DartsRNNSupernet(num_classes, C, remat=remat, **_rates(options))
    check_rates(model)
    return model


def build_network(
    genotype: Genotype, num_classes: int, *, input_shape: Sequence[int] | None = None,
    C: int | None = None, layers: int | None = None, auxiliary: bool = False,
    sep_impl: str = "fused", **options: float,
) -> DartsRNNNetwork:  # fmt: skip
    """The evaluation model of `genotype`: vocabulary `num_classes`, ninp = nhid = `C` (default
    850, the paper's); `options` are dropout rates (defaults: rnn/train.py's). `input_shape`,
    `layers` and `sep_impl` do not apply; there is no auxiliary head."""
    if auxiliary:
        raise ValueError(f"the {TOPOLOGY.name} network has no auxiliary head; use auxiliary=False")
    cells.check_space(TOPOLOGY, genotype)
    model = DartsRNNNetwork(genotype, num_classes, EVAL_SIZE if C is None else C,
                            **_rates(options))  # fmt: skip
    check_rates(model)
    return model


def op_costs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, np.ndarray]:
    """{'recurrent': (1, 36, 5, 3)}: per token, the parameters, multiply-adds and memory access
    of every op of every edge (`none`: 0). Each other op costs what its edge costs in a discrete
    cell, where a node keeps exactly one edge and so owns its matrix W_i: N * 2N parameters;
    N * 2N multiply-adds for s_j W_i plus N for the gated update s_j + c * (f(h) - s_j)
    (activations not counted); memory access N * 2N parameters plus the N inputs s_j and the N
    outputs s_i. The sum under a genotype's one-hot weights is thus the mixed part of that
    network (its 8 node matrices); the supernet itself holds each W_i once for the i edges
    sharing it. The costs do not depend on the op or the sequence length."""
    if len(tuple(input_shape)) != 1:
        raise ValueError(f"input_shape must be (seq_len,) for a text space, got {input_shape}")
    N = model.ninp
    matrix = N * 2 * N
    costs = np.zeros((1, TOPOLOGY.num_edges, TOPOLOGY.num_ops, 3))
    for k in _MIXED:
        costs[0, :, k] = (matrix, matrix + N, matrix + 2 * N)
    return {GROUP: costs}


# --------------------------------------------------------------------------------------------------
# Genotypes: schema, discretisation, sampling, mutation, one-hot mixing weights.


def _edge_error(node: int, op: Any, pred: Any) -> str | None:
    if op == "none":
        return (
            "operation 'none' is not allowed (a node always takes one predecessor); expected "
            f"one of {', '.join(DISCRETE_OPS)}"
        )
    if op not in DISCRETE_OPS:
        return f"unknown operation {show(op)}; expected one of {', '.join(DISCRETE_OPS)}"
    if isinstance(pred, bool) or not isinstance(pred, (int, np.integer)):
        return f"predecessor {show(pred)} must be an integer"
    return cells.input_error(node, int(pred))


def _concat_error(concat: tuple[int, ...], steps: int) -> str | None:
    if not concat:
        return f"is empty; expected nodes from 1..{steps}"
    for node in concat:
        if isinstance(node, bool) or not isinstance(node, (int, np.integer)):
            return f"contains {show(node)}; expected node numbers"
        if not 1 <= node <= steps:
            return f"contains {node}, not a node; expected nodes in 1..{steps}"
    if list(concat) != sorted(set(concat)):
        return f"is {list(concat)}; expected strictly increasing node numbers"
    return None


def check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical fields (tuples of Python ints and strs) of a recurrent genotype, or a
    one-line ValueError: unknown or missing fields, ops (`none` included: a node always takes
    one predecessor), predecessors that are not earlier nodes, concat nodes."""
    missing = [f for f in FIELDS if f not in fields]
    extra = sorted(str(f) for f in fields if f not in FIELDS)
    if missing or extra:
        problems = [f"missing fields {missing}"] if missing else []
        problems += [f"unknown fields {extra}"] if extra else []
        raise ValueError(
            f"invalid {TOPOLOGY.name} genotype: {'; '.join(problems)}; expected exactly "
            f"{list(FIELDS)}"
        )
    value = fields["recurrent"]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"invalid genotype: recurrent must be a non-empty sequence of (op_name, predecessor) "
            f"pairs, got {show(value)}"
        )
    recurrent = []
    for node, edge in enumerate(value, start=1):
        if not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise ValueError(
                f"invalid genotype: recurrent node {node} must be an (op_name, predecessor) "
                f"pair, got {show(edge)}"
            )
        error = _edge_error(node, *edge)
        if error:
            raise ValueError(f"invalid genotype: recurrent node {node}: {error}")
        recurrent.append((edge[0], int(edge[1])))
    value = fields["concat"]
    if not isinstance(value, (list, tuple, range)):
        raise ValueError(
            f"invalid genotype: concat must be a sequence of node numbers, got {show(value)}"
        )
    error = _concat_error(tuple(value), len(recurrent))
    if error:
        raise ValueError(f"invalid genotype: concat {error}")
    return {"recurrent": tuple(recurrent), "concat": tuple(int(n) for n in value)}


def make_genotype(**fields: Any) -> Genotype:
    """A validated genotype: `recurrent` (node 1's (op, predecessor), node 2's, ...) and
    `concat` (the nodes averaged into the cell output)."""
    return Genotype(SPACE, check_fields(fields))


def _from_cell(cell: cells.Cell) -> Genotype:
    """A genotype from a `cells` cell of the supernet's topology (one edge per node)."""
    return SPACE.genotype(recurrent=tuple(node[0] for node in cell), concat=TOPOLOGY.concat)


def discretise(weights: MixWeights) -> Genotype:
    """The reference rule (`RNNModelSearch.genotype`): per node, the predecessor whose strongest
    op other than `none` is the strongest (the earlier one on ties), with that op; 8 nodes
    averaged (`cells.discretise_cell` with one edge per node)."""
    return _from_cell(cells.discretise_cell(TOPOLOGY, np.asarray(weights[GROUP])))


def random_genotype(rng: np.random.Generator) -> Genotype:
    """A uniformly random 8-node cell: each node a uniform predecessor and a uniform op among
    tanh, relu, sigmoid, identity (`cells.random_cells`)."""
    return _from_cell(cells.random_cells(TOPOLOGY, rng)[GROUP])


def mutate(genotype: Genotype, rng: np.random.Generator) -> Genotype:
    """Regularised evolution's mutation: one random node changes either its predecessor (when
    it has another; with probability 1/2) or its op to a different random choice."""
    recurrent = list(genotype.recurrent)
    i = int(rng.integers(len(recurrent)))
    op, pred = recurrent[i]
    others = [p for p in range(i + 1) if p != pred]
    if others and rng.random() < 0.5:
        recurrent[i] = (op, int(rng.choice(others)))
    else:
        recurrent[i] = (str(rng.choice([o for o in DISCRETE_OPS if o != op])), pred)
    return genotype.replace(recurrent=tuple(recurrent))


def genotype_mix(genotype: Genotype) -> dict[str, np.ndarray]:
    """One-hot mixing weights {'recurrent': (36, 5)} under which the supernet (without its
    BatchNorm) computes `genotype`'s cell; only for 8-node genotypes averaging all 8 nodes."""
    cells.check_space(TOPOLOGY, genotype)
    recurrent, concat = genotype.recurrent, genotype.concat
    if len(recurrent) != STEPS or concat != TOPOLOGY.concat:
        raise ValueError(
            f"a genotype of {len(recurrent)} nodes averaging nodes {list(concat)} has no mixing "
            f"weights in the {TOPOLOGY.name} supernet ({STEPS} nodes averaging 1..{STEPS})"
        )
    w = np.zeros((TOPOLOGY.num_edges, TOPOLOGY.num_ops), np.float32)
    for node, (op, pred) in enumerate(recurrent, start=1):
        w[TOPOLOGY.edge_index(pred, node), TOPOLOGY.op_index(op)] = 1.0
    return {GROUP: w}


# --------------------------------------------------------------------------------------------------
# The genotype string of quark0/darts rnn/genotypes.py, read with `literals.read_call`: never
# eval, the strings are pasted from repositories and logs.

_WHAT = "DARTS recurrent genotype string"
# A `Genotype(` call (maybe after comments and `NAME = `) whose first argument is `recurrent=`:
# what `spaces.parse` reads as this format; a DARTS CNN string starts with `normal=`.
_START = re.compile(
    r"\s*(#[^\n]*\n\s*)*([A-Za-z_]\w*\s*=\s*)?\(?\s*Genotype\s*\(\s*(#[^\n]*\n\s*)*recurrent\s*="
)


def looks_like_darts_rnn(text: str) -> bool:
    return isinstance(text, str) and _START.match(text) is not None


def to_string(genotype: Genotype) -> str:
    """The reference's form: `Genotype(recurrent=[('sigmoid', 0), ...], concat=range(1, 9))`,
    concat as `range(a, b)` when consecutive, else a list."""
    cells.check_space(TOPOLOGY, genotype)
    edges = ", ".join(f"({op!r}, {pred})" for op, pred in genotype.recurrent)
    concat = genotype.concat
    if len(concat) > 1 and concat == tuple(range(concat[0], concat[-1] + 1)):
        written = f"range({concat[0]}, {concat[-1] + 1})"
    else:
        written = str(list(concat))
    return f"Genotype(recurrent=[{edges}], concat={written})"


def from_string(text: str) -> Genotype:
    """Parses a genotype string as in quark0/darts rnn/genotypes.py: keywords (or positional
    arguments in field order), lists or tuples, either quotes, `concat=range(a, b)` or a list,
    comments, newlines, an optional `NAME = ` prefix. Anything else raises a one-line
    ValueError naming the character position and what was expected there. `spaces.parse`
    recognises the keyword form (`Genotype(recurrent=...`); the positional form reads here
    only (positionally it looks like a convolutional DARTS genotype)."""
    if not isinstance(text, str):
        raise ValueError(f"a {_WHAT} must be a str, got {type(text).__name__}")
    args, close = literals.read_call(text, "Genotype", FIELDS, _WHAT)

    def fail(pos: int, message: str) -> ValueError:
        return literals.position_error(text, pos, message, _WHAT)

    missing = [f for f in FIELDS if f not in args]
    if missing:
        raise fail(close, f"missing {', '.join(missing)}; expected all of {', '.join(FIELDS)}")
    value = args["recurrent"]
    if value.kind != "seq" or not value.value:
        raise fail(value.pos, "expected recurrent to be a non-empty list of ('op_name', node)")
    recurrent = []
    for node, edge in enumerate(value.value, start=1):
        parts = edge.value if edge.kind == "seq" else ()
        if len(parts) != 2 or parts[0].kind != "str" or parts[1].kind != "int":
            raise fail(edge.pos, f"expected node {node} to be an edge ('op_name', predecessor)")
        op, pred = parts
        if op.value not in DISCRETE_OPS:
            raise fail(op.pos, f"recurrent node {node}: {_edge_error(node, op.value, 0)}")
        error = cells.input_error(node, pred.value)
        if error:
            raise fail(pred.pos, f"recurrent node {node}: {error}")
        recurrent.append((op.value, pred.value))
    value = args["concat"]
    if value.kind == "range":
        concat = value.value
    elif value.kind == "seq" and all(item.kind == "int" for item in value.value):
        concat = tuple(item.value for item in value.value)
    else:
        raise fail(value.pos, "expected concat to be a list of node numbers or range(...)")
    error = _concat_error(concat, len(recurrent))
    if error:
        raise fail(value.pos, f"concat {error}")
    return SPACE.genotype(recurrent=tuple(recurrent), concat=concat)


# --------------------------------------------------------------------------------------------------
# The space.

KNOWN: dict[str, Genotype] = {}  # filled below, once the space exists
TEXT_FORMAT = TextFormat(
    "darts_rnn", from_string, to_string, detect=looks_like_darts_rnn,
    description="DARTS recurrent genotype string, Genotype(recurrent=[...], concat=...)",
)  # fmt: skip


def diagrams(genotype: Genotype) -> dict[str, Diagram]:
    """The recurrent cell as the DARTS paper draws it (Fig. 4): x_t and h_{t-1} into node 0,
    each node from its predecessor labelled with its op, the `concat` nodes averaged into h_t."""
    steps = len(genotype.recurrent)
    nodes = [("x_t", "input"), ("h_{t-1}", "input"), ("0", "node")]
    nodes += [(str(i), "node") for i in range(1, steps + 1)] + [("h_t", "output")]
    edges = [("x_t", "0", ""), ("h_{t-1}", "0", "")]
    edges += [(str(pred), str(i), op) for i, (op, pred) in enumerate(genotype.recurrent, 1)]
    edges += [(str(i), "h_t", "") for i in genotype.concat]
    return {"recurrent": Diagram(tuple(nodes), tuple(edges))}


SPACE = Space(
    name=TOPOLOGY.name,
    ops=PRIMITIVES,
    alpha_shapes=TOPOLOGY.alpha_shapes,
    row_labels={GROUP: tuple(f"{s}_{d}" for s, d in TOPOLOGY.edges)},
    supernet=build_supernet,
    network=build_network,
    op_costs=op_costs,
    genotype=make_genotype,
    discretise=discretise,
    random_genotype=random_genotype,
    genotype_mix=genotype_mix,
    formats=(TEXT_FORMAT,),
    known=KNOWN,
    mutate=mutate,
    sample_mix=cells.sample_mix(TOPOLOGY),
    node_rows=TOPOLOGY.node_rows(),
    keep_per_node=1,
    discrete_ops=DISCRETE_OPS,
    tiny_layers=1,
    min_layers=1,
    # dnas.viz draws a cell field as per-node edge tuples over the topology's 8 nodes with the
    # last node as output; a recurrent cell averages `concat` and may have 11 nodes (ENAS).
    topology=None,
    candidates=None,
    modality="text",
    diagrams=diagrams,
)


# Published genotypes, from quark0/darts rnn/genotypes.py (node 1's edge first; `range(1, 9)`
# there is concat (1, ..., 8)).
KNOWN |= {
    # DARTS (Liu et al., ICLR 2019), first-order search: `DARTS_V1`.
    "darts_rnn_v1": make_genotype(
        recurrent=[
            ("relu", 0),
            ("relu", 1),
            ("tanh", 2),
            ("relu", 3),
            ("relu", 4),
            ("identity", 1),
            ("relu", 5),
            ("relu", 1),
        ],
        concat=range(1, 9),
    ),
    # DARTS second-order search, the paper's cell (55.7 test perplexity on PTB):
    # `DARTS_V2` (= `DARTS`).
    "darts_rnn_v2": make_genotype(
        recurrent=[
            ("sigmoid", 0),
            ("relu", 1),
            ("relu", 1),
            ("identity", 1),
            ("tanh", 2),
            ("sigmoid", 5),
            ("tanh", 3),
            ("relu", 5),
        ],
        concat=range(1, 9),
    ),
    # ENAS' cell (Pham et al., ICML 2018) in the DARTS space's terms: `ENAS`.
    "enas_rnn": make_genotype(
        recurrent=[
            ("tanh", 0),
            ("tanh", 1),
            ("relu", 1),
            ("tanh", 3),
            ("tanh", 3),
            ("relu", 3),
            ("relu", 4),
            ("relu", 7),
            ("relu", 8),
            ("relu", 8),
            ("relu", 8),
        ],
        concat=[2, 5, 6, 9, 10, 11],
    ),
}
