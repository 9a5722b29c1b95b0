"""SGAS (issue 19): the decision rule against planted importances, its corner cases as the
authors' code has them, and the supernet's active table: a pruned op costs nothing (its
multiply-adds gone from the traced count) and the shrunk supernet computes what the full one
computes under the same one-hot/zero mixing weights."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import (
    checkpoint,
    configlib,
    data,
    evaluate,
    loop,
    parallel,
    pipeline,
    search,
    search_step,
    sgas,
    spaces,
    supernet,
    train,
)
from dnas import workdir as workdir_lib
from dnas.state import init_variables

DARTS = spaces.get("darts_cnn")
NONE = DARTS.op_index("none")


def _planted(rank: np.ndarray, num_ops: int = 8, none: int = 0) -> np.ndarray:
    """Mixing weights whose importance (1 - W[none]) and certainty (a peaked p) both grow with
    `rank`: the row of rank r has W[none] = 0.5 - r / 40 and p with its peak at op 1 + r % 7."""
    n = len(rank)
    w = np.zeros((n, num_ops))
    for e, r in enumerate(rank):
        others = [k for k in range(num_ops) if k != none]
        p = np.full(len(others), 1.0)
        p[r % len(others)] += 0.5 * (r + 1)
        p /= p.sum()
        w[e, none] = 0.5 - r / 40
        w[e, others] = (1 - w[e, none]) * p
    return w


def _expected_order(rank, node_rows, keep):
    """Independently of `sgas`: rows by planted rank, each decided unless its node already has
    `keep` decided rows (then it was pruned)."""
    node_of = {r: i for i, rows in enumerate(node_rows) for r in rows}
    count, order = {}, []
    for row in np.argsort(-np.asarray(rank), kind="stable"):
        node = node_of[int(row)]
        if count.get(node, 0) < keep:
            count[node] = count.get(node, 0) + 1
            order.append(int(row))
    return order


@pytest.mark.parametrize("criterion", sgas.CRITERIA)
def test_edges_are_decided_in_the_order_of_their_planted_importance(criterion):
    rank = np.random.default_rng(3).permutation(14)
    weights = _planted(rank)
    status = np.zeros(14, int)
    order, ops = [], []
    # Criterion 2 needs a history (without one, stability is 0 everywhere, which normalises to
    # zeros and zeroes every score). The same p in every epoch would give stability 1
    # everywhere, zeros again; plant a history whose stability also grows with the rank.
    p = sgas.scores(weights, NONE).p
    history = [p * (1 - 0.01 * (13 - rank[:, None]))] if criterion == "cri2" else []
    for _ in range(sgas.num_decisions(DARTS.node_rows, DARTS.keep_per_node)):
        s = sgas.scores(weights, NONE, history, criterion)
        row, op = sgas.decide(s, status, NONE)
        status[row] = sgas.DECIDED
        status[sgas.prune(status, DARTS.node_rows, DARTS.keep_per_node)] = sgas.PRUNED
        order.append(row)
        ops.append(op)
    assert order == _expected_order(rank, DARTS.node_rows, 2)
    assert ops == [1 + rank[r] % 7 for r in order]  # each row's peak op, never `none`
    assert (status != sgas.CANDIDATE).all()
    assert [int((status[list(rows)] == sgas.DECIDED).sum()) for rows in DARTS.node_rows] == [2] * 4
    with pytest.raises(ValueError, match="nothing left to decide"):
        sgas.decide(s, status, NONE)


def test_scores_by_hand_and_the_authors_corner_cases():
    w = np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4], [0.1, 0.9, 0.0]])
    s = sgas.scores(w + 1e-12, none=0)
    np.testing.assert_allclose(s.importance, [0.5, 0.8, 0.9], atol=1e-9)
    np.testing.assert_allclose(s.certainty, [1.0, 0.0, 1.0], atol=1e-6)  # H / log 2
    np.testing.assert_allclose(s.score, [0.0, 0.0, 1.0], atol=1e-6)  # N(EI) * N(1 - H)
    # History: the histogram intersection with the earlier p, averaged over the epochs.
    h = [np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])]
    s2 = sgas.scores(w + 1e-12, 0, h, "cri2")
    np.testing.assert_allclose(s2.stability, [1.0, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(s2.score, [0.0, 0.0, 0.0], atol=1e-6)  # N(SS) of row 2 is 0
    # Equal certainty everywhere normalises to zeros: the first undecided row wins the tie,
    # whatever its importance.
    flat = np.array([[0.9, 0.05, 0.05], [0.1, 0.45, 0.45], [0.5, 0.25, 0.25]])
    s3 = sgas.scores(flat, 0)
    assert not s3.score.any()
    assert sgas.decide(s3, np.array([sgas.PRUNED, 0, 0]), 0) == (1, 1)
    with pytest.raises(ValueError, match="unknown SGAS criterion"):
        sgas.scores(w, 0, criterion="cri3")


def test_nb201_decides_every_edge_and_prunes_none():
    nb201 = spaces.get("nb201")
    assert sgas.num_decisions(nb201.node_rows, nb201.keep_per_node) == 6
    assert sgas.prune(np.ones(6, int), nb201.node_rows, nb201.keep_per_node) == []
    assert sgas.num_decisions(DARTS.node_rows, DARTS.keep_per_node) == 8


# --------------------------------------------------------------- the supernet's active table


def _plan():
    """Per group: status and chosen op of a search halfway through (decided, pruned and
    undecided rows in both cell types)."""
    out = {}
    for group, decided, pruned in (("normal", {0: 4, 3: 3}, (1,)), ("reduce", {5: 6}, (2, 7))):
        status, chosen = np.zeros(14, int), np.zeros(14, int)
        for row, op in decided.items():
            status[row], chosen[row] = sgas.DECIDED, op
        status[list(pruned)] = sgas.PRUNED
        out[group] = (status, chosen)
    return out


def test_pruned_ops_cost_nothing():
    plan = _plan()
    table = {g: sgas.active(status, chosen, 8, NONE) for g, (status, chosen) in plan.items()}
    full = DARTS.supernet(10, C=4, layers=3)
    shrunk = DARTS.supernet(10, C=4, layers=3, active=table)
    shape = (8, 8, 1)
    mix = {g: jnp.zeros((14, 8)) for g in plan}  # the count does not depend on the weights
    # Multiply-adds per image: the full supernet's minus every op the table turns off, priced
    # independently by the cost tables (per cell of each type, per row and op).
    costs = DARTS.op_costs(full, shape)
    macs = supernet.RESOURCES.index("macs")
    removed = sum(
        costs[g][:, ~table[g]][..., macs].sum() for g in plan
    )  # `none` costs 0 in the tables
    before = evaluate.model_stats(full, shape, mix)["macs"]
    after = evaluate.model_stats(shrunk, shape, mix)["macs"]
    assert removed > 0.15 * before  # the plan removes a good share of the work
    assert after == before - removed
    # With every op on, the table changes nothing.
    everything = {g: np.ones((14, 8), bool) for g in plan}
    assert evaluate.model_stats(DARTS.supernet(10, C=4, layers=3, active=everything), shape,
                                mix)["macs"] == before  # fmt: skip


def test_the_shrunk_supernet_computes_what_the_full_one_does_under_the_same_weights():
    """NAS-Bench-201 (cheaper to compile than DARTS; the same `MixedCell`): decided, pruned and
    undecided rows in one cell; loss and gradients as the full supernet's."""
    nb201 = spaces.get("nb201")
    status = np.array([sgas.DECIDED, sgas.PRUNED, 0, sgas.DECIDED, 0, sgas.PRUNED])
    chosen = np.array([3, 0, 0, 1, 0, 0])
    table = {"normal": sgas.active(status, chosen, 5, nb201.op_index("none"))}
    w = np.array(jax.nn.softmax(jax.random.normal(jax.random.key(0), (6, 5))))
    w[status != 0] = 0
    w[[0, 3], [3, 1]] = 1.0
    mix = {"normal": jnp.asarray(w, jnp.float32)}
    full = nb201.supernet(10, C=4, layers=1)
    shrunk = nb201.supernet(10, C=4, layers=1, active=table)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    params = init_variables(full, jax.random.key(2), x, mix)["params"]
    labels = jnp.arange(4)

    def loss(model):
        def f(p, m):
            logits = model.apply({"params": p}, x, m, train=True)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(4), labels])

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, mix)

    (l_full, (gp_full, gm_full)), (l_shrunk, (gp_shrunk, gm_shrunk)) = loss(full), loss(shrunk)
    np.testing.assert_allclose(l_shrunk, l_full, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(gp_shrunk), jax.tree.leaves(gp_full), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    on = table["normal"]  # the mixing weights' gradients agree where the op is computed, else 0
    got, want = np.asarray(gm_shrunk["normal"]), np.asarray(gm_full["normal"])
    np.testing.assert_allclose(got[on], want[on], rtol=1e-5, atol=1e-6)
    assert not got[~on].any() and np.abs(want[~on & (np.arange(5) != 0)]).max() > 0


# ------------------------------------------------------------------------- the search itself


class _Stopped(Exception):
    """Stands for a crash right after a checkpoint."""


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _search_config(shrink: bool):
    """NAS-Bench-201 (6 edges, none pruned), criterion 2, a decision after each of epochs 2-7,
    decided edges' weights frozen."""
    c = configlib.default_config()
    c.space, c.progress, c.log_every_steps = "nb201", False, 1
    s = c.search
    s.C, s.layers, s.epochs, s.batch_size = 2, 1, 7, 64
    s.sgas, s.sgas_warmup_epochs, s.sgas_decision_freq, s.sgas_history = "cri2", 1, 1, 2
    s.sgas_freeze_decided, s.sgas_shrink = True, shrink
    return c


def test_a_sgas_search_decides_every_edge_freezes_it_and_resumes(tmp_path, monkeypatch):
    """`_search_config`; the process stops after epoch 3's checkpoint and a new one finishes the
    search. With `search.sgas_shrink=False`: one program, the full supernet, for the whole
    search (a shrinking search compiles one per table, 6 here, over a minute of compilation;
    the next test runs the shrinking driver with compilation stubbed, the one before this
    computes with a shrunk supernet)."""
    c = _search_config(shrink=False)
    workdir = tmp_path / "sgas"
    spe = len(data.digits_splits().train) // 2 // 64
    save = checkpoint.Checkpointer.save
    params, stopped = {}, []  # step -> the parameters checkpointed (both processes)

    def save_then_stop(self, step, state, *, metadata=None, wait=True):
        params[step] = jax.device_get(state.params)
        saved = save(self, step, state, metadata=metadata, wait=True)
        if step == 3 * spe and not stopped:
            stopped.append(step)
            self.close()
            raise _Stopped(step)
        return saved

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_stop)
    with pytest.raises(_Stopped):
        search.run(c, str(workdir))
    assert [d["epoch"] for d in _records(workdir / sgas.DECISIONS)] == [2, 3]
    genotype = search.run(c, str(workdir))
    decisions = _records(workdir / sgas.DECISIONS)
    assert [d["epoch"] for d in decisions] == [2, 3, 4, 5, 6, 7]
    assert sorted(d["row"] for d in decisions) == list(range(6))  # each edge once, none pruned
    assert all(d["stability"] > 0 for d in decisions)  # a history before every decision
    assert [r["epoch"] for r in _records(workdir / sgas.SCORES)] == [1, 2, 3, 4, 5, 6, 7]
    # The genotype is the decisions.
    nb201 = spaces.get("nb201")
    chosen = np.argmax(nb201.genotype_mix(genotype)["normal"], -1)
    assert {d["row"]: d["op"] for d in decisions} == {r: nb201.ops[k] for r, k in enumerate(chosen)}
    # Without shrinking, one program per process, each the full supernet's.
    logged = [r for r in _records(workdir / "metrics.jsonl") if "sgas/macs" in r]
    assert [r["step"] for r in logged] == [0, 3 * spe]
    assert [r["sgas/programs"] for r in logged] == [1, 1]
    zeros = {g: jnp.zeros(shape) for g, shape in nb201.alpha_shapes.items()}
    full = evaluate.model_stats(nb201.supernet(10, C=2, layers=1), (8, 8, 1), zeros)["macs"]
    assert [r["sgas/macs"] for r in logged] == [full, full]
    # The frozen alphas: a decided row's alphas do not move after its decision.
    final = workdir_lib.load_arrays(workdir / workdir_lib.ALPHAS)
    at = {d["row"]: d["epoch"] for d in decisions}
    for row, epoch in at.items():
        then = workdir_lib.load_arrays(workdir_lib.alpha_history_path(str(workdir), epoch))
        np.testing.assert_array_equal(final["normal"][row], then["alphas/normal"][row])
    # sgas_freeze_decided: an edge's weights stop with its decision. The two decided by the
    # stop (epochs 2 and 3) have the same weights at the stop and at the end; the others
    # trained on.
    topology = nb201.topology
    at_stop, final = params[3 * spe]["cell_0"], params[max(params)]["cell_0"]
    for d in decisions:
        from_inputs = topology.edges[d["row"]][0] < topology.num_inputs
        scan = "input_edges" if from_inputs else "node_edges"
        i = supernet.edge_group(topology, from_inputs).index(d["row"])
        pairs = zip(jax.tree.leaves(at_stop[scan]), jax.tree.leaves(final[scan]), strict=True)
        same = [np.array_equal(a[i], b[i]) for a, b in pairs]
        assert all(same) if d["epoch"] <= 3 else not any(same), d
    # Read back (a distillation teacher, `dnas logits`): the supernet under the decisions.
    _, su, state = train.load_searched(str(workdir))
    w = np.asarray(su.strategy.final_weights(state.alphas)["normal"])
    np.testing.assert_array_equal(w, nb201.genotype_mix(genotype)["normal"])
    # dnas plot draws the scores with the decisions (one panel per edge).
    from dnas import viz

    run = viz.load_run(str(workdir))
    fig = viz.sgas_scores(run, "normal")
    scores = _records(workdir / sgas.SCORES)
    for e, ax in enumerate(fig.axes[:6]):
        np.testing.assert_allclose(ax.lines[0].get_ydata(), [r["score"][e] for r in scores])
    written, _ = viz.save_all(run, str(tmp_path / "plots"))
    assert any(p.endswith("sgas_scores_normal.png") for p in written)


