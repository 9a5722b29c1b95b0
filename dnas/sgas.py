"""SGAS (Li et al., "SGAS: Sequential Greedy Architecture Search", CVPR 2020): the architecture is
decided edge by edge during the search, each decision frozen, the supernet shrinking as it goes.

This module holds the decision rule, as the authors' code computes it (lightaime/sgas,
`cnn/train_search.py` `edge_decision`, `cnn/utils.py`), on the host in float64, per alpha group
(cell type) of E rows (edges) and K ops, from the mixing weights W (a softmax per row):

* edge importance  EI[e] = sum of W[e, k] over the ops other than `none` (1 - W[e, none]);
* selection certainty  1 - H(p[e]) / log(K - 1), p[e] = W[e, ops other than none] / EI[e];
* selection stability (criterion 2)  SS[e] = mean over the last `history` epochs' p of the
  histogram intersection sum_k min(p_then[e, k], p[e, k]); 0 without a history;
* each normalised over all E rows (decided and pruned rows included) as
  (v - min v) / (max v - min v), all zeros when max = min;
* score = N(EI) * N(certainty) (criterion 1) or N(EI) * N(certainty) * N(SS) (criterion 2).

`decide` takes the undecided row of highest score (ties: the first) and its op of highest p
(never `none`); `prune` then removes, in a space whose nodes keep `keep_per_node` inputs (DARTS:
2), every undecided incoming edge of a node that has that many decided ones. A decided edge
outputs its op alone (weight 1), a pruned edge nothing; neither is computed again
(`active`: the supernets' table of computed ops, `supernet.MixedCell.active`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnas import (
    evaluate,
    loop,
    parallel,
    pt,
    relaxations,
    search_step,
    spaces,
    strategies,
    supernet,
)
from dnas import workdir as workdir_lib
from dnas.pt import FIXED

CRITERIA = ("cri1", "cri2")
CANDIDATE, DECIDED, PRUNED = 0, 1, 2


class Scores(NamedTuple):
    """Per row of one alpha group: the three measures, the score, and the op distribution p
    over the ops other than `none` (what the stability of the next epochs compares with)."""

    importance: np.ndarray
    certainty: np.ndarray
    stability: np.ndarray
    score: np.ndarray
    p: np.ndarray


def normalise(v: np.ndarray) -> np.ndarray:
    """(v - min) / (max - min) over all rows; zeros when every value is the same."""
    v = np.asarray(v, np.float64)
    span = v.max() - v.min()
    return np.zeros_like(v) if span == 0 else (v - v.min()) / span


def scores(
    weights: np.ndarray, none: int, history: Sequence[np.ndarray] = (), criterion: str = "cri1"
) -> Scores:
    """SGAS' scores of one alpha group's rows from their mixing weights `weights` (E, K), the
    column of `none` being `none`; `history`: p of earlier epochs (criterion 2)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown SGAS criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    w = np.asarray(weights, np.float64)
    w = w / w.sum(-1, keepdims=True)
    others = [k for k in range(w.shape[1]) if k != none]
    importance = w[:, others].sum(-1)
    p = w[:, others] / importance[:, None]
    entropy = -(p * np.log(np.clip(p, 1e-300, None))).sum(-1)
    certainty = 1.0 - entropy / np.log(len(others))
    stability = np.zeros(len(w))
    if history:
        stability = np.mean([np.minimum(h, p).sum(-1) for h in history], axis=0)
    score = normalise(importance) * normalise(certainty)
    if criterion == "cri2":
        score = score * normalise(stability)
    return Scores(importance, certainty, stability, score, p)


def decide(s: Scores, status: np.ndarray, none: int) -> tuple[int, int]:
    """(row, op column) of the next decision: the undecided row of highest score (ties: the
    first) and its op of highest p (ties: the first; never `none`)."""
    candidates = np.asarray(status) == CANDIDATE
    if not candidates.any():
        raise ValueError("every edge is decided or pruned: nothing left to decide")
    row = int(np.argmax(np.where(candidates, s.score, -np.inf)))
    others = [k for k in range(s.p.shape[1] + 1) if k != none]
    return row, others[int(np.argmax(s.p[row]))]


def prune(status: np.ndarray, node_rows: Sequence[Sequence[int]], keep: int | None) -> list[int]:
    """The undecided rows to prune: every candidate incoming edge of a node that already has
    `keep` decided ones (None: the space keeps every edge; nothing is pruned)."""
    if keep is None:
        return []
    status = np.asarray(status)
    out = []
    for rows in node_rows:
        if sum(status[r] == DECIDED for r in rows) >= keep:
            out += [r for r in rows if status[r] == CANDIDATE]
    return out


