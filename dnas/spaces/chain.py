"""What the chain spaces (ProxylessNAS, FBNet) share: a stem, a chain of searchable blocks in
stages, a head; one alpha row per block (group `blocks`), one op chosen per block.

- The layout (`ChainSpec`): stage widths, blocks per stage, the first block's stride of each stage
  at 224x224, the widths of the stem, of an optional fixed first block (ProxylessNAS' 3x3 MBConv1)
  and of the head (1x1 conv before pooling). A block has an identity shortcut where, at the
  paper's widths and 224x224 strides, its stride is 1 and its width does not change (ProxylessNAS
  `MobileInvertedResidualBlock`, FBNet `IRFBlock.use_res_connect`): a property of the row, fixed
  whatever the resolution or width multiplier, so the candidates of a row never depend on them.
- Resolution: the strides adapt to the input so small images are not pooled away: of the 5
  stride-2 layers (stem included) only the last n keep stride 2, n the largest with
  min(H, W) / 2^n >= 4 (224: all 5, 7x7 at the head as published; 32x32 CIFAR: the stem's and
  the first strided stage's strides become 1, as CIFAR ports of MobileNetV2 do, 4x4 at the head;
  8x8 digits: 1 stride-2 stage).
- Widths: `C` is the stem width; the other widths are scaled by C / (the paper's stem width),
  each rounded to the nearest multiple of 8 not below 90% of the exact value (the authors'
  `make_divisible`), or, below 8 channels, to a multiple of 2 (at least 2; group-2 convolutions
  then always split evenly), so C=8 or 4 gives tiny networks. The head is never narrowed (both
  authors keep 1280 / 1504 for multipliers <= 1). `layers` means nothing for a chain (the depth
  is the paper's): it is accepted and ignored.
- The genotype: `{"blocks": (op, ...)}`, one op per row, and optionally `widths` (stem, [fixed
  first block], stages..., head) where a published network differs from the search space in
  widths only (ProxylessNAS-GPU is 1.35x wider, FBNet-B/C have a 1984-wide head). `mask` (group
  -> (rows, ops) bool) says which ops a row may take (ProxylessNAS' `zero` only where the block
  has a shortcut); validation, discretisation, sampling and mutation honour it.
- Supernet (`ChainSupernet`): block output = sum_k w[row, k] op_k(x) + shortcut(x); an op that
  computes nothing (`zero`; FBNet's `skip` in a block with a shortcut, which is the same thing)
  contributes 0. `single_op=True` computes only the op of largest weight per row, scaled by its
  weight; `mix_weights["active/blocks"]`, an int (rows, k) array, computes only those k ops per
  row (ProxylessNAS' binarised paths: the memory of k networks), each scaled by its weight, so
  the gradients of those weights are exact. Such a path is a `lax.switch` whose branches are the
  row's ops but its plain MBConvs, which are one branch (`pad_paths=True`, the default): one
  MBConv of the row's largest kernel and expansion holding the sampled op's kernels zero-padded
  (`padded_mbconv`: the same function and gradients up to rounding). XLA compiles every branch
  of a switch, so a ProxylessNAS row compiles 2 MBConvs instead of 6, for the multiply-adds of
  the largest; `pad_paths=False` switches over every op (the sampled op's multiply-adds).
  Candidate-op BatchNorms have no affine parameters and use batch statistics (`supernet.py`'s
  convention); the fixed parts' are affine.
- Folding (`fold=True`, the default): the full mixture computes a row's plain MBConvs together
  (`folded_mbconvs`: one expansion conv, a depthwise conv per op or, `fold_depthwise`, per
  kernel size, one batched projection per expansion ratio, BatchNorms over the
  concatenations): the same function up to rounding in ~1/3 of the HLO, which is what XLA's
  compile time grows with. The parameters stay one subtree per op
  (`b{row}/{op}/expand|depthwise|project`, as the discrete network and `fold=False` hold them,
  each initialised with its own fan-in), concatenated inside jit; so `single_op`, active paths,
  the discrete network's parameters and checkpoints are unchanged. `fold=False` is the
  one-module-per-op reference.
- Text format: `name:op-op-...` or, with widths, `name[w,w,...]:op-op-...`.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dnas import hardware, literals, ops
from dnas.genotype import Genotype, show
from dnas.spaces.base import Candidate, Space, TextFormat
from dnas.types import Alphas, Array, MixWeights, PRNGKey

GROUP = "blocks"
MIN_FEATURE_SIZE = 4  # the smallest feature map the strides leave before the head


class Stage(NamedTuple):
    width: int
    blocks: int
    stride: int  # of the stage's first block, at 224x224


# (op, C_in, C_out, stride, shortcut, affine, track_running_stats, impl, **module_kwargs) -> the
# op's module, or None for an op that computes nothing (the block's output is its shortcut).
OpFactory = Callable[..., nn.Module | None]


def stages(widths: Sequence[int], blocks: Sequence[int], strides: Sequence[int]) -> tuple:
    """The `Stage`s of a chain from its paper's table: per stage its width, its number of
    blocks and its first block's stride (at 224x224)."""
    return tuple(Stage(w, n, s) for w, n, s in zip(widths, blocks, strides, strict=True))


