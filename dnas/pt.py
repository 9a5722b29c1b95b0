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

The fine-tuning runs through the shared loop (`loop.run`) in `<workdir>/pt/`, like any search:
the state (projection included) is checkpointed and donated, metrics go to `pt/metrics.jsonl`, a
non-finite loss stops it naming the step and the last good checkpoint, and a killed run resumes
where it stopped. A round's decisions are made at the end of the epoch before it (the
checkpoint of that epoch holds them), and its random choices come from (seed, round), so a
resumed run makes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnas import checkpoint, data, loop, metrics, parallel, search_step, selection, strategies
from dnas import workdir as workdir_lib
from dnas.genotype import Genotype
from dnas.spaces.base import Space
from dnas.state import SearchState
from dnas.types import Alphas, MixWeights

FIXED = "fixed/"


def projection_init(space: Space) -> dict[str, np.ndarray]:
    out = {}
    for cell, (rows, num_ops) in space.alpha_shapes.items():
        out[f"{FIXED}decided/{cell}"] = np.zeros(rows, np.float32)
        out[f"{FIXED}onehot/{cell}"] = np.zeros((rows, num_ops), np.float32)
        out[f"{FIXED}edge_keep/{cell}"] = np.ones(rows, np.float32)
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


def genotype_of(space: Space, proj: dict[str, np.ndarray]) -> Genotype:
    """The genotype of a finished projection: every row decided (one-hot), removed edges off."""
    weights = {
        cell: proj[f"{FIXED}onehot/{cell}"] * proj[f"{FIXED}edge_keep/{cell}"][:, None]
        for cell in space.groups
    }
    return space.discretise(weights)


def num_decisions(space: Space) -> int:
    """Operation decisions (one row per alpha group each) + topology decisions (one node each)."""
    k = space.keep_per_node
    topology = 0 if k is None else sum(1 for rows in space.node_rows if len(rows) > k)
    return max(rows for rows, _ in space.alpha_shapes.values()) + topology


def run(config, su: search_step.SearchSetup, state: SearchState, workdir: str, mesh,
        writer, clock: loop.Clock | None = None) -> Genotype:  # fmt: skip
    """DARTS-PT from the searched `state`; writes every decision to `pt_decisions.jsonl` (the
    record of the finished run; `pt/pt_decisions.jsonl` is the running one, which may hold a
    decision that its latest checkpoint does not yet: a resume trims it). `clock` (the
    search's) goes on counting in the fine-tuning's checkpoints."""
    s = config.search
    space, spe = su.space, su.steps_per_epoch
    search_steps = int(state.step)
    interval = s.pt_interval
    tune_epochs = interval * (num_decisions(space) - 1) + 1  # the last decision at the last epoch
    hp = {k: s[k] for k in search_step.HPARAMS} | {"lr": s.lr / 10}
    lr, weight_tx, base_alpha_tx = search_step.make_optimizers(hp, tune_epochs, spe)
    # The search's strategy, hypergradients with the fine-tuning optimiser, and its schedules
    # (temperatures, regulariser weights, perturbation sizes) held at the search's last step.
    ctx = search_step.make_context(config, hp, weight_tx, lr, spe, su.model, su.info)
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
    aug = search_step.Augmentation.from_config(s)
    loss_fn = search_step.make_loss_fn(su.model, strategy, su.info, aug, su.dtype)
    step_fn = search_step.make_step(loss_fn, strategy, weight_tx, alpha_tx, lr)
    # The fine-tuning donates its state: start from copies, so the searched state stays valid.
    state, alphas = jax.tree.map(lambda x: x.copy(), (state, alphas))
    state = parallel.replicate(
        state.replace(
            step=jnp.zeros((), jnp.int32), alphas=alphas,
            weight_opt_state=weight_tx.init(state.params), alpha_opt_state=alpha_tx.init(alphas),
        ),
        mesh,
    )  # fmt: skip
    eval_batches = [
        parallel.shard_batch(b, mesh)
        for b, _ in zip(data.batches(su.alphas_source, s.batch_size, seed=config.seed + 12),
                        range(s.pt_eval_batches), strict=False)
    ]  # fmt: skip
    acc_fn = selection.make_accuracy_fn(su.model, su.info, su.dtype)
    pt_dir = os.path.join(workdir, "pt")
    log_path = os.path.join(pt_dir, "pt_decisions.jsonl")
    ckpt = checkpoint.Checkpointer(pt_dir)
    # Fresh: no checkpoint, not step 0 (a signal before the first step checkpoints step 0, with
    # round 0's decisions in it).
    fresh = ckpt.latest_step() is None
    state = loop.resume(ckpt, state, clock)
    log = workdir_lib.read_jsonl(log_path)[: _decisions_made(space, _projection(state.alphas))]

    def decide(state: SearchState, step: int) -> SearchState:
        """Before fine-tuning epoch e = step / spe: round e / I of decisions, if one is due."""
        epoch = step // spe
        if epoch % interval or epoch >= tune_epochs:
            return state

        def weights(proj, op_keep=None):
            alphas = state.alphas | _device(proj)
            return project(su.strategy.final_weights(alphas), alphas, op_keep)

        proj = decision_round(
            space, _projection(state.alphas), epoch // interval,
            lambda mix_fn: _accuracy(acc_fn, state.params, eval_batches, mix_fn), weights,
            seed=config.seed, epoch=epoch, log=log,
        )  # fmt: skip
        workdir_lib.write_jsonl(log_path, log)
        return parallel.replicate(state.replace(alphas=state.alphas | _device(proj)), mesh)

    if fresh:  # round 0 before the first epoch
        state = decide(state, 0)
    start = int(state.step)
    train_iter = data.batches(su.weights_source, s.batch_size, seed=config.seed + 10,
                              start_step=start)  # fmt: skip
    val_iter = data.batches(su.alphas_source, s.batch_size, seed=config.seed + 11,
                            start_step=start)  # fmt: skip
    batches = parallel.shard_batches(zip(train_iter, val_iter, strict=False), mesh)
    compiled, compiled_record, batches = loop.compile_on_first(
        step_fn, "DARTS-PT fine-tuning step", config.progress, state, batches, mesh, clock
    )
    pt_writer = metrics.MetricWriter(pt_dir)
    pt_writer.write_scalars(start, {f"pt/{k}": v for k, v in compiled_record.items()})
    state = loop.run(
        config, step_fn=compiled, state=state, batches=batches, start=start,
        total_steps=tune_epochs * spe, steps_per_epoch=spe, ckpt=ckpt, writer=pt_writer,
        desc="DARTS-PT", postfix=lambda m: {"loss": f"{m['train/loss']:.3f}"},
        on_epoch_end=lambda state, step: None, update_state=decide, clock=clock,
    )  # fmt: skip
    pt_writer.close()
    ckpt.close()
    genotype = genotype_of(space, _projection(state.alphas))
    # The fine-tuned alphas, projection included (the search's own are `<workdir>/alphas.npz`).
    workdir_lib.save_arrays(os.path.join(pt_dir, workdir_lib.ALPHAS), jax.device_get(state.alphas))
    workdir_lib.write_jsonl(os.path.join(workdir, "pt_decisions.jsonl"), log)
    writer.write_text(search_steps, "pt_genotype", genotype.to_string())
    return genotype


