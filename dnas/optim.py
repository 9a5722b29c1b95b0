"""Optimisers for the weights and the architecture parameters, built from typed arguments.

Both follow the reference PyTorch semantics (quark0/darts `train_search.py`, `architect.py`):
weight decay is an L2 term added to the gradient before momentum/Adam (PyTorch's `weight_decay`,
not AdamW's decoupled decay), gradients are clipped by global norm before that, and the cosine
learning rate is annealed per epoch (`CosineAnnealingLR` stepped once an epoch) unless
`per_step=True`. Schedules are functions of the step, evaluated inside jit.
"""

from __future__ import annotations

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
