"""Hypergradients of the bilevel problem min_alpha L_val(w*(alpha), alpha),
w*(alpha) = argmin_w L_train(w, alpha) (Liu et al. 2019, Eq. 3-8).

Each factory returns an `AlphaGrad`: a pure function
`(loss_fn, params, alphas, weight_opt_state, train_batch, val_batch, key, step) ->
(grad_alphas, metrics)`, where `loss_fn(params, alphas, batch, key, step) -> (loss, metrics)`.

- `first_order()`: grad_alpha L_val(w, alpha) (DARTS first order, xi = 0).
- `unrolled(weight_tx)`: exact second order, grad_alpha L_val(w'(alpha), alpha) with
  w'(alpha) = w + weight_tx.update(grad_w L_train(w, alpha)), differentiated by autodiff through
  the optax step: the current learning rate (xi), momentum buffer, weight decay and gradient
  clipping of the real weight optimiser are all in w'.
- `finite_difference(weight_tx, learning_rate, eps)`: the paper's approximation (Eq. 7-8): the
  Hessian-vector product by central differences with epsilon = eps / ||grad_w' L_val||.
- `implicit(learning_rate, steps)`: iDARTS (Zhang et al. 2021), the implicit-function-theorem
  hypergradient grad_alpha L_val - grad^2_{alpha w} L_train H^-1 grad_w L_val, H = grad^2_w L_train,
  with H^-1 v ~ lr sum_{i=0}^{steps} (I - lr H)^i v (Neumann series of exact Hessian-vector
  products).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dnas.types import Alphas, Array, Batch, Metrics, Params, PRNGKey

LossFn = Callable[[Params, Alphas, Batch, PRNGKey, Array], tuple[Array, Metrics]]
AlphaGrad = Callable[..., tuple[Alphas, Metrics]]


def first_order() -> AlphaGrad:
    def alpha_grad(loss_fn: LossFn, params, alphas, weight_opt_state, train_batch, val_batch, key,
                   step):  # fmt: skip
        del weight_opt_state, train_batch
        grads, metrics = jax.grad(loss_fn, argnums=1, has_aux=True)(
            params, alphas, val_batch, key, step
        )
        return grads, metrics

    return alpha_grad


def _virtual_step(weight_tx, loss_fn, params, alphas, weight_opt_state, batch, key, step):
    """w' = w + update(grad_w L_train(w, alpha)): one step of the real weight optimiser."""
    grads, _ = jax.grad(loss_fn, has_aux=True)(params, alphas, batch, key, step)
    updates, _ = weight_tx.update(grads, weight_opt_state, params)
    return optax.apply_updates(params, updates)


def unrolled(weight_tx: optax.GradientTransformation) -> AlphaGrad:
    def alpha_grad(loss_fn: LossFn, params, alphas, weight_opt_state, train_batch, val_batch, key,
                   step):  # fmt: skip
        k_train, k_val = jax.random.split(key)

        def val_loss_after_step(alphas):
            unrolled_params = _virtual_step(
                weight_tx, loss_fn, params, alphas, weight_opt_state, train_batch, k_train, step
            )
            return loss_fn(unrolled_params, alphas, val_batch, k_val, step)

        return jax.grad(val_loss_after_step, has_aux=True)(alphas)

    return alpha_grad


def _global_norm(tree: Any) -> Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def finite_difference(
    weight_tx: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    eps: float = 0.01,
) -> AlphaGrad:
    """DARTS' second-order approximation (the reference `Architect._backward_step_unrolled`)."""
    lr_at = learning_rate if callable(learning_rate) else (lambda step: learning_rate)

    def alpha_grad(loss_fn: LossFn, params, alphas, weight_opt_state, train_batch, val_batch, key,
                   step):  # fmt: skip
        k_train, k_val = jax.random.split(key)
        unrolled_params = _virtual_step(
            weight_tx, loss_fn, params, alphas, weight_opt_state, train_batch, k_train, step
        )
        (g_w, g_alpha), metrics = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
            unrolled_params, alphas, val_batch, k_val, step
        )
        r = eps / _global_norm(g_w)
        shifted = lambda sign: jax.tree.map(lambda p, g: p + sign * r * g, params, g_w)
        grad_alpha_train = lambda p: jax.grad(loss_fn, argnums=1, has_aux=True)(
            p, alphas, train_batch, k_train, step
        )[0]
        g_plus, g_minus = grad_alpha_train(shifted(1.0)), grad_alpha_train(shifted(-1.0))
        xi = lr_at(step)
        grads = jax.tree.map(
            lambda g, gp, gm: g - xi * (gp - gm) / (2 * r), g_alpha, g_plus, g_minus
        )
        return grads, metrics

    return alpha_grad


def _tree_dot(a: Any, b: Any) -> Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def neumann_inverse_hvp(hvp: Callable[[Any], Any], v: Any, lr: Array, steps: int) -> Any:
    """H^-1 v ~ lr * sum_{i=0}^{steps} (I - lr H)^i v: exact for steps -> infinity when the
    eigenvalues of lr H lie in (0, 2)."""

    def body(_, carry):
        term, total = carry
        term = jax.tree.map(lambda t, h: t - lr * h, term, hvp(term))
        return term, jax.tree.map(jnp.add, total, term)

    _, total = jax.lax.fori_loop(0, steps, body, (v, v))
    return jax.tree.map(lambda t: lr * t, total)


def implicit(learning_rate: optax.ScalarOrSchedule, steps: int = 2) -> AlphaGrad:
    """iDARTS' hypergradient at the current weights (taken as the inner optimum)."""
    lr_at = learning_rate if callable(learning_rate) else (lambda step: learning_rate)

    def alpha_grad(loss_fn: LossFn, params, alphas, weight_opt_state, train_batch, val_batch, key,
                   step):  # fmt: skip
        del weight_opt_state
        k_train, k_val = jax.random.split(key)
        (g_w, g_alpha), metrics = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
            params, alphas, val_batch, k_val, step
        )
        train_grad_w = lambda p, a: jax.grad(loss_fn, has_aux=True)(
            p, a, train_batch, k_train, step
        )[0]
        # Reverse over reverse: the convolutions' custom VJPs have no forward-mode rule.
        hvp = lambda v: jax.grad(lambda p: _tree_dot(train_grad_w(p, alphas), v))(params)
        lr = jnp.asarray(lr_at(step), jnp.result_type(*jax.tree.leaves(params)))
        v = jax.lax.stop_gradient(neumann_inverse_hvp(hvp, g_w, lr, steps))
        mixed = jax.grad(lambda a: _tree_dot(train_grad_w(params, a), v))(alphas)
        return jax.tree.map(jnp.subtract, g_alpha, mixed), metrics

    return alpha_grad


ORDERS = ("first", "second", "finite_difference")
