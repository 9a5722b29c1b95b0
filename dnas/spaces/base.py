"""The `SearchSpace` description shared by every space."""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from dnas.types import Alphas, PRNGKey


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A cell-based search space.

    Nodes are numbered as in the papers: `num_inputs` input nodes first (DARTS: c_{k-2}, c_{k-1}),
    then the intermediate nodes. Every intermediate node has an edge from every earlier node; edges
    are ordered by destination, then source, which is the row order of the alphas in the reference
    implementations (DARTS `_arch_parameters`, NAS-Bench-201 `edge2index`).

    Attributes:
      name: registry key.
      primitives: candidate operation names; row `k` of an alpha matrix weights `primitives[k]`.
      num_inputs: input nodes of a cell.
      num_intermediate: intermediate nodes of a cell.
      cell_types: the cell types that carry their own alphas (`normal`, `reduce`).
      edges_per_node: discretisation keeps this many strongest incoming edges per node (DARTS: 2);
        `None` keeps every edge and picks its best op (NAS-Bench-201).
      concat: the nodes whose outputs form the cell output in a discrete cell.
    """

    name: str
    primitives: tuple[str, ...]
    num_inputs: int
    num_intermediate: int
    cell_types: tuple[str, ...]
    edges_per_node: int | None
    concat: tuple[int, ...]

    @functools.cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(source, destination) of every edge, in alpha row order."""
        return tuple(
            (src, dst)
            for dst in range(self.num_inputs, self.num_inputs + self.num_intermediate)
            for src in range(dst)
        )

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_ops(self) -> int:
        return len(self.primitives)

    @property
    def nodes(self) -> range:
        """The intermediate nodes."""
        return range(self.num_inputs, self.num_inputs + self.num_intermediate)

    def edge_index(self, src: int, dst: int) -> int:
        """Row of edge src -> dst in an alpha matrix."""
        try:
            return self.edges.index((src, dst))
        except ValueError:
            raise ValueError(f"{self.name} has no edge {src} -> {dst}") from None

    def op_index(self, op: str) -> int:
        """Column of primitive `op` in an alpha matrix."""
        self.check_op(op)
        return self.primitives.index(op)

    def check_op(self, op: str) -> None:
        if op not in self.primitives:
            raise KeyError(
                f"unknown operation {op!r} for search space {self.name!r}; "
                f"valid operations: {', '.join(self.primitives)}"
            )

    @property
    def alpha_shapes(self) -> dict[str, tuple[int, int]]:
        return {cell: (self.num_edges, self.num_ops) for cell in self.cell_types}

    def init_alphas(self, key: PRNGKey, scale: float = 1e-3) -> Alphas:
        """DARTS initialisation: `scale * N(0, 1)` for every alpha (Liu et al. 2019, Sec. 3)."""
        keys = jax.random.split(key, len(self.cell_types))
        return {
            cell: scale * jax.random.normal(k, self.alpha_shapes[cell], jnp.float32)
            for cell, k in zip(self.cell_types, keys, strict=True)
        }
