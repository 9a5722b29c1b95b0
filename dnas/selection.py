"""Architecture selection with a trained supernet (after the search loop).

A discrete architecture is given to the supernet as one-hot mixing weights (`genotype_mix`): the
rows of its edges are one-hot at their op, every other edge is zero, so the supernet computes
exactly that cell with the shared weights. One jitted evaluation function of the mixing weights
serves every candidate (no recompilation per architecture).

- `random_search`: random search with weight sharing (Li & Talwalkar, UAI 2019), ranking phase:
  sample architectures uniformly, keep the most accurate on validation batches.
- `evolution`: regularised (aging) evolution (Real et al., AAAI 2019) over the same space, with
  the shared-weight validation accuracy as fitness.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnas import data, evaluate
from dnas.genotype import Genotype
from dnas.spaces.base import SearchSpace
from dnas.types import Batch, MixWeights


def genotype_mix(space: SearchSpace, genotype: Genotype) -> dict[str, np.ndarray]:
    """One-hot mixing weights of a genotype: edge (src, node) gets 1 at its op."""
    out = {}
    for cell in space.cell_types:
        w = np.zeros((space.num_edges, space.num_ops), np.float32)
        for node, edges in zip(space.nodes, genotype.cells()[cell], strict=True):
            for op, src in edges:
                w[space.edge_index(src, node), space.op_index(op)] += 1.0
        out[cell] = w
    return out


def _random_cell(space: SearchSpace, rng: np.random.Generator) -> tuple:
    ops = [op for op in space.primitives if op != "none" or space.edges_per_node is None]
    nodes = []
    for dst in space.nodes:
        k = space.edges_per_node or dst
        srcs = (
            sorted(rng.choice(dst, size=k, replace=False)) if space.edges_per_node else range(dst)
        )
        nodes.append(tuple((str(rng.choice(ops)), int(src)) for src in srcs))
    return tuple(nodes)


def random_genotype(space: SearchSpace, rng: np.random.Generator) -> Genotype:
    """A uniformly random architecture of the space (`edges_per_node` distinct inputs per node,
    each with a random op other than `none`; NAS-Bench-201: a random op, `none` included, per
    edge)."""
    cells = {cell: _random_cell(space, rng) for cell in space.cell_types}
    return Genotype.from_cells(space, cells)


def mutate(space: SearchSpace, genotype: Genotype, rng: np.random.Generator) -> Genotype:
    """Regularised evolution's mutation: in one random cell, either one edge's op or (DARTS) one
    edge's input changes to a different random choice."""
    cells = {c: [list(node) for node in genotype.cells()[c]] for c in space.cell_types}
    cell = space.cell_types[rng.integers(len(space.cell_types))]
    node_i = int(rng.integers(space.num_intermediate))
    node = cells[cell][node_i]
    slot = int(rng.integers(len(node)))
    op, src = node[slot]
    dst = space.nodes[node_i]
    ops = [o for o in space.primitives if o != op and (o != "none" or space.edges_per_node is None)]
    free_srcs = [s for s in range(dst) if s not in {e[1] for e in node}]
    if space.edges_per_node and free_srcs and rng.random() < 0.5:
        node[slot] = (op, int(rng.choice(free_srcs)))
    else:
        node[slot] = (str(rng.choice(ops)), src)
    cells[cell][node_i] = sorted(node, key=lambda e: e[1]) if space.edges_per_node else node
    return dataclasses.replace(genotype, **cells)


def make_accuracy_fn(
    model, info: data.DatasetInfo
) -> Callable[[Any, MixWeights, Batch], jax.Array]:
    """jit((params, mix, batch) -> accuracy) of the supernet under the given mixing weights, on
    images preprocessed as for evaluation (normalised, no augmentation). The supernet computes
    the full mixture (`single_op` off), so weights that are not one-hot are honoured."""
    if getattr(model, "single_op", False):
        model = model.clone(single_op=False)

    def accuracy(params, mix, batch):
        x = data.preprocess(None, batch["image"], info, train=False)
        logits = model.apply({"params": params}, x, mix, train=True)
        return evaluate.accuracy(logits, batch["label"])

    return jax.jit(accuracy)


def score(
    accuracy_fn, params, space: SearchSpace, genotype: Genotype, batches: Sequence[Batch]
) -> float:
    """Mean validation accuracy of `genotype` with the shared weights over `batches`."""
    mix = {c: jnp.asarray(w) for c, w in genotype_mix(space, genotype).items()}
    return float(np.mean([float(accuracy_fn(params, mix, b)) for b in batches]))


def random_search(
    score_fn: Callable[[Genotype], float], space: SearchSpace, num_archs: int, seed: int
) -> tuple[Genotype, list[tuple[Genotype, float]]]:
    """The best of `num_archs` uniformly sampled architectures, and every (genotype, score)."""
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(num_archs):
        g = random_genotype(space, rng)
        history.append((g, score_fn(g)))
    best = max(history, key=lambda gs: gs[1])[0]
    return best, history


def rerank(
    score_fn: Callable[[Genotype], float], history: Sequence[tuple[Genotype, float]], top: int
) -> tuple[Genotype, list[tuple[Genotype, float]]]:
    """Random search with weight sharing's last step (Li & Talwalkar's code): the `top` best
    distinct genotypes of `history` (ties: the earlier), re-scored with `score_fn` (the whole
    validation split); the best of them (ties: the better first score) and every re-score."""
    if top < 1:
        raise ValueError(f"rerank needs top >= 1, got {top}")
    chosen = []
    for g, _ in sorted(history, key=lambda gs: -gs[1]):  # stable
        if g not in chosen:
            chosen.append(g)
        if len(chosen) == top:
            break
    rescored = [(g, score_fn(g)) for g in chosen]
    return max(rescored, key=lambda gs: gs[1])[0], rescored


def evolution(
    score_fn: Callable[[Genotype], float],
    space: SearchSpace,
    *,
    population: int,
    sample_size: int,
    cycles: int,
    seed: int,
) -> tuple[Genotype, list[tuple[Genotype, float]]]:
    """Regularised evolution: a random population, then `cycles` times: sample `sample_size`
    members, mutate the fittest, add the child and remove the oldest. Returns the best genotype
    ever evaluated, and every (genotype, score) in evaluation order."""
    if not 1 <= sample_size <= population:
        raise ValueError(f"need 1 <= sample_size ({sample_size}) <= population ({population})")
    rng = np.random.default_rng(seed)
    alive: collections.deque = collections.deque()
    history = []
    for _ in range(population):
        g = random_genotype(space, rng)
        alive.append((g, score_fn(g)))
        history.append(alive[-1])
    for _ in range(cycles):
        picks = rng.choice(len(alive), size=sample_size, replace=False)
        parent = max((alive[i] for i in picks), key=lambda gs: gs[1])[0]
        child = mutate(space, parent, rng)
        alive.append((child, score_fn(child)))
        history.append(alive[-1])
        alive.popleft()
    best = max(history, key=lambda gs: gs[1])[0]
    return best, history
