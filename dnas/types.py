"""Type aliases shared across dnas (documentation for signatures, not runtime checks)."""

from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = Any  # a Flax parameter pytree
Alphas = dict[str, jax.Array]  # cell type -> (num_edges, num_ops) architecture logits
MixWeights = dict[str, jax.Array]  # cell type -> (num_edges, num_ops) mixing weights
Batch = dict[str, jax.Array]  # {'image': (N, H, W, C) float, 'label': (N,) int}
Metrics = dict[str, jax.Array]
