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

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

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
