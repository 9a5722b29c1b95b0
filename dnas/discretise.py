"""Discretisation: mixing weights -> genotype.

`discretise(space, weights)` applies the space's rule:
- `edges_per_node=k` (DARTS, Liu et al. 2019, Sec. 2.4; quark0/darts `model_search.genotype`):
  every edge's strength is its strongest op other than `none`; each node keeps its k strongest
  incoming edges, each with that op. Ties go to the earlier edge / op, as Python's stable sort and
  `argmax` do in the reference.
- `edges_per_node=None` (NAS-Bench-201, AutoDL-Projects `genotype()`): every edge keeps its
  strongest op, `none` included.
"""

from __future__ import annotations

import numpy as np

from dnas.genotype import Genotype
from dnas.spaces.base import SearchSpace
from dnas.types import MixWeights

# Candidate ops without parameters (`none` aside): DARTS' collapse goes to these.
PARAMETER_FREE = ("skip_connect", "max_pool_3x3", "avg_pool_3x3")


def discretise_cell(
    space: SearchSpace, w_ExK: np.ndarray
) -> tuple[tuple[tuple[str, int], ...], ...]:
    w_ExK = np.asarray(w_ExK, np.float64)
    if w_ExK.shape != (space.num_edges, space.num_ops):
        raise ValueError(
            f"{space.name} weights must have shape {(space.num_edges, space.num_ops)}, "
            f"got {w_ExK.shape}"
        )
    allowed = np.ones(space.num_ops, bool)
    if space.edges_per_node is not None and "none" in space.primitives:
        allowed[space.op_index("none")] = False
    masked = np.where(allowed, w_ExK, -np.inf)
    nodes = []
    for dst in space.nodes:
        rows = [space.edge_index(src, dst) for src in range(dst)]
        best_ops = [int(np.argmax(masked[r])) for r in rows]
        strength = [masked[r, k] for r, k in zip(rows, best_ops, strict=True)]
        order = sorted(range(len(rows)), key=lambda i: -strength[i])  # stable: earlier wins ties
        keep = order[: space.edges_per_node] if space.edges_per_node else range(len(rows))
        nodes.append(tuple((space.primitives[best_ops[i]], i) for i in keep))
    return tuple(nodes)


def discretise(space: SearchSpace, weights: MixWeights) -> Genotype:
    """The genotype of `weights` (e.g. softmax(alphas)) under the space's rule."""
    cells = {cell: discretise_cell(space, np.asarray(weights[cell])) for cell in space.cell_types}
    return Genotype.from_cells(space, cells)


def count_parameter_free(genotype: Genotype, cell: str = "normal") -> int:
    """Parameter-free ops (skip_connect, pooling) in a cell: DARTS' collapse symptom (Zela et al.,
    "Understanding and Robustifying DARTS", 2020)."""
    return sum(op in PARAMETER_FREE for node in genotype.cells()[cell] for op, _ in node)
