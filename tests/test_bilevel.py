"""Hypergradients against independent computations (float64, a tiny NAS-Bench-201 supernet):
finite differences of the validation loss before/after the unrolled weight step, and the order
of the two updates in a search step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dnas import bilevel, optim, search_step, spaces, strategies, supernet
from dnas.state import SearchState

SPACE = spaces.get("nb201")


class TinySupernet(nn.Module):
    """One NAS-Bench-201 search cell between a 1x1 stem and a linear classifier: every candidate
    op, small enough that second-order derivatives compile in seconds."""

    @nn.compact
    def __call__(self, x, mix):
        x = nn.Conv(3, (1, 1), use_bias=False, param_dtype=x.dtype)(x)
        x = supernet.MixedCell(SPACE.topology, 3)([x], mix["normal"], True)[-1]
        return nn.Dense(3, param_dtype=x.dtype)(jnp.mean(x, axis=(1, 2)))


@pytest.fixture(scope="module")
def problem():
    with jax.enable_x64(True):
        model = TinySupernet()
        k = jax.random.split(jax.random.key(0), 4)
        train = {"image": jax.random.normal(k[0], (6, 6, 6, 2)), "label": jnp.arange(6) % 3}
        val = {"image": jax.random.normal(k[1], (6, 6, 6, 2)), "label": (jnp.arange(6) + 1) % 3}
        alphas = {"normal": 0.5 * jax.random.normal(k[2], SPACE.alpha_shapes["normal"])}
        mix = {"normal": jax.nn.softmax(alphas["normal"])}
        params = model.init(k[3], train["image"], mix)["params"]
        to64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)
        params, alphas = to64(params), to64(alphas)
        train, val = {**train, "image": to64(train["image"])}, {**val, "image": to64(val["image"])}

    def loss_fn(params, alphas, batch, key, step):
        mix = {c: jax.nn.softmax(a, -1) for c, a in alphas.items()}
        logits = model.apply({"params": params}, batch["image"], mix)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, {"loss": loss}

    return params, alphas, train, val, loss_fn


def _directions(alphas, n=3):
    keys = jax.random.split(jax.random.key(42), n)
    return [
        jax.tree.map(lambda a, k=k: jax.random.normal(k, a.shape, a.dtype), alphas) for k in keys
    ]


def _dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _axpy(t, d, a):
    return jax.tree.map(lambda x, y: x + t * y, a, d)


def test_first_order_is_the_gradient_of_the_validation_loss(problem):
    params, alphas, train, val, loss_fn = problem
    with jax.enable_x64(True):
        grads, _ = jax.jit(
            lambda a: bilevel.first_order()(loss_fn, params, a, None, train, val, None, 0)
        )(alphas)
        f = jax.jit(lambda a: loss_fn(params, a, val, None, 0)[0])
        h = 1e-6
        for d in _directions(alphas):
            fd = (f(_axpy(h, d, alphas)) - f(_axpy(-h, d, alphas))) / (2 * h)
            np.testing.assert_allclose(_dot(grads, d), fd, rtol=1e-6, atol=1e-10)
        # ...and not of the training loss.
        f_train = jax.jit(lambda a: loss_fn(params, a, train, None, 0)[0])
        d = _directions(alphas)[0]
        fd_train = (f_train(_axpy(h, d, alphas)) - f_train(_axpy(-h, d, alphas))) / (2 * h)
        assert abs(float(_dot(grads, d) - fd_train)) > 1e-4


@pytest.mark.parametrize("momentum_state", [False, True])
def test_exact_second_order_matches_finite_differences_of_the_unrolled_objective(
    problem, momentum_state
):
    params, alphas, train, val, loss_fn = problem
    with jax.enable_x64(True):
        tx = optim.sgd(0.1, momentum=0.9, weight_decay=3e-4, grad_clip=5.0)
        opt_state = tx.init(params)
        if momentum_state:  # a non-zero momentum buffer, as after some training
            g, _ = jax.grad(loss_fn, has_aux=True)(params, alphas, train, None, 0)
            _, opt_state = tx.update(g, opt_state, params)

        def objective(a):  # L_val(w'(a), a), w' one step of the real optimiser: independent
            g, _ = jax.grad(loss_fn, has_aux=True)(params, a, train, None, 0)
            updates, _ = tx.update(g, opt_state, params)
            return loss_fn(optax.apply_updates(params, updates), a, val, None, 0)[0]

        alpha_grad = bilevel.unrolled(tx)
        grads, _ = jax.jit(
            lambda a: alpha_grad(loss_fn, params, a, opt_state, train, val, jax.random.key(0), 0)
        )(alphas)
        f = jax.jit(objective)
        h = 1e-6
        for d in _directions(alphas):
            fd = (f(_axpy(h, d, alphas)) - f(_axpy(-h, d, alphas))) / (2 * h)
            np.testing.assert_allclose(_dot(grads, d), fd, rtol=1e-6, atol=1e-10)
        # The second-order term matters here: it differs from the first-order gradient.
        first, _ = bilevel.first_order()(loss_fn, params, alphas, None, train, val, None, 0)
        assert float(optax.tree.norm(jax.tree.map(jnp.subtract, grads, first))) > 1e-6


def test_paper_finite_difference_approximates_the_exact_hypergradient(problem):
    # With plain SGD, d/dalpha L_val(w - xi grad_w L_train(w, alpha), alpha) is exactly DARTS
    # Eq. 7; Eq. 8 only replaces the Hessian-vector product by a central difference. A small
    # epsilon: the paper's 0.01 / ||grad|| steps over ReLU and max-pool kinks of this tiny net.
    params, alphas, train, val, loss_fn = problem
    with jax.enable_x64(True):
        xi = 0.5
        tx = optax.sgd(xi)
        opt_state = tx.init(params)
        args = (loss_fn, params, alphas, opt_state, train, val, jax.random.key(0), 0)
        exact, _ = jax.jit(lambda: bilevel.unrolled(tx)(*args))()
        approx, _ = jax.jit(lambda: bilevel.finite_difference(tx, xi, eps=1e-6)(*args))()
        first, _ = bilevel.first_order()(*args)
        second_term = optax.tree.norm(jax.tree.map(jnp.subtract, exact, first))
        error = optax.tree.norm(jax.tree.map(jnp.subtract, exact, approx))
        assert float(second_term) > 1e-5
        assert float(error) < 1e-3 * float(second_term), (float(error), float(second_term))


def _darts_search(params, alphas, loss_fn, **step_kw):
    """A DARTS search step (SGD weights, Adam alphas with a large lr, so its effects show) and
    its initial state; (step_fn, state, weight_tx, alpha_tx)."""
    weight_tx = optim.sgd(0.05, momentum=0.9, weight_decay=3e-4, grad_clip=5.0)
    alpha_tx = optim.adam(0.1, weight_decay=1e-3)
    strategy = strategies.darts(strategies.Context(SPACE))
    lr = lambda step: jnp.asarray(0.05)
    step_fn = jax.jit(search_step.make_step(loss_fn, strategy, weight_tx, alpha_tx, lr, **step_kw))
    state = SearchState(
        step=jnp.zeros((), jnp.int32), params=params, alphas=alphas,
        weight_opt_state=weight_tx.init(params), alpha_opt_state=alpha_tx.init(alphas),
        rng=jax.random.key(0),
    )  # fmt: skip
    return step_fn, state, weight_tx, alpha_tx


def test_search_step_updates_alphas_on_validation_then_weights_with_the_new_alphas(problem):
    params, alphas, train, val, loss_fn = problem
    with jax.enable_x64(True):
        step_fn, state, weight_tx, alpha_tx = _darts_search(params, alphas, loss_fn)
        new_state, metrics = step_fn(state, train, val)

        # Independently: Adam on grad_alpha L_val, then SGD on grad_w L_train at the new alphas.
        g_alpha = jax.grad(lambda a: loss_fn(params, a, val, None, 0)[0])(alphas)
        upd, _ = alpha_tx.update(g_alpha, alpha_tx.init(alphas), alphas)
        want_alphas = optax.apply_updates(alphas, upd)
        g_w = jax.grad(lambda p: loss_fn(p, want_alphas, train, None, 0)[0])(params)
        upd, _ = weight_tx.update(g_w, weight_tx.init(params), params)
        want_params = optax.apply_updates(params, upd)
        for got, want in [(new_state.alphas, want_alphas), (new_state.params, want_params)]:
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        # Weights stepped with the old alphas would differ: the order is observable.
        g_old = jax.grad(lambda p: loss_fn(p, alphas, train, None, 0)[0])(params)
        upd, _ = weight_tx.update(g_old, weight_tx.init(params), params)
        old = optax.apply_updates(params, upd)
        diff = optax.tree.norm(jax.tree.map(jnp.subtract, old, new_state.params))
        assert float(diff) > 1e-8
        assert int(new_state.step) == 1
        np.testing.assert_allclose(metrics["val/loss"], loss_fn(params, alphas, val, None, 0)[0])


def test_alpha_warmup_holds_the_alphas_then_releases_them(problem):
    """alpha_start_step=2 (PC-DARTS / DrNAS warm-up): steps 0 and 1 train only the weights (with
    the initial alphas, the Adam state untouched); step 2 updates the alphas as usual."""
    params, alphas, train, val, loss_fn = problem
    with jax.enable_x64(True):
        step_fn, state, weight_tx, alpha_tx = _darts_search(
            params, alphas, loss_fn, alpha_start_step=2
        )
        p, w_opt = params, weight_tx.init(params)
        for _ in range(2):
            state, _ = step_fn(state, train, val)
            g_w = jax.grad(lambda q: loss_fn(q, alphas, train, None, 0)[0])(p)
            upd, w_opt = weight_tx.update(g_w, w_opt, p)
            p = optax.apply_updates(p, upd)
            for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(p), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
            for a, b in zip(jax.tree.leaves(state.alphas), jax.tree.leaves(alphas), strict=True):
                np.testing.assert_array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(state.alpha_opt_state),
            jax.tree.leaves(alpha_tx.init(alphas)),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        state, _ = step_fn(state, train, val)  # step 2: the first alpha update, Adam's first
        g_alpha = jax.grad(lambda a: loss_fn(p, a, val, None, 2)[0])(alphas)
        upd, _ = alpha_tx.update(g_alpha, alpha_tx.init(alphas), alphas)
        want = optax.apply_updates(alphas, upd)
        for a, b in zip(jax.tree.leaves(state.alphas), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
