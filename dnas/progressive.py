"""Progressive searches: a sequence of ordinary searches (stages) in `workdir/stage_<i>`, each
resuming by itself, with the op set of each edge shrinking between stages and passed on to the
next in `strategy_args.ops_mask` (cell type -> (E, K) of 0/1, visible in each stage's
config.json); the stage's strategy mixes only the ops left (weight 0 elsewhere).

P-DARTS (Chen et al., "Progressive Differentiable Architecture Search", ICCV 2019;
chenxin061/pdarts), `run_pdarts`: stages of growing depth (5, 11, 17 cells) on a shrinking op set:
after each stage every edge keeps its `keep[i]` ops of largest softmax weight (8 -> 5 -> 3); each
stage is a fresh supernet (new weights and alphas). The final cell comes from the last stage's
weights (`none` excluded, DARTS' top-2 rule) with at most `max_skips` skip connections in the
normal cell: while there are more, the weakest chosen skip connection is zeroed and the cell
re-derived. Dropout on the identity skip connections, rate `dropout_rate[i]` in stage i (the
authors' CIFAR-10 command: 0.1, 0.4, 0.7), decaying over each stage's epochs (`strategies.pdarts`).

DrNAS' progressive scheme (Chen et al., ICLR 2021, Sec. 3.3; xiangning-chen/DrNAS
`train_search.py`), `run_drnas`: stages of `stage_epochs` on the same supernet depth with partial
channels `stage_partial_channels` (6 -> 4: wider ops as the op set shrinks); after each stage but
the last every edge keeps its `keep[i]` ops of largest weight (8 -> 4). The alphas go on from
stage to stage (the next stage starts from the previous one's, in `strategy_args.alphas_init`),
so does the learning rate (one cosine over all stages: `search.lr_schedule_epochs`,
`search.lr_offset_epochs`), and alpha updates wait `search.alpha_warmup_epochs` (10) in every
stage, as the authors' code. The genotype is the last stage's (masked softmax, DARTS' rule).
`search.epochs` and `search.partial_channels` are set per stage from `stage_epochs` and
`stage_partial_channels`. Differences: each stage's supernet weights start afresh (the authors
widen the previous stage's with net2wider, which with partial channels changes which channels
bypass the ops anyway), and so do the alpha optimiser's Adam moments (the authors' architect keeps
them across stages).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import ml_collections
import numpy as np

from dnas import configlib, search, spaces, strategies
from dnas import workdir as workdir_lib
from dnas.genotype import Genotype
from dnas.spaces.base import Space

# The stage settings each driver reads; the rest of strategy_args goes to the factory as given.
STAGE_ARGS = {
    "pdarts": ("stage_layers", "keep", "max_skips"),
    "drnas": ("stage_epochs", "stage_partial_channels", "keep"),
}


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the strategy factory's defaults for the stage settings (`STAGE_ARGS`) its
    `strategy_args` leave out (`--config.strategy=pdarts` alone runs the paper's three stages)."""
    params = inspect.signature(strategies.STRATEGIES[config.strategy]).parameters
    defaults = {name: params[name].default for name in STAGE_ARGS[config.strategy]}
    c = ml_collections.ConfigDict(config.to_dict())
    c.strategy_args = ml_collections.ConfigDict(defaults | config.strategy_args.to_dict())
    return c


def _weights(alphas, mask: dict) -> dict[str, np.ndarray]:
    """Each cell type's mixing weights over the ops left by `mask` (numpy, for pruning)."""
    w = strategies.masked_softmax({c: alphas[c] for c in mask}, mask)
    return {c: np.asarray(v) for c, v in w.items()}


def prune(space: Space, weights: np.ndarray, mask: np.ndarray, keep: int, last: bool) -> np.ndarray:
    """The op mask of the next stage: each edge keeps its `keep` remaining ops of largest
    weight; in the last stage `none` goes first if it is still there (the authors' code)."""
    new = np.zeros_like(mask)
    none = space.op_index("none") if "none" in space.ops else None
    for e in range(mask.shape[0]):
        candidates = [k for k in range(space.num_ops) if mask[e, k] > 0]
        if last and none in candidates and len(candidates) > keep:
            candidates.remove(none)
        ranked = sorted(candidates, key=lambda k: -weights[e, k])  # stable: earlier op wins ties
        new[e, ranked[:keep]] = 1.0
    return new


