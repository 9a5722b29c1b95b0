"""Search networks (supernets): cells whose edges mix every candidate operation.

The mixing weights are an explicit input, `model.apply(variables, x, mix_weights, train=...)`, a dict
cell type -> (num_edges, num_ops) array in the space's edge and primitive order; the alphas and the
relaxation that turns them into mixing weights live outside (`relaxations.py`).

Structure, for XLA. A cell is computed source node by source node: all edges leaving a node are
computed together (`ops.*.fold`: the edges' kernels concatenated along the output channels, one
convolution per op kind), parameter-free ops (pooling, identity) once per node and shared by its
edges, and `none` not at all (it contributes exactly zero; its alpha still gets its gradient
through the normalisation of the mixing weights). The DARTS cell is 4-6 convolutions per node instead
of 4 per edge, which is what makes the supernet compile in seconds rather than minutes.

Batch normalisation. Every BatchNorm in a supernet normalises with the statistics of the batch it is
given, in training and in evaluation, and keeps no running averages (NAS-Bench-201's
`track_running_stats=False`). The reference DARTS code tracks running statistics but only reads
them to report supernet validation accuracy; without them the supernet is a pure function of
(params, x, mix_weights), which is what exact second-order hypergradients differentiate through.
Edge BatchNorms have no affine parameters (DARTS `MixedOp`, NAS-Bench-201 search cells); the stem's
and the NAS-Bench-201 reduction blocks' have.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dnas import ops, spaces
from dnas.spaces.base import SearchSpace
from dnas.types import Array, MixWeights


def edge_op_name(src: int, dst: int, op: str) -> str:
    """The module name of op `op` on edge src -> dst inside a search cell."""
    return f"edge_{src}_{dst}_{op}"


def _batch_norm(x: Array) -> Array:
    mean, var = ops.batch_moments(x)
    return ops.normalize(x, mean, var, 1e-5)


class MixedCell(nn.Module):
    """The edges and intermediate nodes of a search cell.

    Node j is the sum over its incoming edges (i, j) of sum_k w[(i, j), k] * op_k(node_i). Returns the
    states of every node (inputs first).
    """

    space: SearchSpace
    C: int
    reduction: bool = False
    bn_after_pool: bool = False  # DARTS MixedOp appends BatchNorm(affine=False) to pooling ops
    sep_impl: str = "fused"

    def edge_op(self, src: int, dst: int, op: str) -> nn.Module:
        stride = 2 if self.reduction and src < self.space.num_inputs else 1
        return ops.make_op(
            op, self.C, self.C, stride, affine=False, track_running_stats=False,
            impl=self.sep_impl, name=edge_op_name(src, dst, op), parent=self,
        )  # fmt: skip

    @nn.compact
    def __call__(self, inputs: Sequence[Array], w_ExK: Array, train: bool) -> list[Array]:
        space = self.space
        if w_ExK.shape != (space.num_edges, space.num_ops):
            raise ValueError(
                f"mixing weights of a {space.name} cell must have shape "
                f"{(space.num_edges, space.num_ops)}, got {w_ExK.shape}"
            )
        if len(inputs) != space.num_inputs:
            raise ValueError(f"a {space.name} cell takes {space.num_inputs} inputs")
        w_ExK = w_ExK.astype(inputs[0].dtype)
        last = space.num_inputs + space.num_intermediate - 1
        states: list[Array | None] = [*inputs] + [None] * space.num_intermediate
        incoming: dict[int, list[Array]] = {dst: [] for dst in space.nodes}
        for src in range(last):
            if states[src] is None:
                states[src] = sum(incoming[src][1:], incoming[src][0])
            dsts = [dst for dst in space.nodes if dst > src]
            rows = jnp.array([space.edge_index(src, dst) for dst in dsts])
            mixed = None
            for k, op in enumerate(space.primitives):
                if op == "none":
                    continue
                modules = [self.edge_op(src, dst, op) for dst in dsts]
                out = type(modules[0]).fold(modules, states[src], train)  # (N, H, W, E or 1, C)
                if self.bn_after_pool and op.endswith("pool_3x3"):
                    out = _batch_norm(out)
                term = w_ExK[rows, k][:, None] * out
                mixed = term if mixed is None else mixed + term
            for slot, dst in enumerate(dsts):
                incoming[dst].append(mixed[:, :, :, slot, :])
        states[last] = sum(incoming[last][1:], incoming[last][0])
        return states


class DartsSearchCell(nn.Module):
    """A DARTS search cell: preprocessing of c_{k-2}, c_{k-1}, mixed edges, concat of the 4 nodes."""

    C: int
    reduction: bool
    reduction_prev: bool
    sep_impl: str = "fused"

    @nn.compact
    def __call__(self, s0: Array, s1: Array, w_ExK: Array, train: bool = True) -> Array:
        space = spaces.get("darts_cnn")
        bn = dict(affine=False, track_running_stats=False)
        if self.reduction_prev:
            s0 = ops.FactorizedReduce(s0.shape[-1], self.C, **bn, name="preprocess0")(s0, train)
        else:
            s0 = ops.ReLUConvBN(s0.shape[-1], self.C, 1, 1, 0, **bn, name="preprocess0")(s0, train)
        s1 = ops.ReLUConvBN(s1.shape[-1], self.C, 1, 1, 0, **bn, name="preprocess1")(s1, train)
        states = MixedCell(
            space, self.C, self.reduction, bn_after_pool=True, sep_impl=self.sep_impl, name="mixed"
        )([s0, s1], w_ExK, train)
        return jnp.concatenate([states[i] for i in space.concat], axis=-1)


class Linear(nn.Module):
    """nn.Dense with PyTorch's default initialisation and multiply-add counting."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        init = ops.uniform_fan_in(fan_in)
        ops.record_macs(fan_in * self.features)
        return nn.Dense(self.features, kernel_init=init, bias_init=init, name="dense")(x)


