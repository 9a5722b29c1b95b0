"""What the discrete networks of every space share: drop-path.

Each space builds its discrete network from a genotype (`dnas/spaces/`); every network works for
any input size and channel count, and returns `(logits, aux_logits)` (`aux_logits` None unless the
network has an auxiliary head and `train=True`). Drop-path (Zoph et al. 2018; the reference
`drop_path`) is applied to every non-identity op output in training, at the rate passed to
`__call__` as an array, so a schedule does not recompile; it draws from the `dropout` RNG stream.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dnas.types import Array


def drop_path_masks(rng: jax.Array, rate: Array, shape: tuple[int, ...]) -> Array:
    """Per-sample keep masks scaled by 1 / (1 - rate): multiplying an op's output by its mask
    zeroes whole samples with probability `rate` (the reference `drop_path`). One draw for the
    whole network: XLA:CPU compiles every random draw separately, and slowly."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, shape)
    return mask.astype(jnp.float32) / keep


def drop_path_inputs(
    module: nn.Module, shape: tuple[int, ...], train: bool, rate: Array | float
) -> Array | None:
    """The drop-path masks of shape `shape` (e.g. (cells, ops per cell, batch)) for one forward
    pass of `module` in training; None in evaluation."""
    if not train:
        return None
    rate = jnp.asarray(rate, jnp.float32)
    return drop_path_masks(module.make_rng("dropout"), rate, shape)
