"""FBNet and ProxylessNAS strategies: their relaxations, ProxylessNAS' gradient estimator against
the exact gradient of the expected loss, the pair rescaling, masked rows, and search steps on a
small chain supernet of our own that computes only the paths it is given ("active/blocks")."""

import functools
import itertools
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dnas import bilevel, configlib, data, optim, relaxations, search_step, spaces, strategies
from dnas.state import SearchState, init_variables, initial_alphas

ROOT = Path(__file__).resolve().parents[1]
ROWS, OPS = 4, 5
# A chain space for the strategies (they read ops, alpha shapes and mask): the nb201 space's
# functions with a chain's alphas, ops a..d and `zero`.
TOY = spaces.get("nb201")._replace(
    name="toy_chain", ops=("a", "b", "c", "d", "zero"), alpha_shapes={"blocks": (ROWS, OPS)},
    row_labels={"blocks": tuple(f"b{r}" for r in range(ROWS))}, mask=None,
)  # fmt: skip
# Rows with 5, 4, 2 and 1 candidates.
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 1], [0, 1, 0, 1, 0], [0, 0, 1, 0, 0]], bool)


def ctx(space=TOY, **kw):
    return strategies.Context(space=space, **{"steps_per_epoch": 10, "epochs": 5, **kw})


def build(name, space=TOY, args=None, **kw):
    return strategies.build(name, ctx(space, **kw), args)


def random_alphas(key=0, scale=1.0, rows=ROWS, ops=OPS):
    return {"blocks": scale * jax.random.normal(jax.random.key(key), (rows, ops))}


def keys(n, seed=1):
    return jax.random.split(jax.random.key(seed), n)


def linear_loss_grads(strategy, alphas, losses, n, seed=1):
    """Per key: (mix, d/d alpha of L(g) = sum g * losses) for n keys."""

    def one(key):
        mix = strategy.mix_weights(alphas, key, 0)
        grad = jax.grad(lambda a: jnp.sum(strategy.mix_weights(a, key, 0)["blocks"] * losses))(
            alphas
        )["blocks"]
        return mix, grad

    return jax.jit(jax.vmap(one))(keys(n, seed))


def exact_gradient(alpha, losses):
    """d/d alpha of E_{g ~ softmax(alpha)}[sum g * l] = sum_k p_k l_k, by autodiff."""
    return jax.grad(lambda a: jnp.sum(jax.nn.softmax(a, -1) * losses))(alpha)


def two_mode_expectation(alpha, losses):
    """The expectation of mode 'two''s gradient for a loss linear in the gates, by enumerating
    the pairs: P({a, b}) = p_a p_b (1 / (1 - p_a) + 1 / (1 - p_b)) (two draws without
    replacement), gradient q_a q_b (l_a - l_b) for a and its opposite for b."""
    p = np.asarray(jax.nn.softmax(alpha, -1), np.float64)
    loss = np.asarray(losses, np.float64)
    out = np.zeros_like(p)
    for r in range(p.shape[0]):
        for a, b in itertools.combinations(range(p.shape[1]), 2):
            pa, pb = p[r, a], p[r, b]
            if pa == 0 or pb == 0:
                continue
            prob = pa * pb * (1 / (1 - pa) + 1 / (1 - pb))
            flow = pa * pb / (pa + pb) ** 2 * (loss[r, a] - loss[r, b])
            out[r, a] += prob * flow
            out[r, b] -= prob * flow
    return out


# ---------------------------------------------------------------------------------------------
# Registry and arguments.


