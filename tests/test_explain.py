"""`dnas explain`'s two measurements against independent computations (issue 19): the op norms a
search cell sows equal the norms of each edge's weighted ops computed node by node with the
standalone modules; a network edited at apply time (an edge removed, an op replaced) computes what
the network of the edited genotype computes with the same variables; unchanged edits change
nothing. The command itself runs on the shared tiny `dnas run` in tests/test_cli_commands.py and
in notebook 04 (tests/test_notebooks.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import network, ops, spaces, state, supernet


def _reference_norms(space, cell_params, inputs, w, reduction, bn_after_pool):
    """(edges, ops) batch-mean L2 norm of w[e, k] * op_k(node_src), node by node with
    `ops.make_op` modules and the cell's parameters (as tests/test_supernet.py's reference)."""
    states = list(inputs)
    C = inputs[0].shape[-1]
    norms = np.zeros((space.num_edges, space.num_ops))
    for dst in space.nodes:
        total = 0.0
        for src in range(dst):
            e = space.edge_index(src, dst)
            stride = 2 if reduction and src < space.num_inputs else 1
            for k, op in enumerate(space.primitives):
                if op == "none":
                    continue
                module = ops.make_op(op, C, C, stride, affine=False, track_running_stats=False)
                params = supernet.edge_params(cell_params, space, src, dst, op)
                y = module.apply({"params": params} if params else {}, states[src], True)
                if bn_after_pool and op.endswith("pool_3x3"):
                    mean, var = ops.batch_moments(y)
                    y = ops.normalize(y, mean, var, 1e-5)
                y = w[e, k] * y
                norms[e, k] = float(jnp.mean(jnp.sqrt(jnp.sum(y**2, axis=(1, 2, 3)))))
                total = total + y
        states.append(total)
    return norms


def test_sown_op_norms_equal_the_norms_of_each_edge_s_weighted_ops():
    """NAS-Bench-201's cell: both of the cell's scans (edges out of the input node, and out of
    intermediate nodes) and every op. (A DARTS reduction cell also passed: 25 s more.)"""
    space, reduction, bn_after_pool = spaces.get("nb201").topology, False, False
    C = 4
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(0), space.num_inputs + 1)
        inputs = [jax.random.normal(k, (2, 8, 8, C), jnp.float64) for k in keys[1:]]
        w = jax.nn.softmax(jax.random.normal(keys[0], (space.num_edges, space.num_ops)), -1)
        w = w.astype(jnp.float64)
        cell = supernet.MixedCell(space, C, reduction, bn_after_pool=bn_after_pool)
        params = cell.init(jax.random.key(1, impl="unsafe_rbg"), inputs, w, True)["params"]
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        observe = lambda p: cell.apply({"params": p}, inputs, w, True, mutable=[supernet.OP_NORMS])
        _, state = jax.jit(observe)(params)
        (got,) = state[supernet.OP_NORMS][cell.group]
        want = _reference_norms(space, params, inputs, np.asarray(w), reduction, bn_after_pool)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        assert np.all(np.asarray(got)[:, space.primitives.index("none")] == 0)


def test_op_shares_are_each_edge_s_norms_normalised_and_averaged_over_its_cells():
    sp = spaces.get("nb201")
    model = sp.supernet(10, C=4, layers=1)  # 3 search cells
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    mix = {"normal": jax.nn.softmax(jax.random.normal(jax.random.key(1), (6, 5)), -1)}
    variables = state.init_variables(model, jax.random.key(2), x, mix, train=True)
    assert set(variables) == {"params"}  # nothing observed in `init`
    observe = lambda v: model.apply(v, x, mix, train=True, mutable=[supernet.OP_NORMS])[1]
    norms = jax.jit(observe)(variables)[supernet.OP_NORMS]
    sown = jax.tree.leaves(norms, is_leaf=lambda v: isinstance(v, tuple))
    assert [len(v) for v in sown] == [1, 1, 1]  # one entry per search cell
    want = np.mean([n / n.sum(-1, keepdims=True) for n in (np.asarray(v[0]) for v in sown)], 0)
    got = supernet.shares_of(norms)
    np.testing.assert_allclose(got["normal"], want, rtol=1e-6)
    np.testing.assert_allclose(np.sum(got["normal"], -1), 1.0, rtol=1e-6)


def _edited_genotype(space, genotype, group, index, op):
    cells = {g: [list(node) for node in genotype[g]] for g in space.groups}
    flat = [(n, s) for n, node in enumerate(cells[group]) for s in range(len(node))]
    node, slot = flat[index]
    cells[group][node][slot] = (op, cells[group][node][slot][1])
    return genotype.replace(**{g: tuple(tuple(n) for n in c) for g, c in cells.items()})


@pytest.fixture(scope="module")
def darts_network():
    sp = spaces.get("darts_cnn")
    genotype = sp.known["darts_v2"]
    model = sp.network(genotype, 10, input_shape=(8, 8, 3), C=4, layers=3)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    variables = state.init_variables(model, jax.random.key(1), x, train=False)
    key = jax.random.key(2)
    # BatchNorm statistics of the data (a few steps' running averages in training mode), so
    # every op's output has the scale of a trained network's and the edits show in the logits.
    update = jax.jit(
        lambda v: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})[1]
    )
    for _ in range(30):
        variables = {**variables, **update(variables)}
    base = network.unchanged_edits({"normal": 8, "reduce": 8}, sp.num_ops)
    apply = jax.jit(lambda edits: model.apply(variables, x, train=False, edits=edits)[0])
    return sp, genotype, x, variables, base, apply


def test_edits_compute_the_edited_genotype_s_network(darts_network):
    sp, genotype, x, variables, base, apply = darts_network
    plain = sp.network(genotype, 10, input_shape=(8, 8, 3), C=4, layers=3)
    want = jax.jit(lambda: plain.apply(variables, x, train=False)[0])()
    np.testing.assert_allclose(apply(base), want, rtol=1e-6, atol=1e-4)
    slots = {(s.group, s.index): s for s in network.edit_slots(plain, (8, 8, 3), base)}
    assert len(slots) == 16
    # A reduction cell's edges from its inputs have stride 2: skip_connect is a factorised
    # reduction there, with parameters, so it is no substitute; elsewhere it is the identity.
    assert "skip_connect" not in slots[("reduce", 0)].substitutes
    assert "skip_connect" in slots[("normal", 0)].substitutes
    cases = [("normal", 0, "none"), ("reduce", 0, "avg_pool_3x3"), ("normal", 6, "max_pool_3x3"),
             ("normal", 3, "skip_connect"), ("reduce", 2, "none")]  # fmt: skip
    for group, index, op in cases:
        assert op in slots[(group, index)].substitutes
        edits = {g: e.copy() for g, e in base.items()}
        edits[group][index] = 0.0
        if op != "none":
            edits[group][index, 1 + sp.ops.index(op)] = 1.0
        edited = _edited_genotype(sp, genotype, group, index, op)
        model = sp.network(edited, 10, input_shape=(8, 8, 3), C=4, layers=3)
        want = model.apply(variables, x, train=False)[0]  # its replaced op holds no variables
        np.testing.assert_allclose(apply(edits), want, rtol=1e-5, atol=1e-4)
        assert np.abs(want - apply(base)).max() > 0.01, (group, index, op)  # the edit matters


def test_a_single_op_supernet_initialises_without_observing():
    """`init` makes every collection mutable: the op norms must not be computed there (a
    single-op cell refuses to observe, and nothing but the params may come out)."""
    space = spaces.get("nb201").topology
    x = jnp.zeros((2, 8, 8, 4))
    w = jnp.full((space.num_edges, space.num_ops), 0.2)
    cell = supernet.MixedCell(space, 4, single_op=True)
    shapes = jax.eval_shape(lambda k: cell.init(k, [x], w, True), jax.random.key(0))
    assert set(shapes) == {"params"}


def test_a_none_edge_of_a_nas_bench_201_cell_replaced_is_the_edited_genotype_s_network():
    sp = spaces.get("nb201")
    genotype = sp.genotype(
        normal=(
            (("nor_conv_3x3", 0),),
            (("none", 0), ("avg_pool_3x3", 1)),
            (("skip_connect", 0), ("nor_conv_1x1", 1), ("none", 2)),
        )
    )
    model = sp.network(genotype, 10, input_shape=(8, 8, 3), C=4, layers=1)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    variables = state.init_variables(model, jax.random.key(1), x, train=False)
    base = network.unchanged_edits({"normal": 6}, sp.num_ops)
    slots = network.edit_slots(model, (8, 8, 3), base)
    assert [(s.op, s.src, s.dst) for s in slots] == [
        ("nor_conv_3x3", 0, 1), ("none", 0, 2), ("avg_pool_3x3", 1, 2), ("skip_connect", 0, 3),
        ("nor_conv_1x1", 1, 3), ("none", 2, 3),
    ]  # fmt: skip
    for index, op in ((1, "skip_connect"),):  # a `none` edge, which the cell skips unedited
        edits = {"normal": base["normal"].copy()}
        edits["normal"][index] = 0.0
        if op != "none":
            edits["normal"][index, 1 + sp.ops.index(op)] = 1.0
        edited = _edited_genotype(sp, genotype, "normal", index, op)
        want = sp.network(edited, 10, input_shape=(8, 8, 3), C=4, layers=1)
        want = want.apply(variables, x, train=False)[0]
        got = model.apply(variables, x, train=False, edits=edits)[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
