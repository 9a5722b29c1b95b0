"""What the discrete networks of every space share: drop-path, and edits at apply time.

Each space builds its discrete network from a genotype (`dnas/spaces/`); every network works for
any input size and channel count, and returns `(logits, aux_logits)` (`aux_logits` None unless the
network has an auxiliary head and `train=True`). Drop-path (Zoph et al. 2018; the reference
`drop_path`) is applied to every non-identity op output in training, at the rate passed to
`__call__` as an array, so a schedule does not recompile; it draws from the `dropout` RNG stream.

Edits (`dnas explain`). The discrete networks of the cell spaces take `edits=`: alpha group ->
(slots, 1 + len(space ops)) float weights, one row per edge of the genotype's cell of that type in
its flat order (node by node, `cells.flat`), applied in every cell of that type. An edited edge
outputs `e[0] * its trained op(x) + sum_k e[1 + k] * ops[k](x)` over the ops that have no
variables at that edge (`substitutes`: `none`, the pools, an identity skip; their columns are the
only ones read), so one compiled program evaluates an edge removed (a zero row), its op replaced
by a parameter-free one (a one-hot row), or the network unchanged (1 in column 0: the same
values as without `edits`). `edit_slots` lists each edge with its substitutes, by tracing.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dnas import ops
from dnas.types import Array


def drop_path_masks(rng: jax.Array, rate: Array, shape: tuple[int, ...]) -> Array:
    """Per-sample keep masks scaled by 1 / (1 - rate): multiplying an op's output by its mask
    zeroes whole samples with probability `rate` (the reference `drop_path`). One draw for the
    whole network: XLA:CPU compiles every random draw separately, and slowly."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, shape)
    return mask.astype(jnp.float32) / keep


def drop_path_inputs(
    module: nn.Module, shape: tuple[int, ...], train: bool, rate: Array | float
) -> Array | None:
    """The drop-path masks of shape `shape` (e.g. (cells, ops per cell, batch)) for one forward
    pass of `module` in training; None in evaluation."""
    if not train:
        return None
    rate = jnp.asarray(rate, jnp.float32)
    return drop_path_masks(module.make_rng("dropout"), rate, shape)


# --------------------------------------------------------------------------------------------------
# Edits at apply time.


class Slot(NamedTuple):
    """One edge of a discrete cell type: its row in `edits[group]`, its op and nodes, and the ops
    that can replace it without training (no variables at that edge, `none` included)."""

    group: str
    index: int
    op: str
    src: int
    dst: int
    substitutes: tuple[str, ...]


_SLOTS: contextvars.ContextVar[list | None] = contextvars.ContextVar("dnas_slots", default=None)


@functools.cache
def substitutes(
    candidates: tuple[str, ...], shape: tuple[int, ...], dtype: Any, C: int, stride: int, impl: str
) -> tuple[str, ...]:
    """The ops of `candidates` that carry no variables as a C -> C edge of `stride` on inputs of
    `shape` (traced abstractly): what can stand in for a trained op without training."""
    x = jax.ShapeDtypeStruct(shape, dtype)
    out = []
    for op in candidates:
        module = ops.make_op(op, C, C, stride, impl=impl, parent=None)
        with ops.not_recording():
            variables = jax.eval_shape(lambda x, m=module: m.init(jax.random.key(0), x, False), x)
        if not jax.tree.leaves(variables):
            out.append(op)
    return tuple(out)


def edited(
    h: Array, x: Array, row: Array, slot: tuple[str, int, str, int, int], *,
    candidates: tuple[str, ...], C: int, stride: int, impl: str, name: str, train: bool,
) -> Array:  # fmt: skip
    """An edge's output `h` (its trained op on `x`) under its row of `edits`: `row[0] * h` plus
    each substitute k's output times `row[1 + k]` (module docstring). `slot` = (group, index, op,
    src, dst) is recorded for `edit_slots`; called inside the cell's compact method, so the
    substitutes (which hold no variables) are its submodules, named `<name>_as_<op>`."""
    subs = substitutes(candidates, tuple(x.shape), x.dtype, C, stride, impl)
    box = _SLOTS.get()
    if box is not None:
        box.append(Slot(*slot, subs))
    out = row[0].astype(h.dtype) * h
    for op in subs:
        if op == "none":  # contributes zero
            continue
        y = ops.make_op(op, C, C, stride, impl=impl, name=f"{name}_as_{op}")(x, train)
        out = out + row[1 + candidates.index(op)].astype(h.dtype) * y.astype(h.dtype)
    return out


def unchanged_edits(slots_per_group: Mapping[str, int], num_ops: int) -> dict[str, np.ndarray]:
    """Edits that change nothing: 1 in column 0 of every slot's row."""
    out = {}
    for group, n in slots_per_group.items():
        e = np.zeros((n, 1 + num_ops), np.float32)
        e[:, 0] = 1.0
        out[group] = e
    return out


def edit_slots(
    model: nn.Module,
    input_shape: tuple[int, ...],
    edits: Mapping[str, Any],
    dtype: Any = jnp.float32,
) -> list[Slot]:
    """Every edge of `model`'s cell types (a cell space's discrete network) once, in (group,
    index) order, with its substitutes: those of every cell of its type (they agree in the
    spaces' networks; an op missing from one cell's list is dropped). Traced abstractly."""
    box: list[Slot] = []
    token = _SLOTS.set(box)
    try:
        x = jax.ShapeDtypeStruct((1, *input_shape), dtype)
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False, edits=edits), x)
    finally:
        _SLOTS.reset(token)
    slots: dict[tuple[str, int], Slot] = {}
    for slot in box:
        key = (slot.group, slot.index)
        if key in slots:
            common = tuple(op for op in slots[key].substitutes if op in slot.substitutes)
            slot = slot._replace(substitutes=common)
        slots[key] = slot
    return [slots[k] for k in sorted(slots, key=lambda k: (list(edits).index(k[0]), k[1]))]
