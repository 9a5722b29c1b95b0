"""Architecture selection with a trained supernet (after the search loop).

A discrete architecture is given to the supernet as one-hot mixing weights (`space.genotype_mix`):
the rows of its edges are one-hot at their op, every other edge is zero, so the supernet computes
exactly that network with the shared weights. One jitted evaluation function of the mixing weights
serves every candidate (no recompilation per architecture).

- `random_search`: random search with weight sharing (Li & Talwalkar, UAI 2019), ranking phase:
  sample architectures uniformly, keep the most accurate on validation batches.
- `evolution`: regularised (aging) evolution (Real et al., AAAI 2019) over the same space, with
  the shared-weight validation accuracy as fitness.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnas import data, evaluate, parallel, signals, supernet
from dnas import workdir as workdir_lib
from dnas.genotype import Genotype
from dnas.spaces.base import Space
from dnas.types import Batch, MixWeights


def make_accuracy_fn(
    model, info: data.DatasetInfo, dtype: Any = jnp.float32
) -> Callable[[Any, MixWeights, Batch], jax.Array]:
    """jit((params, mix, batch) -> accuracy) of the supernet under the given mixing weights, on
    images preprocessed as for evaluation (normalised, no augmentation). The supernet computes
    the full mixture (`single_op` off), so weights that are not one-hot are honoured."""
    model = supernet.full_mixture(model)

    def accuracy(params, mix, batch):
        x = data.preprocess(None, batch["image"], info, train=False, dtype=dtype)
        logits = model.apply({"params": params}, x, mix, train=True).astype(jnp.float32)
        return evaluate.accuracy(logits, batch["label"])

    return jax.jit(accuracy)


def score(accuracy_fn, params, space: Space, genotype: Genotype, batches: Sequence[Batch]) -> float:
    """Mean validation accuracy of `genotype` with the shared weights over `batches`."""
    mix = {c: jnp.asarray(w) for c, w in space.genotype_mix(genotype).items()}
    return float(np.mean([float(accuracy_fn(params, mix, b)) for b in batches]))


def random_search(
    score_fn: Callable[[Genotype], float], space: Space, num_archs: int, seed: int
) -> tuple[Genotype, list[tuple[Genotype, float]]]:
    """The best of `num_archs` uniformly sampled architectures, and every (genotype, score)."""
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(num_archs):
        g = space.random_genotype(rng)
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
    space: Space,
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
    if space.mutate is None:
        raise ValueError(
            f"evolution mutates genotypes and space {space.name!r} has no mutate: use "
            "random_search, or give the space a mutate function"
        )
    rng = np.random.default_rng(seed)
    alive: collections.deque = collections.deque()
    history = []
    for _ in range(population):
        g = space.random_genotype(rng)
        alive.append((g, score_fn(g)))
        history.append(alive[-1])
    for _ in range(cycles):
        picks = rng.choice(len(alive), size=sample_size, replace=False)
        parent = max((alive[i] for i in picks), key=lambda gs: gs[1])[0]
        child = space.mutate(parent, rng)
        alive.append((child, score_fn(child)))
        history.append(alive[-1])
        alive.popleft()
    best = max(history, key=lambda gs: gs[1])[0]
    return best, history


def search_with(
    config, space: Space, score_fn: Callable[[Genotype], float]
) -> tuple[Genotype, list[tuple[Genotype, float]]]:
    """`search.selection`'s search with `score_fn` as fitness: random search over
    `selection_archs` samples, or regularised evolution (population `evolution_population`,
    tournament `evolution_sample_size`, `selection_archs` evaluations in all)."""
    s = config.search
    if s.selection == "random":
        return random_search(score_fn, space, s.selection_archs, config.seed)
    population = s.evolution_population
    return evolution(
        score_fn, space, population=population, sample_size=s.evolution_sample_size,
        cycles=max(s.selection_archs - population, 0), seed=config.seed,
    )  # fmt: skip


def select_with_supernet(config, su, state, workdir: str, mesh, writer,
                         clock=None) -> Genotype:  # fmt: skip
    """`search.selection`: the genotype chosen by the trained supernet's validation accuracy,
    'random' (random search with weight sharing, `selection_archs` samples) or 'evolution'
    (regularised evolution, population `evolution_population`, tournament
    `evolution_sample_size`, `selection_archs` architectures evaluated in all). Every evaluated
    genotype and its accuracy go to `selection.jsonl`. `selection_rerank` > 0 re-scores that
    many of the best on the whole validation split and keeps the best of those
    (`selection_rerank.jsonl`). Nothing here is checkpointed (`clock` is not kept): a stop by
    a signal (`signals`, checked before each evaluation) means a resume selects again."""
    s = config.search
    if su.text is not None:  # a language model: fitness is minus the validation loss
        return _select_text(config, su, state, workdir, writer)
    acc_fn = make_accuracy_fn(su.model, su.info, su.dtype)

    def scorer(seed_offset: int, num_batches: int):
        """Mean accuracy of a genotype on `num_batches` validation batches of that seed."""
        it = data.batches(su.alphas_source, s.batch_size, seed=config.seed + seed_offset)
        val = [parallel.shard_batch(next(it), mesh) for _ in range(num_batches)]

        def score_fn(g: Genotype) -> float:
            signals.check(f"in the selection phase ({s.selection})", workdir)
            return score(acc_fn, state.params, su.space, g, val)

        return score_fn

    def write(name: str, scored) -> float:
        """(genotype, accuracy) pairs to `workdir/name` as JSON lines; the best accuracy."""
        records = [{"genotype": g.to_string(), "val_accuracy": a} for g, a in scored]
        workdir_lib.write_jsonl(os.path.join(workdir, name), records)
        return max(a for _, a in scored)

    best, history = search_with(config, su.space, scorer(3, s.selection_batches))
    best_accuracy = write("selection.jsonl", history)
    writer.write_scalars(int(state.step), {"selection/best_val_accuracy": best_accuracy})
    if s.selection_rerank > 0:  # the top ones again, on the whole validation split
        whole = scorer(4, data.steps_per_epoch(su.alphas_source, s.batch_size))
        best, rescored = rerank(whole, history, s.selection_rerank)
        best_full = write("selection_rerank.jsonl", rescored)
        writer.write_scalars(int(state.step), {"selection/best_rerank_accuracy": best_full})
    return best


def _select_text(config, su, state, workdir: str, writer) -> Genotype:
    """`select_with_supernet` for a language model: a genotype's fitness is minus the shared-
    weight validation loss (nats per token) over the first `selection_batches` validation
    segments (the whole validation text when re-ranking); `selection.jsonl` records each
    genotype's `val_perplexity`."""
    from dnas import lm

    s = config.search

    def scorer(segments: int | None):
        score = lm.selection_scorer(su, state, segments)

        def score_fn(g: Genotype) -> float:
            signals.check(f"in the selection phase ({s.selection})", workdir)
            return score(g)

        return score_fn

    def write(name: str, scored) -> float:
        records = [{"genotype": g.to_string(), "val_perplexity": float(np.exp(-v))}
                   for g, v in scored]  # fmt: skip
        workdir_lib.write_jsonl(os.path.join(workdir, name), records)
        return float(np.exp(-max(v for _, v in scored)))

    best, history = search_with(config, su.space, scorer(s.selection_batches))
    step = int(state.step)
    writer.write_scalars(step, {"selection/best_val_perplexity": write("selection.jsonl", history)})
    if s.selection_rerank > 0:
        best, rescored = rerank(scorer(None), history, s.selection_rerank)
        best_full = write("selection_rerank.jsonl", rescored)
        writer.write_scalars(step, {"selection/best_rerank_perplexity": best_full})
    return best
