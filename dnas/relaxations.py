"""Relaxations: pure functions (alphas, key, step) -> mixing weights.

Each takes the architecture parameters of every cell type and returns the weights the supernet
mixes its candidate ops with, in the same (num_edges, num_ops) layout.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from dnas.types import Alphas, Array, MixWeights, PRNGKey

Relaxation = Callable[[Alphas, PRNGKey, Array], MixWeights]


def softmax(alphas: Alphas, key: PRNGKey | None = None, step: Array | None = None) -> MixWeights:
    """DARTS (Liu et al. 2019, Eq. 2): a softmax over the candidate ops of every edge."""
    del key, step
    return {cell: jax.nn.softmax(a, axis=-1) for cell, a in alphas.items()}
