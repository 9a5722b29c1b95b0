"""Each search strategy's defining property, against independent computations."""

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.stats import dirichlet as dirichlet_dist

from dnas import (
    bilevel,
    data,
    diagnostics,
    ops,
    optim,
    relaxations,
    search_step,
    spaces,
    strategies,
    supernet,
)
from dnas.state import SearchState, init_variables

NB201 = spaces.get("nb201")
DARTS = spaces.get("darts_cnn")
NB201_CELL, DARTS_CELL = NB201.topology, DARTS.topology  # cell graphs: nodes, edges


def ctx(space=DARTS, **kw):
    return strategies.Context(space=space, **{"steps_per_epoch": 10, "epochs": 5, **kw})


def alphas_of(space, key=0, scale=1.0):
    return space.init_alphas(jax.random.key(key), scale)


def test_build_checks_names_and_arguments():
    with pytest.raises(KeyError, match="valid strategies: darts"):
        strategies.build("dart", ctx())
    with pytest.raises(ValueError, match="takes no argument tau; valid strategy_args: tau_max"):
        strategies.build("gdas", ctx(), {"tau": 1.0})
    assert strategies.build("gdas", ctx(), {"tau_max": 5.0}).name == "gdas"


def test_schedules_move_per_epoch():
    c = ctx()  # 10 steps per epoch, 5 epochs
    lin, ramp = c.linear(10.0, 0.1), c.ramp(0.0, 50.0)
    got = [float(lin(s)) for s in (0, 9, 10, 25, 49, 60)]
    np.testing.assert_allclose(got, [10.0, 10.0, 10 - 9.9 / 4, 10 - 9.9 / 2, 0.1, 0.1], rtol=1e-5)
    np.testing.assert_allclose([float(ramp(s)) for s in (0, 9, 10, 49)], [0, 0, 10, 40])


def test_gdas_one_op_per_edge_with_straight_through_gradient():
    s = strategies.build("gdas", ctx())
    alphas = alphas_of(DARTS)
    mix = s.mix_weights(alphas, jax.random.key(1), 0)
    for w in mix.values():
        w = np.asarray(w)
        assert set(np.unique(w)) <= {0.0, 1.0}
        np.testing.assert_array_equal(w.sum(-1), 1.0)
    # A different key samples differently; the gradient reaches every alpha of an edge.
    other = s.mix_weights(alphas, jax.random.key(2), 0)
    assert any(not np.array_equal(mix[c], other[c]) for c in mix)
    target = jax.random.normal(jax.random.key(3), mix["normal"].shape)
    g = jax.grad(lambda a: jnp.sum(s.mix_weights(a, jax.random.key(1), 0)["normal"] * target))(
        alphas
    )
    assert np.all(np.abs(np.asarray(g["normal"])) > 0)


def _nb201_cell(**kw):
    return supernet.MixedCell(NB201_CELL, 4, **kw)


def test_single_op_cell_computes_only_the_selected_op():
    """With one-hot mixing, `single_op` equals the full mixture; and when every op an edge does
    not select has NaN parameters, its output is still finite: those ops never ran."""
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    choice = jnp.array([2, 3, 1, 0, 3, 4])  # conv1x1, conv3x3, skip, none, conv3x3, pool
    w = jax.nn.one_hot(choice, NB201.num_ops)
    full, single = _nb201_cell(), _nb201_cell(single_op=True)
    params = full.init(jax.random.key(1), [x], w, True)["params"]
    want = full.apply({"params": params}, [x], w, True)
    got = single.apply({"params": params}, [x], w, True)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    poisoned = jax.tree.map(lambda p: p, params)
    for group, from_inputs in (("input_edges", True), ("node_edges", False)):
        rows = supernet.edge_group(NB201_CELL, from_inputs)
        for op, tree in params[group].items():
            keep = np.array([NB201.ops[int(choice[r])] == op for r in rows])
            poisoned[group][op] = jax.tree.map(
                lambda p, keep=keep: jnp.where(keep.reshape(-1, *[1] * (p.ndim - 1)), p, jnp.nan),
                tree,
            )
    got = single.apply({"params": poisoned}, [x], w, True)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert not np.isfinite(full.apply({"params": poisoned}, [x], w, True)).all()


