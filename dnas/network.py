"""Discrete networks built from a genotype, for retraining from scratch and evaluation.

- `NetworkCIFAR`: the DARTS evaluation network for small inputs (Liu et al. 2019, Sec. A.2; the
  reference `model.NetworkCIFAR`): 3x3 stem of 3C channels, `layers` cells with reduction cells at
  1/3 and 2/3 of the depth, an auxiliary head after the 2/3 cell, global pooling, classifier.
- `NetworkImageNet`: the DARTS mobile-setting network (two stride-2 stems, then stride-2 stem
  cell input; the reference `model.NetworkImageNet`).
- `NB201Network`: the NAS-Bench-201 network of one cell (Dong & Yang 2020, Fig. 1).

Every network works for any input size and channel count (1-channel 8x8 digits included). Calls
return `(logits, aux_logits)`; `aux_logits` is None unless the network has an auxiliary head and
`train=True`. Drop-path (Zoph et al. 2018; the reference `drop_path`) is applied to every
non-identity op output in training, at the rate passed to `__call__` as an array, so a schedule
does not recompile; it draws from the `dropout` RNG stream.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dnas import ops
from dnas.genotype import Genotype
from dnas.supernet import Linear, ResNetBasicBlock, StemConv, nb201_layout, reduction_layers
from dnas.types import Array


def drop_path_masks(rng: jax.Array, rate: Array, shape: tuple[int, ...]) -> Array:
    """Per-sample keep masks scaled by 1 / (1 - rate): multiplying an op's output by its mask
    zeroes whole samples with probability `rate` (the reference `drop_path`). One draw for the
    whole network: XLA:CPU compiles every random draw separately, and slowly."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, shape)
    return mask.astype(jnp.float32) / keep


def _drop_path_inputs(module: nn.Module, layers: int, batch: int, train: bool, rate) -> Array:
    if not train:
        return None
    rate = jnp.asarray(rate, jnp.float32)
    return drop_path_masks(module.make_rng("dropout"), rate, (layers, 8, batch))


class DartsCell(nn.Module):
    """A discrete DARTS cell (the reference `model.Cell`)."""

    genotype: Genotype
    C: int
    reduction: bool
    reduction_prev: bool
    sep_impl: str = "fused"

    @nn.compact
    def __call__(self, s0: Array, s1: Array, train: bool, masks: Array | None = None) -> Array:
        """`masks`: (8, N) drop-path masks for the cell's ops (`drop_path_masks`), or None."""
        cell = "reduce" if self.reduction else "normal"
        nodes, concat = self.genotype.cells()[cell], self.genotype.concat(cell)
        if self.reduction_prev:
            s0 = ops.FactorizedReduce(s0.shape[-1], self.C, name="preprocess0")(s0, train)
        else:
            s0 = ops.ReLUConvBN(s0.shape[-1], self.C, 1, 1, 0, name="preprocess0")(s0, train)
        s1 = ops.ReLUConvBN(s1.shape[-1], self.C, 1, 1, 0, name="preprocess1")(s1, train)
        states = [s0, s1]
        for node, edges in enumerate(nodes, start=2):
            total = None
            for slot, (op, src) in enumerate(edges):
                stride = 2 if self.reduction and src < 2 else 1
                module = ops.make_op(
                    op, self.C, self.C, stride, impl=self.sep_impl, name=f"node{node}_{slot}_{op}"
                )
                h = module(states[src], train)
                if masks is not None and not isinstance(module, ops.Identity):
                    h = h * masks[2 * (node - 2) + slot, :, None, None, None].astype(h.dtype)
                total = h if total is None else total + h
            states.append(total)
        return jnp.concatenate([states[i] for i in concat], axis=-1)


class AuxiliaryHead(nn.Module):
    """The reference auxiliary heads: ReLU, 5x5 average pooling (stride 3 for 8x8 CIFAR maps, 2 for
    7x7 ImageNet maps), 1x1 conv to 128, BN, ReLU, conv to 768 over the remaining map, BN, ReLU,
    linear. The pooling is skipped on maps smaller than 5x5 (8x8 digits)."""

    num_classes: int
    pool_stride: int = 3
    bn_after_second_conv: bool = True  # the reference ImageNet head omits it

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        x = jax.nn.relu(x)
        if min(x.shape[1:3]) >= 5:
            x = ops.avg_pool(x, 5, self.pool_stride, 0)
        k1 = self.param("conv1", ops.uniform_fan_in(x.shape[-1]), (1, 1, x.shape[-1], 128))
        x = jax.nn.relu(ops.BatchNorm(name="bn1")(ops.conv2d(x, k1), train))
        kh, kw = min(x.shape[1], 2), min(x.shape[2], 2)
        k2 = self.param("conv2", ops.uniform_fan_in(kh * kw * 128), (kh, kw, 128, 768))
        x = ops.conv2d(x, k2)
        if self.bn_after_second_conv:
            x = ops.BatchNorm(name="bn2")(x, train)
        x = jnp.mean(jax.nn.relu(x), axis=(1, 2))
        return Linear(self.num_classes, name="classifier")(x)


