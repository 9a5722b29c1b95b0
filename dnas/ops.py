"""Candidate operations of the DARTS and NAS-Bench-201 spaces (NHWC), with the reference semantics.

Each operation is a Linen module with the reference implementation's structure (ReLU-Conv-BN order,
explicit symmetric padding, average pooling that does not count padding, PyTorch's default
initialisation). The discrete networks use them as they are, and the supernet applies the very same
modules to every edge (`supernet.py`), so one-hot mixing gives exactly the single op's output.
`OPS` maps a primitive name to its factory `(C_in, C_out, stride, affine, track_running_stats,
impl) -> nn.Module`; `make_op` raises a KeyError listing the valid names.

Separable convolutions (depthwise k x k, then pointwise 1 x 1) are computed by default as one dense
k x k convolution with the factorised kernel `dw[..., c] * pw[c, :]` (`impl='fused'`): the same
function of the same parameters with k^2 C / (k^2 + C) times the FLOPs, which XLA runs an order of
magnitude faster than a grouped convolution on CPUs (and TPUs, where depthwise convolutions leave
the matrix unit idle); BENCHMARKS.md has the figures. `impl='depthwise'` computes the reference
form with XLA's grouped convolution. `impl='shifted'` computes the depthwise part as k^2 strided
slices times per-channel weights (reference FLOPs, elementwise work that XLA fuses) and then the
pointwise convolution; on CPUs it is the fastest of the three in the supernet and slower than
`fused` in the discrete DARTS_V2 network (BENCHMARKS.md).
Multiply-adds are always counted in the reference form (`count_macs`).

Forms chosen by measurement. Every op with several equivalent forms takes `impl`: a form's name
(forced), or an `ImplTable` of the forms `dnas/autotune.py` measured fastest per call site (its
`kind`, per-image input shape, dtype and the op's arguments, `site_key`), or `'auto'` while the
autotuner records the sites (`recording_sites`). The kinds and their forms are `IMPL_FORMS`:
separable convolutions (`sep_conv_*`, `dil_conv_*`), the depthwise convolutions of the chain
spaces' MBConvs, and pooling (shifted views, `views`, or XLA's `reduce_window`, `window`). A
name of another kind's form (`fused` for a pooling) means that kind's default, its first form.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dnas.types import Array

SEP_IMPLS = ("fused", "depthwise", "shifted")
AUTO = "auto"  # the autotuner chooses (`autotune.py`)

# The ops with several equivalent forms, each kind's default first.
IMPL_FORMS: dict[str, tuple[str, ...]] = {
    "separable": SEP_IMPLS,
    "depthwise": ("depthwise", "shifted"),
    "pool": ("views", "window"),
}
ALL_FORMS = tuple(dict.fromkeys(f for forms in IMPL_FORMS.values() for f in forms))


@dataclasses.dataclass(frozen=True)
class ImplTable:
    """The form of each call site (`site_key` -> form), as `autotune.choose` measured them; a
    site it does not list (another input shape than the one tuned) gets its kind's default."""

    choices: tuple[tuple[str, str], ...] = ()

    def form(self, kind: str, key: str) -> str:
        return dict(self.choices).get(key, IMPL_FORMS[kind][0])

    def as_dict(self) -> dict[str, str]:
        return dict(self.choices)


Impl = str | ImplTable


class Site(NamedTuple):
    """A call of an op with several forms, as the autotuner times it: `kind` (`IMPL_FORMS`),
    `key` (`site_key`: the per-image shape, dtype and arguments), the full input `shape` (batch
    included), `dtype` and the op's arguments `spec` ((name, value) pairs)."""

    kind: str
    key: str
    shape: tuple[int, ...]
    dtype: str
    spec: tuple[tuple[str, int | str], ...]


