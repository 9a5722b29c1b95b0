"""P-DARTS (Chen et al., "Progressive Differentiable Architecture Search", ICCV 2019;
chenxin061/pdarts): the search runs in stages of growing depth (5, 11, 17 cells) on a shrinking
op set: after each stage every edge keeps its `keep[i]` ops of largest softmax weight (8 -> 5 ->
3); each stage is a fresh supernet (new weights and alphas) whose mixing is a softmax over the
edge's remaining ops only. The final cell comes from the last stage's weights (`none` excluded,
DARTS' top-2 rule) with at most `max_skips` skip connections in the normal cell: while there are
more, the weakest chosen skip connection is zeroed and the cell re-derived.

`run(config, workdir)` runs the stages as ordinary searches in `workdir/stage_<i>` (each resumes
by itself), passing the op set on in `strategy_args.ops_mask`. Not implemented: the dropout on
skip connections of the authors' code (rates 0.1 / 0.4 / 0.7 per stage) and its schedule.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from dnas import discretise, search, spaces
from dnas.genotype import Genotype
from dnas.spaces.base import SearchSpace


def masked_softmax(alpha: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over the ops with mask 1 of each edge; 0 elsewhere."""
    a = np.where(mask > 0, np.asarray(alpha, np.float64), -np.inf)
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def prune(
    space: SearchSpace, weights: np.ndarray, mask: np.ndarray, keep: int, last: bool
) -> np.ndarray:
    """The op mask of the next stage: each edge keeps its `keep` remaining ops of largest
    weight; in the last stage `none` goes first if it is still there (the authors' code)."""
    new = np.zeros_like(mask)
    none = space.op_index("none") if "none" in space.primitives else None
    for e in range(space.num_edges):
        candidates = [k for k in range(space.num_ops) if mask[e, k] > 0]
        if last and none in candidates and len(candidates) > keep:
            candidates.remove(none)
        ranked = sorted(candidates, key=lambda k: -weights[e, k])  # stable: earlier op wins ties
        new[e, ranked[:keep]] = 1.0
    return new


def cap_skips(space: SearchSpace, weights: dict[str, np.ndarray], max_skips: int) -> Genotype:
    """The genotype of `weights` (DARTS' rule) with at most `max_skips` skip connections in the
    normal cell: the weakest chosen skip connection is zeroed and the cell re-derived until it
    has no more than that."""
    weights = {c: np.array(w, np.float64) for c, w in weights.items()}
    skip = space.op_index("skip_connect")
    while True:
        genotype = discretise.discretise(space, weights)
        chosen = [
            (weights["normal"][space.edge_index(src, dst), skip], space.edge_index(src, dst))
            for dst, node in zip(space.nodes, genotype.normal, strict=True)
            for op, src in node
            if op == "skip_connect"
        ]
        if len(chosen) <= max_skips:
            return genotype
        weights["normal"][min(chosen)[1], skip] = 0.0


def stage_config(
    config: ml_collections.ConfigDict, stage: int, mask: dict
) -> ml_collections.ConfigDict:
    """The search config of one stage: its depth, and the op set as `strategy_args.ops_mask`."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.search.layers = int(config.strategy_args.stage_layers[stage])
    c.strategy_args.ops_mask = {cell: m.astype(int).tolist() for cell, m in mask.items()}
    return c


def run(config: ml_collections.ConfigDict, workdir: str) -> Genotype:
    """All stages, then the final genotype (written to `workdir/genotype.json`)."""
    workdir = search.prepare_workdir(workdir, config)
    space = spaces.get(config.space)
    a = config.strategy_args
    if len(a.stage_layers) != len(a.keep):
        raise ValueError(
            f"strategy_args.stage_layers {tuple(a.stage_layers)} and keep {tuple(a.keep)} "
            "need one entry per stage"
        )
    mask = {c: np.ones((space.num_edges, space.num_ops), np.float32) for c in space.cell_types}
    for stage, keep in enumerate(a.keep):
        stage_dir = os.path.join(workdir, f"stage_{stage}")
        search.run(stage_config(config, stage, mask), stage_dir)
        with np.load(os.path.join(stage_dir, "alphas.npz")) as f:
            weights = {c: masked_softmax(f[c], mask[c]) for c in space.cell_types}
        last = stage == len(a.keep) - 1
        if last:
            # The last stage's weights without `none` decide the cell (the next mask would
            # leave one op per edge, which is what discretisation picks anyway).
            final = {c: w * (np.arange(space.num_ops) != space.op_index("none")) for c, w in
                     weights.items()}  # fmt: skip
            genotype = cap_skips(space, final, int(a.max_skips))
        else:
            mask = {c: prune(space, weights[c], mask[c], int(keep), False) for c in mask}
    genotype.save(os.path.join(workdir, "genotype.json"))
    return genotype


__all__ = ["cap_skips", "masked_softmax", "prune", "run"]
