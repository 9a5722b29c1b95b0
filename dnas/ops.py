"""Candidate operations of the DARTS and NAS-Bench-201 spaces (NHWC), with the reference semantics.

Each operation is a Linen module with the reference implementation's structure (ReLU-Conv-BN order,
explicit symmetric padding, average pooling that does not count padding, PyTorch's default
initialisation), used as is by the discrete networks. `OPS` maps a primitive name to its module
factory `(C_in, C_out, stride, affine, track_running_stats) -> nn.Module`.

Every module also has a `fold` classmethod used by the supernet: it computes the operation for
several edges that leave the same node in one go (the edges' kernels concatenated along the output
channels), which is what keeps the supernet a few large XLA operations instead of hundreds of small
ones. A module and its `fold` share the functions below, so one-hot mixing in the supernet gives the
single op's output up to float summation order (tested in float64).

Separable convolutions (depthwise k x k, then pointwise 1 x 1) are computed by default as one dense
k x k convolution with the factorised kernel `dw[..., c] * pw[c, :]` (`impl='fused'`): the same
function and the same parameters, k^2 C / (k^2 + C) times the FLOPs, but XLA runs dense convolutions
an order of magnitude faster than grouped ones on CPUs and TPUs (and XLA:CPU's depthwise weight
gradient is itself a dense convolution, see BENCHMARKS.md). `impl='depthwise'` computes the
reference form. Multiply-adds are always counted in the reference form (`count_macs`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from dnas.types import Array

SEP_IMPLS = ("fused", "depthwise")

# ---------------------------------------------------------------------------------------------
# Multiply-add counting (the papers' "mult-adds": convolutions and dense layers, per image).

_MACS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("dnas_macs", default=None)


@contextlib.contextmanager
def count_macs() -> Iterator[list[int]]:
    """Counts the multiply-adds per image of the convolutions and dense layers traced inside.

    Use around `jax.eval_shape(model.apply, ...)`; the count is in `box[0]` on exit.
    """
    box = [0]
    token = _MACS.set(box)
    try:
        yield box
    finally:
        _MACS.reset(token)


def record_macs(macs: int) -> None:
    box = _MACS.get()
    if box is not None:
        box[0] += int(macs)


# ---------------------------------------------------------------------------------------------
# Initialisers and functional building blocks.


def uniform_fan_in(fan_in: int) -> Callable:
    """PyTorch's default Conv2d/Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv2d(
    x: Array,
    kernel_HxWxIxO: Array,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    count: bool = True,
) -> Array:
    """A dense convolution with PyTorch's explicit symmetric padding (NHWC, HWIO)."""
    y = lax.conv_general_dilated(
        x,
        kernel_HxWxIxO.astype(x.dtype),
        window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    if count:
        kh, kw, cin, cout = kernel_HxWxIxO.shape
        record_macs(y.shape[1] * y.shape[2] * kh * kw * cin * cout)
    return y


def separable_conv(
    x: Array,
    dw_ExKxKxC: Array,
    pw_ExCxD: Array,
    stride: int,
    padding: int,
    dilation: int = 1,
    impl: str = "fused",
) -> Array:
    """E depthwise-separable convolutions of the same input; returns (N, H', W', E * D).

    Edge e computes `pointwise(depthwise(x, dw[e]), pw[e])`, the reference's
    `Conv2d(C, C, k, groups=C)` followed by `Conv2d(C, D, 1)`.
    """
    e, k, _, c = dw_ExKxKxC.shape
    d = pw_ExCxD.shape[-1]
    if impl == "fused":
        # kernel[i, j, c, e, d] = dw[e, i, j, c] * pw[e, c, d]: one dense convolution.
        kernel = jnp.einsum("eijc,ecd->ijced", dw_ExKxKxC, pw_ExCxD).reshape(k, k, c, e * d)
        y = conv2d(x, kernel, stride, padding, dilation, count=False)
    elif impl == "depthwise":
        dw = jnp.moveaxis(dw_ExKxKxC, 0, -1).reshape(k, k, 1, c * e)  # channel-major, edge-minor
        x_rep = jnp.repeat(x, e, axis=-1) if e > 1 else x
        h = lax.conv_general_dilated(
            x_rep,
            dw.astype(x.dtype),
            window_strides=(stride, stride),
            padding=((padding, padding), (padding, padding)),
            rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=c * e,
        )
        h = h.reshape(*h.shape[:3], c, e)
        y = jnp.einsum("nhwce,ecd->nhwed", h, pw_ExCxD.astype(x.dtype))
        y = y.reshape(*y.shape[:3], e * d)
    else:
        raise ValueError(f"unknown separable convolution impl {impl!r}; valid: {SEP_IMPLS}")
    record_macs(e * y.shape[1] * y.shape[2] * (k * k * c + c * d))
    return y


def max_pool(x: Array, size: int, stride: int, padding: int) -> Array:
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, size, size, 1), (1, stride, stride, 1), pad
    )