def site_key(kind: str, shape: tuple[int, ...], dtype, spec: dict) -> str:
    """`separable[k=3,s=1,p=1,d=1,out=16] 8x8x16 float32`: the kind, the op's arguments, the
    per-image input shape (H, W, C) and the dtype. The batch is not part of it: a table tuned at
    the training batch serves the evaluation batch too."""
    args = ",".join(f"{k}={v}" for k, v in sorted(spec.items()))
    return f"{kind}[{args}] {'x'.join(map(str, shape[1:]))} {jnp.dtype(dtype).name}"


_SITES: contextvars.ContextVar[list[Site] | None] = contextvars.ContextVar(
    "dnas_sites", default=None
)


@contextlib.contextmanager
def recording_sites() -> Iterator[list[Site]]:
    """Records the call sites of ops with several forms traced inside (`Site`s, in call order)."""
    box: list[Site] = []
    token = _SITES.set(box)
    try:
        yield box
    finally:
        _SITES.reset(token)


@contextlib.contextmanager
def not_recording() -> Iterator[None]:
    """Calls traced inside are neither sites nor counted multiply-adds (a parameter
    initialiser's call on a dummy input, which flax traces again on every apply)."""
    token, macs = _SITES.set(None), _MACS.set(None)
    try:
        yield
    finally:
        _MACS.reset(macs)
        _SITES.reset(token)


def check_impl(impl: Impl) -> None:
    if not isinstance(impl, ImplTable) and impl != AUTO and impl not in ALL_FORMS:
        raise ValueError(
            f"unknown implementation {impl!r}; valid: {AUTO!r} (chosen by measurement), or one "
            f"of {SEP_IMPLS} (separable convolutions)"
        )


def choose_form(kind: str, impl: Impl, x: Array, **spec: int | str) -> str:
    """The form op `kind` computes at this call: the table's choice for the site, the kind's
    default under `'auto'` (recording the site when `recording_sites` is on), or the forced
    form (another kind's form name: the default)."""
    if isinstance(impl, ImplTable) or impl == AUTO:
        key = site_key(kind, x.shape, x.dtype, spec)
        sites = _SITES.get()
        if sites is not None:
            sites.append(
                Site(
                    kind, key, tuple(x.shape), jnp.dtype(x.dtype).name, tuple(sorted(spec.items()))
                )
            )
        return impl.form(kind, key) if isinstance(impl, ImplTable) else IMPL_FORMS[kind][0]
    if impl in IMPL_FORMS[kind]:
        return impl
    check_impl(impl)
    return IMPL_FORMS[kind][0]


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


_MAC_SCALE: contextvars.ContextVar[int] = contextvars.ContextVar("dnas_mac_scale", default=1)


@contextlib.contextmanager
def mac_scale(times: int) -> Iterator[None]:
    """Code traced inside runs `times` times per call (the body of a `scan`)."""
    token = _MAC_SCALE.set(_MAC_SCALE.get() * times)
    try:
        yield
    finally:
        _MAC_SCALE.reset(token)


def record_macs(macs: int) -> None:
    box = _MACS.get()
    if box is not None:
        box[0] += int(macs) * _MAC_SCALE.get()


# ---------------------------------------------------------------------------------------------
# Initialisers and functional building blocks.