def test_both_are_registered_and_check_their_arguments():
    for name in ("fbnet", "proxylessnas"):
        assert name in strategies.STRATEGIES
    strategies.check_args("fbnet", {"tau_start": 5.0, "tau_decay": 0.045})
    strategies.check_args("proxylessnas", {"mode": "full", "alpha_every": 5, "skip_zero": False})
    with pytest.raises(ValueError, match="valid strategy_args: mode, alpha_every, skip_zero"):
        strategies.check_args("proxylessnas", {"tau": 1.0})
    with pytest.raises(ValueError, match="unknown proxylessnas mode 'one'; valid: two, full"):
        build("proxylessnas", args={"mode": "one"})
    s = build("proxylessnas")
    assert (s.alpha_every, s.one_hot, s.reads_epochs) == (5, True, False)
    assert s.after_alpha_update is not None and s.weight_mix is not None
    assert not build("fbnet").one_hot


def test_mode_two_refuses_the_orders_that_evaluate_the_loss_with_two_keys():
    sgd = optim.sgd(0.1)
    for order in ("second", "finite_difference"):
        with pytest.raises(ValueError, match=f"needs order='first' \\(got '{order}'\\)"):
            build("proxylessnas", order=order, weight_tx=sgd, learning_rate=0.1)
        full = build("proxylessnas", args={"mode": "full"}, order=order, weight_tx=sgd,
                     learning_rate=0.1)  # fmt: skip
        assert full.after_alpha_update is not None  # the zero rule


@pytest.mark.parametrize("order", ["first", "second", "finite_difference"])
def test_the_validation_mix_key_is_the_one_the_loss_mixed_with(order):
    """`validation_mix_key(order, key)` is the relaxation key `loss_fn` derives
    (`search_step.loss_keys`) in the validation loss of each hypergradient order."""
    sgd = optim.sgd(0.1, momentum=0.0, weight_decay=0.0, grad_clip=None)

    def loss_fn(params, alphas, batch, key, step):
        _, k_mix = search_step.loss_keys(key)
        loss = jnp.sum(params["w"] * alphas["blocks"] * batch)
        return loss, {"key": jax.random.key_data(k_mix)}

    grad = {"first": bilevel.first_order(), "second": bilevel.unrolled(sgd),
            "finite_difference": bilevel.finite_difference(sgd, 0.1)}[order]  # fmt: skip
    params = {"w": jnp.ones((ROWS, OPS))}
    key = jax.random.key(7)
    _, metrics = grad(loss_fn, params, random_alphas(), sgd.init(params), jnp.ones(()),
                      jnp.ones(()), key, 0)  # fmt: skip
    expected = jax.random.key_data(strategies.validation_mix_key(order, key))
    np.testing.assert_array_equal(metrics["key"], expected)


# ---------------------------------------------------------------------------------------------
# FBNet.


def test_fbnet_gumbel_softmax_with_an_exponentially_falling_temperature():
    s = build("fbnet", args={"tau_start": 5.0, "tau_decay": 0.045})  # 10 steps per epoch
    alphas, key = random_alphas(), jax.random.key(3)
    for step, epoch in [(0, 0), (9, 0), (10, 1), (205, 20)]:
        tau = 5.0 * np.exp(-0.045 * epoch)
        expected = relaxations.gumbel_softmax(alphas, key, tau)["blocks"]
        got = s.mix_weights(alphas, key, step)["blocks"]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(s.final_weights(alphas)["blocks"], jax.nn.softmax(alphas["blocks"]))
    # On a masked space the masked ops weigh exactly 0 and get no gradient; no NaN.
    m = build("fbnet", space=TOY._replace(mask={"blocks": MASK}))
    w = m.mix_weights(alphas, key, 0)["blocks"]
    assert np.all(np.asarray(w)[~MASK] == 0) and np.all(np.isfinite(w))
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-5)
    target = jax.random.normal(jax.random.key(4), (ROWS, OPS))
    g = jax.grad(lambda a: jnp.sum(m.mix_weights(a, key, 0)["blocks"] * target))(alphas)
    g = np.asarray(g["blocks"])
    several = MASK & (MASK.sum(-1) > 1)[:, None]  # a single candidate weighs 1 whatever alpha
    assert np.all(np.isfinite(g)) and np.all(g[~several] == 0) and np.all(g[several] != 0)