def mbconv(op: str, C_in: int, C_out: int, stride: int, **options: Any) -> ops.MBConv:
    """The inverted residual a candidate's name describes: kernel and expansion as `<k>_e<e>`
    (`mb5_e3`, `k3_e6`), group-2 1x1 convolutions with a channel shuffle for a `_g2` suffix;
    `options` are the space's and the call's (activation, epsilon, affine, impl, ...)."""
    kernel, expansion = (int(n) for n in re.search(r"(\d)_e(\d)", op).groups())
    groups = 2 if op.endswith("_g2") else 1
    return ops.MBConv(C_in, C_out, kernel, expansion, stride, groups, **options)


@dataclasses.dataclass(frozen=True)
class ChainSpec:
    """A chain space's layout and ops.

    widths: the paper's (stem, [first block], stage widths..., head).
    first_block: the fixed first block's (kernel, expansion), or None (FBNet searches it).
    shortcut_only: ops a row may take only where it has a shortcut (ProxylessNAS' `zero`).
    """

    name: str
    ops: tuple[str, ...]
    stages: tuple[Stage, ...]
    widths: tuple[int, ...]
    make_op: OpFactory
    activation: str
    epsilon: float = 1e-5
    first_block: tuple[int, int] | None = None
    shortcut_only: tuple[str, ...] = ()

    @property
    def num_rows(self) -> int:
        return sum(s.blocks for s in self.stages)

    @functools.cached_property
    def row_stages(self) -> tuple[tuple[int, int], ...]:
        """(stage, block within the stage) of every row."""
        return tuple((s, i) for s, stage in enumerate(self.stages) for i in range(stage.blocks))

    @functools.cached_property
    def shortcuts(self) -> tuple[bool, ...]:
        """Whether each row has an identity shortcut (at the paper's widths and strides)."""
        return tuple(_shortcuts(self, self.widths))

    @functools.cached_property
    def mask(self) -> np.ndarray:
        allowed = np.ones((self.num_rows, len(self.ops)), bool)
        for k, op in enumerate(self.ops):
            if op in self.shortcut_only:
                allowed[:, k] = self.shortcuts
        allowed.setflags(write=False)
        return allowed

    def valid_ops(self, row: int) -> tuple[str, ...]:
        return tuple(op for op, ok in zip(self.ops, self.mask[row], strict=True) if ok)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(f"b{r}" for r in range(self.num_rows))


def _in_out(spec: ChainSpec, widths: Sequence[int]) -> list[tuple[int, int]]:
    """(C_in, C_out) of every row under `widths`."""
    first = 1 + (spec.first_block is not None)
    c_in, out = widths[first - 1], []
    for s, _ in spec.row_stages:
        out.append((c_in, widths[first + s]))
        c_in = widths[first + s]
    return out


def _shortcuts(spec: ChainSpec, widths: Sequence[int]) -> list[bool]:
    return [
        i > 0 or (spec.stages[s].stride == 1 and c_in == c_out)
        for (s, i), (c_in, c_out) in zip(spec.row_stages, _in_out(spec, widths), strict=True)
    ]


# --------------------------------------------------------------------------------------------------
# Widths and strides.