def num_decisions(node_rows: Sequence[Sequence[int]], keep: int | None) -> int:
    """Decisions that settle a cell: min(keep, inputs) per node (DARTS: 8; NAS-Bench-201: all 6
    edges)."""
    return sum(len(rows) if keep is None else min(keep, len(rows)) for rows in node_rows)


def active(status: np.ndarray, chosen: np.ndarray, num_ops: int, none: int) -> np.ndarray:
    """(E, K) bool: the ops each row computes. A candidate row computes every op but `none`
    (which is zero), a decided row its chosen op, a pruned row nothing."""
    status, chosen = np.asarray(status), np.asarray(chosen)
    table = np.zeros((len(status), num_ops), bool)
    table[status == CANDIDATE] = True
    table[:, none] = False
    decided = np.flatnonzero(status == DECIDED)
    table[decided, chosen[decided]] = True
    return table


# ---------------------------------------------------------------------------------------------
# The search with SGAS' decisions (`search.sgas`): a driver of `search.run`'s loop.

HISTORY = f"{FIXED}sgas_history/"  # per group: (history, E, K - 1) of the last epochs' p
HISTORY_LEN = f"{FIXED}sgas_history_len"
DECISIONS = "sgas_decisions.jsonl"  # one line per decision (and the rows it pruned)
SCORES = "sgas_scores.jsonl"  # one line per epoch and group: the four measures of every row


def decision_epochs(warmup: int, freq: int, n: int) -> list[int]:
    """The epochs (counted from 1) after which the n decisions are made: the authors' 0-based
    `epoch >= warmup and (epoch - warmup) % freq == 0`, i.e. after epochs warmup + 1,
    warmup + 1 + freq, ..."""
    return [warmup + 1 + i * freq for i in range(n)]


def status_of(space, fixed: Mapping[str, np.ndarray], group: str) -> tuple[np.ndarray, np.ndarray]:
    """(status, chosen op) per row of `group` from the decisions held in the alphas' fixed
    entries (`pt.projection_init`: decided one-hot rows, edge_keep 0 for pruned rows)."""
    decided = np.asarray(fixed[f"{FIXED}decided/{group}"]) > 0
    kept = np.asarray(fixed[f"{FIXED}edge_keep/{group}"]) > 0
    status = np.where(decided, DECIDED, np.where(kept, CANDIDATE, PRUNED))
    return status, np.argmax(np.asarray(fixed[f"{FIXED}onehot/{group}"]), -1)


def init_entries(space, history: int) -> dict[str, np.ndarray]:
    """The fixed alpha entries SGAS keeps its decisions (and criterion 2's history) in."""
    out = pt.projection_init(space)
    if history:
        for group, (rows, num_ops) in space.alpha_shapes.items():
            out[f"{HISTORY}{group}"] = np.zeros((history, rows, num_ops - 1), np.float32)
        out[HISTORY_LEN] = np.zeros((), np.float32)
    return out


def freezing(strategy: strategies.Strategy) -> strategies.Strategy:
    """`strategy` under SGAS' decisions (`pt.with_projection`: decided rows one-hot, pruned rows
    zero), the alphas of decided and pruned rows frozen (the authors set them
    `requires_grad=False`)."""
    inner = strategy.after_alpha_update

    def after_alpha_update(before, after, key, step):
        if inner is not None:
            after = inner(before, after, key, step)
        out = dict(after)
        for group in relaxations.cell_types(before):
            decided = before[f"{FIXED}decided/{group}"] > 0
            frozen = decided | (before[f"{FIXED}edge_keep/{group}"] == 0)
            out[group] = jnp.where(frozen[:, None], before[group], after[group])
        return out

    projected = pt.with_projection(strategy)
    return projected._replace(name=f"{strategy.name}+sgas", after_alpha_update=after_alpha_update)


def frozen_weights(model, space, input_shape) -> Callable[[Any, Any], Any]:
    """`update_mask(params, alphas)` for `search_step.make_step`: 0 on every parameter of a
    decided or pruned edge of every mixed cell of `model` (SGAS' decisions in the alphas'
    fixed entries), 1 elsewhere: the layer-freezing form of progressive freezing."""
    from flax import traverse_util

    cells = [(c.path, c.group, c.topology) for c, _ in
             supernet.traced_cells(model, space.alpha_shapes, input_shape)]  # fmt: skip

    def update_mask(params, alphas):
        flat = traverse_util.flatten_dict(params)
        out = {k: jnp.ones(v.shape, jnp.float32) for k, v in flat.items()}
        for path, group, topology in cells:
            train = (alphas[f"{FIXED}decided/{group}"] == 0) & (
                alphas[f"{FIXED}edge_keep/{group}"] > 0
            )
            for scan, from_inputs in (("input_edges", True), ("node_edges", False)):
                rows = jnp.asarray(supernet.edge_group(topology, from_inputs))
                keep = train[rows].astype(jnp.float32)
                prefix = (*path, scan)
                for k in out:
                    if k[: len(prefix)] == prefix:
                        out[k] = jnp.broadcast_to(keep.reshape(-1, *[1] * (out[k].ndim - 1)),
                                                  out[k].shape)  # fmt: skip
        return traverse_util.unflatten_dict(out)

    return update_mask