# ---------------------------------------------------------------------------------------------
# ProxylessNAS: the gradient estimator.


def test_full_mode_gradient_is_the_exact_gradient_of_the_expected_linear_loss():
    """L(g) = sum_j g_j l_j: every sample's 'full' gradient p_i (l_i - sum p l) is
    d/d alpha E_g[L] (so their mean is too); the active op is drawn from softmax(alpha)."""
    s = build("proxylessnas", args={"mode": "full", "skip_zero": False})
    alphas = random_alphas()
    losses = jax.random.normal(jax.random.key(5), (ROWS, OPS))
    mix, grads = linear_loss_grads(s, alphas, losses, 4000)
    exact = exact_gradient(alphas["blocks"], losses)
    np.testing.assert_allclose(grads, jnp.broadcast_to(exact, grads.shape), atol=1e-6)
    np.testing.assert_allclose(grads.mean(0), exact, atol=1e-6)
    gates = np.asarray(mix["blocks"])
    assert set(np.unique(gates)) == {0.0, 1.0} and np.all(gates.sum(-1) == 1)
    assert "active/blocks" not in mix  # every path is computed
    p = np.asarray(jax.nn.softmax(alphas["blocks"]))
    np.testing.assert_allclose(gates.mean(0), p, atol=0.03)  # 4000 draws: sd <= 0.008


def test_two_mode_is_exact_on_rows_of_two_ops():
    s = build("proxylessnas", space=TOY._replace(ops=("a", "b"), alpha_shapes={"blocks": (3, 2)}))
    alphas = random_alphas(rows=3, ops=2)
    losses = jax.random.normal(jax.random.key(5), (3, 2))
    mix, grads = linear_loss_grads(s, alphas, losses, 200)
    exact = exact_gradient(alphas["blocks"], losses)
    np.testing.assert_allclose(grads, jnp.broadcast_to(exact, grads.shape), atol=1e-6)
    pairs = np.sort(np.asarray(mix["active/blocks"]), -1)
    assert np.all(pairs == [0, 1])


def test_two_mode_expectation_is_the_pairwise_formula_and_not_the_exact_gradient():
    """E[two-mode gradient] = sum_b P({i, b}) p_i p_b / (p_i + p_b)^2 (l_i - l_b) (Monte Carlo
    against the enumeration); it is biased against the exact sum_b p_i p_b (l_i - l_b), and
    at uniform alphas it is K / (2 (K - 1)) times the exact one."""
    s = build("proxylessnas", args={"skip_zero": False})
    losses = jax.random.uniform(jax.random.key(5), (ROWS, OPS), minval=-1.0, maxval=1.0)
    n = 40000
    for alphas in (random_alphas(scale=1.0), random_alphas(scale=0.0)):
        mix, grads = linear_loss_grads(s, alphas, losses, n)
        expected = two_mode_expectation(alphas["blocks"], losses)
        # per-sample values are at most 0.25 * 2 in size: the mean's sd is below 0.0025
        np.testing.assert_allclose(grads.mean(0), expected, atol=0.012)
        # the gradient touches exactly the sampled pair
        touched = np.sort(np.argsort(-np.abs(np.asarray(grads)), -1)[..., :2], -1)
        np.testing.assert_array_equal(touched, np.sort(np.asarray(mix["active/blocks"]), -1))
        # the pair frequencies are those of two draws without replacement
        p = np.asarray(jax.nn.softmax(alphas["blocks"]), np.float64)
        pairs = np.sort(np.asarray(mix["active/blocks"]), -1)
        a, b = 0, 1
        freq = np.mean((pairs[..., 0] == a) & (pairs[..., 1] == b), 0)
        prob = p[:, a] * p[:, b] * (1 / (1 - p[:, a]) + 1 / (1 - p[:, b]))
        np.testing.assert_allclose(freq, prob, atol=0.01)
    exact = np.asarray(exact_gradient(alphas["blocks"], losses))
    np.testing.assert_allclose(expected, OPS / (2 * (OPS - 1)) * exact, rtol=1e-6, atol=1e-9)
    biased = two_mode_expectation(random_alphas(scale=1.0)["blocks"], losses)
    exact = np.asarray(exact_gradient(random_alphas(scale=1.0)["blocks"], losses))
    cosine = (
        np.sum(biased * exact, -1)
        / np.linalg.norm(biased, axis=-1)
        / np.linalg.norm(exact, axis=-1)
    )
    assert np.all(cosine > 0.5) and np.any(cosine < 0.999), cosine  # biased in direction