def uniform_fan_in(fan_in: int) -> Callable:
    """PyTorch's default Conv2d/Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x, kernel, strides, padding, rhs_dilation=(1, 1)):
    return lax.conv_general_dilated(
        x, kernel, strides, padding, rhs_dilation=rhs_dilation, dimension_numbers=_DIMS
    )


def _interleave_zeros(y: Array, stride: int) -> Array:
    """Inserts stride - 1 zeros between the spatial positions of y (NHWC)."""
    if stride == 1:
        return y
    zero = jnp.zeros((), y.dtype)
    return lax.pad(y, zero, ((0, 0, 0), (0, 0, stride - 1), (0, 0, stride - 1), (0, 0, 0)))


# A dense convolution y = conv(x, k) is bilinear, and so are its two gradients:
#   input_grad(dy, k) = d<dy, conv(x, k)>/dx     kernel_grad(x, dy) = d<dy, conv(x, k)>/dk
# The vector-Jacobian products of each of the three are again made of the three:
#   conv:        dx = input_grad(dy, k)             dk = kernel_grad(x, dy)
#   input_grad:  d(dy) = conv(v, k)                 dk = kernel_grad(v, dy)
#   kernel_grad: dx = input_grad(dy, w)             d(dy) = conv(x, w)
# so gradients of any order (the exact second-order hypergradient, Hessian eigenvalues) are
# convolutions in the forward's NHWC/HWIO layout. XLA:CPU runs a convolution in a fast library
# kernel only in that canonical layout. The gradients autodiff emits have other dimension orders;
# XLA rewrites them with transposes in straight-line code, but not inside a `while` loop (a
# `scan`), where the weight gradient then runs ~20x slower (BENCHMARKS.md), and autodiff of those
# gradients (second order) gives convolutions with whole feature maps as kernels (exact
# second-order DARTS step 106 s -> 30 s). Tested against autodiff of `lax.conv` to third order.


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_same_layout(x, kernel, stride, padding, dilation):
    return _conv(x, kernel, (stride, stride), ((padding, padding),) * 2, (dilation, dilation))


def _conv_fwd(x, kernel, stride, padding, dilation):
    return _conv_same_layout(x, kernel, stride, padding, dilation), (x, kernel)


def _conv_bwd(stride, padding, dilation, residuals, dy):
    x, kernel = residuals
    dx = _conv_input_grad(dy, kernel, stride, padding, dilation, x.shape[1:3])
    dk = _conv_kernel_grad(x, dy, stride, padding, dilation, kernel.shape[:2])
    return dx, dk


_conv_same_layout.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_input_grad(dy, kernel, stride, padding, dilation, in_hw):
    """d<dy, conv(x, kernel)>/dx: the full correlation of the stride-dilated dy with the
    flipped, transposed kernel."""
    kh, kw = kernel.shape[:2]

    def pad(size, k, out_size):
        lo = dilation * (k - 1) - padding
        return lo, size + padding - (out_size - 1) * stride - 1

    flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)  # (kh, kw, D, C)
    pads = (pad(in_hw[0], kh, dy.shape[1]), pad(in_hw[1], kw, dy.shape[2]))
    dx = _conv(_interleave_zeros(dy, stride), flipped, (1, 1), pads, (dilation, dilation))
    return dx.astype(dy.dtype)


def _input_grad_fwd(dy, kernel, stride, padding, dilation, in_hw):
    return _conv_input_grad(dy, kernel, stride, padding, dilation, in_hw), (dy, kernel)


def _input_grad_bwd(stride, padding, dilation, in_hw, residuals, v):
    dy, kernel = residuals
    d_dy = _conv_same_layout(v, kernel, stride, padding, dilation)
    d_kernel = _conv_kernel_grad(v, dy, stride, padding, dilation, kernel.shape[:2])
    return d_dy, d_kernel


_conv_input_grad.defvjp(_input_grad_fwd, _input_grad_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_kernel_grad(x, dy, stride, padding, dilation, k_hw):
    """d<dy, conv(x, kernel)>/dkernel[i, j, c, d] = sum_{n, h, w} x_pad[n, i dil + h s,
    j dil + w s, c] dy[n, h, w, d]: a convolution of x (channels as batch) with dy (batch as
    input features)."""
    kh, kw = k_hw

    def pad(size, k, out_size):
        return padding, (k - 1) * dilation + (out_size - 1) * stride + 1 - size - padding

    x_t = jnp.transpose(x, (3, 1, 2, 0))  # (C, H, W, N)
    dy_t = jnp.transpose(_interleave_zeros(dy, stride), (1, 2, 0, 3))  # (Hd, Wd, N, D)
    pads = (pad(x.shape[1], kh, dy.shape[1]), pad(x.shape[2], kw, dy.shape[2]))
    dk = _conv(x_t, dy_t, (dilation, dilation), pads)  # (C, kh, kw, D)
    return jnp.transpose(dk, (1, 2, 0, 3))


def _kernel_grad_fwd(x, dy, stride, padding, dilation, k_hw):
    return _conv_kernel_grad(x, dy, stride, padding, dilation, k_hw), (x, dy)


def _kernel_grad_bwd(stride, padding, dilation, k_hw, residuals, w):
    x, dy = residuals
    d_x = _conv_input_grad(dy, w, stride, padding, dilation, x.shape[1:3])
    d_dy = _conv_same_layout(x, w, stride, padding, dilation)
    return d_x, d_dy


_conv_kernel_grad.defvjp(_kernel_grad_fwd, _kernel_grad_bwd)


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
    y = _conv_same_layout(x, kernel_HxWxIxO.astype(x.dtype), stride, padding, dilation)
    if count:
        kh, kw, cin, cout = kernel_HxWxIxO.shape
        record_macs(y.shape[1] * y.shape[2] * kh * kw * cin * cout)
    return y


def depthwise_shifted(x: Array, dw_KxKxC: Array, stride: int, padding: int, dilation: int) -> Array:
    """Depthwise k x k convolution as the sum over the k^2 taps of a strided slice of the padded
    input times that tap's per-channel weight. Its gradients are slices, pads and per-channel
    sums, so XLA never emits the dense C x C weight-gradient convolution of a grouped conv."""
    k = dw_KxKxC.shape[0]
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, w, c = xp.shape
    span = dilation * (k - 1)
    oh, ow = (h - span - 1) // stride + 1, (w - span - 1) // stride + 1
    y = None
    for i in range(k):
        for j in range(k):
            start = (0, i * dilation, j * dilation, 0)
            limit = (n, start[1] + (oh - 1) * stride + 1, start[2] + (ow - 1) * stride + 1, c)
            tap = lax.slice(xp, start, limit, (1, stride, stride, 1)) * dw_KxKxC[i, j]
            y = tap if y is None else y + tap
    return y


def separable_conv(
    x: Array,
    dw_KxKxC: Array,
    pw_CxD: Array,
    stride: int,
    padding: int,
    dilation: int = 1,
    impl: Impl = "fused",
) -> Array:
    """`Conv2d(C, C, k, groups=C)` followed by `Conv2d(C, D, 1)`, both without bias."""
    k, _, c = dw_KxKxC.shape
    d = pw_CxD.shape[-1]
    spec = {"k": k, "s": stride, "p": padding, "d": dilation, "out": d}
    impl = choose_form("separable", impl, x, **spec)
    if impl == "fused":
        kernel = dw_KxKxC[..., None] * pw_CxD  # kernel[i, j, c, d] = dw[i, j, c] * pw[c, d]
        y = conv2d(x, kernel, stride, padding, dilation, count=False)
    elif impl == "depthwise":
        h = lax.conv_general_dilated(
            x,
            dw_KxKxC[:, :, None, :].astype(x.dtype),
            window_strides=(stride, stride),
            padding=((padding, padding), (padding, padding)),
            rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=c,
        )
        y = conv2d(h, pw_CxD[None, None], count=False)
    elif impl == "shifted":
        h = depthwise_shifted(x, dw_KxKxC.astype(x.dtype), stride, padding, dilation)
        y = conv2d(h, pw_CxD[None, None], count=False)
    else:
        raise ValueError(f"unknown separable convolution impl {impl!r}; valid: {SEP_IMPLS}")
    record_macs(y.shape[1] * y.shape[2] * (k * k * c + c * d))
    return y


def _window_1d(x: Array, axis: int, size: int, stride: int, padding: int, pad_value, combine):
    """Combines `size` strided shifted views of x along `axis` (one axis of a pooling window)."""
    if padding:
        pads = [(0, 0)] * x.ndim
        pads[axis] = (padding, padding)
        x = jnp.pad(x, pads, constant_values=pad_value)
    n_out = (x.shape[axis] - size) // stride + 1
    out = None
    for i in range(size):
        view = lax.slice_in_dim(x, i, i + (n_out - 1) * stride + 1, stride, axis)
        out = view if out is None else combine(out, view)
    return out


def _valid_counts(size: int, n_in: int, window: int, stride: int, padding: int) -> np.ndarray:
    """How many of each output's window positions fall inside the (unpadded) input, per axis."""
    starts = np.arange(size) * stride - padding
    return np.minimum(starts + window, n_in) - np.maximum(starts, 0)


