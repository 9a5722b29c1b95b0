"""Collapse diagnostics of a differentiable search.

- `hessian_eigenvalue`: the dominant eigenvalue of the Hessian of the validation loss with
  respect to the alphas (Zela et al., "Understanding and Robustifying DARTS", ICLR 2020), by
  power iteration on exact Hessian-vector products (reverse-over-reverse autodiff).
- `count_op`: how many times an op (skip_connect) appears in a derived genotype's alpha group;
  DARTS+ (Liang et al. 2019) stops the search when the normal cell has two or more skip
  connections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dnas.genotype import Genotype
from dnas.types import Array, PRNGKey


def _dot(a: Any, b: Any) -> Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def hessian_eigenvalue(
    loss: Callable[[Any], Array], x: Any, key: PRNGKey, iters: int = 20
) -> tuple[Array, Any]:
    """(eigenvalue, eigenvector) of largest magnitude of the Hessian of `loss` at `x` (a pytree),
    by `iters` power iterations from a random start; the eigenvalue is the Rayleigh quotient of
    the last iterate. jit-able; each iteration costs one Hessian-vector product."""
    leaves, treedef = jax.tree.flatten(x)
    keys = jax.random.split(key, len(leaves))
    start = [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)]
    v = treedef.unflatten(start)
    grad = jax.grad(loss)
    # Reverse over reverse: the convolutions' custom VJPs have no forward-mode rule.
    hvp = lambda v: jax.grad(lambda y: _dot(grad(y), v))(x)

    def normalise(v):
        n = jnp.sqrt(_dot(v, v))
        return jax.tree.map(lambda a: a / n, v)

    def body(_, v):
        return normalise(hvp(v))

    v = jax.lax.fori_loop(0, iters, body, normalise(v))
    return _dot(v, hvp(v)), v


def count_op(genotype: Genotype, op: str = "skip_connect", cell: str = "normal") -> int:
    """How many chosen edges (blocks) of alpha group `cell` use `op`."""
    return genotype.search_space.ops_used(genotype)[cell].count(op)