def test_rescaled_update_moves_probability_within_the_pair_from_worse_to_better():
    """An SGD step of size eta on the 'two' gradient, then `after_alpha_update`: every other
    op's probability is unchanged, the pair's total is unchanged, and to first order
    dp_a = -2 eta p_a^2 p_b^2 (l_a - l_b) / (p_a + p_b)^3, so E_p[L] never rises."""
    s = build("proxylessnas", args={"skip_zero": False})
    alphas = random_alphas()
    losses = jax.random.normal(jax.random.key(5), (ROWS, OPS))
    eta = 1e-3
    for i, key in enumerate(keys(20, seed=11)):
        k_mix = strategies.validation_mix_key("first", key)
        mix = s.mix_weights(alphas, k_mix, 0)
        g = jax.grad(lambda a, k=k_mix: jnp.sum(s.mix_weights(a, k, 0)["blocks"] * losses))(alphas)
        after = {"blocks": alphas["blocks"] - eta * g["blocks"]}
        kept = s.after_alpha_update(alphas, after, key, i)["blocks"]
        p0 = np.asarray(jax.nn.softmax(alphas["blocks"]), np.float64)
        p1 = np.asarray(jax.nn.softmax(kept), np.float64)
        pair = np.asarray(mix["active/blocks"])
        rows = np.arange(ROWS)[:, None]
        others = np.ones((ROWS, OPS), bool)
        others[rows, pair] = False
        np.testing.assert_allclose(p1[others], p0[others], rtol=2e-6)
        np.testing.assert_allclose(p1[rows, pair].sum(-1), p0[rows, pair].sum(-1), rtol=2e-6)
        pa, pb = p0[rows[:, 0], pair[:, 0]], p0[rows[:, 0], pair[:, 1]]
        loss = np.asarray(losses)
        la, lb = loss[rows[:, 0], pair[:, 0]], loss[rows[:, 0], pair[:, 1]]
        dpa = -2 * eta * pa**2 * pb**2 * (la - lb) / (pa + pb) ** 3
        np.testing.assert_allclose(p1[rows[:, 0], pair[:, 0]] - pa, dpa, rtol=0.02, atol=2e-7)
        assert np.sum(p1 * loss) <= np.sum(p0 * loss) + 1e-6


# ---------------------------------------------------------------------------------------------
# Masked rows and the zero op.


@pytest.mark.parametrize("mode", ["two", "full"])
def test_masked_ops_are_never_sampled_and_nothing_is_nan(mode):
    s = build("proxylessnas", space=TOY._replace(mask={"blocks": MASK}), args={"mode": mode})
    alphas = random_alphas(scale=2.0)
    losses = jax.random.normal(jax.random.key(5), (ROWS, OPS))
    mix, grads = linear_loss_grads(s, alphas, losses, 500)
    gates = np.asarray(mix["blocks"])
    assert np.all(gates[:, ~MASK] == 0) and np.all(gates.sum(-1) == 1)
    grads = np.asarray(grads)
    assert np.all(np.isfinite(grads)) and np.all(grads[:, ~MASK] == 0)
    if mode == "two":
        pair = np.asarray(mix["active/blocks"])
        assert np.all(MASK[np.arange(ROWS), pair[..., 0]])  # the active path: a candidate
        # the second path is a candidate wherever the row has two
        assert np.all(MASK[np.arange(3), pair[:, :3, 1]])
        assert np.all(grads[:, 3] == 0)  # a single candidate: nothing to learn
    weight = jax.vmap(lambda k: s.weight_mix(None, None, k, 0, alphas=alphas))(keys(500))
    active = np.asarray(weight["active/blocks"])[..., 0]
    assert np.all(MASK[np.arange(ROWS), active])
    np.testing.assert_array_equal(np.argmax(weight["blocks"], -1), active)
    for key in keys(20):
        after = {"blocks": alphas["blocks"] - 0.1}
        kept = np.asarray(s.after_alpha_update(alphas, after, key, 0)["blocks"])
        assert np.all(np.isfinite(kept))