# Pooling is separable: a k x k window is a k x 1 window of 1 x k windows. Writing each as k
# shifted views combined elementwise gives XLA one fused loop forward and backward, 10x faster on
# CPU than `reduce_window`'s select-and-scatter gradient (BENCHMARKS.md). At exact ties the
# max's gradient is shared between the tied inputs (PyTorch gives it to one of them).


# `impl='window'` is XLA's `reduce_window` (select-and-scatter gradient of the max), the usual
# winner on accelerators.


def _reduce_window(x: Array, init, combine, size: int, stride: int, padding: int) -> Array:
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    init = np.array(init, x.dtype)  # concrete: JAX differentiates max / add windows only
    return lax.reduce_window(x, init, combine, (1, size, size, 1), (1, stride, stride, 1), pads)


def max_pool(x: Array, size: int, stride: int, padding: int, impl: Impl = "views") -> Array:
    spec = {"op": "max", "k": size, "s": stride, "p": padding}
    if choose_form("pool", impl, x, **spec) == "window":
        return _reduce_window(x, -jnp.inf, lax.max, size, stride, padding)
    y = _window_1d(x, 1, size, stride, padding, -jnp.inf, jnp.maximum)
    return _window_1d(y, 2, size, stride, padding, -jnp.inf, jnp.maximum)