def test_pc_darts_edge_normalisation_and_partial_channels():
    s = strategies.build("pc_darts", ctx())
    alphas = s.init_alphas(DARTS, jax.random.key(0), 1.0)
    assert alphas["beta/normal"].shape == (DARTS_CELL.num_edges,)
    mix = s.mix_weights(alphas, None, 0)
    for cell in DARTS.groups:
        w = np.asarray(mix[cell])
        for dst in DARTS_CELL.nodes:  # every node's incoming weights sum to one...
            rows = [DARTS_CELL.edge_index(src, dst) for src in range(dst)]
            np.testing.assert_allclose(w[rows].sum(), 1.0, rtol=1e-6)
            beta = np.asarray(alphas[f"beta/{cell}"])[rows]  # ...split by softmax(beta)
            np.testing.assert_allclose(w[rows].sum(-1), np.exp(beta) / np.exp(beta).sum(), 1e-5)

    # Partial channels: C/K channels through ops of C/K channels, the rest bypass; shuffled.
    K, C = 2, 4
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, C))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(2), (NB201_CELL.num_edges, NB201.num_ops)))
    w = w * 0.7  # edge weights that do not sum to one, as under edge normalisation
    cell = _nb201_cell(partial_channels=K)
    params = cell.init(jax.random.key(3), [x], w, True)["params"]
    assert params["input_edges"]["nor_conv_3x3"]["kernel"].shape[-2:] == (C // K, C // K)
    got = cell.apply({"params": params}, [x], w, True)[0]  # node 1 = edge 0 -> 1
    e = NB201_CELL.edge_index(0, 1)
    mixed = 0
    for op in NB201.ops:
        if op == "none":
            continue
        module = ops.make_op(op, C // K, C // K, 1, affine=False, track_running_stats=False)
        p = supernet.edge_params(params, NB201_CELL, 0, 1, op)
        variables = {"params": p} if p else {}
        mixed = mixed + w[e, NB201.op_index(op)] * module.apply(variables, x[..., : C // K], True)
    joined = np.concatenate([mixed, w[e].sum() * x[..., C // K :]], -1)
    want = joined.reshape(2, 6, 6, K, C // K).swapaxes(-1, -2).reshape(2, 6, 6, C)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="partial_channels=3 must be a positive divisor"):
        _nb201_cell(partial_channels=3).init(jax.random.key(0), [x], w, True)


def test_pc_darts_reduction_edge_bypass_is_max_pooled():
    """On a stride-2 edge of a DARTS reduction cell the bypassed channels go through a 2x2 max
    pool (PC-DARTS' `MixedOp`) before the shuffle."""
    K, C = 2, 4
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, C))
    w = 0.6 * jax.nn.softmax(jax.random.normal(jax.random.key(2), (DARTS_CELL.num_edges, 8)))
    cell = supernet.MixedCell(DARTS_CELL, C, reduction=True, bn_after_pool=True, partial_channels=K)
    params = cell.init(jax.random.key(3), [x, x], w, True)["params"]
    nodes = cell.apply({"params": params}, [x, x], w, True)
    # Node 2 = edge (0, 2) + edge (1, 2), both stride 2 from the same input here.
    want = 0
    for src in (0, 1):
        e, mixed = DARTS_CELL.edge_index(src, 2), 0
        for op in DARTS.ops:
            if op == "none":
                continue
            module = ops.make_op(op, C // K, C // K, 2, affine=False, track_running_stats=False)
            p = supernet.edge_params(params, DARTS_CELL, src, 2, op)
            y = module.apply({"params": p} if p else {}, x[..., : C // K], True)
            if op.endswith("pool_3x3"):  # DARTS' MixedOp: BatchNorm(affine=False) after pools
                m, v = y.mean((0, 1, 2)), y.var((0, 1, 2))
                y = (y - m) / np.sqrt(v + 1e-5)
            mixed = mixed + w[e, DARTS.op_index(op)] * y
        bypass = x[..., C // K :].reshape(2, 3, 2, 3, 2, C // K).max((2, 4))  # 2x2 max pool
        joined = np.concatenate([mixed, w[e].sum() * bypass], -1)
        want = want + joined.reshape(2, 3, 3, K, C // K).swapaxes(-1, -2).reshape(2, 3, 3, C)
    np.testing.assert_allclose(nodes[0], want, rtol=1e-4, atol=1e-5)


def test_pdarts_skip_dropout_mask_and_schedule():
    """Dropout on identity skip connections only: with one-hot skip weights, node 1 is the input
    with a fraction ~rate of entries zeroed and the rest scaled by 1 / (1 - rate); a conv edge
    and the no-dropout path are untouched. The rate follows the authors' per-epoch schedule."""
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 4))
    skip = jax.nn.one_hot(jnp.full((NB201_CELL.num_edges,), NB201.op_index("skip_connect")), 5)
    conv = jax.nn.one_hot(jnp.full((NB201_CELL.num_edges,), NB201.op_index("nor_conv_3x3")), 5)
    cell = _nb201_cell()
    params = cell.init(jax.random.key(1), [x], skip, True)
    rngs = {"dropout": jax.random.key(2)}
    # One compiled apply per structure (jit: an eager apply compiles the cell's scans per call).
    dropping = jax.jit(lambda w, rate: cell.apply(params, [x], w, True, rate, rngs=rngs))
    not_dropping = jax.jit(lambda w: cell.apply(params, [x], w, True))
    node1 = np.asarray(dropping(skip, 0.3)[0])
    xs = np.asarray(x)
    dropped = node1 == 0
    assert abs(dropped.mean() - 0.3) < 0.03
    np.testing.assert_allclose(node1[~dropped], xs[~dropped] / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(not_dropping(skip)[0], x)
    np.testing.assert_array_equal(dropping(conv, 0.3), not_dropping(conv))
    # Schedule (P-DARTS train_search.py): p (E - e - 1) / E before the alpha warm-up ends, then
    # p exp(-0.2 (e - warm-up)).
    s = strategies.build(
        "pdarts", ctx(NB201, epochs=25), {"skip_dropout": 0.4, "dropout_warmup_epochs": 10}
    )
    for epoch in (0, 9, 10, 17, 24):
        want = 0.4 * (25 - epoch - 1) / 25 if epoch < 10 else 0.4 * np.exp(-0.2 * (epoch - 10))
        np.testing.assert_allclose(float(s.skip_dropout(10 * epoch + 3)), want, rtol=1e-6)
    assert strategies.build("pdarts", ctx(NB201)).skip_dropout is None
    # Through the DARTS supernet: identity skips only (the reduction cells' stride-2 skips are
    # FactorizedReduce); a different key drops differently, rate 0 is the plain forward (the
    # rate is traced: one compilation of the dropping supernet for every rate).
    model = DARTS.supernet(10, C=2, layers=2)
    xs = jax.random.normal(jax.random.key(4), (2, 8, 8, 1))
    mix = {c: jax.nn.one_hot(jnp.full((14,), DARTS.op_index("skip_connect")), 8) for c in
           ("normal", "reduce")}  # fmt: skip
    v = init_variables(model, jax.random.key(5), xs, mix)
    plain = jax.jit(model.apply)(v, xs, mix)
    drop = jax.jit(lambda key, rate: model.apply(v, xs, mix, skip_dropout=rate,
                                                 rngs={"dropout": key}))  # fmt: skip
    a, b = drop(jax.random.key(6), 0.5), drop(jax.random.key(7), 0.5)
    assert not np.allclose(a, plain) and not np.allclose(a, b)
    np.testing.assert_allclose(drop(jax.random.key(6), 0.0), plain, rtol=1e-6, atol=1e-6)


def test_channel_shuffle_matches_pytorch_index_rule():
    x = jnp.arange(12.0).reshape(1, 1, 1, 12)
    got = np.asarray(ops.channel_shuffle(x, 3)).ravel()
    # PyTorch: view(groups, C/groups).transpose -> channel g*(C/groups)+j goes to j*groups+g.
    want = np.empty(12)
    for g in range(3):
        for j in range(4):
            want[j * 3 + g] = g * 4 + j
    np.testing.assert_array_equal(got, want)


def test_fair_darts_weights_are_independent_sigmoids_and_zero_one_loss():
    s = strategies.build("fair_darts", ctx(), {"zero_one_weight": 10.0})
    init = s.init_alphas(DARTS, jax.random.key(0), 1e-3)
    np.testing.assert_array_equal(s.mix_weights(init, None, 0)["normal"][:, 1:], 0.5)
    alphas = alphas_of(DARTS)
    mix = np.asarray(s.mix_weights(alphas, None, 0)["normal"])
    none = DARTS.op_index("none")
    sig = 1 / (1 + np.exp(-np.asarray(alphas["normal"])))
    np.testing.assert_array_equal(mix[:, none], 0.0)  # no `none` op, as the authors' space
    others = np.delete(np.arange(DARTS.num_ops), none)
    np.testing.assert_allclose(mix[:, others], sig[:, others], rtol=1e-6)
    assert not np.allclose(mix.sum(-1), 1.0)
    jac = jax.jacobian(lambda a: s.mix_weights({"normal": a}, None, 0)["normal"])(alphas["normal"])
    jac = np.asarray(jac).reshape(alphas["normal"].size, -1)
    np.testing.assert_array_equal(jac, np.diag(np.diag(jac)))  # no competition between ops
    sig_all = np.concatenate(
        [1 / (1 + np.exp(-np.asarray(a)[:, others].ravel())) for a in alphas.values()]
    )
    want = -10.0 * np.mean((sig_all - 0.5) ** 2)
    np.testing.assert_allclose(s.regularizer(alphas, 0), want, rtol=1e-5)


def _dirichlet_mean(a):
    """The mean of Dir(elu(a) + 1): concentration / its sum."""
    conc = relaxations.concentration(a)
    return conc / jnp.sum(conc, -1, keepdims=True)


def test_drnas_weights_are_random_points_of_the_simplex_with_pathwise_gradients():
    s = strategies.build("drnas", ctx())
    alphas = alphas_of(DARTS, scale=0.5)
    a = s.mix_weights(alphas, jax.random.key(0), 0)
    b = s.mix_weights(alphas, jax.random.key(1), 0)
    for cell in DARTS.groups:
        w = np.asarray(a[cell])
        assert (w >= 0).all()
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
        assert not np.allclose(w, b[cell])
    conc = np.asarray(jax.nn.elu(alphas["normal"]) + 1)
    np.testing.assert_allclose(
        _dirichlet_mean(alphas["normal"]), conc / conc.sum(-1, keepdims=True), 1e-6
    )
    # Pathwise gradient: d E[w] / d alpha by many samples ~ d mean / d alpha.
    keys = jax.random.split(jax.random.key(5), 4000)
    first = lambda w: w["normal"][0, 0]
    sample_mean = lambda a: jnp.mean(
        jax.vmap(lambda k: first(relaxations.dirichlet({"normal": a}, k)))(keys)
    )
    sampled = jax.grad(sample_mean)(alphas["normal"][:1])
    exact = jax.grad(lambda a: first({"normal": _dirichlet_mean(a)}))(alphas["normal"][:1])
    np.testing.assert_allclose(sampled, exact, atol=0.02)


def test_drnas_masked_dirichlet_is_the_dirichlet_of_the_kept_ops():
    """Progressive DrNAS: with an op mask, the weights are Dir(conc of the kept ops) (moments
    against the closed form) and exactly zero elsewhere; the genotype weights are the masked
    softmax; `alphas_init` sets the starting alphas."""
    mask = np.ones((NB201_CELL.num_edges, NB201.num_ops), np.float32)
    mask[:, [0, 3]] = 0.0
    alphas = alphas_of(NB201)
    s = strategies.build("drnas", ctx(NB201), {"ops_mask": {"normal": mask.tolist()}})
    keys = jax.random.split(jax.random.key(0), 20_000)
    w = np.asarray(jax.vmap(lambda k: s.mix_weights(alphas, k, 0)["normal"])(keys))
    assert (w[..., [0, 3]] == 0).all()
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    conc = np.asarray(relaxations.concentration(alphas["normal"]))[:, [1, 2, 4]]
    a0 = conc.sum(-1, keepdims=True)
    np.testing.assert_allclose(w[..., [1, 2, 4]].mean(0), conc / a0, atol=0.01)
    var = conc * (a0 - conc) / (a0**2 * (a0 + 1))
    np.testing.assert_allclose(w[..., [1, 2, 4]].var(0), var, rtol=0.1)
    soft = np.asarray(s.final_weights(alphas)["normal"])
    e = np.exp(np.asarray(alphas["normal"])[:, [1, 2, 4]])
    np.testing.assert_allclose(soft[:, [1, 2, 4]], e / e.sum(-1, keepdims=True), rtol=1e-5)
    assert (soft[:, [0, 3]] == 0).all()
    init = strategies.build("drnas", ctx(NB201), {"alphas_init": {"normal": np.full((6, 5), 0.5)}})
    got = init.init_alphas(NB201, jax.random.key(0), 1e-3)
    np.testing.assert_array_equal(got["normal"], 0.5)


def test_drnas_kl_regulariser_matches_monte_carlo():
    conc = jnp.array([0.7, 1.5, 2.0, 0.9])
    prior = jnp.ones(4)
    samples = jax.random.dirichlet(jax.random.key(0), conc, (200_000,))
    mc = jnp.mean(dirichlet_dist.logpdf(samples.T, conc) - dirichlet_dist.logpdf(samples.T, prior))
    np.testing.assert_allclose(strategies.dirichlet_kl(conc, prior), mc, rtol=0.02)
    np.testing.assert_allclose(strategies.dirichlet_kl(conc, conc), 0.0, atol=1e-6)
    s = strategies.build("drnas", ctx(), {"reg_type": "kl", "reg_scale": 0.5})
    alphas = alphas_of(DARTS, scale=0.5)
    want = sum(
        float(jnp.sum(strategies.dirichlet_kl(jax.nn.elu(a) + 1, jnp.ones_like(a))))
        for a in alphas.values()
    )
    np.testing.assert_allclose(s.regularizer(alphas, 0), 0.5 * want, rtol=1e-5)


def test_darts_minus_adds_a_decaying_skip_weight():
    s = strategies.build("darts_minus", ctx())  # beta = 1 - epoch / 5, epochs of 10 steps
    alphas = alphas_of(DARTS)
    skip = DARTS.op_index("skip_connect")
    soft = jax.nn.softmax(alphas["normal"], -1)
    for step, beta in [(0, 1.0), (20, 0.6), (45, 0.2)]:
        w = s.mix_weights(alphas, None, step)["normal"]
        np.testing.assert_allclose(w[:, skip] - soft[:, skip], beta, atol=1e-6)
        others = np.delete(np.arange(DARTS.num_ops), skip)
        np.testing.assert_allclose(w[:, others], soft[:, others], rtol=1e-6)
    np.testing.assert_allclose(s.final_weights(alphas)["normal"], soft, rtol=1e-6)


def test_beta_darts_regulariser_is_the_formula():
    s = strategies.build("beta_darts", ctx(), {"lambda_max": 50.0})  # lambda = 50 epoch / 5
    alphas = alphas_of(DARTS)
    smoothmax = sum(
        np.mean(np.log(np.exp(np.asarray(a, np.float64)).sum(-1))) for a in alphas.values()
    )
    for step, lam in [(0, 0.0), (20, 20.0), (40, 40.0)]:
        np.testing.assert_allclose(s.regularizer(alphas, step), lam * smoothmax, rtol=1e-5)
    g = jax.grad(lambda a: strategies.beta_decay_loss(a))(alphas)  # = softmax / num_edges
    np.testing.assert_allclose(g["normal"], jax.nn.softmax(alphas["normal"]) / DARTS_CELL.num_edges,
                               rtol=1e-5)  # fmt: skip


def test_sdarts_perturbed_weights_stay_on_the_simplex_and_adversarial_raises_the_loss():
    c = ctx()
    mix = relaxations.softmax(alphas_of(DARTS))
    target = {k: jax.random.normal(jax.random.key(9), v.shape) for k, v in mix.items()}
    loss_of_mix = lambda m: sum(jnp.sum(m[k] * target[k]) for k in m)
    rs = strategies.build("sdarts", c, {"mode": "rs", "epsilon_start": 0.1, "epsilon_end": 0.1})
    adv = strategies.build("sdarts", c, {"mode": "adv", "epsilon_start": 0.1, "epsilon_end": 0.1})
    a = rs.weight_mix(loss_of_mix, mix, jax.random.key(0), 0)
    b = rs.weight_mix(loss_of_mix, mix, jax.random.key(1), 0)
    p = adv.weight_mix(loss_of_mix, mix, jax.random.key(0), 0)
    for k in mix:
        for pert in (a, b, p):  # SDARTS' clip: in [0, 1], every edge sums to one
            w = np.asarray(pert[k])
            assert (w >= 0).all() and (w <= 1).all()
            np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
        assert not np.allclose(a[k], b[k])
        assert np.abs(np.asarray(a[k] - mix[k])).max() > 0.01
    assert float(loss_of_mix(p)) > float(loss_of_mix(a)) + 0.5
    assert float(loss_of_mix(p)) > float(loss_of_mix(mix)) + 0.5
    # An attack that ends below the starting loss is discarded: the loss -|m - mix|^2 is
    # largest at mix itself, so the weights come back unperturbed.
    bowl = lambda m: -sum(jnp.sum((m[k] - mix[k]) ** 2) for k in m)
    same = adv.weight_mix(bowl, mix, jax.random.key(0), 0)
    for k in mix:
        np.testing.assert_allclose(same[k], mix[k])


def test_idarts_hypergradient_matches_the_exact_one_on_a_quadratic():
    """Inner problem L_train = 1/2 w'Aw - w'B alpha has w*(alpha) = A^-1 B alpha; the outer
    L_val = 1/2 |w - c|^2 + d'alpha has hypergradient B'A^-1 (w* - c) + d at w = w*."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        M = rng.normal(size=(5, 5))
        A = M @ M.T / 5 + np.eye(5)
        B, c, d = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=3)
        alpha = {"normal": jnp.asarray(rng.normal(size=3))}
        w_star = {"w": jnp.asarray(np.linalg.solve(A, B @ alpha["normal"]))}

        def loss_fn(params, alphas, batch, key, step):
            w, a = params["w"], alphas["normal"]
            if batch == "train":
                loss = 0.5 * w @ A @ w - w @ B @ a
            else:
                loss = 0.5 * jnp.sum((w - c) ** 2) + d @ a
            return loss, {}

        exact = B.T @ np.linalg.solve(A, w_star["w"] - c) + d
        lr = 1.0 / np.linalg.eigvalsh(A).max()
        got, _ = bilevel.implicit(lr, 200)(loss_fn, w_star, alpha, None, "train", "val",
                                            jax.random.key(0), 0)  # fmt: skip
        np.testing.assert_allclose(got["normal"], exact, rtol=1e-6)
        few, _ = bilevel.implicit(lr, 2)(loss_fn, w_star, alpha, None, "train", "val",
                                         jax.random.key(0), 0)  # fmt: skip
        assert not np.allclose(few["normal"], exact, rtol=1e-3)  # the series is truncated


def test_random_ws_samples_uniform_architectures_and_leaves_alphas():
    """Each step's weights are a random architecture as the ranking phase samples them: two
    distinct inputs per node, one op other than `none` on each, uniform over ops and inputs."""
    s = strategies.build("random_ws", ctx())
    alphas = alphas_of(DARTS)
    counts, inputs = np.zeros(DARTS.num_ops), np.zeros(DARTS_CELL.num_edges)
    for i in range(300):
        w = np.asarray(s.mix_weights(alphas, jax.random.key(i), 0)["normal"])
        assert set(np.unique(w)) <= {0.0, 1.0}
        for dst in DARTS_CELL.nodes:
            rows = [DARTS_CELL.edge_index(src, dst) for src in range(dst)]
            assert w[rows].sum() == 2 and (w[rows].sum(-1) <= 1).all()
        counts += w.sum(0)
        inputs += w.sum(-1)
    assert counts[DARTS.op_index("none")] == 0
    freq = np.delete(counts, DARTS.op_index("none")) / counts.sum()
    np.testing.assert_allclose(freq, 1 / (DARTS.num_ops - 1), atol=0.02)
    for dst in DARTS_CELL.nodes:  # every input of a node equally likely: 2 / dst
        rows = [DARTS_CELL.edge_index(src, dst) for src in range(dst)]
        np.testing.assert_allclose(inputs[rows] / 300, 2 / dst, atol=0.1)
    assert not s.update_alphas and s.one_hot


def test_snas_concrete_weights_are_random_and_sharpen_as_tau_falls():
    s = strategies.build("snas", ctx(), {"tau_start": 1.0, "tau_end": 0.01})
    alphas = alphas_of(DARTS)
    first = s.mix_weights(alphas, jax.random.key(0), 0)["normal"]
    last = s.mix_weights(alphas, jax.random.key(0), 49)["normal"]
    np.testing.assert_allclose(np.asarray(first).sum(-1), 1.0, rtol=1e-5)
    assert np.asarray(last).max(-1).mean() > 0.95 > np.asarray(first).max(-1).mean()
    # Same Gumbel noise: the argmax does not depend on the temperature.
    np.testing.assert_array_equal(np.argmax(first, -1), np.argmax(last, -1))


def test_edge_costs_count_each_op_by_hand():
    """Costs of a DARTS supernet (C=4, 5 cells, 8x8 inputs) against the op formulas: a 3x3
    separable conv block twice (depthwise 9C + pointwise C^2 each), multiply-adds per output
    pixel, memory access = parameters + input + output activations."""
    model = DARTS.supernet(10, C=4, layers=5)
    costs = supernet.edge_costs(model, DARTS.alpha_shapes, (8, 8, 1))
    np.testing.assert_equal(DARTS.op_costs(model, (8, 8, 1)), costs)  # the space's, the same
    assert costs["normal"].shape == (3, 14, 8, 3) and costs["reduce"].shape == (2, 14, 8, 3)
    sep3, skip, none = (DARTS.op_index(o) for o in ("sep_conv_3x3", "skip_connect", "none"))
    C, hw = 4, 64  # first normal cell: 8x8, C=4
    np.testing.assert_array_equal(
        costs["normal"][0, 0, sep3],
        [2 * (9 * C + C * C), hw * 2 * (9 * C + C * C), 2 * (9 * C + C * C) + 2 * hw * C],
    )
    np.testing.assert_array_equal(costs["normal"][0, 0, skip], [0, 0, 2 * hw * C])
    np.testing.assert_array_equal(costs["normal"][:, :, none], 0)
    # First reduction cell: C=8, 8x8 -> 4x4 on edges from the inputs, 4x4 on the others;
    # its skip_connect is a FactorizedReduce (two 1x1 convs C -> C/2) on the stride-2 edges.
    C, e_in, e_node = 8, DARTS_CELL.edge_index(0, 2), DARTS_CELL.edge_index(2, 3)
    block_s2 = 16 * (9 * C + C * C)  # 4x4 outputs
    np.testing.assert_array_equal(
        costs["reduce"][0, e_in, sep3, :2], [2 * (9 * C + C * C), 2 * block_s2]
    )
    np.testing.assert_array_equal(costs["reduce"][0, e_in, skip, :2], [C * C, 16 * C * C])
    np.testing.assert_array_equal(costs["reduce"][0, e_node, skip], [0, 0, 2 * 16 * C])
    # Partial channels: the ops see C/K channels.
    pc_model = DARTS.supernet(10, C=8, layers=5, partial_channels=2)
    pc = supernet.edge_costs(pc_model, DARTS.alpha_shapes, (8, 8, 1))
    np.testing.assert_array_equal(pc["normal"], costs["normal"])


def test_snas_resource_penalty_formula_and_pull_to_cheap_ops():
    model = DARTS.supernet(10, C=4, layers=5)
    calls = []

    def edge_costs():
        calls.append(1)
        return supernet.edge_costs(model, DARTS.alpha_shapes, (8, 8, 1))

    s = strategies.build("snas", ctx(edge_costs=edge_costs), {"resource_lambda": 0.1})
    assert len(calls) == 1
    costs = edge_costs()
    alphas = alphas_of(DARTS)
    want = 0.0
    for c in ("normal", "reduce"):
        p = np.asarray(jax.nn.softmax(alphas[c]), np.float64)
        expected = np.einsum("ek,nekr->ner", p, costs[c])
        want += np.log(expected).mean(-1).sum(-1).mean()
    np.testing.assert_allclose(float(s.regularizer(alphas, 0)), 0.1 * want, rtol=1e-5)
    # At a one-hot architecture (alpha 50 on one op of every edge), the penalty is the log costs
    # of the chosen ops. Every edge sep_conv_3x3, counted by hand: P = 2 (9C + C^2) parameters
    # (two depthwise 3x3 + pointwise blocks, no affine BN in the supernet), hw_out * P
    # multiply-adds, P + C (hw_in + hw_out) memory access. Cells (C=4, 5 cells, 8x8 input):
    # normal C=4 at 8x8, reduce C=8 8x8 -> 4x4, normal C=8 at 4x4, reduce C=16 4x4 -> 2x2, normal
    # C=16 at 2x2; a reduction cell's 8 edges from its inputs have stride 2, its 6 others not.
    sep3 = DARTS.op_index("sep_conv_3x3")

    def one_hot(choice):  # cell type -> the op of every edge
        out = {}
        for c, k in choice.items():
            a = np.zeros((DARTS_CELL.num_edges, DARTS.num_ops), np.float32)
            a[np.arange(DARTS_CELL.num_edges), k] = 50.0
            out[c] = jnp.asarray(a)
        return out

    def log_cost(C, hw_in, hw_out):
        P = 2 * (9 * C + C * C)
        return np.mean(np.log([P, hw_out * P, P + C * (hw_in + hw_out)]))

    normal = np.mean([14 * log_cost(4, 64, 64), 14 * log_cost(8, 16, 16), 14 * log_cost(16, 4, 4)])
    reduce = np.mean([8 * log_cost(8, 64, 16) + 6 * log_cost(8, 16, 16),
                      8 * log_cost(16, 16, 4) + 6 * log_cost(16, 4, 4)])  # fmt: skip
    all_sep3 = one_hot({c: [sep3] * DARTS_CELL.num_edges for c in ("normal", "reduce")})
    got = float(s.regularizer(all_sep3, 0))
    np.testing.assert_allclose(got, 0.1 * (normal + reduce), rtol=1e-5)
    # Other convolutions, edge by edge: the costs table's entries of the chosen ops.
    conv_ops = [DARTS.op_index(o) for o in DARTS.ops if "conv" in o]
    choice = {c: [conv_ops[(e + i) % len(conv_ops)] for e in range(DARTS_CELL.num_edges)]
              for i, c in enumerate(("normal", "reduce"))}  # fmt: skip
    chosen = sum(
        np.mean([sum(np.log(costs[c][n, e, k]).mean() for e, k in enumerate(choice[c]))
                 for n in range(len(costs[c]))])
        for c in choice
    )  # fmt: skip
    np.testing.assert_allclose(float(s.regularizer(one_hot(choice), 0)), 0.1 * chosen, rtol=1e-5)
    # Gradient descent on the penalty alone moves weight from the convolutions to the free ops.
    a = alphas_of(DARTS, scale=1e-3)
    for _ in range(50):
        g = jax.grad(s.regularizer)(a, 0)
        a = jax.tree.map(lambda x, g: x - 10.0 * g, a, g)
    w = np.asarray(jax.nn.softmax(a["normal"])).mean(0)
    convs = [DARTS.op_index(o) for o in DARTS.ops if "conv" in o]
    assert w[convs].max() < 1 / DARTS.num_ops < w[DARTS.op_index("none")]
    # Off by default, and refused without costs.
    assert float(strategies.build("snas", ctx()).regularizer(alphas, 0)) == 0.0
    with pytest.raises(ValueError, match="op costs"):
        strategies.build("snas", ctx(), {"resource_lambda": 0.1})


def test_hessian_eigenvalue_matches_dense_eigendecomposition():
    """Validation loss of a tiny NB201 cell w.r.t. its alphas (30 of them, float64): power
    iteration on Hessian-vector products against numpy's eigh of the dense Hessian."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2), jnp.float64)
        labels = jnp.array([0, 1, 2])
        cell = supernet.MixedCell(NB201_CELL, 2)
        alphas = {"normal": 0.3 * jax.random.normal(jax.random.key(1), (NB201_CELL.num_edges, 5))}
        w0 = jax.nn.softmax(alphas["normal"])
        params = jax.tree.map(
            lambda p: p.astype(jnp.float64), cell.init(jax.random.key(2), [x], w0, True)["params"]
        )
        head = jax.random.normal(jax.random.key(3), (2, 3), jnp.float64)

        def loss(a):
            node = cell.apply({"params": params}, [x], jax.nn.softmax(a["normal"]), True)[-1]
            logits = jnp.mean(node, (1, 2)) @ head
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

        dense = jax.jit(  # compiled: an eager jacrev of jacrev through the scans is slow
            jax.jacrev(jax.jacrev(lambda a: loss({"normal": a.reshape(alphas["normal"].shape)})))
        )(alphas["normal"].ravel())
        eig = np.linalg.eigvalsh(np.asarray(dense))
        want = eig[np.argmax(np.abs(eig))]
        got, vec = jax.jit(lambda a: diagnostics.hessian_eigenvalue(loss, a, jax.random.key(4),
                                                                    iters=300))(alphas)  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-4)
        v = np.asarray(vec["normal"]).ravel()
        np.testing.assert_allclose(np.asarray(dense) @ v, want * v, atol=1e-4 * abs(want))


def test_count_op_counts_skip_connections():
    g = spaces.load("darts_v2")  # the DARTS_V2 string in test_genotype.py
    assert diagnostics.count_op(g, "skip_connect", "normal") == 2
    assert diagnostics.count_op(g, "skip_connect", "reduce") == 3
    assert diagnostics.count_op(g, "max_pool_3x3", "reduce") == 5


class _TinySearchNet(flax.linen.Module):
    """One NAS-Bench-201 search cell between a 1x1 stem and a classifier: every strategy's step
    compiles in seconds."""

    @flax.linen.compact
    def __call__(self, x, mix, *, train=True):
        x = flax.linen.Conv(4, (1, 1), use_bias=False)(x)
        x = supernet.MixedCell(NB201_CELL, 4)([x], mix["normal"], train)[-1]
        return flax.linen.Dense(10)(jnp.mean(x, axis=(1, 2)))


@pytest.mark.parametrize(
    "name,args",
    [(n, {}) for n in sorted(strategies.STRATEGIES)]
    + [("sdarts", {"mode": "adv", "pgd_steps": 2})],
    ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())) or "default",
)
def test_every_strategy_runs_search_steps(name, args):
    """Three jitted search steps of each strategy with the real loss and step functions: finite
    metrics, weights trained, alphas (and PC-DARTS' betas) learned unless the strategy fixes
    them."""
    info = data.get_info("digits")
    weight_tx = optim.sgd(0.05, momentum=0.9, weight_decay=3e-4, grad_clip=5.0)
    alpha_tx = optim.adam(0.01, b1=0.5, b2=0.999, weight_decay=1e-3)
    c = strategies.Context(NB201, "first", weight_tx, lambda s: jnp.asarray(0.05), 2, 2)
    strategy = strategies.build(name, c, args)
    model = _TinySearchNet()
    loss_fn = search_step.make_loss_fn(model, strategy, info, search_step.Augmentation())
    step_fn = jax.jit(
        search_step.make_step(loss_fn, strategy, weight_tx, alpha_tx, c.learning_rate)
    )
    init_alphas = strategy.init_alphas or type(NB201).init_alphas
    alphas = init_alphas(NB201, jax.random.key(0), 1e-3)
    x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1))
    params = init_variables(model, jax.random.key(2), x, strategy.final_weights(alphas))["params"]
    state = SearchState(
        step=jnp.zeros((), jnp.int32), params=params, alphas=alphas,
        weight_opt_state=weight_tx.init(params), alpha_opt_state=alpha_tx.init(alphas),
        rng=jax.random.key(3),
    )  # fmt: skip
    batch = lambda i: {"image": jax.random.uniform(jax.random.key(10 + i), (8, 8, 8, 1)),
                       "label": jnp.arange(8) % 10}  # fmt: skip
    new = state
    for i in range(3):
        new, metrics = step_fn(new, batch(2 * i), batch(2 * i + 1))
        assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values()), metrics
    moved = lambda a, b: not np.allclose(a, b)
    assert moved(new.params["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    for key in alphas:
        assert moved(new.alphas[key], alphas[key]) == strategy.update_alphas, key