def test_rows_whose_active_op_is_zero_keep_their_alphas():
    """The authors' code gives a block whose active op is `zero` no architecture gradient and
    no update; the other rows are updated (and rescaled)."""
    s = build("proxylessnas")
    zero = TOY.op_index("zero")
    alphas = {"blocks": jnp.zeros((ROWS, OPS)).at[:, zero].set(1.0)}  # zero often active
    shift = jax.random.normal(jax.random.key(9), (ROWS, OPS))
    seen_dead = seen_live = 0
    for key in keys(10):
        k_mix = strategies.validation_mix_key("first", key)
        active = np.asarray(s.mix_weights(alphas, k_mix, 0)["active/blocks"])[:, 0]
        g = jax.grad(lambda a, k=k_mix: jnp.sum(s.mix_weights(a, k, 0)["blocks"] * shift))(alphas)
        kept = np.asarray(
            s.after_alpha_update(alphas, {"blocks": alphas["blocks"] + shift}, key, 0)["blocks"]
        )
        dead = active == zero
        assert np.all(np.asarray(g["blocks"])[dead] == 0)
        assert np.all(np.abs(np.asarray(g["blocks"])[~dead]).sum(-1) > 0)
        np.testing.assert_array_equal(kept[dead], np.asarray(alphas["blocks"])[dead])
        assert np.all(np.abs(kept - np.asarray(alphas["blocks"]))[~dead].sum(-1) > 0)
        seen_dead, seen_live = seen_dead + dead.sum(), seen_live + (~dead).sum()
    assert seen_dead and seen_live


# ---------------------------------------------------------------------------------------------
# Search steps on a chain supernet that computes only the paths it is given.


class ToyChain(nn.Module):
    """Blocks x + sum_j w[row, idx_j] * tanh(x W[row, idx_j]) over the paths idx of
    mix["active/blocks"] (all ops without it); op `zero` outputs 0. Only the weights of the
    paths given are read (a gather), as the chain supernet's `active/` contract."""

    width: int = 6
    zero: int = OPS - 1

    @nn.compact
    def __call__(self, x, mix, train=True):
        del train
        x = nn.Dense(self.width)(x.reshape(x.shape[0], -1))
        w_RxK = mix["blocks"]
        rows, ops = w_RxK.shape
        W = self.param("W", nn.initializers.normal(0.5), (rows, ops, self.width, self.width))
        paths = mix.get("active/blocks", jnp.broadcast_to(jnp.arange(ops), (rows, ops)))
        for r in range(rows):
            idx = paths[r]
            out_PxBxC = jnp.tanh(jnp.einsum("bc,pcd->pbd", x, W[r][idx]))
            out_PxBxC = out_PxBxC * (idx != self.zero)[:, None, None]
            x = x + jnp.einsum("p,pbd->bd", w_RxK[r][idx], out_PxBxC)
        return nn.Dense(10)(x)


def _batch(i, n=8):
    return {"image": jax.random.uniform(jax.random.key(100 + i), (n, 8, 8, 1)),
            "label": jnp.arange(n) % 10}  # fmt: skip