def _cells_and_classifier(
    net: nn.Module, s0: Array, s1: Array, train: bool, masks: Array | None,
    reduction_prev: bool, head: nn.Module | None,
) -> tuple[Array, Array | None]:  # fmt: skip
    """The DARTS evaluation networks after their stems: `net.layers` cells (reductions at 1/3 and
    2/3), the auxiliary head after the 2/3 cell, global pooling, the classifier."""
    C_curr, aux_logits = net.C, None
    for i in range(net.layers):
        reduction = i in reduction_layers(net.layers)
        if reduction:
            C_curr *= 2
        cell = DartsCell(
            net.genotype, C_curr, reduction, reduction_prev, net.sep_impl, name=f"cell_{i}"
        )
        s0, s1 = s1, cell(s0, s1, train, None if masks is None else masks[i])
        reduction_prev = reduction
        if head is not None and i == 2 * net.layers // 3 and (train or net.is_initializing()):
            aux_logits = head(s1, train)
    logits = Linear(net.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))
    return logits, aux_logits


class NetworkCIFAR(nn.Module):
    genotype: Genotype
    num_classes: int
    C: int = 36
    layers: int = 20
    auxiliary: bool = False
    stem_multiplier: int = 3
    sep_impl: str = "fused"

    @nn.compact
    def __call__(
        self, x: Array, *, train: bool = False, drop_path_rate: Array | float = 0.0
    ) -> tuple[Array, Array | None]:
        _check_space(self.genotype, "darts_cnn")
        masks = _drop_path_inputs(self, self.layers, x.shape[0], train, drop_path_rate)
        s0 = s1 = StemConv(self.stem_multiplier * self.C, name="stem")(x, train)
        head = AuxiliaryHead(self.num_classes, 3, name="auxiliary_head") if self.auxiliary else None
        return _cells_and_classifier(self, s0, s1, train, masks, False, head)


class NetworkImageNet(nn.Module):
    genotype: Genotype
    num_classes: int
    C: int = 48
    layers: int = 14
    auxiliary: bool = False
    sep_impl: str = "fused"

    @nn.compact
    def __call__(
        self, x: Array, *, train: bool = False, drop_path_rate: Array | float = 0.0
    ) -> tuple[Array, Array | None]:
        _check_space(self.genotype, "darts_cnn")
        masks = _drop_path_inputs(self, self.layers, x.shape[0], train, drop_path_rate)
        C = self.C
        s0 = StemConv(C // 2, stride=2, name="stem0_conv1")(x, train)
        s0 = StemConv(C, stride=2, name="stem0_conv2")(jax.nn.relu(s0), train)
        s1 = StemConv(C, stride=2, name="stem1")(jax.nn.relu(s0), train)
        head = None
        if self.auxiliary:
            head = AuxiliaryHead(self.num_classes, 2, False, name="auxiliary_head")
        return _cells_and_classifier(self, s0, s1, train, masks, True, head)


class NB201Cell(nn.Module):
    """A discrete NAS-Bench-201 cell (AutoDL-Projects `InferCell`): node j sums op(node i) over
    its incoming edges; `none` edges contribute nothing."""

    genotype: Genotype
    C: int

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        states = [x]
        for node, edges in enumerate(self.genotype.normal, start=1):
            total = jnp.zeros_like(x)
            for op, src in edges:
                if op == "none":
                    continue
                module = ops.make_op(op, self.C, self.C, 1, name=f"edge_{src}_{node}_{op}")
                total = total + module(states[src], train)
            states.append(total)
        return states[-1]


class NB201Network(nn.Module):
    """The NAS-Bench-201 network (AutoDL-Projects `TinyNetwork`): 3x3 stem of C channels, three
    stages of N cells separated by ResNet reduction blocks, BN-ReLU, pooling, classifier."""

    genotype: Genotype
    num_classes: int
    C: int = 16
    N: int = 5

    @nn.compact
    def __call__(
        self, x: Array, *, train: bool = False, drop_path_rate: Array | float = 0.0
    ) -> tuple[Array, None]:
        del drop_path_rate  # NAS-Bench-201 trains without drop-path
        _check_space(self.genotype, "nb201")
        x = StemConv(self.C, name="stem")(x, train)
        for i, (C_curr, reduction) in enumerate(nb201_layout(self.C, self.N)):
            if reduction:
                x = ResNetBasicBlock(C_curr, 2, name=f"cell_{i}")(x, train)
            else:
                x = NB201Cell(self.genotype, C_curr, name=f"cell_{i}")(x, train)
        x = jax.nn.relu(ops.BatchNorm(name="lastact")(x, train))
        return Linear(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2))), None


def _check_space(genotype: Genotype, space: str) -> None:
    if genotype.space != space:
        raise ValueError(
            f"this network is built from a {space} genotype, got a {genotype.space} one"
        )


NETWORKS: dict[str, type[nn.Module]] = {
    "cifar": NetworkCIFAR,
    "imagenet": NetworkImageNet,
    "nb201": NB201Network,
}


def build(
    genotype: Genotype,
    num_classes: int,
    *,
    input_size: int = 32,
    C: int | None = None,
    layers: int | None = None,
    auxiliary: bool = False,
    sep_impl: str = "fused",
) -> nn.Module:
    """The discrete network for `genotype`: NB201 for NB201 genotypes; for DARTS genotypes the
    ImageNet network for inputs of 128 pixels or more, the CIFAR network otherwise. `C` and
    `layers` default to the papers' settings (CIFAR 36/20, ImageNet 48/14, NB201 16/5)."""
    if genotype.space == "nb201":
        if auxiliary:
            raise ValueError("the NAS-Bench-201 network has no auxiliary head")
        kw = {k: v for k, v in (("C", C), ("N", layers)) if v is not None}
        return NB201Network(genotype, num_classes, **kw)
    cls = NetworkImageNet if input_size >= 128 else NetworkCIFAR
    kw = {k: v for k, v in (("C", C), ("layers", layers)) if v is not None}
    return cls(genotype, num_classes, auxiliary=auxiliary, sep_impl=sep_impl, **kw)