def avg_pool(x: Array, size: int, stride: int, padding: int, impl: Impl = "views") -> Array:
    """Average pooling that does not count the padding (PyTorch `count_include_pad=False`)."""
    spec = {"op": "avg", "k": size, "s": stride, "p": padding}
    if choose_form("pool", impl, x, **spec) == "window":
        y = _reduce_window(x, 0.0, lax.add, size, stride, padding)
    else:
        y = _window_1d(x, 1, size, stride, padding, 0.0, jnp.add)
        y = _window_1d(y, 2, size, stride, padding, 0.0, jnp.add)
    count_h = _valid_counts(y.shape[1], x.shape[1], size, stride, padding)
    count_w = _valid_counts(y.shape[2], x.shape[2], size, stride, padding)
    count = np.outer(count_h, count_w)[None, :, :, None].astype(np.float32)
    return y / jnp.asarray(count, y.dtype)


# Mixed precision: a supernet computes in its input's dtype (bfloat16 under `precision=bfloat16`)
# with float32 mixing weights.


def weighted(w: Array, y: Array) -> Array:
    """w * y for a scalar mixing weight w (float32) and an op's output y, in y's dtype: the
    product is taken in float32 at least and rounded once, and autodiff then accumulates w's
    gradient (a sum over the whole batch and feature map: the hypergradient) in float32."""
    wide = jnp.promote_types(y.dtype, jnp.float32)
    return (w * y.astype(wide)).astype(y.dtype)


def batch_moments(x: Array) -> tuple[Array, Array]:
    """Per-channel mean and biased variance over (N, H, W), computed in float32 at least."""
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(x32, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2))
    return mean, var


def normalize(x: Array, mean: Array, var: Array, epsilon: float) -> Array:
    return ((x - mean) * lax.rsqrt(var + epsilon)).astype(x.dtype)


