"""Selection with a trained supernet: one-hot mixing weights of genotypes, random search and
regularised evolution on synthetic fitness functions whose optimum is known."""

import numpy as np
import pytest

from dnas import selection, spaces

DARTS = spaces.get("darts_cnn")
NB201 = spaces.get("nb201")
DARTS_CELL = DARTS.topology  # node and edge numbering


def _revalidated(g):
    """`g` built again from its fields by its space, which validates them (a ValueError
    otherwise) and must give back an equal genotype."""
    again = g.search_space.genotype(**g.fields())
    assert again == g
    return again


@pytest.mark.parametrize("space", [DARTS, NB201], ids=lambda s: s.name)
def test_random_genotypes_are_valid_and_their_mix_discretises_back(space):
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = space.random_genotype(rng)
        assert g.space == space.name
        _revalidated(g)
        mix = space.genotype_mix(g)
        for cell in space.groups:
            assert mix[cell].sum() == sum(len(node) for node in g[cell])
        back = space.discretise(mix)
        for cell in space.groups:  # same edges and ops (DARTS may list a node's edges
            # in another order)
            for a, b in zip(back[cell], g[cell], strict=True):
                assert sorted(a, key=lambda e: e[1]) == sorted(b, key=lambda e: e[1])


def test_published_genotype_mix():
    g = spaces.load("darts_v2")
    mix = DARTS.genotype_mix(g)
    # node 2 of the normal cell: sep_conv_3x3 from 0 and from 1
    sep = DARTS.op_index("sep_conv_3x3")
    assert mix["normal"][DARTS_CELL.edge_index(0, 2), sep] == 1
    assert mix["normal"][DARTS_CELL.edge_index(1, 2), sep] == 1
    assert mix["normal"].sum() == 8 and mix["reduce"].sum() == 8


def _changes(space, a, b):
    """Edges (op, input) of `a` that `b` does not have, over all nodes and cells."""
    return sum(
        len(set(na) - set(nb))
        for cell in space.groups
        for na, nb in zip(a[cell], b[cell], strict=True)
    )


@pytest.mark.parametrize("space", [DARTS, NB201], ids=lambda s: s.name)
def test_mutation_changes_exactly_one_edge(space):
    rng = np.random.default_rng(1)
    for _ in range(30):
        parent = space.random_genotype(rng)
        child = space.mutate(parent, rng)
        _revalidated(child)
        assert _changes(space, parent, child) == 1


def _fitness(space):
    """Number of nor_conv_3x3 (NB201) edges: the optimum has every edge at nor_conv_3x3."""
    return lambda g: float(sum(op == "nor_conv_3x3" for node in g["normal"] for op, _ in node))


def test_random_search_keeps_the_best_sample():
    best, history = selection.random_search(_fitness(NB201), NB201, 30, seed=0)
    assert len(history) == 30
    assert _fitness(NB201)(best) == max(score for _, score in history)


def test_regularised_evolution_climbs_to_the_optimum():
    fitness = _fitness(NB201)
    best, history = selection.evolution(
        fitness, NB201, population=10, sample_size=4, cycles=200, seed=0
    )
    initial_best = max(score for _, score in history[:10])
    assert len(history) == 210
    assert fitness(best) == 6.0 > initial_best  # all six edges nor_conv_3x3
    with pytest.raises(ValueError, match="sample_size"):
        selection.evolution(fitness, NB201, population=3, sample_size=5, cycles=1, seed=0)


def test_pt_decisions_follow_the_accuracy_rule():
    from dnas import pt

    # The op whose removal hurts most is kept; ties go to the first.
    drops = {1: 0.9, 3: 0.5, 4: 0.7, 5: 0.5}
    assert pt.decide_op(lambda k: drops[k], [1, 3, 4, 5]) == 3
    # Edges whose removal hurts least go first, one per round; each round scores every
    # remaining edge with that edge alone removed.
    value = {0: 0.1, 1: 0.3, 2: 0.2, 3: 0.05}  # accuracy lost when the edge is removed
    calls = []

    def accuracy_without(e):
        calls.append(e)
        return 1.0 - value[e]

    assert pt.prune_edges(accuracy_without, [0, 1, 2, 3], 2) == [1, 2]
    assert calls == [0, 1, 2, 3]  # each edge evaluated once


