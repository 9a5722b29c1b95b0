"""Search strategies: a `Strategy` is a NamedTuple of pure functions saying how alphas become
mixing weights, how their gradient is computed and what regulariser is added; factories build
them from typed arguments and `STRATEGIES` maps config names to factories."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import optax

from dnas import bilevel, relaxations
from dnas.types import Alphas, Array, MixWeights


class Strategy(NamedTuple):
    name: str
    mix_weights: relaxations.Relaxation  # used by the supernet during search
    final_weights: Callable[[Alphas], MixWeights]  # deterministic: discretisation and logging
    alpha_grad: bilevel.AlphaGrad
    regularizer: Callable[[Alphas, Array], Array]  # added to the upper-level (alpha) objective


def _no_regularizer(alphas: Alphas, step: Array) -> Array:
    del alphas, step
    return jnp.zeros((), jnp.float32)


def darts(
    *,
    order: str = "first",
    weight_tx: optax.GradientTransformation | None = None,
    learning_rate: optax.ScalarOrSchedule | None = None,
    fd_eps: float = 0.01,
) -> Strategy:
    """DARTS (Liu et al., ICLR 2019): softmax relaxation; `order` 'first' (Eq. 6 with xi = 0),
    'second' (exact autodiff through the unrolled weight step) or 'finite_difference' (Eq. 7-8).
    Second-order variants need the weight optimiser (and its learning rate for the finite
    difference one)."""
    if order == "first":
        alpha_grad = bilevel.first_order()
    elif order in ("second", "finite_difference"):
        if weight_tx is None:
            raise ValueError(f"order={order!r} needs the weight optimiser (weight_tx)")
        if order == "second":
            alpha_grad = bilevel.unrolled(weight_tx)
        else:
            if learning_rate is None:
                raise ValueError("order='finite_difference' needs the weight learning rate")
            alpha_grad = bilevel.finite_difference(weight_tx, learning_rate, fd_eps)
    else:
        raise ValueError(f"unknown DARTS order {order!r}; valid: {', '.join(bilevel.ORDERS)}")
    return Strategy(
        name="darts",
        mix_weights=relaxations.softmax,
        final_weights=relaxations.softmax,
        alpha_grad=alpha_grad,
        regularizer=_no_regularizer,
    )


STRATEGIES: dict[str, Callable[..., Strategy]] = {"darts": darts}


def get(name: str) -> Callable[..., Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(
            f"unknown search strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}"
        ) from None