def avg_pool(x: Array, size: int, stride: int, padding: int) -> Array:
    """Average pooling that does not count the padding (PyTorch `count_include_pad=False`)."""
    window, strides = (1, size, size, 1), (1, stride, stride, 1)
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, pad)
    if padding == 0:
        return total / (size * size)
    # The number of real (non-padding) inputs under each window; a constant XLA folds away.
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    count = lax.reduce_window(ones, 0.0, lax.add, window, strides, pad)
    return total / count


def batch_moments(x: Array) -> tuple[Array, Array]:
    """Per-channel mean and biased variance over (N, H, W), computed in float32 at least."""
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(x32, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2))
    return mean, var


def normalize(x: Array, mean: Array, var: Array, epsilon: float) -> Array:
    return ((x - mean) * lax.rsqrt(var + epsilon)).astype(x.dtype)


def factorized_shift(x: Array) -> Array:
    """x[:, 1:, 1:] padded back to an even size, the second input of FactorizedReduce.

    The reference slices `x[:, :, 1:, 1:]`, which only lines up with the unshifted branch for even
    sizes; padding one zero row/column at the end makes odd sizes work and changes nothing else.
    """
    shifted = x[:, 1:, 1:, :]
    pad_h, pad_w = x.shape[1] % 2, x.shape[2] % 2
    if pad_h or pad_w:
        shifted = jnp.pad(shifted, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    return shifted


# ---------------------------------------------------------------------------------------------
# Modules.


class BatchNorm(nn.Module):
    """BatchNorm2d with PyTorch semantics.

    `track_running_stats=False` always normalises with the batch statistics and keeps no state (the
    supernet's convention, see `supernet.py`); otherwise `train=False` uses running averages updated
    in training with PyTorch's momentum convention and unbiased variance.
    """

    affine: bool = True
    track_running_stats: bool = True
    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c = x.shape[-1]
        if self.track_running_stats:
            ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
            ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        if train or not self.track_running_stats:
            mean, var = batch_moments(x)
            if self.track_running_stats and not self.is_initializing():
                n = x.shape[0] * x.shape[1] * x.shape[2]
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = normalize(x, mean, var, self.epsilon)
        if self.affine:
            scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
            bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
            y = (y * scale + bias).astype(x.dtype)
        return y


def _fold_norm(y: Array, modules: Sequence[BatchNorm], train: bool) -> Array:
    """The BatchNorms of E folded edges applied at once to y (N, H, W, E * C).

    Statistics are per channel, so normalising the concatenation is normalising each edge. Folding
    is only used by the supernet, whose BatchNorms keep no running statistics and have no affine
    parameters (DARTS `MixedOp`, NAS-Bench-201 search cells).
    """
    del train
    if any(m.affine or m.track_running_stats for m in modules):
        raise ValueError("folded edges need BatchNorm(affine=False, track_running_stats=False)")
    mean, var = batch_moments(y)
    return normalize(y, mean, var, modules[0].epsilon)


def _edges(y: Array, e: int) -> Array:
    """(N, H, W, E * C) -> (N, H, W, E, C)."""
    return y.reshape(*y.shape[:3], e, y.shape[-1] // e)


class Zero(nn.Module):
    """The `none` op: zeros of the output shape."""

    C_in: int
    C_out: int
    stride: int = 1

    def __call__(self, x: Array, train: bool = True) -> Array:
        del train
        x = x[:, :: self.stride, :: self.stride, :]
        return jnp.zeros((*x.shape[:3], self.C_out), x.dtype)



class Identity(nn.Module):
    def __call__(self, x: Array, train: bool = True) -> Array:
        del train
        return x

    @classmethod
    def fold(cls, modules: Sequence[Identity], x: Array, train: bool) -> Array:
        del modules, train
        return x[:, :, :, None, :]  # shared by every edge



class Pool(nn.Module):
    """3x3 max or average pooling, padding 1 (`max_pool_3x3`, `avg_pool_3x3`).

    The NAS-Bench-201 pooling op first maps C_in to C_out with a 1x1 ReLUConvBN when they differ;
    the DARTS search cell appends a BatchNorm (added by the supernet, not here).
    """

    C_in: int
    C_out: int
    stride: int
    mode: str
    affine: bool = True
    track_running_stats: bool = True

    def setup(self):
        if self.C_in != self.C_out:
            self.preprocess = ReLUConvBN(
                self.C_in, self.C_out, 1, 1, 0, 1, self.affine, self.track_running_stats
            )

    def pool(self, x: Array) -> Array:
        if self.mode == "max":
            return max_pool(x, 3, self.stride, 1)
        return avg_pool(x, 3, self.stride, 1)

    def __call__(self, x: Array, train: bool = True) -> Array:
        if self.C_in != self.C_out:
            x = self.preprocess(x, train)
        return self.pool(x)

    @classmethod
    def fold(cls, modules: Sequence[Pool], x: Array, train: bool) -> Array:
        del train
        if modules[0].C_in != modules[0].C_out:
            raise ValueError("folded pooling needs C_in == C_out")
        return modules[0].pool(x)[:, :, :, None, :]  # parameter-free: shared by every edge



class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k, stride, padding, dilation, no bias) -> BN (DARTS `ReLUConvBN`,
    NAS-Bench-201 `nor_conv_kxk`)."""

    C_in: int
    C_out: int
    kernel_size: int
    stride: int
    padding: int
    dilation: int = 1
    affine: bool = True
    track_running_stats: bool = True

    def setup(self):
        k = self.kernel_size
        self.kernel = self.param(
            "kernel", uniform_fan_in(k * k * self.C_in), (k, k, self.C_in, self.C_out)
        )
        self.bn = BatchNorm(self.affine, self.track_running_stats)

    def __call__(self, x: Array, train: bool = True) -> Array:
        y = conv2d(jax.nn.relu(x), self.kernel, self.stride, self.padding, self.dilation)
        return self.bn(y, train)

    @classmethod
    def fold(cls, modules: Sequence[ReLUConvBN], x: Array, train: bool) -> Array:
        m = modules[0]
        kernel = jnp.concatenate([mod.kernel for mod in modules], axis=-1)
        y = conv2d(jax.nn.relu(x), kernel, m.stride, m.padding, m.dilation)
        return _edges(_fold_norm(y, [mod.bn for mod in modules], train), len(modules))



class SepConv(nn.Module):
    """Two stacked ReLU -> depthwise k x k -> pointwise 1 x 1 -> BN blocks (DARTS `SepConv`);
    the first block carries the stride."""

    C_in: int
    C_out: int
    kernel_size: int
    stride: int
    padding: int
    affine: bool = True
    track_running_stats: bool = True
    impl: str = "fused"

    def setup(self):
        k, c = self.kernel_size, self.C_in
        self.dw1 = self.param("dw1", uniform_fan_in(k * k), (k, k, c))
        self.pw1 = self.param("pw1", uniform_fan_in(c), (c, c))
        self.bn1 = BatchNorm(self.affine, self.track_running_stats)
        self.dw2 = self.param("dw2", uniform_fan_in(k * k), (k, k, c))
        self.pw2 = self.param("pw2", uniform_fan_in(c), (c, self.C_out))
        self.bn2 = BatchNorm(self.affine, self.track_running_stats)

    def __call__(self, x: Array, train: bool = True) -> Array:
        p, s, impl = self.padding, self.stride, self.impl
        y = separable_conv(jax.nn.relu(x), self.dw1[None], self.pw1[None], s, p, 1, impl)
        y = self.bn1(y, train)
        y = separable_conv(jax.nn.relu(y), self.dw2[None], self.pw2[None], 1, p, 1, impl)
        return self.bn2(y, train)

    @classmethod
    def fold(cls, modules: Sequence[SepConv], x: Array, train: bool) -> Array:
        m, e = modules[0], len(modules)
        dw1 = jnp.stack([mod.dw1 for mod in modules])
        pw1 = jnp.stack([mod.pw1 for mod in modules])
        y = separable_conv(jax.nn.relu(x), dw1, pw1, m.stride, m.padding, 1, m.impl)
        y = jax.nn.relu(_fold_norm(y, [mod.bn1 for mod in modules], train))
        # The second blocks see different inputs; XLA's grouped convolutions are slow on CPU
        # (BENCHMARKS.md), so each edge gets its own convolution.
        ys = [
            separable_conv(y_e, mod.dw2[None], mod.pw2[None], 1, m.padding, 1, m.impl)
            for y_e, mod in zip(jnp.split(y, e, axis=-1), modules, strict=True)
        ]
        y = jnp.concatenate(ys, axis=-1) if e > 1 else ys[0]
        return _edges(_fold_norm(y, [mod.bn2 for mod in modules], train), e)



class DilConv(nn.Module):
    """ReLU -> dilated depthwise k x k -> pointwise 1 x 1 -> BN (DARTS `DilConv`)."""

    C_in: int
    C_out: int
    kernel_size: int
    stride: int
    padding: int
    dilation: int
    affine: bool = True
    track_running_stats: bool = True
    impl: str = "fused"

    def setup(self):
        k = self.kernel_size
        self.dw = self.param("dw", uniform_fan_in(k * k), (k, k, self.C_in))
        self.pw = self.param("pw", uniform_fan_in(self.C_in), (self.C_in, self.C_out))
        self.bn = BatchNorm(self.affine, self.track_running_stats)

    def __call__(self, x: Array, train: bool = True) -> Array:
        y = separable_conv(
            jax.nn.relu(x), self.dw[None], self.pw[None], self.stride, self.padding,
            self.dilation, self.impl,
        )  # fmt: skip
        return self.bn(y, train)

    @classmethod
    def fold(cls, modules: Sequence[DilConv], x: Array, train: bool) -> Array:
        m = modules[0]
        dw = jnp.stack([mod.dw for mod in modules])
        pw = jnp.stack([mod.pw for mod in modules])
        y = separable_conv(jax.nn.relu(x), dw, pw, m.stride, m.padding, m.dilation, m.impl)
        return _edges(_fold_norm(y, [mod.bn for mod in modules], train), len(modules))



class FactorizedReduce(nn.Module):
    """ReLU -> two 1x1 stride-2 convolutions on x and on x shifted by one pixel, concatenated
    -> BN (DARTS `FactorizedReduce`): halves the resolution without losing every other pixel."""

    C_in: int
    C_out: int
    affine: bool = True
    track_running_stats: bool = True

    def setup(self):
        if self.C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {self.C_out}")
        half = self.C_out // 2
        self.kernel_1 = self.param("kernel_1", uniform_fan_in(self.C_in), (1, 1, self.C_in, half))
        self.kernel_2 = self.param("kernel_2", uniform_fan_in(self.C_in), (1, 1, self.C_in, half))
        self.bn = BatchNorm(self.affine, self.track_running_stats)

    def __call__(self, x: Array, train: bool = True) -> Array:
        x = jax.nn.relu(x)
        y = jnp.concatenate(
            [conv2d(x, self.kernel_1, 2), conv2d(factorized_shift(x), self.kernel_2, 2)], axis=-1
        )
        return self.bn(y, train)

    @classmethod
    def fold(cls, modules: Sequence[FactorizedReduce], x: Array, train: bool) -> Array:
        e = len(modules)
        x = jax.nn.relu(x)
        k1 = jnp.concatenate([mod.kernel_1 for mod in modules], axis=-1)
        k2 = jnp.concatenate([mod.kernel_2 for mod in modules], axis=-1)
        y1 = _edges(conv2d(x, k1, 2), e)
        y2 = _edges(conv2d(factorized_shift(x), k2, 2), e)
        y = jnp.concatenate([y1, y2], axis=-1).reshape(*y1.shape[:3], -1)  # edge-major channels
        return _edges(_fold_norm(y, [mod.bn for mod in modules], train), e)



# ---------------------------------------------------------------------------------------------
# The registry.

OpFactory = Callable[..., nn.Module]


def _skip(C_in, C_out, stride, affine=True, track_running_stats=True, impl=None, **kw):
    del impl
    if stride == 1 and C_in == C_out:
        return Identity(**kw)
    if stride != 2:
        raise ValueError(f"skip_connect supports stride 1 or 2, got {stride}")
    return FactorizedReduce(C_in, C_out, affine, track_running_stats, **kw)


def _sep(k):
    def make(C_in, C_out, stride, affine=True, track_running_stats=True, impl="fused", **kw):
        pad = (k - 1) // 2
        return SepConv(C_in, C_out, k, stride, pad, affine, track_running_stats, impl, **kw)

    return make


def _dil(k):
    def make(C_in, C_out, stride, affine=True, track_running_stats=True, impl="fused", **kw):
        return DilConv(C_in, C_out, k, stride, k - 1, 2, affine, track_running_stats, impl, **kw)

    return make


def _nor(k):
    def make(C_in, C_out, stride, affine=True, track_running_stats=True, impl=None, **kw):
        del impl
        pad = (k - 1) // 2
        return ReLUConvBN(C_in, C_out, k, stride, pad, 1, affine, track_running_stats, **kw)

    return make


def _pool(mode):
    def make(C_in, C_out, stride, affine=True, track_running_stats=True, impl=None, **kw):
        del impl
        return Pool(C_in, C_out, stride, mode, affine, track_running_stats, **kw)

    return make


def _zero(C_in, C_out, stride, affine=True, track_running_stats=True, impl=None, **kw):
    del affine, track_running_stats, impl
    return Zero(C_in, C_out, stride, **kw)


OPS: dict[str, OpFactory] = {
    "none": _zero,
    "max_pool_3x3": _pool("max"),
    "avg_pool_3x3": _pool("avg"),
    "skip_connect": _skip,
    "sep_conv_3x3": _sep(3),
    "sep_conv_5x5": _sep(5),
    "dil_conv_3x3": _dil(3),
    "dil_conv_5x5": _dil(5),
    "nor_conv_1x1": _nor(1),
    "nor_conv_3x3": _nor(3),
}


def make_op(
    op: str,
    C_in: int,
    C_out: int,
    stride: int,
    *,
    affine: bool = True,
    track_running_stats: bool = True,
    impl: str = "fused",
    **module_kwargs,
) -> nn.Module:
    """Builds primitive `op`; an unknown name raises a KeyError listing the valid ones.

    `module_kwargs` (`name`, `parent`) go to the module's constructor.
    """
    try:
        factory = OPS[op]
    except KeyError:
        raise KeyError(f"unknown operation {op!r}; valid operations: {', '.join(OPS)}") from None
    if impl not in SEP_IMPLS:
        raise ValueError(f"unknown separable convolution impl {impl!r}; valid: {SEP_IMPLS}")
    return factory(
        C_in, C_out, stride, affine=affine, track_running_stats=track_running_stats, impl=impl,
        **module_kwargs,
    )  # fmt: skip
