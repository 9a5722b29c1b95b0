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


# ---------------------------------------------------------------------------------------------
# Binary gates (ProxylessNAS): sampled paths, and the gradient of the gates' expectation.


def sample_paths(alpha_RxK: Array, key: PRNGKey, n: int) -> Array:
    """(rows, n) int32: n distinct ops per row drawn one after another from softmax(alpha)
    without replacement (the Gumbel-top-n trick, equal in law to `torch.multinomial(p, n,
    replacement=False)`), in the order drawn. Ops whose alpha is -inf (masked) are never drawn
    while a row has n others."""
    alpha_RxK = jax.lax.stop_gradient(alpha_RxK)
    noisy = alpha_RxK + jax.random.gumbel(key, alpha_RxK.shape, alpha_RxK.dtype)
    return jax.lax.top_k(noisy, n)[1].astype(jnp.int32)


@jax.custom_vjp
def binary_gates(alpha_RxK: Array, paths_RxP: Array, live_R: Array) -> Array:
    """ProxylessNAS' binary gates (Cai et al. 2019, Eq. 3-4): the one-hot of each row's first
    path `paths_RxP[:, 0]` (the active op), whose gradient w.r.t. alpha is Eq. 4 restricted to
    the row's P paths S: dL/dalpha_i = sum_{j in S} dL/dg_j q_j (delta_ij - q_i) for i in S,
    q = softmax(alpha_S), and 0 for the alphas outside S. With S every op of the row this is
    Eq. 4 itself (q = softmax(alpha)). Rows where `live_R` is False get no gradient.

    dL/dg_j is the gradient the supernet gives the gate of op j: exact wherever op j's output
    was computed (gate 0 included), so the paths S must be computed. A masked op (alpha -inf)
    in S has q = 0 and receives and contributes nothing."""
    del live_R
    return jax.nn.one_hot(paths_RxP[:, 0], alpha_RxK.shape[-1], dtype=alpha_RxK.dtype)


def _binary_gates_fwd(alpha_RxK, paths_RxP, live_R):
    return binary_gates(alpha_RxK, paths_RxP, live_R), (alpha_RxK, paths_RxP, live_R)


def _binary_gates_bwd(res, dgates_RxK):
    alpha_RxK, paths_RxP, live_R = res
    q_RxP = jax.nn.softmax(jnp.take_along_axis(alpha_RxK, paths_RxP, -1), -1)
    dg_RxP = jnp.take_along_axis(dgates_RxK, paths_RxP, -1)
    # sum_j dg_j q_j (delta_ij - q_i) = q_i (dg_i - sum_j q_j dg_j)
    d_RxP = q_RxP * (dg_RxP - jnp.sum(q_RxP * dg_RxP, -1, keepdims=True))
    d_RxP = jnp.where(live_R[:, None], d_RxP, 0.0).astype(alpha_RxK.dtype)
    rows = jnp.arange(alpha_RxK.shape[0])[:, None]
    dalpha_RxK = jnp.zeros_like(alpha_RxK).at[rows, paths_RxP].add(d_RxP)
    return dalpha_RxK, None, None


binary_gates.defvjp(_binary_gates_fwd, _binary_gates_bwd)