def batch_normalize(x: Array, epsilon: float = 1e-5) -> Array:
    """x normalised with its own batch statistics over (N, H, W) and no affine parameters: the
    supernet's BatchNorm (per channel; per (op, channel) for an (N, H, W, ops, C) array)."""
    return normalize(x, *batch_moments(x), epsilon)


def channel_shuffle(x: Array, groups: int) -> Array:
    """ShuffleNet's channel shuffle (NHWC): channel g * (C / groups) + j moves to j * groups + g."""
    *lead, c = x.shape
    return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


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
    impl: Impl = "views"

    def setup(self):
        if self.C_in != self.C_out:
            self.preprocess = ReLUConvBN(
                self.C_in, self.C_out, 1, 1, 0, 1, self.affine, self.track_running_stats
            )

    def pool(self, x: Array) -> Array:
        if self.mode == "max":
            return max_pool(x, 3, self.stride, 1, self.impl)
        return avg_pool(x, 3, self.stride, 1, self.impl)

    def __call__(self, x: Array, train: bool = True) -> Array:
        if self.C_in != self.C_out:
            x = self.preprocess(x, train)
        return self.pool(x)


class _Conv(nn.Module):
    """The fields of the convolution ops."""

    C_in: int
    C_out: int
    kernel_size: int
    stride: int
    padding: int
    dilation: int = 1
    affine: bool = True
    track_running_stats: bool = True


class ReLUConvBN(_Conv):
    """ReLU -> Conv(k, stride, padding, dilation, no bias) -> BN (DARTS `ReLUConvBN`,
    NAS-Bench-201 `nor_conv_kxk`)."""

    def setup(self):
        k = self.kernel_size
        self.kernel = self.param(
            "kernel", uniform_fan_in(k * k * self.C_in), (k, k, self.C_in, self.C_out)
        )
        self.bn = BatchNorm(self.affine, self.track_running_stats)

    def __call__(self, x: Array, train: bool = True) -> Array:
        y = conv2d(jax.nn.relu(x), self.kernel, self.stride, self.padding, self.dilation)
        return self.bn(y, train)


class _Separable(_Conv):
    """The fields of the separable convolution ops (`impl`: see `separable_conv`)."""

    impl: Impl = "fused"


class SepConv(_Separable):
    """Two stacked ReLU -> depthwise k x k -> pointwise 1 x 1 -> BN blocks (DARTS `SepConv`);
    the first block carries the stride."""

    def setup(self):
        k, c = self.kernel_size, self.C_in
        self.dw1 = self.param("dw1", uniform_fan_in(k * k), (k, k, c))
        self.pw1 = self.param("pw1", uniform_fan_in(c), (c, c))
        self.bn1 = BatchNorm(self.affine, self.track_running_stats)
        self.dw2 = self.param("dw2", uniform_fan_in(k * k), (k, k, c))
        self.pw2 = self.param("pw2", uniform_fan_in(c), (c, self.C_out))
        self.bn2 = BatchNorm(self.affine, self.track_running_stats)

    def __call__(self, x: Array, train: bool = True) -> Array:
        p, s, d, impl = self.padding, self.stride, self.dilation, self.impl
        y = separable_conv(jax.nn.relu(x), self.dw1, self.pw1, s, p, d, impl)
        y = self.bn1(y, train)
        y = separable_conv(jax.nn.relu(y), self.dw2, self.pw2, 1, p, d, impl)
        return self.bn2(y, train)


