"""Optimisers for the weights and the architecture parameters, built from typed arguments.

Both follow the reference PyTorch semantics (quark0/darts `train_search.py`, `architect.py`):
weight decay is an L2 term added to the gradient before momentum/Adam (PyTorch's `weight_decay`,
not AdamW's decoupled decay), gradients are clipped by global norm before that, and the cosine
learning rate is annealed per epoch (`CosineAnnealingLR` stepped once an epoch) unless
`per_step=True`. Schedules are functions of the step, evaluated inside jit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def _active(value) -> bool:
    """False for None and a Python zero; True for other numbers and for traced values (a
    hyper-parameter swept under `vmap` is an array, and a zero there is applied, exactly)."""
    return value is not None and (not isinstance(value, int | float) or value != 0)


def clip_by_global_norm(max_norm) -> optax.GradientTransformation:
    """`optax.clip_by_global_norm(max_norm)`, off where `max_norm` <= 0: a swept (traced) clip of
    0 means no clipping, as a Python 0 does, not updates scaled to nothing."""
    if isinstance(max_norm, int | float):
        return optax.clip_by_global_norm(max_norm) if max_norm > 0 else optax.identity()
    clip = optax.clip_by_global_norm(max_norm)

    def update(updates, state, params=None):
        clipped, state = clip.update(updates, state, params)
        on = jnp.asarray(max_norm) > 0
        return jax.tree.map(lambda c, u: jnp.where(on, c, u), clipped, updates), state

    return optax.GradientTransformation(clip.init, update)


def cosine_schedule(
    lr: float, lr_min: float, epochs: int, steps_per_epoch: int, *, per_step: bool = False
) -> optax.Schedule:
    """lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2, with t, T in epochs (or steps)."""
    total = epochs * steps_per_epoch if per_step else epochs

    def schedule(step):
        t = step if per_step else step // steps_per_epoch
        t = jnp.minimum(t, total).astype(jnp.float32)
        return lr_min + (lr - lr_min) * 0.5 * (1.0 + jnp.cos(jnp.pi * t / max(total, 1)))

    return schedule


def sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float = 0.9,
    weight_decay: float = 3e-4,
    grad_clip: float | None = 5.0,
) -> optax.GradientTransformation:
    """PyTorch `SGD(momentum, weight_decay)` after `clip_grad_norm_(grad_clip)`."""
    return optax.chain(
        clip_by_global_norm(grad_clip) if grad_clip is not None else optax.identity(),
        optax.add_decayed_weights(weight_decay) if _active(weight_decay) else optax.identity(),
        optax.sgd(learning_rate, momentum=momentum if _active(momentum) else None),
    )


def adam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.5,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-3,
) -> optax.GradientTransformation:
    """PyTorch `Adam(betas, weight_decay)`: L2 added to the gradient (DARTS' alpha optimiser)."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay) if _active(weight_decay) else optax.identity(),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )


class AveragingState(NamedTuple):
    """`nt_asgd`'s state: the inner optimiser's, whether averaging has started, the average of
    the iterates since (and how many), and the non-monotone trigger's memory of validation
    losses: the last `nonmono` (`recent`, a ring, +inf where empty) and the least of the older
    ones (`best_before`)."""

    inner: optax.OptState
    averaging: jax.Array  # bool
    count: jax.Array  # int32: iterates averaged
    average: optax.Params
    recent: jax.Array  # (max(nonmono, 1),) float32
    best_before: jax.Array  # float32
    epochs: jax.Array  # int32: validation losses observed


class AveragedSGD(NamedTuple):
    """NT-ASGD (Merity et al. 2018, "Regularizing and Optimizing LSTM Language Models"), the
    DARTS recurrent cell's evaluation optimiser: `transformation` is an optax transformation
    that runs `inner`, multiplies its update by `update(..., scale=)` (a per-step factor on
    the learning rate) and, once averaging has started, keeps the running mean of the iterates
    (PyTorch `ASGD(t0=0, lambd=0)`'s `ax`: the mean of the parameters after every step since the
    switch); `observe(state, val_loss)` is the non-monotone trigger, called once an epoch with
    the validation loss (pure, jittable); `params(state, params)` is what to evaluate: the
    average once averaging has started, else `params`."""

    transformation: optax.GradientTransformationExtraArgs
    observe: Callable[[AveragingState, jax.Array], AveragingState]
    params: Callable[[AveragingState, optax.Params], optax.Params]


def nt_asgd(inner: optax.GradientTransformation, nonmono: int = 5) -> AveragedSGD:
    """`inner` (the SGD of `sgd`) with non-monotonically triggered averaging: averaging starts
    after the epoch whose validation loss is worse than the best of the losses before the last
    `nonmono` epochs (quark0/darts `rnn/train.py`: `len(best_val_loss) > nonmono and val_loss >
    min(best_val_loss[:-nonmono])`); `nonmono` 0 never averages."""
    window = max(nonmono, 1)

    def init(params):
        return AveragingState(
            inner=inner.init(params),
            averaging=jnp.zeros((), bool),
            count=jnp.zeros((), jnp.int32),
            average=jax.tree.map(jnp.zeros_like, params),
            recent=jnp.full((window,), jnp.inf, jnp.float32),
            best_before=jnp.asarray(jnp.inf, jnp.float32),
            epochs=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None, *, scale=1.0):
        if params is None:
            raise ValueError("nt_asgd needs the parameters: tx.update(grads, state, params)")
        updates, inner_state = inner.update(updates, state.inner, params)
        # The step's own factor on the learning rate (the segment's length / bptt), before the
        # average is taken: the average is of the iterates training visits.
        updates = jax.tree.map(lambda u: u * jnp.asarray(scale, u.dtype), updates)
        count = state.count + state.averaging.astype(jnp.int32)
        weight = state.averaging.astype(jnp.float32) / jnp.maximum(count, 1).astype(jnp.float32)

        def mean(avg, p, u):
            new = p + u
            return avg + (weight * (new - avg)).astype(avg.dtype)

        average = jax.tree.map(mean, state.average, params, updates)
        return updates, state._replace(inner=inner_state, count=count, average=average)

    def observe(state: AveragingState, val_loss) -> AveragingState:
        val_loss = jnp.asarray(val_loss, jnp.float32)
        worse = (nonmono > 0) & (state.epochs > nonmono) & (val_loss > state.best_before)
        slot = state.epochs % window
        leaving = jnp.where(state.epochs >= window, state.recent[slot], jnp.inf)
        return state._replace(
            averaging=state.averaging | worse,
            recent=state.recent.at[slot].set(val_loss),
            best_before=jnp.minimum(state.best_before, leaving),
            epochs=state.epochs + 1,
        )

    def averaged(state: AveragingState, params):
        return jax.tree.map(lambda a, p: jnp.where(state.averaging, a, p), state.average, params)

    return AveragedSGD(optax.GradientTransformationExtraArgs(init, update), observe, averaged)