class StemConv(nn.Module):
    C_out: int
    track_running_stats: bool = True
    stride: int = 1

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        kernel = self.param(
            "kernel", ops.uniform_fan_in(9 * x.shape[-1]), (3, 3, x.shape[-1], self.C_out)
        )
        y = ops.conv2d(x, kernel, self.stride, 1)
        return ops.BatchNorm(track_running_stats=self.track_running_stats, name="bn")(y, train)


def reduction_layers(layers: int) -> tuple[int, int]:
    """DARTS: reduction cells at 1/3 and 2/3 of the depth."""
    return layers // 3, 2 * layers // 3


class DartsSupernet(nn.Module):
    """The DARTS search network (`model_search.Network`): stem of 3C channels, `layers` cells with
    reductions at 1/3 and 2/3 doubling the channels, global average pooling, linear classifier."""

    num_classes: int
    C: int = 16
    layers: int = 8
    stem_multiplier: int = 3
    sep_impl: str = "fused"
    remat: bool = False

    space_name = "darts_cnn"

    @nn.compact
    def __call__(self, x: Array, mix_weights: MixWeights, *, train: bool = True) -> Array:
        space = spaces.get(self.space_name)
        _check_mix_weights(space, mix_weights)
        s0 = s1 = StemConv(self.stem_multiplier * self.C, False, name="stem")(x, train)
        C_curr, reduction_prev = self.C, False
        cell_cls = nn.remat(DartsSearchCell, static_argnums=(4,)) if self.remat else DartsSearchCell
        for i in range(self.layers):
            reduction = i in reduction_layers(self.layers)
            if reduction:
                C_curr *= 2
            cell = cell_cls(C_curr, reduction, reduction_prev, self.sep_impl, name=f"cell_{i}")
            w = mix_weights["reduce" if reduction else "normal"]
            s0, s1 = s1, cell(s0, s1, w, train)
            reduction_prev = reduction
        return Linear(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's reduction block: two 3x3 ReLUConvBNs (the first with stride 2) plus a
    shortcut of 2x2 average pooling and a 1x1 convolution."""

    C_out: int
    stride: int = 2
    track_running_stats: bool = True

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        C_in, trs = x.shape[-1], self.track_running_stats
        y = ops.ReLUConvBN(C_in, self.C_out, 3, self.stride, 1, 1, True, trs, name="conv_a")(
            x, train
        )
        y = ops.ReLUConvBN(self.C_out, self.C_out, 3, 1, 1, 1, True, trs, name="conv_b")(y, train)
        if self.stride == 2:
            kernel = self.param(
                "shortcut_kernel", ops.uniform_fan_in(C_in), (1, 1, C_in, self.C_out)
            )
            shortcut = ops.conv2d(ops.avg_pool(x, 2, 2, 0), kernel)
        elif C_in != self.C_out:
            shortcut = ops.ReLUConvBN(C_in, self.C_out, 1, 1, 0, 1, True, trs, name="shortcut")(
                x, train
            )
        else:
            shortcut = x
        return shortcut + y


def nb201_layout(C: int, N: int) -> list[tuple[int, bool]]:
    """(channels, is_reduction_block) of the NAS-Bench-201 macro skeleton: 3 stages of N cells."""
    return (
        [(C, False)] * N
        + [(2 * C, True)]
        + [(2 * C, False)] * N
        + [(4 * C, True)]
        + [(4 * C, False)] * N
    )


class NB201Supernet(nn.Module):
    """The NAS-Bench-201 search network (AutoDL-Projects `TinyNetworkDarts`): 3x3 stem, three
    stages of N search cells separated by ResNet reduction blocks, BN-ReLU, pooling, classifier."""

    num_classes: int
    C: int = 16
    N: int = 5
    remat: bool = False

    space_name = "nb201"

    @nn.compact
    def __call__(self, x: Array, mix_weights: MixWeights, *, train: bool = True) -> Array:
        space = spaces.get(self.space_name)
        _check_mix_weights(space, mix_weights)
        x = StemConv(self.C, False, name="stem")(x, train)
        cell_cls = nn.remat(MixedCell, static_argnums=(3,)) if self.remat else MixedCell
        for i, (C_curr, reduction) in enumerate(nb201_layout(self.C, self.N)):
            if reduction:
                x = ResNetBasicBlock(C_curr, 2, False, name=f"cell_{i}")(x, train)
            else:
                x = cell_cls(space, C_curr, name=f"cell_{i}")([x], mix_weights["normal"], train)[-1]
        x = jax.nn.relu(ops.BatchNorm(track_running_stats=False, name="lastact")(x, train))
        return Linear(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2)))


def _check_mix_weights(space: SearchSpace, mix_weights: MixWeights) -> None:
    expected = space.alpha_shapes
    got = {k: tuple(getattr(v, "shape", ())) for k, v in mix_weights.items()}
    if got != expected:
        raise ValueError(
            f"mixing weights for the {space.name} space must be {expected} "
            f"(cell type -> (edges, ops)), got {got}"
        )


SUPERNETS: dict[str, type[nn.Module]] = {
    "darts_cnn": DartsSupernet,
    "nb201": NB201Supernet,
}


def build(space: str, num_classes: int, **kwargs) -> nn.Module:
    """The supernet of search space `space`; kwargs are the network's fields (C, layers, N, ...)."""
    try:
        cls = SUPERNETS[space]
    except KeyError:
        raise KeyError(
            f"no supernet for search space {space!r}; valid: {', '.join(SUPERNETS)}"
        ) from None
    return cls(num_classes=num_classes, **kwargs)