class Driver:
    """SGAS inside `search.run`: the set-up's strategy and alpha optimiser under the decisions
    and the initial alphas with their fixed entries (`start`), a step compiled anew for every
    table of computed ops (`compile`: decided rows compute one op, pruned rows none; the
    parameters keep their shapes, so the state carries over), and the decisions at epoch ends
    (`update_state`, checkpointed with the state, so a resumed search makes the same ones). The
    genotype is the projected strategy's selection: the decisions."""

    def __init__(self, config, workdir: str, writer=None, print_fn=None):
        s = config.search
        self.config, self.workdir, self.s = config, workdir, s
        self.space = spaces.get(config.space)
        self.none = self.space.op_index("none")
        self.criterion, self.history = s.sgas, s.sgas_history if s.sgas == "cri2" else 0
        self.n = num_decisions(self.space.node_rows, self.space.keep_per_node)
        self.epochs = decision_epochs(s.sgas_warmup_epochs, s.sgas_decision_freq, self.n)
        self.programs: dict[bytes, Callable] = {}
        self.writer, self.print_fn = writer, print_fn
        self.su = None
        self.table: dict[str, np.ndarray] | None = None

    # -- set-up ----------------------------------------------------------------------------------

    def start(self, su, state):
        """(`su` with the strategy under the decisions and an alpha optimiser that leaves the
        fixed entries alone, `state` (a search's initial one) with those entries)."""
        self.base_weights = su.strategy.final_weights  # what the scores read: no projection
        entries = init_entries(self.space, self.history)
        alphas = dict(state.alphas) | {k: jnp.asarray(v) for k, v in entries.items()}
        alpha_tx = pt.alpha_optimizer(su.alpha_tx, alphas)
        self.su = dataclasses.replace(su, strategy=freezing(su.strategy), alpha_tx=alpha_tx)
        return self.su, state.replace(alphas=alphas, alpha_opt_state=alpha_tx.init(alphas))

    # -- the step, one program per table -----------------------------------------------------------

    def _table(self, alphas) -> dict[str, np.ndarray]:
        fixed = jax.device_get({k: v for k, v in alphas.items() if k.startswith(FIXED)})
        num_ops = len(self.space.ops)
        return {
            g: active(*status_of(self.space, fixed, g), num_ops, self.none)
            for g in self.space.groups
        }

    def _build(self, table: Mapping[str, np.ndarray] | None):
        """(supernet, search step) of the supernet that computes `table`'s ops."""
        config, su, s = self.config, self.su, self.s
        # The set-up's supernet (its autotuned forms, sizes and options) computing `table`'s
        # ops (None: every op; the projection still zeroes what the decisions removed).
        model = su.model if table is None else su.model.clone(active=supernet.active_table(table))
        loss_fn = search_step.make_loss_fn(
            model, su.strategy, su.info, search_step.Augmentation.from_config(s), su.dtype,
            teacher=su.teacher, kd_weight=s.kd_weight, kd_temperature=s.kd_temperature,
        )  # fmt: skip
        step_fn = search_step.make_step(
            loss_fn, su.strategy, su.weight_tx, su.alpha_tx, su.learning_rate,
            alpha_start_step=s.alpha_warmup_epochs * su.steps_per_epoch,
            hardware_objective=search_step.make_hardware_objective(
                config, su.strategy, model, su.info
            ),
            distilling=su.teacher is not None,
            update_mask=frozen_weights(model, self.space, su.info.input_shape)
            if s.sgas_freeze_decided else None,
        )  # fmt: skip
        return model, step_fn

    def compile(self, state, batches, mesh, clock, consts=None):
        """`loop.compile_on_first`'s result for the search loop: a step that runs the program
        of the current decisions, compiling one for each new table (7-9 in a DARTS search)."""
        first = next(batches)
        self.mesh, self.clock, self.consts = mesh, clock, consts
        self.table = self._table(state.alphas)
        _, record = self._program(state, first, log=False)  # the loop logs the first's

        def step(state, *batch):
            return self._program(state, batch)[0](state, *batch)

        return step, record, itertools.chain([first], batches)

    def _program(self, state, batch, log: bool = True) -> tuple[Callable, dict]:
        """The compiled step of the current table (compiled now if it is new); a new one's
        compile time and the supernet's multiply-adds per image go to the metrics."""
        key = b"".join(np.packbits(self.table[g]).tobytes() for g in self.space.groups)
        if not self.s.sgas_shrink:
            key = b"full"
        if key in self.programs:
            return self.programs[key], {}
        model, step_fn = self._build(self.table if self.s.sgas_shrink else None)
        compiled, record = loop.compile_step(
            step_fn, "search step", self.config.progress, state, *batch, mesh=self.mesh,
            clock=self.clock, consts=self.consts,
        )  # fmt: skip
        self.programs[key] = compiled
        if self.writer is not None:
            macs = evaluate.model_stats(model, self.su.info.input_shape, self._zeros())["macs"]
            scalars = {"sgas/macs": macs, "sgas/programs": len(self.programs)}
            if log:
                scalars |= {f"search/{k}": v for k, v in record.items()}
            self.writer.write_scalars(int(jax.device_get(state.step)), scalars)
        return compiled, record

    def _zeros(self):
        return {g: jnp.zeros(shape) for g, shape in self.space.alpha_shapes.items()}

    # -- decisions ---------------------------------------------------------------------------------

    def update_state(self, state, step: int):
        """At the end of epoch `step // steps_per_epoch` (from 1): every group's scores; a
        decision in each group with a candidate left if the epoch is a decision epoch; the
        epoch's p appended to the history. Returns the state the next epoch starts from."""
        epoch = step // self.su.steps_per_epoch
        alphas = {k: np.array(v) for k, v in jax.device_get(state.alphas).items()}
        weights = jax.device_get(self.base_weights(alphas))
        decide_now = epoch in self.epochs
        lines, decisions = [], []
        for g in self.space.groups:
            history = []
            if self.history:  # the last epochs' p, oldest first
                filled = int(alphas[HISTORY_LEN])
                history = list(alphas[f"{HISTORY}{g}"][self.history - filled :])
            s = scores(weights[g], self.none, history, self.criterion)
            status, _ = status_of(self.space, alphas, g)
            record = {"epoch": epoch, "step": step, "group": g}
            lines.append(record | {k: getattr(s, k).round(6).tolist() for k in Scores._fields
                                   if k != "p"})  # fmt: skip
            if decide_now and (status == CANDIDATE).any():
                row, op = decide(s, status, self.none)
                alphas[f"{FIXED}decided/{g}"][row] = 1
                alphas[f"{FIXED}onehot/{g}"][row] = np.eye(len(self.space.ops))[op]
                status[row] = DECIDED
                pruned = prune(status, self.space.node_rows, self.space.keep_per_node)
                alphas[f"{FIXED}edge_keep/{g}"][pruned] = 0
                decisions.append(record | {
                    "row": row, "edge": list(self.space.topology.edges[row]),
                    "op": self.space.ops[op], "score": float(s.score[row]),
                    "importance": float(s.importance[row]),
                    "certainty": float(s.certainty[row]),
                    "stability": float(s.stability[row]), "pruned": pruned,
                    "decided": int((status == DECIDED).sum()),
                })  # fmt: skip
            if self.history:  # the newest p last; at most `history` epochs
                stack = np.concatenate([alphas[f"{HISTORY}{g}"], s.p[None].astype(np.float32)])
                alphas[f"{HISTORY}{g}"] = stack[-self.history :]
        if self.history:
            alphas[HISTORY_LEN] = np.float32(min(int(alphas[HISTORY_LEN]) + 1, self.history))
        self._log(epoch, lines, decisions)
        if not decisions and not self.history:
            return state
        self.table = self._table(alphas)
        fixed = {k: jnp.asarray(v) for k, v in alphas.items() if k.startswith(FIXED)}
        return parallel.replicate(state.replace(alphas=dict(state.alphas) | fixed), self.mesh)

    def _log(self, epoch: int, lines: list[dict], decisions: list[dict]) -> None:
        if jax.process_index() != 0:
            return
        for name, new in ((SCORES, lines), (DECISIONS, decisions)):
            path = os.path.join(self.workdir, name)
            records = workdir_lib.read_jsonl(path)
            kept = [r for r in records if r["epoch"] < epoch]  # a redone epoch
            if new or len(kept) != len(records):
                workdir_lib.write_jsonl(path, kept + new)
        if self.writer is not None and decisions:  # decisions made so far, per cell type
            made = {f"sgas/decided/{d['group']}": d["decided"] for d in decisions}
            self.writer.write_scalars(lines[0]["step"], made)
        if self.print_fn is not None:
            for d in decisions:
                self.print_fn(f"sgas: epoch {epoch}: {d['group']} edge {d['edge']} -> {d['op']} "
                              f"(score {d['score']:.3f}); pruned rows {d['pruned']}")  # fmt: skip
