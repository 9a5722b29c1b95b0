"""The supernet against independent computations: one-hot mixing equals the chosen ops applied
edge by edge with the standalone modules and the same parameters; parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import evaluate, ops, spaces, supernet


def _reference_cell(space, cell_params, inputs, choice, reduction, bn_after_pool):
    """Node by node, edge by edge, with `ops.make_op` modules: sum of the chosen op per edge.
    `space`: the cell topology."""
    states = list(inputs)
    C = inputs[0].shape[-1]
    for dst in space.nodes:
        total = 0.0
        for src in range(dst):
            op = space.primitives[choice[space.edge_index(src, dst)]]
            stride = 2 if reduction and src < space.num_inputs else 1
            module = ops.make_op(op, C, C, stride, affine=False, track_running_stats=False)
            params = supernet.edge_params(cell_params, space, src, dst, op)
            y = module.apply({"params": params} if params else {}, states[src], True)
            if bn_after_pool and op.endswith("pool_3x3"):
                mean, var = ops.batch_moments(y)
                y = ops.normalize(y, mean, var, 1e-5)
            total = total + y
        states.append(total)
    return states[space.num_inputs :]


@pytest.mark.parametrize(
    "space_name,reduction,bn_after_pool",
    [("darts_cnn", False, True), ("darts_cnn", True, True), ("nb201", False, False)],
)
def test_one_hot_mixing_equals_the_chosen_ops(space_name, reduction, bn_after_pool):
    space = spaces.get(space_name).topology
    C = 4
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(0), space.num_inputs)
        inputs = [jax.random.normal(k, (2, 8, 8, C), jnp.float64) for k in keys]
        cell = supernet.MixedCell(space, C, reduction, bn_after_pool=bn_after_pool)
        w = jnp.full((space.num_edges, space.num_ops), 1 / space.num_ops, jnp.float64)
        init = jax.jit(lambda key: cell.init(key, inputs, w, True))
        params = init(jax.random.key(1, impl="unsafe_rbg"))
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params["params"])
        apply = jax.jit(lambda w: cell.apply({"params": params}, inputs, w, True))  # compiled once
        rng = np.random.default_rng(0)
        # Every op on some edge, the rest random: covers every op and the node sums.
        for trial in range(3):
            choice = rng.integers(0, space.num_ops, space.num_edges)
            choice[: space.num_ops] = np.roll(np.arange(space.num_ops), trial)
            one_hot = jax.nn.one_hot(choice, space.num_ops, dtype=jnp.float64)
            nodes = apply(one_hot)
            expected = _reference_cell(space, params, inputs, choice, reduction, bn_after_pool)
            for got, want in zip(nodes, expected, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_mixing_is_linear_in_the_weights():
    space = spaces.get("nb201").topology
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4), jnp.float64)
        cell = supernet.MixedCell(space, 4)
        w = jnp.full((space.num_edges, space.num_ops), 0.2, jnp.float64)
        params = cell.init(jax.random.key(1), [x], w, True)["params"]
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        # Node 1 has one incoming edge: its output is exactly sum_k w_k op_k(x).
        w1 = jax.random.uniform(jax.random.key(2), w.shape, jnp.float64)
        one_hots = [jnp.zeros_like(w).at[0, k].set(1.0) for k in range(space.num_ops)]
        node1 = jax.jit(lambda w: cell.apply({"params": params}, [x], w, True)[0])
        mixed = sum(w1[0, k] * node1(one_hots[k]) for k in range(space.num_ops))
        np.testing.assert_allclose(node1(w1.at[1:].set(0.0)), mixed, rtol=1e-10, atol=1e-12)


def test_none_column_does_not_change_the_output():
    space = spaces.get("nb201").topology
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    cell = supernet.MixedCell(space, 4)
    w = jax.random.uniform(jax.random.key(1), (space.num_edges, space.num_ops))
    params = cell.init(jax.random.key(1), [x], w, True)["params"]
    none = space.op_index("none")
    a = cell.apply({"params": params}, [x], w, True)
    b = cell.apply({"params": params}, [x], w.at[:, none].set(123.0), True)
    np.testing.assert_array_equal(a, b)


def test_darts_supernet_parameter_count_matches_the_reference():
    # quark0/darts train_search.py logs "param size = 1.930618MB" for C=16, 8 cells, CIFAR-10.
    space = spaces.get("darts_cnn")
    model = space.supernet(10, C=16, layers=8)
    mix = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in space.alpha_shapes.items()}
    assert evaluate.model_stats(model, (32, 32, 3), mix)["params"] == 1_930_618


def test_nb201_supernet_parameter_count_by_hand():
    space = spaces.get("nb201")
    C, N = 4, 1
    model = space.supernet(10, C=C, layers=N)  # NB201: `layers` is N, cells per stage
    mix = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in space.alpha_shapes.items()}
    got = evaluate.model_stats(model, (8, 8, 3), mix)["params"]
    cell = lambda c: 6 * (c * c + 9 * c * c)  # nor_conv_1x1 + nor_conv_3x3 on 6 edges
    block = lambda a, b: 9 * a * b + 2 * b + 9 * b * b + 2 * b + a * b  # conv_a, conv_b, shortcut
    expected = (
        27 * C + 2 * C  # stem conv + BN
        + cell(C) + block(C, 2 * C) + cell(2 * C) + block(2 * C, 4 * C) + cell(4 * C)
        + 2 * 4 * C  # lastact BN
        + 4 * C * 10 + 10  # classifier
    )  # fmt: skip
    assert got == expected


def test_supernet_forward_and_wrong_mixing_weights():
    space = spaces.get("darts_cnn")
    model = space.supernet(10, C=4, layers=3)
    x = jnp.ones((2, 8, 8, 1))
    mix = {k: jnp.full(s, 1 / s[1]) for k, s in space.alpha_shapes.items()}
    variables = jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), x, mix)
    assert jax.jit(model.apply)(variables, x, mix).shape == (2, 10)
    with pytest.raises(ValueError, match=r"must be \{'normal': \(14, 8\), 'reduce': \(14, 8\)\}"):
        model.apply(variables, x, {"normal": mix["normal"]})


def test_remat_gives_the_same_loss_and_gradients():
    """One DARTS cell (`layers=1`: a reduction cell, its input edges of stride 2); remat is the
    shared `MixedCell`'s (a checkpoint around each edge of its scan), so one cell exercises it
    and compiles in half the time of two."""
    space = spaces.get("darts_cnn")
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    y = jnp.array([0, 1, 2, 3])
    alphas = space.init_alphas(jax.random.key(1), 1.0)
    mix = lambda a: jax.tree.map(lambda v: jax.nn.softmax(v, -1), a)
    results = []
    # The parameters are the same with and without remat: initialised once, applied by both.
    params = jax.jit(space.supernet(10, C=2, layers=1).init)(
        jax.random.key(2, impl="unsafe_rbg"), x, mix(alphas)
    )
    for remat in (False, True):
        model = space.supernet(10, C=2, layers=1, remat=remat)

        def loss(params, alphas, model=model):
            logits = model.apply(params, x, mix(alphas))
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y])

        results.append(jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, alphas))
        if remat:  # the option did change the program
            assert "remat" in str(jax.make_jaxpr(loss)(params, alphas))
    (l0, g0), (l1, g1) = results
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-6)  # recomputed: other fusions