class DilConv(_Separable):
    """ReLU -> dilated depthwise k x k -> pointwise 1 x 1 -> BN (DARTS `DilConv`)."""

    def setup(self):
        k = self.kernel_size
        self.dw = self.param("dw", uniform_fan_in(k * k), (k, k, self.C_in))
        self.pw = self.param("pw", uniform_fan_in(self.C_in), (self.C_in, self.C_out))
        self.bn = BatchNorm(self.affine, self.track_running_stats)

    def __call__(self, x: Array, train: bool = True) -> Array:
        y = separable_conv(
            jax.nn.relu(x), self.dw, self.pw, self.stride, self.padding, self.dilation, self.impl
        )
        return self.bn(y, train)


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
        return SepConv(C_in, C_out, k, stride, pad, 1, affine, track_running_stats, impl, **kw)

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
    def make(C_in, C_out, stride, affine=True, track_running_stats=True, impl="views", **kw):
        return Pool(C_in, C_out, stride, mode, affine, track_running_stats, impl, **kw)

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

# Candidate ops without parameters (`none` aside): DARTS' collapse goes to these (Zela et al.,
# "Understanding and Robustifying DARTS", 2020).
PARAMETER_FREE = ("skip_connect", "max_pool_3x3", "avg_pool_3x3")