def test_a_shrinking_search_compiles_a_smaller_program_for_each_table_and_resumes_its_table(
    tmp_path, monkeypatch
):
    """search.sgas_shrink: `sgas.Driver` runs every step with the program of the current
    decisions' table (decided edges compute their op, pruned ones nothing), built anew when a
    decision changes the table, each supernet's multiply-adds below the one before; a driver
    started on a resumed state builds that state's table. Driven here as `search.run` drives it
    (a step, then `update_state` at each epoch's end), with compilation stubbed: each program a
    stand-in that counts the step and says which program it is. (What a shrunk supernet
    computes: `test_the_shrunk_supernet_computes_what_the_full_one_does_under_the_same_weights`;
    a whole search and its resume: the test before this one.)"""
    c = _search_config(shrink=True)
    su = search_step.setup(c)
    spe, mesh = su.steps_per_epoch, parallel.make_mesh(1)
    built = []  # the table of each program compiled, in order

    def compile_step(step_fn, what, verbose, state, *batch, **kwargs):
        program = len(built) - 1

        def run(state, *batch):
            return state.replace(step=state.step + 1), {"program": program}

        return run, {"compile_s": 0.0}

    class Writer:
        def __init__(self):
            self.records = []

        def write_scalars(self, step, scalars):
            self.records.append({"step": int(step), **scalars})

    def driver(state):
        d = sgas.Driver(c, str(tmp_path), writer=Writer())
        build = d._build
        d._build = lambda table: (built.append(table), build(table))[1]
        _, start = d.start(su, search_step.create_state(c, su))
        state = start if state is None else start.replace(alphas=state.alphas, step=state.step)
        step, _, _ = d.compile(state, iter([("x", "y")]), mesh, None)
        return d, step, state

    monkeypatch.setattr(loop, "compile_step", compile_step)
    d, step, state = driver(None)
    ran, at_stop = [], None  # the program of every step; the state after epoch 3
    for epoch in range(1, c.search.epochs + 1):
        for _ in range(spe):
            state, m = step(state, "x", "y")
            ran.append(m["program"])
        state = d.update_state(state, epoch * spe)
        if epoch == 3:
            at_stop = state
    decisions = _records(tmp_path / sgas.DECISIONS)
    assert [x["epoch"] for x in decisions] == [2, 3, 4, 5, 6, 7]
    # Program k computes the table of the first k decisions (independently: `sgas.active` of
    # the logged decisions), and runs from the epoch after the k-th decision.
    nb201 = spaces.get("nb201")
    tables = []
    for k in range(6):
        status, chosen = np.zeros(6, int), np.zeros(6, int)
        for x in decisions[:k]:
            status[x["row"]], chosen[x["row"]] = sgas.DECIDED, nb201.ops.index(x["op"])
        tables.append({"normal": sgas.active(status, chosen, 5, nb201.op_index("none"))})
    assert len(built) == 6
    for got, want in zip(built, tables, strict=True):
        np.testing.assert_array_equal(got["normal"], want["normal"])
    assert ran == [0] * 2 * spe + [k for k in range(1, 6) for _ in range(spe)]
    logged = [r for r in d.writer.records if "sgas/macs" in r]
    assert [r["step"] for r in logged] == [i * spe for i in (0, 2, 3, 4, 5, 6)]
    assert [r["sgas/programs"] for r in logged] == [1, 2, 3, 4, 5, 6]
    macs = [r["sgas/macs"] for r in logged]
    assert all(a > b for a, b in itertools.pairwise(macs))
    # A new driver on the state checkpointed after epoch 3 (a resumed search): its first
    # program is the table of those 2 decisions, with the multiply-adds logged for it before.
    built.clear()
    d, step, state = driver(at_stop)
    state, m = step(state, "x", "y")
    assert m["program"] == 0 and len(built) == 1
    np.testing.assert_array_equal(built[0]["normal"], tables[2]["normal"])
    resumed = [r for r in d.writer.records if "sgas/macs" in r]
    assert [(r["step"], r["sgas/programs"], r["sgas/macs"]) for r in resumed] == [
        (3 * spe, 1, macs[2])
    ]


def test_a_staged_strategy_with_sgas_is_refused_before_anything_runs(tmp_path):
    c = configlib.load("experiments/pdarts/cifar10_search.py:smoke")
    c.search.sgas, c.search.epochs = "cri1", 9
    c.search.sgas_warmup_epochs, c.search.sgas_decision_freq = 1, 1  # after the alphas' warm-up
    with pytest.raises(configlib.ConfigError, match="runs in stages; SGAS decides within one"):
        pipeline.search_genotype(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