def cap_skips(space: Space, weights: dict[str, np.ndarray], max_skips: int) -> Genotype:
    """The genotype of `weights` (the space's rule) with at most `max_skips` skip connections in
    the first alpha group (the normal cell): the weakest chosen skip connection is zeroed and the
    genotype re-derived until it has no more than that (no cap in a space without skip_connect)."""
    weights = {c: np.array(w, np.float64) for c, w in weights.items()}
    if "skip_connect" not in space.ops:
        return space.discretise(weights)
    skip, group = space.op_index("skip_connect"), space.groups[0]
    while True:
        genotype = space.discretise(weights)
        rows = np.flatnonzero(space.genotype_mix(genotype)[group][:, skip])
        if len(rows) <= max_skips:
            return genotype
        weakest = rows[np.argmin(weights[group][rows, skip])]
        weights[group][weakest, skip] = 0.0


def stage_config(
    config: ml_collections.ConfigDict, stage: int, mask: dict
) -> ml_collections.ConfigDict:
    """The search config of one P-DARTS stage: its depth, the op set as
    `strategy_args.ops_mask`, and its skip-connection dropout rate."""
    a = config.strategy_args
    c = ml_collections.ConfigDict(config.to_dict())
    c.search.layers = int(a.stage_layers[stage])
    c.strategy_args.ops_mask = {cell: m.astype(int).tolist() for cell, m in mask.items()}
    rates = a.get("dropout_rate", ())
    if rates:
        c.strategy_args.skip_dropout = float(rates[stage])
        c.strategy_args.dropout_warmup_epochs = int(config.search.alpha_warmup_epochs)
    return c


@workdir_lib.exclusive
def run_pdarts(config: ml_collections.ConfigDict, workdir: str) -> Genotype:
    """All P-DARTS stages, then the final genotype (written to `workdir/genotype.json`)."""
    config = with_defaults(config)
    space = spaces.get(config.space)
    a = config.strategy_args
    rates = tuple(a.get("dropout_rate", ()))
    if not a.keep or len(a.stage_layers) != len(a.keep) or (rates and len(rates) != len(a.keep)):
        raise ValueError(
            f"strategy_args.stage_layers {tuple(a.stage_layers)}, keep {tuple(a.keep)} and "
            f"dropout_rate {rates} need one entry per stage (at least one stage)"
        )
    mask = {c: np.ones(shape, np.float32) for c, shape in space.alpha_shapes.items()}
    for stage in range(len(a.keep)):  # every stage's sizes, before the first one runs
        configlib.validate(stage_config(config, stage, mask))
    workdir = configlib.prepare_workdir(workdir, config)
    for stage, keep in enumerate(a.keep):
        stage_dir = os.path.join(workdir, f"stage_{stage}")
        search.run(stage_config(config, stage, mask), stage_dir)
        alphas = workdir_lib.load_arrays(os.path.join(stage_dir, workdir_lib.ALPHAS))
        weights = _weights(alphas, mask)
        last = stage == len(a.keep) - 1
        if last:
            # The last stage's weights without `none` decide the cell (the next mask would
            # leave one op per edge, which is what discretisation picks anyway).
            keep_op = np.array([op != "none" for op in space.ops])
            final = {c: w * keep_op for c, w in weights.items()}
            genotype = cap_skips(space, final, int(a.max_skips))
        else:
            mask = {c: prune(space, weights[c], mask[c], int(keep), False) for c in mask}
    genotype.save(os.path.join(workdir, workdir_lib.GENOTYPE))
    search.save_cell_diagrams(genotype, workdir)
    return genotype