def _projection(alphas: Alphas) -> dict[str, np.ndarray]:
    """The projection entries of `alphas`, as writable host arrays."""
    return {k: np.array(v) for k, v in jax.device_get(alphas).items() if k.startswith(FIXED)}


def _device(proj: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in proj.items()}


def _accuracy(acc_fn, params, batches, mix_fn) -> float:
    mix = mix_fn()
    return float(np.mean([float(acc_fn(params, mix, b)) for b in batches]))


def _decisions_made(space: Space, proj: dict[str, np.ndarray]) -> int:
    """Decisions held in a projection: decided rows, and nodes whose edges were pruned."""
    count = 0
    for cell in space.groups:
        count += int(proj[f"{FIXED}decided/{cell}"].sum())
        keep = proj[f"{FIXED}edge_keep/{cell}"]
        count += sum(1 for rows in space.node_rows if _pruned(keep, rows))
    return count


def _pruned(edge_keep: np.ndarray, rows) -> bool:
    """Whether a node's incoming edges (`rows`) were pruned (a topology decision made)."""
    return min(edge_keep[list(rows)]) == 0


def decision_round(
    space: Space, proj: dict[str, np.ndarray], round_index: int, accuracy, weights, *, seed: int,
    epoch: int, log: list[dict],
) -> dict[str, np.ndarray]:  # fmt: skip
    """One round of decisions (`proj` updated in place and returned; records appended to `log`):
    in every alpha group, a random undecided row gets its op (operation phase) or, once all are
    decided, a random node with more than `keep_per_node` inputs loses the extra ones (topology
    phase). The random choices are drawn from (seed, round), so a resumed fine-tuning makes the
    same decisions. `accuracy(mix_fn)`: validation accuracy with mixing weights `mix_fn()`;
    `weights(proj, op_keep)`: the supernet's mixing weights under a projection."""
    rng = np.random.default_rng([seed, round_index])
    k = space.keep_per_node
    choices = [i for i, op in enumerate(space.ops) if op in (space.discrete_ops or space.ops)]
    for cell in space.groups:
        undecided = [int(e) for e in np.flatnonzero(proj[f"{FIXED}decided/{cell}"] == 0)]
        keep_key = f"{FIXED}edge_keep/{cell}"
        open_nodes = [
            i for i, rows in enumerate(space.node_rows)
            if k is not None and len(rows) > k and not _pruned(proj[keep_key], rows)
        ]  # fmt: skip
        if undecided:  # operation phase
            e = undecided[int(rng.integers(len(undecided)))]

            def without_op(op_i, cell=cell, e=e):
                keep = {c: np.ones(shape, np.float32) for c, shape in space.alpha_shapes.items()}
                keep[cell][e, op_i] = 0.0
                return accuracy(lambda: weights(proj, keep))

            best = decide_op(without_op, choices)
            proj[f"{FIXED}decided/{cell}"][e] = 1.0
            proj[f"{FIXED}onehot/{cell}"][e] = np.eye(space.num_ops)[best]
            log.append({"epoch": epoch, "cell": cell, "edge": space.row_labels[cell][e],
                        "op": space.ops[best]})  # fmt: skip
        elif open_nodes:  # topology phase
            edges = list(space.node_rows[open_nodes[int(rng.integers(len(open_nodes)))]])

            def without_edge(e, keep_key=keep_key):
                saved = proj[keep_key].copy()
                proj[keep_key][e] = 0.0
                try:
                    return accuracy(lambda: weights(proj))
                finally:
                    proj[keep_key] = saved

            kept = prune_edges(without_edge, edges, k)
            for e in edges:
                proj[keep_key][e] = 1.0 if e in kept else 0.0
            log.append({"epoch": epoch, "cell": cell,
                        "kept": [space.row_labels[cell][e] for e in kept]})  # fmt: skip
    return proj


__all__ = [
    "decide_op", "decision_round", "genotype_of", "project", "prune_edges", "run",
    "with_projection",
]  # fmt: skip
