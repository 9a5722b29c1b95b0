"""Training states: pytrees of arrays only (the optimisers and apply functions live in closures),
checkpointed whole. The PRNG key is the run's root key of the step stream; step t uses
`jax.random.fold_in(rng, t)`, so resuming needs no key bookkeeping."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from dnas.spaces.base import init_alphas
from dnas.types import Alphas, Array, Params, PRNGKey


class SearchState(struct.PyTreeNode):
    step: Array  # int32: search steps done; also the data position
    params: Params
    alphas: Alphas
    weight_opt_state: optax.OptState
    alpha_opt_state: optax.OptState
    rng: PRNGKey


class TrainState(struct.PyTreeNode):
    step: Array
    params: Params
    batch_stats: Any
    opt_state: optax.OptState
    rng: PRNGKey


def init_variables(model: nn.Module, key: PRNGKey, x: Array, *args: Any, **kwargs: Any) -> dict:
    """`model.init` compiled, without materialising the forward pass.

    Initialises from a one-example batch: parameter shapes do not depend on the batch size, and
    XLA drops the unused forward computation. The key is turned into an `unsafe_rbg` key for the
    initialisers: XLA:CPU compiles each threefry draw separately and slowly (a supernet has
    hundreds of parameters: minutes instead of seconds), whereas RngBitGenerator compiles to one
    op. The values are deterministic for a given key and backend.
    """
    bits = jax.random.bits(key, (4,), jnp.uint32)
    init_key = jax.random.wrap_key_data(bits, impl="unsafe_rbg")
    init = jax.jit(lambda k, x, args: model.init(k, x, *args, **kwargs))
    return init(init_key, jnp.asarray(x[:1]), args)


def initial_alphas(config: Any, su: Any) -> tuple[Alphas, PRNGKey, PRNGKey]:
    """(alphas, params key, steps key) of a search's start (`su` a `search_step.SearchSetup`),
    from `config.seed`: the strategy's (or the space's) alpha initialisation at
    `search.alpha_init_scale`. The image and the text search states both start from it."""
    root = jax.random.key(config.seed)
    k_params, k_alphas, k_steps = (jax.random.fold_in(root, i) for i in range(3))
    init = su.strategy.init_alphas or init_alphas
    return init(su.space, k_alphas, config.search.alpha_init_scale), k_params, k_steps