def drnas_stage_config(
    config: ml_collections.ConfigDict, stage: int, mask: dict, alphas: dict | None
) -> ml_collections.ConfigDict:
    """The search config of one DrNAS stage: its partial channels and epochs, its place in the
    learning-rate cosine over all stages, the op set, and the alphas to start from."""
    a = config.strategy_args
    epochs = [int(e) for e in a.stage_epochs]
    c = ml_collections.ConfigDict(config.to_dict())
    c.search.partial_channels = int(a.stage_partial_channels[stage])
    c.search.epochs = epochs[stage]
    c.search.lr_schedule_epochs = sum(epochs)
    c.search.lr_offset_epochs = sum(epochs[:stage])
    c.strategy_args.ops_mask = {cell: m.astype(int).tolist() for cell, m in mask.items()}
    if alphas is not None:
        c.strategy_args.alphas_init = {cell: np.asarray(v).tolist() for cell, v in alphas.items()}
    return c


@workdir_lib.exclusive
def run_drnas(config: ml_collections.ConfigDict, workdir: str) -> Genotype:
    """All stages of DrNAS' progressive search; the last stage's genotype (also written to
    `workdir/genotype.json`)."""
    config = with_defaults(config)
    space = spaces.get(config.space)
    a = config.strategy_args
    stages = len(a.stage_epochs)
    if not stages or len(a.stage_partial_channels) != stages or len(a.keep) != stages - 1:
        raise ValueError(
            f"strategy_args.stage_epochs {tuple(a.stage_epochs)} needs one "
            f"stage_partial_channels per stage (got {tuple(a.stage_partial_channels)}) and one "
            f"keep per stage but the last (got {tuple(a.keep)})"
        )
    bad = [int(k) for k in a.stage_partial_channels if int(k) < 1 or config.search.C % int(k)]
    if bad:
        raise ValueError(
            f"strategy_args.stage_partial_channels {tuple(a.stage_partial_channels)}: {bad} "
            f"do not divide search.C={config.search.C}; choose divisors of C (the paper: C=36, "
            "6 then 4)"
        )
    mask = {c: np.ones(shape, np.float32) for c, shape in space.alpha_shapes.items()}
    for stage in range(stages):  # every stage's sizes, before the first one runs
        configlib.validate(drnas_stage_config(config, stage, mask, None))
    workdir = configlib.prepare_workdir(workdir, config)
    alphas = None
    for stage in range(stages):
        stage_dir = os.path.join(workdir, f"stage_{stage}")
        genotype = search.run(drnas_stage_config(config, stage, mask, alphas), stage_dir)
        alphas = workdir_lib.load_arrays(os.path.join(stage_dir, workdir_lib.ALPHAS))
        if stage < stages - 1:
            weights = _weights(alphas, mask)
            mask = {c: prune(space, weights[c], mask[c], int(a.keep[stage]), False) for c in mask}
    genotype.save(os.path.join(workdir, workdir_lib.GENOTYPE))
    search.save_cell_diagrams(genotype, workdir)
    return genotype


# A staged method: (predicate on the config: is this the whole staged search?, driver). Keyed by
# the strategy whose stages the driver runs; a stage is an ordinary search (its `ops_mask` set).
Driver = Callable[[ml_collections.ConfigDict, str], Genotype]
DRIVERS: dict[str, tuple[Callable[[ml_collections.ConfigDict], bool], Driver]] = {
    "pdarts": (lambda c: not c.strategy_args.get("ops_mask"), run_pdarts),
    "drnas": (
        lambda c: bool(c.strategy_args.get("progressive")) and not c.strategy_args.get("ops_mask"),
        run_drnas,
    ),
}


def driver(config: ml_collections.ConfigDict) -> Driver | None:
    """The staged driver that runs `config`'s search, or None for a single search."""
    staged = DRIVERS.get(config.strategy)
    if staged is None or not staged[0](config):
        return None
    return staged[1]


__all__ = ["DRIVERS", "cap_skips", "driver", "prune", "run_drnas", "run_pdarts", "with_defaults"]