def test_pt_projection_and_genotype():
    import jax.numpy as jnp

    from dnas import pt

    space, cells = DARTS, DARTS_CELL
    proj = pt.projection_init(space)
    mix = {c: jnp.full((cells.num_edges, space.num_ops), 0.125) for c in space.groups}
    same = pt.project(mix, proj)
    np.testing.assert_array_equal(same["normal"], mix["normal"])
    e = cells.edge_index(1, 3)
    proj[f"{pt.FIXED}decided/normal"][e] = 1.0
    proj[f"{pt.FIXED}onehot/normal"][e, space.op_index("sep_conv_5x5")] = 1.0
    proj[f"{pt.FIXED}edge_keep/normal"][cells.edge_index(2, 4)] = 0.0
    keep = {c: np.ones((cells.num_edges, space.num_ops), np.float32) for c in space.groups}
    keep["reduce"][0, 2] = 0.0
    got = pt.project(mix, proj, keep)
    np.testing.assert_array_equal(
        got["normal"][e], np.eye(space.num_ops)[space.op_index("sep_conv_5x5")]
    )
    np.testing.assert_array_equal(got["normal"][cells.edge_index(2, 4)], 0.0)
    assert got["reduce"][0, 2] == 0 and got["reduce"][0, 1] == 0.125
    # A full projection is a genotype.
    g = spaces.load("darts_v2")
    proj = pt.projection_init(space)
    for cell, w in space.genotype_mix(g).items():
        proj[f"{pt.FIXED}onehot/{cell}"][:] = np.eye(space.num_ops)[w.argmax(-1)]
        proj[f"{pt.FIXED}edge_keep/{cell}"][:] = w.sum(-1)
    back = pt.genotype_of(space, proj)
    for cell in space.groups:
        for a, b in zip(back[cell], g[cell], strict=True):
            assert sorted(a, key=lambda e: e[1]) == sorted(b, key=lambda e: e[1])


def test_pdarts_pruning_and_skip_cap():
    from dnas import progressive, strategies

    rng = np.random.default_rng(0)
    alpha = rng.normal(size=(DARTS_CELL.num_edges, DARTS.num_ops))
    mask = np.ones_like(alpha)
    mask[:, DARTS.op_index("sep_conv_5x5")] = 0
    w = np.asarray(strategies.masked_softmax({"normal": alpha}, {"normal": mask})["normal"])
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    assert (w[:, DARTS.op_index("sep_conv_5x5")] == 0).all()
    new = progressive.prune(DARTS, w, mask, 3, last=False)
    assert (new.sum(-1) == 3).all() and (new <= mask).all()
    for e in range(DARTS_CELL.num_edges):  # the kept ops are the three largest remaining weights
        assert set(np.flatnonzero(new[e])) == set(np.argsort(-w[e])[:3])
    last = progressive.prune(DARTS, w, mask, 1, last=True)
    assert (last[:, DARTS.op_index("none")] == 0).all()
    # Skip cap: a normal cell of skip connections everywhere keeps only the two strongest. The
    # two strongest skips both enter the last node, where they outweigh every other edge; the
    # weakest chosen skip is dropped (its edge falls back to sep_conv_3x3, weaker than any skip)
    # until only those two are left, and dropped skips never come back.
    skip = DARTS.op_index("skip_connect")
    weights = {c: np.full((DARTS_CELL.num_edges, DARTS.num_ops), 0.01) for c in DARTS.groups}
    weights["normal"][:, skip] = np.linspace(0.5, 0.9, DARTS_CELL.num_edges)
    weights["normal"][:, DARTS.op_index("sep_conv_3x3")] = 0.2
    g = progressive.cap_skips(DARTS, weights, 2)
    nodes = zip(DARTS_CELL.nodes, g.normal, strict=True)
    skips = [(src, dst) for dst, node in nodes for op, src in node if op == "skip_connect"]
    strength = lambda e: weights["normal"][DARTS_CELL.edge_index(*e), skip]
    strongest = sorted(DARTS_CELL.edges, key=lambda e: -strength(e))
    assert sorted(skips) == sorted(strongest[:2]) == [(3, 5), (4, 5)]
    normal_ops = sorted(op for node in g.normal for op, _ in node)
    assert normal_ops == ["sep_conv_3x3"] * 6 + ["skip_connect"] * 2
    assert g.reduce == DARTS.discretise(weights).reduce  # the cap is on normal only
    assert progressive.cap_skips(DARTS, weights, 8) == DARTS.discretise(weights)


def test_rerank_rescores_the_best_distinct_genotypes():
    space = spaces.get("nb201")
    rng = np.random.default_rng(0)
    a, b, c, d = (space.random_genotype(rng) for _ in range(4))
    history = [(a, 0.5), (b, 0.9), (a, 0.8), (c, 0.7), (d, 0.1)]
    full = {a.to_string(): 0.6, b.to_string(): 0.4, c.to_string(): 0.65, d.to_string(): 1.0}
    calls = []

    def score_full(g):
        calls.append(g)
        return full[g.to_string()]

    best, rescored = selection.rerank(score_full, history, 3)
    assert calls == [b, a, c]  # by first score, a once; d (worst at first) never re-scored
    assert rescored == [(b, 0.4), (a, 0.6), (c, 0.65)]
    assert best == c
    with pytest.raises(ValueError, match="top >= 1"):
        selection.rerank(score_full, history, 0)