def make_divisible(v: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor` (at least `divisor`), raised by one `divisor` if that is
    below 90% of v (the TF MobileNet / ProxylessNAS `make_divisible`)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def scale_width(width: int, multiplier: float) -> int:
    """`width` times `multiplier`, to a multiple of 8 (`make_divisible`), or below 8 channels to
    a multiple of 2 (at least 2)."""
    v = width * multiplier
    if v >= 8:
        return make_divisible(v, 8)
    return max(2, 2 * round(v / 2))


def widths(spec: ChainSpec, base: Sequence[int] | None = None, C: int | None = None) -> tuple:
    """The widths (stem, [first block], stages..., head) of `base` (the paper's by default)
    scaled to stem width C (None: as they are); the head is scaled only to widen it."""
    base = tuple(spec.widths if base is None else base)
    if C is None or base[0] == C:
        return base
    if not isinstance(C, numbers.Integral) or C < 1:
        raise ValueError(f"C (the stem width of a {spec.name} network) must be >= 1, got {C!r}")
    m = C / base[0]
    head = base[-1] if m <= 1 else make_divisible(base[-1] * m, 8)
    return (int(C), *(scale_width(w, m) for w in base[1:-1]), head)


def strides(spec: ChainSpec, input_shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """(stem stride, stride of every row) for inputs of `input_shape` (H, W, ...): the last n of
    the stride-2 layers keep stride 2, n the largest with min(H, W) / 2^n >= 4."""
    positions = [-1] + [s for s, stage in enumerate(spec.stages) if stage.stride == 2]
    size, n = min(input_shape[:2]), 0
    while n < len(positions) and size // 2 ** (n + 1) >= MIN_FEATURE_SIZE:
        n += 1
    strided = set(positions[len(positions) - n :])
    stem = 2 if -1 in strided else 1
    rows = tuple(
        2 if i == 0 and spec.stages[s].stride == 2 and s in strided else 1
        for s, i in spec.row_stages
    )
    return stem, rows


class Row(NamedTuple):
    C_in: int
    C_out: int
    stride: int
    shortcut: bool
    input_hw: tuple[int, int]


def layout(
    spec: ChainSpec, widths_: Sequence[int], input_shape: Sequence[int]
) -> tuple[int, tuple[int, int], list[Row]]:
    """(stem stride, feature size after the stem, rows) of a network of `widths_` on inputs of
    `input_shape`."""
    stem, row_strides = strides(spec, input_shape)
    hw = tuple(-(-n // stem) for n in input_shape[:2])
    after_stem, rows = hw, []
    for (c_in, c_out), stride, shortcut in zip(
        _in_out(spec, widths_), row_strides, spec.shortcuts, strict=True
    ):
        rows.append(Row(c_in, c_out, stride, shortcut, hw))
        hw = tuple(-(-n // stride) for n in hw)
    return stem, after_stem, rows


# --------------------------------------------------------------------------------------------------
# The networks.


class _Site(nn.Module):
    """Where a block sits in the chain: its space, widths, stride and whether it has the identity
    shortcut (`Block` and `MixedBlock` add what they compute)."""

    spec: ChainSpec
    C_in: int
    C_out: int
    stride: int
    shortcut: bool


class Block(_Site):
    """One block of a discrete chain network: its op (a child named after it) plus the identity
    shortcut where the row has one; an op that computes nothing leaves the shortcut alone."""

    op: str
    impl: ops.Impl = "depthwise"
    affine: bool = True
    track_running_stats: bool = True

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        module = self.spec.make_op(
            self.op, self.C_in, self.C_out, self.stride, self.shortcut, self.affine,
            self.track_running_stats, self.impl, name=self.op,
        )  # fmt: skip
        if module is None:
            if not self.shortcut:
                raise ValueError(f"{self.op!r} needs a block with a shortcut")
            return x
        y = module(x, train)
        return x + y if self.shortcut else y


class MixedBlock(_Site):
    """A searchable block: sum_k w_K[k] op_k(x) (+ the shortcut), every op's parameters under its
    name; see the module docstring for `single_op`, active paths and `fold`."""

    impl: ops.Impl = "depthwise"
    single_op: bool = False
    fold: bool = True
    fold_depthwise: bool = False
    pad_paths: bool = True

    def _path(
        self, x: Array, w_K: Array, a: Array, modules: Mapping[str, nn.Module | None],
        params: Mapping[str, Any], branches: Sequence[Callable[[], Array]],
    ) -> Array:  # fmt: skip
        """w_K[a] op_a(x) for the traced op index `a`: `lax.switch` over the ops, the row's
        `paddable` MBConvs one branch (`padded_mbconv`) if `pad_paths`."""
        padded = paddable(modules) if self.pad_paths else ()
        if not padded:
            return lax.switch(a, branches)
        ops_ = self.spec.ops
        others = [k for k, op in enumerate(ops_) if op not in padded]
        branch = np.zeros(len(ops_), np.int32)
        branch[others] = np.arange(1, len(others) + 1)
        position = np.zeros(len(ops_), np.int32)
        position[[ops_.index(op) for op in padded]] = np.arange(len(padded))

        def mbconv() -> Array:
            y = padded_mbconv(x, jnp.asarray(position)[a], modules, params, padded)
            return ops.weighted(w_K[a], y)

        return lax.switch(jnp.asarray(branch)[a], [mbconv, *(branches[k] for k in others)])

    @nn.compact
    def __call__(self, x: Array, w_K: Array, active_J: Array | None, train: bool) -> Array:
        spec = self.spec
        modules = {
            op: spec.make_op(
                op,
                self.C_in,
                self.C_out,
                self.stride,
                self.shortcut,
                False,
                False,
                self.impl,
                parent=None,
            )
            for op in spec.ops
        }
        dummy = jnp.zeros((1, 4, 4, self.C_in), jnp.float32)

        def init(rng, m):
            with ops.not_recording():
                return m.init(rng, dummy, True)["params"]

        params = {op: self.param(op, init, m) for op, m in modules.items() if m is not None}
        n, h, w, _ = x.shape
        shape = (n, -(-h // self.stride), -(-w // self.stride), self.C_out)

        def term(k: int) -> Array:
            op = spec.ops[k]
            if modules[op] is None:
                return jnp.zeros(shape, x.dtype)
            return ops.weighted(w_K[k], modules[op].apply({"params": params[op]}, x, train))

        branches = [functools.partial(term, k) for k in range(len(spec.ops))]
        if active_J is not None:  # binarised paths: only these ops, each by its weight
            y = sum(self._path(x, w_K, a, modules, params, branches) for a in active_J)
        elif self.single_op:
            y = self._path(x, w_K, jnp.argmax(w_K), modules, params, branches)
        else:
            folded = foldable(modules) if self.fold else ()
            y = sum(
                term(k)
                for k, op in enumerate(spec.ops)
                if modules[op] is not None and op not in folded
            )
            if folded:
                y = y + folded_mbconvs(
                    x, w_K, spec.ops, modules, params, folded,
                    depthwise_by_kernel=self.fold_depthwise,
                )  # fmt: skip
            if isinstance(y, int):  # no op computes anything
                y = jnp.zeros(shape, x.dtype)
        return x + y if self.shortcut else y


# --------------------------------------------------------------------------------------------------
# The folded full mixture: a row's MBConvs as a few large ops.


def foldable(modules: Mapping[str, nn.Module | None]) -> tuple[str, ...]:
    """The ops of a row that `folded_mbconvs` computes together: its plain (ungrouped) MBConvs,
    in the order of their channels in the folded tensors (by kernel size; within one, those
    without an expansion conv first; then by expansion). FBNet's `_g2` ops (grouped 1x1 convs
    around a channel shuffle) and `skip`'s conv stay modules of their own."""
    mbconvs = {op: m for op, m in modules.items() if isinstance(m, ops.MBConv) and m.groups == 1}
    if len({(m.activation, m.epsilon, m.impl, m.stride, m.C_in, m.C_out)
            for m in mbconvs.values()}) > 1:  # fmt: skip
        raise ValueError(f"cannot fold MBConvs that differ but in kernel and expansion: {mbconvs}")
    if len(mbconvs) < 2:
        return ()
    order = list(modules)

    def key(op: str) -> tuple:
        m = mbconvs[op]
        return m.kernel_size, _expands(m), m.expansion, order.index(op)

    return tuple(sorted(mbconvs, key=key))


def _expands(m: ops.MBConv) -> bool:
    return m.expansion != 1 or m.always_expand


def folded_mbconvs(
    x: Array, w_K: Array, op_names: Sequence[str], modules: Mapping[str, nn.Module | None],
    params: Mapping[str, Any], folded: Sequence[str], *, depthwise_by_kernel: bool = False,
) -> Array:  # fmt: skip
    """sum over the ops `folded` (`foldable`) of w_K[op] MBConv_op(x) in training mode, each op
    with its own parameters `params[op]` (an `ops.MBConv`'s: expand, depthwise, project),
    computed as
    (i) one 1x1 conv whose output channels are all the expanding ops' expanded channels, one
        BatchNorm, the activation (an op without an expansion conv takes x as it is);
    (ii) the depthwise convs, one per op, or with `depthwise_by_kernel` one per kernel size over
        the channels of the ops of that size;
    (iii) per expansion ratio, one BatchNorm + activation over those ops' depthwise outputs and
        one batched matmul projecting each op's channels to C_out with its own kernel;
    (iv) one BatchNorm over the n ops' n * C_out projections, then the weighted sum over ops.

    It is the ops computed one by one, up to rounding: their BatchNorms have no affine
    parameters and normalise with batch statistics, per channel, so one over a concatenation is
    the separate ones side by side; the activations are elementwise. A ProxylessNAS row is
    ~1/3 of the HLO of its six MBConvs, which is what XLA's compile time grows with.

    Measured on XLA:CPU (2 cores), which is why the defaults: a depthwise conv per kernel size
    saves no compile time there and makes the step slower (XLA:CPU computes a depthwise weight
    gradient as a dense C x C convolution, jax issue 13800: one conv over all the channels of a
    kernel size costs the square of their sum); the projections as a grouped convolution
    (`feature_group_count`) run ~5x slower than as a batched matmul. The pieces are cut with
    `jnp.split` (whose gradient is one concatenation) rather than slices (one padded full-size
    tensor each)."""
    ms = {op: modules[op] for op in folded}
    first = ms[folded[0]]
    act = ops.ACTIVATIONS[first.activation]
    bn = functools.partial(ops.batch_normalize, epsilon=first.epsilon)

    def cat(parts: Sequence[Array], axis: int = -1) -> Array:
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis)

    def split(y: Array, sizes: Sequence[int]) -> list[Array]:
        return [y] if len(sizes) == 1 else jnp.split(y, np.cumsum(sizes)[:-1], axis=-1)

    def mid(op: str) -> int:
        return ms[op].C_in * ms[op].expansion

    # The depthwise convs: runs of ops adjacent in `folded` (the same kernel size).
    if depthwise_by_kernel:
        kernels = sorted({m.kernel_size for m in ms.values()})
        units = [[op for op in folded if ms[op].kernel_size == k] for k in kernels]
    else:
        units = [[op] for op in folded]

    # (i) expansion: one conv, cut into each unit's expanding ops' channels (adjacent).
    expanding = [[op for op in unit if _expands(ms[op])] for unit in units]
    chunks = iter(())
    if any(expanding):
        kernel = cat([params[op]["expand"] for unit in expanding for op in unit])
        expanded = act(bn(ops.conv2d(x, kernel, 1, 0)))
        chunks = iter(split(expanded, [sum(map(mid, unit)) for unit in expanding if unit]))

    # (ii) depthwise, each unit over its inputs: x per op without expansion, then its chunk.
    outputs: dict[str, Array] = {}
    for unit, exp in zip(units, expanding, strict=True):
        inputs = [x for op in unit if op not in exp] + ([next(chunks)] if exp else [])
        kernel = cat([params[op]["depthwise"] for op in unit])
        k = ms[unit[0]].kernel_size
        y = ops.depthwise_conv2d(cat(inputs), kernel, first.stride, k // 2, first.impl)
        outputs |= zip(unit, split(y, [mid(op) for op in unit]), strict=True)

    # (iii) per expansion ratio: BatchNorm, activation, each op's projection (a batched matmul).
    projected, order = [], []
    for e in sorted({m.expansion for m in ms.values()}):
        group = [op for op in folded if ms[op].expansion == e]
        h = act(bn(cat([outputs[op] for op in group])))
        h_NxHxWxGxM = h.reshape(*h.shape[:-1], len(group), mid(group[0]))
        kernel_GxMxC = jnp.stack([params[op]["project"][0, 0] for op in group]).astype(h.dtype)
        projected.append(jnp.einsum("nhwgm,gmc->nhwgc", h_NxHxWxGxM, kernel_GxMxC))
        ops.record_macs(h.shape[1] * h.shape[2] * kernel_GxMxC.size)
        order += group

    # (iv) one BatchNorm over every op's output, then sum_op w[op] y_op.
    y_NxHxWxKxC = bn(cat(projected, axis=-2))
    w_K = w_K[np.array([list(op_names).index(op) for op in order])]
    # In float32 at least (the mixing weights' gradient sums over the batch), then y's dtype.
    wide = jnp.promote_types(y_NxHxWxKxC.dtype, jnp.float32)
    return jnp.einsum("nhwkc,k->nhwc", y_NxHxWxKxC, w_K.astype(wide)).astype(y_NxHxWxKxC.dtype)


def paddable(modules: Mapping[str, nn.Module | None]) -> tuple[str, ...]:
    """The ops of a row that `padded_mbconv` computes as one: its plain MBConvs that have an
    expansion conv (`foldable`'s, in that order), if there are two or more."""
    ops_ = tuple(op for op in foldable(modules) if _expands(modules[op]))
    return ops_ if len(ops_) > 1 else ()


def padded_mbconv(
    x: Array, index: Array, modules: Mapping[str, nn.Module | None], params: Mapping[str, Any],
    padded: Sequence[str],
) -> Array:  # fmt: skip
    """MBConv_op(x) in training mode for op = padded[index] (`index` traced), as one MBConv of
    the largest kernel and expansion among the ops `padded` (`paddable`) whose kernels are the
    op's own zero-padded to that size (the depthwise kernel centred, so with padding k_max // 2
    it sees the same pixels); every op's kernels are stacked and the op's taken by `index`.

    It is the op's MBConv up to rounding, and so are the gradients of the op's parameters: the
    extra expanded channels are 0 after the expansion conv, stay 0 through the BatchNorm (no
    affine parameters: (0 - 0) / sqrt(0 + eps)), the activation and the depthwise conv, and the
    projection's zero rows drop them; the padded taps multiply zeros or are zeros whose
    gradients go nowhere; the other ops' parameters get zero gradients. One MBConv to compile
    per sampled path instead of one per candidate (`lax.switch` compiles every branch), at the
    multiply-adds of the largest candidate."""
    ms = [modules[op] for op in padded]
    first = ms[0]
    act = ops.ACTIVATIONS[first.activation]
    bn = functools.partial(ops.batch_normalize, epsilon=first.epsilon)
    k_max = max(m.kernel_size for m in ms)
    mid_max = max(m.C_in * m.expansion for m in ms)

    def stacked(name: str, pad: Callable[[ops.MBConv], list[tuple[int, int]]]) -> Array:
        kernels = [jnp.pad(params[op][name], pad(m)) for op, m in zip(padded, ms, strict=True)]
        return jnp.stack(kernels)[index]

    def spare(m: ops.MBConv) -> int:
        return mid_max - m.C_in * m.expansion

    def around(m: ops.MBConv) -> tuple[int, int]:
        return ((k_max - m.kernel_size) // 2,) * 2

    expand = stacked("expand", lambda m: [(0, 0), (0, 0), (0, 0), (0, spare(m))])
    depthwise = stacked("depthwise", lambda m: [around(m), around(m), (0, spare(m))])
    project = stacked("project", lambda m: [(0, 0), (0, 0), (0, spare(m)), (0, 0)])
    y = act(bn(ops.conv2d(x, expand, 1, 0)))
    y = act(bn(ops.depthwise_conv2d(y, depthwise, first.stride, k_max // 2, first.impl)))
    return bn(ops.conv2d(y, project, 1, 0))


def _fixed_first(spec: ChainSpec, widths_: Sequence[int], trs: bool) -> nn.Module:
    kernel, expansion = spec.first_block
    return ops.MBConv(
        widths_[0], widths_[1], kernel, expansion, 1, activation=spec.activation,
        track_running_stats=trs, epsilon=spec.epsilon, name="first",
    )  # fmt: skip


def _stem(spec: ChainSpec, width: int, stride: int, trs: bool) -> nn.Module:
    return ops.ConvBNAct(
        width, 3, stride, spec.activation, track_running_stats=trs, epsilon=spec.epsilon,
        name="stem",
    )  # fmt: skip


def _head(spec: ChainSpec, width: int, trs: bool) -> nn.Module:
    return ops.ConvBNAct(
        width, 1, 1, spec.activation, track_running_stats=trs, epsilon=spec.epsilon, name="head"
    )


class ChainSupernet(nn.Module):
    """The search network of a chain space: stem, [fixed first block], one `MixedBlock` per row,
    1x1 head conv, global average pooling, classifier."""

    spec: ChainSpec
    num_classes: int
    C: int | None = None
    impl: ops.Impl = "depthwise"
    single_op: bool = False
    fold: bool = True
    fold_depthwise: bool = False
    pad_paths: bool = True

    @property
    def widths(self) -> tuple[int, ...]:
        return widths(self.spec, None, self.C)

    @nn.compact
    def __call__(
        self, x: Array, mix_weights: MixWeights, *, train: bool = True,
        skip_dropout: Array | None = None,
    ) -> Array:  # fmt: skip
        del skip_dropout  # no identity skip connections to drop (P-DARTS)
        spec, widths_ = self.spec, self.widths
        w = mix_weights[GROUP]
        if w.shape != (spec.num_rows, len(spec.ops)):
            raise ValueError(
                f"mixing weights of the {spec.name} space must be {{'{GROUP}': "
                f"{(spec.num_rows, len(spec.ops))}}}, got {GROUP!r} of shape {tuple(w.shape)}"
            )
        w = w.astype(x.dtype)
        active = mix_weights.get(f"active/{GROUP}")
        stem, _, rows = layout(spec, widths_, x.shape[1:])
        x = _stem(spec, widths_[0], stem, False)(x, train)
        if spec.first_block is not None:
            x = _fixed_first(spec, widths_, False)(x, train)
        for r, row in enumerate(rows):
            block = MixedBlock(
                spec, row.C_in, row.C_out, row.stride, row.shortcut, self.impl, self.single_op,
                self.fold, self.fold_depthwise, self.pad_paths, name=f"b{r}",
            )  # fmt: skip
            x = block(x, w[r], None if active is None else active[r], train)
        x = _head(spec, widths_[-1], False)(x, train)
        return ops.Linear(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2)))


class ChainNetwork(nn.Module):
    """The discrete network of a chain genotype: the supernet's layout with one op per block
    (parameters under `b{row}/{op}`, as in the supernet; none for an op that computes nothing)."""

    spec: ChainSpec
    genotype: Genotype
    num_classes: int
    C: int | None = None
    impl: ops.Impl = "depthwise"

    @nn.compact
    def __call__(
        self, x: Array, *, train: bool = False, drop_path_rate: Array | float = 0.0
    ) -> tuple[Array, None]:
        del drop_path_rate  # the chain networks train without drop-path
        spec = self.spec
        check_space(spec, self.genotype)
        widths_ = widths(spec, self.genotype.fields().get("widths"), self.C)
        stem, _, rows = layout(spec, widths_, x.shape[1:])
        x = _stem(spec, widths_[0], stem, True)(x, train)
        if spec.first_block is not None:
            x = _fixed_first(spec, widths_, True)(x, train)
        for r, (row, op) in enumerate(zip(rows, self.genotype.blocks, strict=True)):
            block = Block(
                spec, row.C_in, row.C_out, row.stride, row.shortcut, op, self.impl, name=f"b{r}"
            )
            x = block(x, train)
        x = _head(spec, widths_[-1], True)(x, train)
        return ops.Linear(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2))), None


def _impl(sep_impl: ops.Impl) -> ops.Impl:
    """The depthwise convolution of the MBConvs: the form asked (`ops.choose_form`; `fused`,
    which has no meaning with a BN and an activation between depthwise and pointwise, means XLA's
    grouped convolution), or the autotuner's choices."""
    ops.check_impl(sep_impl)
    return sep_impl


def build_supernet(
    spec: ChainSpec, num_classes: int, *, C: int | None = None, layers: int | None = None,
    sep_impl: ops.Impl = "fused", remat: bool = False, partial_channels: int = 1,
    single_op: bool = False, fold: bool = True, pad_paths: bool = True,
) -> ChainSupernet:  # fmt: skip
    """The search network of stem width C (None: the paper's); `layers` and `remat` are ignored
    (a chain has the paper's depth); partial channels (PC-DARTS) are for cells only; `fold`:
    compute each row's MBConvs together (`folded_mbconvs`; False: one module per op);
    `pad_paths`: a sampled path's MBConv as one padded to the row's largest (`padded_mbconv`;
    False: `lax.switch` over the candidates)."""
    del layers, remat
    if partial_channels != 1:
        raise ValueError(
            f"the {spec.name} space has no partial-channel edges (PC-DARTS); set "
            "search.partial_channels=1"
        )
    return ChainSupernet(
        spec, num_classes, C, _impl(sep_impl), single_op, fold, pad_paths=pad_paths
    )


def build_network(
    spec: ChainSpec, genotype: Genotype, num_classes: int, *,
    input_shape: Sequence[int] | None = None, C: int | None = None, layers: int | None = None,
    auxiliary: bool = False, sep_impl: ops.Impl = "fused",
) -> ChainNetwork:  # fmt: skip
    """The network of `genotype` at stem width C (None: the genotype's widths, else the paper's);
    the strides follow the input the network is applied to; `layers` is ignored."""
    del input_shape, layers
    if auxiliary:
        raise ValueError(f"the {spec.name} network has no auxiliary head")
    return ChainNetwork(spec, genotype, num_classes, C, _impl(sep_impl))


# --------------------------------------------------------------------------------------------------
# Candidates and costs.


def candidates(spec: ChainSpec, supernet: ChainSupernet, input_shape: Sequence[int]) -> list:
    """Every valid (row, op) of `supernet` on inputs of `input_shape` but `zero`, as the block
    the discrete network runs (inference mode, with its shortcut add)."""
    _, _, rows = layout(spec, supernet.widths, input_shape)
    out = []
    for r, row in enumerate(rows):
        for op in spec.valid_ops(r):
            if op == "zero":
                continue
            module = Block(
                spec, row.C_in, row.C_out, row.stride, row.shortcut, op, supernet.impl,
                parent=None,
            )  # fmt: skip
            out.append(Candidate(GROUP, 0, r, op, module, (*row.input_hw, row.C_in)))
    return out


def op_costs(spec: ChainSpec, supernet: ChainSupernet, input_shape: Sequence[int]) -> dict:
    """{"blocks": (1, rows, ops, 3)}: parameters, multiply-adds and memory access (parameters +
    input + output activations, ShuffleNet V2's MAC) per image of every candidate block
    (`hardware.candidate_costs`); 0 for `zero` and ops a row may not take."""
    shapes = {GROUP: (spec.num_rows, len(spec.ops))}
    return hardware.candidate_costs(candidates(spec, supernet, input_shape), spec.ops, shapes)


# --------------------------------------------------------------------------------------------------
# Genotypes.


def check_space(spec: ChainSpec, genotype: Genotype) -> None:
    if genotype.space != spec.name:
        raise ValueError(
            f"expected a {spec.name} genotype, got a {genotype.space} one (its own format: "
            "genotype.to_string())"
        )


def describe_row(spec: ChainSpec, row: int) -> str:
    s, i = spec.row_stages[row]
    return f"row b{row} (stage {s + 1}, block {i + 1})"


def op_error(spec: ChainSpec, row: int, op: Any) -> str | None:
    """Why `op` cannot be row `row`'s choice, or None."""
    if not isinstance(op, str) or op not in spec.ops:
        return f"unknown operation {show(op)}; expected one of {', '.join(spec.ops)}"
    if not spec.mask[row, spec.ops.index(op)]:
        return (
            f"{op!r} is not allowed in {describe_row(spec, row)}, whose stride or width changes "
            f"(no shortcut); valid there: {', '.join(spec.valid_ops(row))}"
        )
    return None


def widths_error(spec: ChainSpec, value: Any) -> str | None:
    n = len(spec.widths)
    if not isinstance(value, (list, tuple)) or len(value) != n:
        return f"must be {n} widths (stem, {'first block, ' if spec.first_block else ''}" + (
            f"{len(spec.stages)} stages, head), got {show(value)}"
        )
    for w in value:
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1:
            return f"must be positive integers, got {show(w)}"
    bad = [
        r
        for r, (a, b) in enumerate(zip(_shortcuts(spec, value), spec.shortcuts, strict=True))
        if a != b
    ]
    if bad:
        return (
            f"change the width of {describe_row(spec, bad[0])}, which has an identity shortcut "
            f"in this space; give it the width of its input"
        )
    return None


def check_fields(spec: ChainSpec, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical fields (`blocks` a tuple; `widths` only where they differ from the
    paper's), or a one-line ValueError naming what does not fit."""
    extra = sorted(str(f) for f in fields if f not in ("blocks", "widths"))
    if "blocks" not in fields or extra:
        problem = f"unknown fields {extra}" if extra else "missing field 'blocks'"
        raise ValueError(
            f"invalid {spec.name} genotype: {problem}; expected 'blocks' and optionally 'widths'"
        )
    blocks = fields["blocks"]
    if not isinstance(blocks, (list, tuple)) or len(blocks) != spec.num_rows:
        raise ValueError(
            f"invalid {spec.name} genotype: blocks must be {spec.num_rows} op names, one per "
            f"block, got {show(blocks)}"
        )
    for r, op in enumerate(blocks):
        error = op_error(spec, r, op)
        if error:
            raise ValueError(f"invalid {spec.name} genotype: blocks[{r}]: {error}")
    out: dict[str, Any] = {"blocks": tuple(str(op) for op in blocks)}
    value = fields.get("widths")
    if value is not None:
        error = widths_error(spec, value)
        if error:
            raise ValueError(f"invalid {spec.name} genotype: widths {error}")
        if tuple(value) != spec.widths:
            out["widths"] = tuple(int(w) for w in value)
    return out


def to_string(spec: ChainSpec, genotype: Genotype) -> str:
    """`name:op-op-...`, or `name[w,...]:op-op-...` with the genotype's own widths."""
    check_space(spec, genotype)
    fields = genotype.fields()
    widths_ = f"[{','.join(map(str, fields['widths']))}]" if "widths" in fields else ""
    return f"{spec.name}{widths_}:{'-'.join(genotype.blocks)}"


def from_string(spec: ChainSpec, space: Callable[[], Space], text: str) -> Genotype:
    """Parses `to_string`'s format; a one-line ValueError with the character position of what
    is wrong."""
    what = f"{spec.name} genotype string"
    if not isinstance(text, str):
        raise ValueError(f"a {what} must be a str, got {type(text).__name__}")

    def fail(pos: int, message: str) -> ValueError:
        return literals.position_error(text, pos, message, what)

    pos, end = len(text) - len(text.lstrip()), len(text.rstrip())
    if not text.startswith(spec.name, pos):
        raise fail(pos, f"expected {spec.name!r} first")
    pos += len(spec.name)
    widths_ = None
    if pos < end and text[pos] == "[":
        close = text.find("]", pos, end)
        if close < 0:
            raise fail(pos, "'[' without a closing ']'")
        widths_ = []
        for match in re.finditer(r"[^,]+|(?<=[\[,])(?=[,\]])", text[pos + 1 : close]):
            item = match[0].strip()
            if not item.isdigit():
                raise fail(pos + 1 + match.start(), f"expected a width (an integer), got {item!r}")
            widths_.append(int(item))
        error = widths_error(spec, widths_)
        if error:
            raise fail(pos, f"widths {error}")
        pos = close + 1
    if pos >= end or text[pos] != ":":
        raise fail(pos, "expected ':' before the ops")
    pos += 1
    blocks, starts = [], []
    for part in text[pos:end].split("-"):
        blocks.append(part.strip())
        starts.append(pos + len(part) - len(part.lstrip()))
        pos += len(part) + 1
    if len(blocks) != spec.num_rows:
        raise fail(
            starts[spec.num_rows] if len(blocks) > spec.num_rows else end,
            f"found {len(blocks)} ops; expected {spec.num_rows} separated by '-'",
        )
    for r, (op, start) in enumerate(zip(blocks, starts, strict=True)):
        error = op_error(spec, r, op)
        if error:
            raise fail(start, f"block {r}: {error}")
    fields: dict[str, Any] = {"blocks": blocks}
    if widths_ is not None:
        fields["widths"] = widths_
    return space().genotype(**fields)


def discretise(spec: ChainSpec, weights: MixWeights) -> dict[str, Any]:
    """Each row's valid op of largest weight (ties to the earlier op)."""
    w = np.asarray(weights[GROUP], np.float64)
    if w.shape != spec.mask.shape:
        raise ValueError(f"{spec.name} weights must have shape {spec.mask.shape}, got {w.shape}")
    choice = np.argmax(np.where(spec.mask, w, -np.inf), axis=-1)
    return {"blocks": tuple(spec.ops[k] for k in choice)}


def random_blocks(spec: ChainSpec, rng: np.random.Generator) -> dict[str, Any]:
    """A uniformly random valid op per row."""
    return {"blocks": tuple(str(rng.choice(spec.valid_ops(r))) for r in range(spec.num_rows))}


def mutated(spec: ChainSpec, genotype: Genotype, rng: np.random.Generator) -> dict[str, Any]:
    """Regularised evolution's mutation: one random row (with a choice) takes another valid op."""
    blocks = list(genotype.blocks)
    rows = [r for r in range(spec.num_rows) if len(spec.valid_ops(r)) > 1]
    r = int(rng.choice(rows))
    blocks[r] = str(rng.choice([op for op in spec.valid_ops(r) if op != blocks[r]]))
    return {"blocks": tuple(blocks)}


def genotype_mix(spec: ChainSpec, genotype: Genotype) -> dict[str, np.ndarray]:
    w = np.zeros(spec.mask.shape, np.float32)
    w[np.arange(spec.num_rows), [spec.ops.index(op) for op in genotype.blocks]] = 1.0
    return {GROUP: w}


def sample_mix(spec: ChainSpec) -> Callable[[PRNGKey, Alphas], MixWeights]:
    """(key, alphas) -> one-hot weights of a uniformly random valid op per row, inside jit."""
    logits = jnp.asarray(np.where(spec.mask, 0.0, -np.inf), jnp.float32)

    def sample(key: PRNGKey, alphas: Alphas) -> MixWeights:
        choice = jax.random.categorical(key, logits)
        return {GROUP: jax.nn.one_hot(choice, len(spec.ops), dtype=alphas[GROUP].dtype)}

    return sample


def chain_space(
    spec: ChainSpec, *, known: Mapping[str, Genotype] | None = None, **options: Any
) -> Space:
    """The `Space` of `spec`; `known` is a dict the space module fills with its published
    genotypes once the space exists; `options` are further `Space` fields (protocols)."""
    box: list[Space] = []

    def make(**fields: Any) -> Genotype:
        return Genotype(box[0], check_fields(spec, fields))

    def mutate(genotype: Genotype, rng: np.random.Generator) -> Genotype:
        return genotype.replace(**mutated(spec, genotype, rng))

    text = TextFormat(
        spec.name, lambda t: from_string(spec, lambda: box[0], t),
        lambda g: to_string(spec, g),
        detect=lambda t: re.match(rf"\s*{re.escape(spec.name)}\s*[\[:]", t) is not None,
        description=f"{spec.name} genotype string, {spec.name}:op-op-... (one op per block)",
    )  # fmt: skip
    space = Space(
        name=spec.name,
        ops=spec.ops,
        alpha_shapes={GROUP: (spec.num_rows, len(spec.ops))},
        row_labels={GROUP: spec.labels},
        supernet=functools.partial(build_supernet, spec),
        network=functools.partial(build_network, spec),
        op_costs=functools.partial(op_costs, spec),
        genotype=make,
        discretise=lambda weights: make(**discretise(spec, weights)),
        random_genotype=lambda rng: make(**random_blocks(spec, rng)),
        genotype_mix=functools.partial(genotype_mix, spec),
        formats=(text,),
        known={} if known is None else known,
        mutate=mutate,
        sample_mix=sample_mix(spec),
        tiny_layers=1,
        min_layers=1,
        candidates=functools.partial(candidates, spec),
        mask={GROUP: spec.mask},
        **options,
    )
    box.append(space)
    return space


__all__ = ["ChainSpec", "Stage", "chain_space", "make_divisible", "scale_width"]
