"""Relaxations: pure functions (alphas, key, step) -> mixing weights.

Each takes the architecture parameters of every cell type and returns the weights the supernet
mixes its candidate ops with, in the same (num_edges, num_ops) layout. Alphas may carry entries
other than the cell types (PC-DARTS' edge betas, `"beta/normal"`); relaxations only read the cell
types they are given in `cells` and return only those.

Stochastic relaxations draw from `key` (the search step folds the step into it); `temperature`
arguments are scalars or arrays, so schedules can be traced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from dnas.types import Alphas, Array, MixWeights, PRNGKey

Relaxation = Callable[[Alphas, PRNGKey, Array], MixWeights]


def cell_types(alphas: Alphas) -> list[str]:
    """The cell-type entries of an alphas dict (not the auxiliary ones, whose names hold a '/')."""
    return [name for name in alphas if "/" not in name]


def softmax(alphas: Alphas, key: PRNGKey | None = None, step: Array | None = None) -> MixWeights:
    """DARTS (Liu et al. 2019, Eq. 2): a softmax over the candidate ops of every edge."""
    del key, step
    return {cell: jax.nn.softmax(alphas[cell], axis=-1) for cell in cell_types(alphas)}


def sigmoid(alphas: Alphas, key: PRNGKey | None = None, step: Array | None = None) -> MixWeights:
    """FairDARTS (Chu et al. 2020, Eq. 4): an independent sigmoid per op, no competition."""
    del key, step
    return {cell: jax.nn.sigmoid(alphas[cell]) for cell in cell_types(alphas)}


def _gumbel_like(key: PRNGKey, alphas: Alphas, cells: Sequence[str]) -> dict[str, Array]:
    keys = jax.random.split(key, len(cells))
    return {
        cell: jax.random.gumbel(k, alphas[cell].shape, alphas[cell].dtype)
        for cell, k in zip(cells, keys, strict=True)
    }


def gumbel_softmax(alphas: Alphas, key: PRNGKey, temperature: Array) -> MixWeights:
    """SNAS (Xie et al. 2019, Eq. 3): a concrete (Gumbel-softmax) sample per edge,
    softmax((log_softmax(alpha) + g) / tau), g ~ Gumbel(0, 1): random, on the simplex, and
    differentiable in alpha (reparameterised)."""
    cells = cell_types(alphas)
    noise = _gumbel_like(key, alphas, cells)
    return {
        cell: jax.nn.softmax((jax.nn.log_softmax(alphas[cell], -1) + noise[cell]) / temperature, -1)
        for cell in cells
    }


def hard_gumbel_softmax(alphas: Alphas, key: PRNGKey, temperature: Array) -> MixWeights:
    """GDAS (Dong & Yang 2019, Eq. 5-7): one op per edge. The forward value is the one-hot of
    argmax(log_softmax(alpha) + g); the gradient is the Gumbel-softmax's (straight-through):
    h - stop_gradient(s) + s with s the soft sample."""
    soft = gumbel_softmax(alphas, key, temperature)
    out = {}
    for cell, s in soft.items():
        hard = jax.nn.one_hot(jnp.argmax(s, -1), s.shape[-1], dtype=s.dtype)
        out[cell] = hard - jax.lax.stop_gradient(s) + s
    return out


def concentration(alpha: Array) -> Array:
    """DrNAS (Chen et al. 2021): Dirichlet concentration elu(alpha) + 1 > 0."""
    return jax.nn.elu(alpha) + 1.0


def dirichlet(alphas: Alphas, key: PRNGKey, step: Array | None = None) -> MixWeights:
    """DrNAS: a sample of Dir(elu(alpha) + 1) per edge. `jax.random.dirichlet` normalises Gamma
    samples, whose gradient w.r.t. the concentration is the implicit reparameterisation one
    (pathwise), as DrNAS's `rsample`."""
    del step
    cells = cell_types(alphas)
    keys = jax.random.split(key, len(cells))
    return {
        cell: jax.random.dirichlet(k, concentration(alphas[cell]), dtype=alphas[cell].dtype)
        for cell, k in zip(cells, keys, strict=True)
    }