def make_op(
    op: str,
    C_in: int,
    C_out: int,
    stride: int,
    *,
    affine: bool = True,
    track_running_stats: bool = True,
    impl: Impl = "fused",
    **module_kwargs,
) -> nn.Module:
    """Builds primitive `op`; an unknown name raises a KeyError listing the valid ones.

    `impl`: the form of its separable convolution or pooling (`choose_form`). `module_kwargs`
    (`name`, `parent`) go to the module's constructor.
    """
    try:
        factory = OPS[op]
    except KeyError:
        raise KeyError(f"unknown operation {op!r}; valid operations: {', '.join(OPS)}") from None
    check_impl(impl)
    return factory(
        C_in, C_out, stride, affine=affine, track_running_stats=track_running_stats, impl=impl,
        **module_kwargs,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Layers of the networks around the cells.


class Linear(nn.Module):
    """nn.Dense with PyTorch's default initialisation and multiply-add counting."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        init = uniform_fan_in(fan_in)
        record_macs(fan_in * self.features)
        return nn.Dense(self.features, kernel_init=init, bias_init=init, name="dense")(x)


class StemConv(nn.Module):
    """3x3 convolution without bias, then BatchNorm: the stems of the DARTS and NAS-Bench-201
    networks."""

    C_out: int
    track_running_stats: bool = True
    stride: int = 1

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        kernel = self.param(
            "kernel", uniform_fan_in(9 * x.shape[-1]), (3, 3, x.shape[-1], self.C_out)
        )
        y = conv2d(x, kernel, self.stride, 1)
        return BatchNorm(track_running_stats=self.track_running_stats, name="bn")(y, train)


# ---------------------------------------------------------------------------------------------
# The blocks of the chain spaces (ProxylessNAS, FBNet): MobileNetV2's inverted residual and the
# plain conv-BN-activation layers around it. NHWC, no biases, PyTorch's default initialisation.

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "none": lambda x: x,
}


def grouped_conv2d(
    x: Array, kernel_HxWxIxO: Array, stride: int = 1, padding: int = 0, groups: int = 1
) -> Array:
    """A convolution whose input and output channels are split into `groups` groups
    (`Conv2d(groups=groups)`; kernel (k, k, C_in / groups, C_out)); groups=1 is `conv2d`.
    Counts k^2 C_in C_out / groups multiply-adds per output pixel."""
    if groups == 1:
        return conv2d(x, kernel_HxWxIxO, stride, padding)
    y = lax.conv_general_dilated(
        x,
        kernel_HxWxIxO.astype(x.dtype),
        (stride, stride),
        ((padding, padding), (padding, padding)),
        dimension_numbers=_DIMS,
        feature_group_count=groups,
    )
    kh, kw, cin_g, cout = kernel_HxWxIxO.shape
    record_macs(y.shape[1] * y.shape[2] * kh * kw * cin_g * cout)
    return y


def depthwise_conv2d(
    x: Array, dw_KxKxC: Array, stride: int, padding: int, impl: Impl = "depthwise"
) -> Array:
    """Depthwise k x k convolution (`Conv2d(C, C, k, groups=C)`): XLA's grouped convolution, or
    `impl='shifted'` (`depthwise_shifted`: no dense C x C weight gradient on CPUs). Counts
    k^2 C multiply-adds per output pixel."""
    k, _, c = dw_KxKxC.shape
    if choose_form("depthwise", impl, x, k=k, s=stride, p=padding) == "shifted":
        y = depthwise_shifted(x, dw_KxKxC.astype(x.dtype), stride, padding, 1)
    else:
        y = lax.conv_general_dilated(
            x,
            dw_KxKxC[:, :, None, :].astype(x.dtype),
            (stride, stride),
            ((padding, padding), (padding, padding)),
            dimension_numbers=_DIMS,
            feature_group_count=c,
        )
    record_macs(y.shape[1] * y.shape[2] * k * k * c)
    return y


class ConvBNAct(nn.Module):
    """k x k convolution (padding k // 2, no bias) -> BatchNorm -> activation: the stems, heads
    (ProxylessNAS' `ConvLayer`, FBNet's `ConvBNRelu`) and FBNet's `skip` where the shape changes."""

    C_out: int
    kernel_size: int = 1
    stride: int = 1
    activation: str = "relu"
    affine: bool = True
    track_running_stats: bool = True
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        k, c_in = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", uniform_fan_in(k * k * c_in), (k, k, c_in, self.C_out))
        y = conv2d(x, kernel, self.stride, k // 2)
        y = BatchNorm(self.affine, self.track_running_stats, epsilon=self.epsilon, name="bn")(
            y, train
        )
        return ACTIVATIONS[self.activation](y)


class MBConv(nn.Module):
    """MobileNetV2's inverted residual without its shortcut (the block adds it): 1x1 expansion
    to C_in * expansion channels + BN + activation, k x k depthwise (with the stride) + BN +
    activation, 1x1 projection + BN (Sandler et al. 2018, Table 1; ProxylessNAS
    `MBInvertedConvLayer`, FBNet `IRFBlock`).

    expansion 1 skips the expansion conv (ProxylessNAS) unless `always_expand` (FBNet's
    `IRFBlock` keeps a 1x1 C_in -> C_in conv). `groups` > 1 (FBNet's `_g2` ops) makes both 1x1
    convolutions group convolutions and shuffles the channels after the expansion (ShuffleNet).
    """

    C_in: int
    C_out: int
    kernel_size: int
    expansion: int
    stride: int = 1
    groups: int = 1
    always_expand: bool = False
    activation: str = "relu6"
    affine: bool = True
    track_running_stats: bool = True
    epsilon: float = 1e-5
    impl: Impl = "depthwise"

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        k, g, mid = self.kernel_size, self.groups, self.C_in * self.expansion
        if self.C_in % g or self.C_out % g:
            raise ValueError(
                f"MBConv with {g} groups needs channels divisible by {g}, got {self.C_in} -> "
                f"{self.C_out}"
            )
        act = ACTIVATIONS[self.activation]

        def bn(name: str, y: Array) -> Array:
            norm = BatchNorm(self.affine, self.track_running_stats, epsilon=self.epsilon, name=name)
            return norm(y, train)

        y = x
        if self.expansion != 1 or self.always_expand:
            kernel = self.param(
                "expand", uniform_fan_in(self.C_in // g), (1, 1, self.C_in // g, mid)
            )
            y = act(bn("expand_bn", grouped_conv2d(y, kernel, 1, 0, g)))
            if g > 1:
                y = channel_shuffle(y, g)
        dw = self.param("depthwise", uniform_fan_in(k * k), (k, k, mid))
        y = act(bn("depthwise_bn", depthwise_conv2d(y, dw, self.stride, k // 2, self.impl)))
        kernel = self.param("project", uniform_fan_in(mid // g), (1, 1, mid // g, self.C_out))
        return bn("project_bn", grouped_conv2d(y, kernel, 1, 0, g))