def test_the_weight_step_and_the_alpha_step_compute_only_their_paths():
    """With NaN weights in every op a step does not sample, its loss and gradients are finite:
    the weight step ran one path per row, the alpha step the pair."""
    s = build("proxylessnas", args={"skip_zero": False})
    model = ToyChain()
    alphas = random_alphas()
    x = _batch(0)["image"]
    params = init_variables(model, jax.random.key(0), x, s.final_weights(alphas))["params"]
    info = data.get_info("digits")
    loss_fn = search_step.make_loss_fn(model, s, info, search_step.Augmentation())
    weight_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    alpha_grad = jax.jit(functools.partial(bilevel.first_order(), loss_fn))
    for key in keys(3):
        mix = s.weight_mix(None, s.mix_weights(alphas, key, 0), key, 0, alphas=alphas)
        active = np.asarray(mix["active/blocks"])
        assert active.shape == (ROWS, 1)
        np.testing.assert_array_equal(np.argmax(mix["blocks"], -1), active[:, 0])
        used = np.zeros((ROWS, OPS), bool)
        used[np.arange(ROWS), active[:, 0]] = True
        poisoned = params | {"W": jnp.where(used[..., None, None], params["W"], jnp.nan)}
        (loss, _), g = weight_grad(poisoned, alphas, _batch(1), key, 0, mix)
        assert np.isfinite(loss) and all(np.isfinite(v).all() for v in jax.tree.leaves(g))
        # the alpha step's pair (the key loss_fn mixes with)
        pair = np.asarray(s.mix_weights(alphas, search_step.loss_keys(key)[1], 0)["active/blocks"])
        used = np.zeros((ROWS, OPS), bool)
        used[np.arange(ROWS)[:, None], pair] = True
        poisoned = params | {"W": jnp.where(used[..., None, None], params["W"], jnp.nan)}
        g_alpha, metrics = alpha_grad(poisoned, alphas, None, None, _batch(2), key, 0)
        g_alpha = np.asarray(g_alpha["blocks"])
        assert np.isfinite(metrics["loss"]) and np.all(np.isfinite(g_alpha))
        assert np.all(g_alpha[~used] == 0) and np.all(g_alpha[used] != 0)


def _run_steps(strategy, alpha_tx, steps, alphas=None):
    model = ToyChain()
    info = data.get_info("digits")
    weight_tx = optim.sgd(0.05, momentum=0.9, weight_decay=3e-4, grad_clip=5.0)
    loss_fn = search_step.make_loss_fn(model, strategy, info, search_step.Augmentation())
    step_fn = jax.jit(
        search_step.make_step(loss_fn, strategy, weight_tx, alpha_tx, optax.constant_schedule(0.05))
    )
    alphas = alphas or random_alphas(scale=1e-3)
    x = _batch(0)["image"]
    params = init_variables(model, jax.random.key(2), x, strategy.final_weights(alphas))
    state = SearchState(
        step=jnp.zeros((), jnp.int32), params=params["params"], alphas=alphas,
        weight_opt_state=weight_tx.init(params["params"]), alpha_opt_state=alpha_tx.init(alphas),
        rng=jax.random.key(3),
    )  # fmt: skip
    states = [state]
    for i in range(steps):
        state, metrics = step_fn(state, _batch(2 * i), _batch(2 * i + 1))
        assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values()), metrics
        states.append(state)
    return states


