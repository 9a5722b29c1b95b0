"""DARTS-PT (Wang et al., "Rethinking Architecture Selection in Differentiable NAS", ICLR 2021):
perturbation-based selection with the trained supernet, after any search strategy.

The fine-tuning keeps the search's strategy, with its per-epoch schedules held at their last
values, and a new weight optimiser (lr / 10, cosine over the fine-tuning epochs).

Operation phase: one decision per `pt_interval` epochs of fine-tuning; each decision takes, in
every cell type, a random undecided edge, removes each of its ops in turn (that op's mixing
weight set to 0, the others untouched) and keeps the op whose removal lowers validation accuracy
most; the edge then mixes with that op alone (one-hot). Topology phase (spaces that keep k inputs
per node): a random node with more than k inputs repeatedly loses the incoming edge whose removal
leaves the highest validation accuracy, until k remain; each candidate is evaluated with only
itself removed (edges dropped earlier in the same node stay on while the node is decided, as
`project_edge` of the authors' sota/cnn/projection.py). Between decisions the supernet is
fine-tuned with the search step (weights at lr / 10, cosine; alphas of undecided edges keep
learning), and the projection is an input of that step, so it compiles once.

Schedule (sota/cnn/projection.py): n decisions at epochs 0, I, ..., (n - 1) I of
(n - 1) I + 1 fine-tuning epochs, I = `pt_interval`; the last decision is followed by one epoch
of fine-tuning. (The authors' NAS-Bench-201 script runs one epoch fewer, its last decision
at epoch (n - 1) I - 1.)

The projection enters the alphas as non-trainable entries (`fixed/...`, left out of the alpha
optimiser): per cell type, `decided` (E,), `onehot` (E, K), `edge_keep` (E,).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnas import checkpoint, data, parallel, search, selection, strategies, supernet
from dnas.genotype import Genotype
from dnas.spaces.base import SearchSpace
from dnas.types import Alphas, MixWeights

FIXED = "fixed/"


def projection_init(space: SearchSpace) -> dict[str, np.ndarray]:
    out = {}
    for cell in space.cell_types:
        out[f"{FIXED}decided/{cell}"] = np.zeros(space.num_edges, np.float32)
        out[f"{FIXED}onehot/{cell}"] = np.zeros((space.num_edges, space.num_ops), np.float32)
        out[f"{FIXED}edge_keep/{cell}"] = np.ones(space.num_edges, np.float32)
    return out


def project(mix: MixWeights, alphas: Alphas, op_keep: MixWeights | None = None) -> MixWeights:
    """Mixing weights under the projection in `alphas`: decided edges one-hot, removed edges
    zero; `op_keep` (per cell, (E, K) of 0/1) additionally removes single ops (evaluation)."""
    out = {}
    for cell, w in mix.items():
        if op_keep is not None:
            w = w * op_keep[cell].astype(w.dtype)
        decided = alphas[f"{FIXED}decided/{cell}"][:, None].astype(w.dtype)
        w = decided * alphas[f"{FIXED}onehot/{cell}"].astype(w.dtype) + (1 - decided) * w
        out[cell] = w * alphas[f"{FIXED}edge_keep/{cell}"][:, None].astype(w.dtype)
    return out


def with_projection(strategy: strategies.Strategy) -> strategies.Strategy:
    """`strategy` whose mixing weights (search, final and perturbed) go through `project`.

    A perturbation of the weight step (SDARTS) moves only the undecided edges: its loss sees
    projected weights and its result is projected, so decided edges stay one-hot and removed
    edges stay off (the authors' `get_projected_weights` overwrites them after the perturbation).
    """
    weight_mix = strategy.weight_mix
    if weight_mix is not None:

        def weight_mix(loss_of_mix, mix, key, step, alphas=None, inner=weight_mix):
            held = lambda m: loss_of_mix(project(m, alphas))
            return project(inner(held, mix, key, step, alphas=alphas), alphas)

    return strategy._replace(
        name=f"{strategy.name}+pt",
        mix_weights=lambda a, key, step: project(strategy.mix_weights(a, key, step), a),
        final_weights=lambda a: project(strategy.final_weights(a), a),
        weight_mix=weight_mix,
    )


def alpha_optimizer(alpha_tx: optax.GradientTransformation, alphas: Alphas):
    """`alpha_tx` for the learnable alphas; the projection entries never change."""
    labels = {k: "fixed" if k.startswith(FIXED) else "learn" for k in alphas}
    return optax.multi_transform({"learn": alpha_tx, "fixed": optax.set_to_zero()}, labels)


def decide_op(accuracy_without: Callable[[int], float], ops: Sequence[int]) -> int:
    """The op whose removal leaves the lowest accuracy (ties: the first)."""
    scores = [accuracy_without(k) for k in ops]
    return ops[int(np.argmin(scores))]


def prune_edges(
    accuracy_without: Callable[[int], float], edges: Sequence[int], keep: int
) -> list[int]:
    """Removes, one at a time, the edge whose removal leaves the highest accuracy (ties: the
    first), until `keep` remain; returns the kept edges. `accuracy_without(e)` is the accuracy
    with edge e alone taken out: edges removed before are not taken out while the others are
    scored (the authors' `project_edge`). Nothing changes between their rounds, so each edge is
    evaluated once and the rounds reuse the scores."""
    edges = list(edges)
    scores = {e: accuracy_without(e) for e in edges}
    while len(edges) > keep:
        edges.pop(int(np.argmax([scores[e] for e in edges])))
    return edges


def genotype_of(space: SearchSpace, proj: dict[str, np.ndarray]) -> Genotype:
    cells = {}
    for cell in space.cell_types:
        onehot = proj[f"{FIXED}onehot/{cell}"]
        keep = proj[f"{FIXED}edge_keep/{cell}"]
        nodes = []
        for dst in space.nodes:
            edges = [space.edge_index(src, dst) for src in range(dst)]
            nodes.append(tuple(
                (space.primitives[int(np.argmax(onehot[e]))], space.edges[e][0])
                for e in edges if keep[e] > 0
            ))  # fmt: skip
        cells[cell] = tuple(nodes)
    return Genotype.from_cells(space, cells)


def num_decisions(space: SearchSpace) -> int:
    """Operation decisions (one edge per cell type each) + topology decisions (one node each)."""
    topology = 0
    if space.edges_per_node is not None:
        topology = sum(1 for dst in space.nodes if dst > space.edges_per_node)
    return space.num_edges + topology


def run(config, su: search.SearchSetup, state: search.SearchState, workdir: str, mesh,
        writer) -> Genotype:  # fmt: skip
    """DARTS-PT from the searched `state`; writes every decision to `pt_decisions.jsonl`."""
    s = config.search
    space, spe = su.space, su.steps_per_epoch
    search_steps = int(state.step)
    interval = s.pt_interval
    tune_epochs = interval * (num_decisions(space) - 1) + 1  # the last decision at the last epoch
    hp = {k: s[k] for k in search.HPARAMS} | {"lr": s.lr / 10}
    lr, weight_tx, base_alpha_tx = search.make_optimizers(hp, tune_epochs, spe)
    # The search's strategy, hypergradients with the fine-tuning optimiser, and its schedules
    # (temperatures, regulariser weights, perturbation sizes) held at the search's last step.
    costs = functools.partial(supernet.edge_costs, su.model, su.info.input_shape)
    ctx = strategies.Context(space, config.order, weight_tx, lr, spe, s.epochs, costs)
    base = strategies.build(config.strategy, ctx, config.strategy_args.to_dict())
    last = max(search_steps - 1, 0)
    held = base._replace(
        mix_weights=lambda a, key, step: base.mix_weights(a, key, last),
        regularizer=lambda a, step: base.regularizer(a, last),
        weight_mix=None
        if base.weight_mix is None
        else (
            lambda f, mix, key, step, alphas=None: base.weight_mix(f, mix, key, last, alphas=alphas)
        ),
        skip_dropout=None if base.skip_dropout is None else (lambda step: base.skip_dropout(last)),
    )
    strategy = with_projection(held)
    alphas = dict(state.alphas) | {k: jnp.asarray(v) for k, v in projection_init(space).items()}
    alpha_tx = alpha_optimizer(base_alpha_tx, alphas)
    loss_fn = search.make_loss_fn(su.model, strategy, su.info, search.Augmentation.from_config(s))
    step_fn = jax.jit(search.make_step(loss_fn, strategy, weight_tx, alpha_tx, lr))
    state = parallel.replicate(
        state.replace(
            step=jnp.zeros((), jnp.int32), alphas=alphas,
            weight_opt_state=weight_tx.init(state.params), alpha_opt_state=alpha_tx.init(alphas),
        ),
        mesh,
    )  # fmt: skip
    train_iter = data.batches(su.weights_source, s.batch_size, seed=config.seed + 10)
    val_iter = data.batches(su.alphas_source, s.batch_size, seed=config.seed + 11)
    batches = parallel.shard_batches(zip(train_iter, val_iter, strict=False), mesh)
    eval_batches = [
        parallel.shard_batch(b, mesh)
        for b, _ in zip(data.batches(su.alphas_source, s.batch_size, seed=config.seed + 12),
                        range(s.pt_eval_batches), strict=False)
    ]  # fmt: skip
    acc_fn = selection.make_accuracy_fn(su.model, su.info)
    rng = np.random.default_rng(config.seed)
    proj = projection_init(space)
    undecided = {c: list(range(space.num_edges)) for c in space.cell_types}
    k = space.edges_per_node
    open_nodes = {c: [d for d in space.nodes if k is not None and d > k] for c in space.cell_types}
    log = []

    def accuracy(mix_fn) -> float:
        return float(np.mean([float(acc_fn(state.params, mix_fn(), b)) for b in eval_batches]))

    def current(op_keep=None):
        a = state.alphas | {key: jnp.asarray(v) for key, v in proj.items()}
        return project(su.strategy.final_weights(a), a, op_keep)

    for epoch in range(tune_epochs):
        if epoch % interval == 0:
            for cell in space.cell_types:
                if undecided[cell]:  # operation phase
                    e = undecided[cell].pop(int(rng.integers(len(undecided[cell]))))
                    ops = [
                        i for i, op in enumerate(space.primitives)
                        if op != "none" or space.edges_per_node is None
                    ]  # fmt: skip

                    def without_op(op_i, cell=cell, e=e):
                        keep = {c: np.ones((space.num_edges, space.num_ops), np.float32)
                                for c in space.cell_types}  # fmt: skip
                        keep[cell][e, op_i] = 0.0
                        return accuracy(lambda: current(keep))

                    best = decide_op(without_op, ops)
                    proj[f"{FIXED}decided/{cell}"][e] = 1.0
                    proj[f"{FIXED}onehot/{cell}"][e] = np.eye(space.num_ops)[best]
                    log.append({"epoch": epoch, "cell": cell, "edge": list(space.edges[e]),
                                "op": space.primitives[best]})  # fmt: skip
                elif open_nodes[cell]:  # topology phase
                    dst = open_nodes[cell].pop(int(rng.integers(len(open_nodes[cell]))))
                    edges = [space.edge_index(src, dst) for src in range(dst)]
                    keep_key = f"{FIXED}edge_keep/{cell}"

                    def without_edge(e, keep_key=keep_key):
                        saved = proj[keep_key].copy()
                        proj[keep_key][e] = 0.0
                        try:
                            return accuracy(lambda: current())
                        finally:
                            proj[keep_key] = saved

                    kept = prune_edges(without_edge, edges, k)
                    for e in edges:
                        proj[keep_key][e] = 1.0 if e in kept else 0.0
                    log.append({"epoch": epoch, "cell": cell, "node": dst,
                                "inputs": [space.edges[e][0] for e in kept]})  # fmt: skip
            new_alphas = state.alphas | {key: jnp.asarray(v) for key, v in proj.items()}
            state = parallel.replicate(state.replace(alphas=new_alphas), mesh)
        for _ in range(spe):
            state, _ = step_fn(state, *next(batches))
    genotype = genotype_of(space, proj)
    text = "".join(json.dumps(d) + "\n" for d in log)
    checkpoint.atomic_write_text(os.path.join(workdir, "pt_decisions.jsonl"), text)
    writer.write_text(search_steps, "pt_genotype", genotype.to_string())
    return genotype


__all__ = ["decide_op", "genotype_of", "project", "prune_edges", "run", "with_projection"]