def test_search_steps_update_every_fifth_step_only_the_sampled_pair_rescaled():
    """The real loss and step functions: the alphas move at steps 0 and 5 only; at those steps
    only the entries of the pair `after_alpha_update` recomputes from the step's alpha key
    move, their logsumexp stays, and every other op's probability is unchanged (the authors'
    Adam: b1 = 0, no weight decay)."""
    s = build("proxylessnas", args={"skip_zero": False})
    alpha_tx = optim.adam(1e-3, b1=0.0, b2=0.999, weight_decay=0.0)
    states = _run_steps(s, alpha_tx, 7)
    for i in range(7):
        before, after = states[i].alphas["blocks"], states[i + 1].alphas["blocks"]
        if i % 5:
            np.testing.assert_array_equal(after, before)
            continue
        k_alpha, _ = jax.random.split(jax.random.fold_in(states[i].rng, i))
        k_mix = strategies.validation_mix_key("first", k_alpha)
        assert jnp.array_equal(jax.random.key_data(k_mix),
                               jax.random.key_data(search_step.loss_keys(k_alpha)[1]))  # fmt: skip
        ((pair, _),) = strategies.proxyless_paths({"blocks": before}, k_mix, "two").values()
        in_pair = np.zeros((ROWS, OPS), bool)
        in_pair[np.arange(ROWS)[:, None], np.asarray(pair)] = True
        moved = np.asarray(after != before)
        assert moved.any() and not moved[~in_pair].any()
        p0, p1 = jax.nn.softmax(before), jax.nn.softmax(after)
        np.testing.assert_allclose(np.asarray(p1)[~in_pair], np.asarray(p0)[~in_pair], rtol=1e-5)


def test_full_mode_runs_search_steps():
    """(fbnet runs its steps in test_strategies' test_every_strategy_runs_search_steps.)"""
    s = build("proxylessnas", args={"mode": "full", "alpha_every": 1})
    states = _run_steps(s, optim.adam(0.01), 2)
    assert not np.allclose(states[-1].alphas["blocks"], states[0].alphas["blocks"])


# ---------------------------------------------------------------------------------------------
# The configs' smoke runs (they need the chain spaces).


def _smoke_config(method: str, space: str):
    path = ROOT / "experiments" / method / "imagenet_search.py"
    config = configlib.validate(configlib.load(f"{path}:smoke"))
    assert config.strategy == method and config.space == space
    assert config.hardware.lut == "measure" and config.hardware.resource == "latency_ms"
    return config


# The configs' :smoke searches take 2-3 minutes each here, most of it compiling one step over
# 22 x 9 MBConvs: the tests stop before the step. The search loop with a measured table runs in
# test_hardware.py (a cheaper space); these strategies' steps on the chain spaces in
# test_strategies.py and test_chain_spaces.py.
@pytest.mark.parametrize("method,space", [("fbnet", "fbnet"), ("proxylessnas", "proxyless")])
def test_smoke_config_measures_its_table_and_prices_its_alphas(method, space, tmp_path):
    """The config's :smoke search up to its first step: the table measured on this device as
    the search measures it (`search.measured_lut`, written once to the workdir), the search set
    up with it, and the objective's E[latency] of the initial alphas equal to the table's fixed
    part plus each row's entries weighted by the mixing weights (FBNet: their Gumbel sample,
    `hardware.sampled`; ProxylessNAS: softmax(alpha)), computed here in numpy."""
    from dnas import search

    config = _smoke_config(method, space)
    measured = search.measured_lut(config, str(tmp_path))
    assert measured.hardware.lut == str(tmp_path / "lut.json")
    su = search_step.setup(measured)
    alphas, _, _ = initial_alphas(measured, su)  # no supernet weights: no compile
    hw = search_step.make_hardware_objective(measured, su.strategy, su.model, su.info)
    assert hw.sampled == (method == "fbnet") and hw.table.meta["backend"] == jax.default_backend()
    key = jax.random.key(3)
    cost = float(hw.cost(alphas, key, 0))
    if hw.sampled:
        weights = su.strategy.mix_weights(alphas, search_step.loss_keys(key)[1], 0)
    else:
        mask = (su.space.mask or {}).get("blocks", True)
        weights = {"blocks": jax.nn.softmax(jnp.where(mask, alphas["blocks"], -jnp.inf))}
    w = np.asarray(weights["blocks"], np.float64)  # (rows, ops)
    entries = np.asarray(hw.table.per_group["blocks"], np.float64)[0, ..., 0]
    assert np.isclose(w.sum(-1), 1, atol=1e-5).all() and w.std() > 0
    expected = float(hw.table.fixed[0]) + float((w * entries).sum())
    assert cost == pytest.approx(expected, rel=1e-5) and cost > 0
