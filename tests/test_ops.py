"""Operations: shapes, reference semantics, gradients and multiply-add counting, each against an
independent computation (lax.reduce_window, autodiff of lax.conv, numpy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dnas import ops, spaces

ALL_OPS = sorted(set(spaces.get("darts_cnn").ops) | set(spaces.get("nb201").ops))


def _apply(module, x, train=True):
    variables = module.init(jax.random.key(0), x, train)
    y, _ = module.apply(variables, x, train, mutable=["batch_stats"])
    return variables, y


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("op", ALL_OPS)
def test_op_output_shape(op, stride, size):
    x = jax.random.normal(jax.random.key(1), (2, size, size, 4))
    _, y = _apply(ops.make_op(op, 4, 4, stride), x)
    expected = -(-size // stride)
    assert y.shape == (2, expected, expected, 4)


def test_none_is_zero_and_skip_is_identity():
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
    _, zero = _apply(ops.make_op("none", 4, 4, 1), x)
    _, same = _apply(ops.make_op("skip_connect", 4, 4, 1), x)
    assert not np.any(np.asarray(zero))
    np.testing.assert_array_equal(same, x)


def test_unknown_op_lists_valid_names():
    with pytest.raises(KeyError, match="valid operations: none, max_pool_3x3"):
        ops.make_op("sep_conv_7x7", 4, 4, 1)


@pytest.mark.parametrize(
    "h,w,k,stride,padding,dilation",
    [(8, 8, 3, 1, 1, 1), (8, 8, 3, 2, 1, 1), (7, 9, 5, 2, 2, 1), (8, 8, 3, 1, 2, 2),
     (9, 8, 5, 2, 4, 2), (7, 7, 1, 2, 0, 1)],
)  # fmt: skip
def test_conv2d_gradients_match_autodiff_of_lax_conv(h, w, k, stride, padding, dilation):
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (2, h, w, 3), jnp.float64)
        kernel = jax.random.normal(jax.random.key(1), (k, k, 3, 5), jnp.float64)

        def reference(x, kernel):
            pads = ((padding, padding), (padding, padding))
            return lax.conv_general_dilated(
                x, kernel, (stride, stride), pads, rhs_dilation=(dilation, dilation),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )  # fmt: skip

        ours = lambda x, kernel: ops.conv2d(x, kernel, stride, padding, dilation)
        y_ref, vjp_ref = jax.vjp(reference, x, kernel)
        y, vjp = jax.vjp(ours, x, kernel)
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
        cotangent = jax.random.normal(jax.random.key(2), y.shape, jnp.float64)
        for got, want in zip(vjp(cotangent), vjp_ref(cotangent), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
        # Second and third order (reverse over reverse): the exact second-order hypergradient
        # and Hessian eigenvalues differentiate the gradients again, with respect to the input,
        # the kernel and the cotangent.
        u = [jax.random.normal(jax.random.key(3 + i), a.shape, jnp.float64) for i, a in
             enumerate((x, kernel))]  # fmt: skip

        def second(f):
            def projected_vjp(x, kernel, c):
                dx, dk = jax.vjp(f, x, kernel)[1](c)
                return jnp.sum(dx * u[0]) + jnp.sum(dk * u[1])

            return jax.grad(projected_vjp, argnums=(0, 1, 2))

        def third(f):
            return jax.grad(lambda x, k, c: sum(jnp.sum(g**2) for g in second(f)(x, k, c)))

        for order in (second, third):
            got, want = order(ours)(x, kernel, cotangent), order(reference)(x, kernel, cotangent)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (3, 2, 1), (3, 1, 2), (5, 2, 2)])
def test_separable_conv_impls_equal_per_channel_loop_then_pointwise(k, stride, dilation):
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (2, 9, 8, 4), jnp.float64)
        dw = jax.random.normal(jax.random.key(1), (k, k, 4), jnp.float64)
        pw = jax.random.normal(jax.random.key(2), (4, 6), jnp.float64)
        pad = dilation * (k - 1) // 2
        per_channel = [
            lax.conv_general_dilated(
                x[..., c : c + 1],
                dw[:, :, c, None, None],
                (stride, stride),
                ((pad, pad),) * 2,
                rhs_dilation=(dilation, dilation),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            for c in range(4)
        ]
        expected = jnp.concatenate(per_channel, -1) @ pw
        cotangent = jax.random.normal(jax.random.key(3), expected.shape, jnp.float64)

        def grads(impl):
            f = lambda x, dw, pw: ops.separable_conv(x, dw, pw, stride, pad, dilation, impl)
            return jax.grad(lambda *a: jnp.sum(f(*a) * cotangent), (0, 1, 2))(x, dw, pw)

        want = grads("depthwise")
        for impl in ops.SEP_IMPLS:
            got = ops.separable_conv(x, dw, pw, stride, pad, dilation, impl)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=impl)
            for a, b in zip(grads(impl), want, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=impl)


@pytest.mark.parametrize("size,stride,padding", [(3, 1, 1), (3, 2, 1), (2, 2, 0), (5, 3, 0)])
def test_pooling_matches_reduce_window(size, stride, padding):
    x = jax.random.normal(jax.random.key(0), (2, 7, 8, 3))
    window, strides = (1, size, size, 1), (1, stride, stride, 1)
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    max_ref = lax.reduce_window(x, -jnp.inf, lax.max, window, strides, pads)
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, pads)
    count = lax.reduce_window(jnp.ones_like(x), 0.0, lax.add, window, strides, pads)
    np.testing.assert_array_equal(ops.max_pool(x, size, stride, padding), max_ref)
    np.testing.assert_allclose(ops.avg_pool(x, size, stride, padding), total / count, atol=1e-6)


def test_avg_pool_does_not_count_padding():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    y = np.asarray(ops.avg_pool(jnp.asarray(x), 3, 1, 1))
    assert y[0, 0, 0, 0] == pytest.approx(np.mean([0, 1, 4, 5]))  # a corner sees 4 inputs
    assert y[0, 1, 1, 0] == pytest.approx(np.mean(x[0, :3, :3, 0]))


def test_batch_norm_pytorch_semantics():
    x = jax.random.normal(jax.random.key(0), (4, 3, 3, 2)) * 3 + 1
    bn = ops.BatchNorm(momentum=0.1)
    variables = bn.init(jax.random.key(0), x, True)
    y, updates = bn.apply(variables, x, True, mutable=["batch_stats"])
    xn = np.asarray(x).reshape(-1, 2)
    mean, var = xn.mean(0), xn.var(0)
    np.testing.assert_allclose(
        y, (np.asarray(x) - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5
    )
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * xn.var(0, ddof=1), rtol=1e-5)
    y_eval = bn.apply({**variables, **updates}, x, False)
    expected = (np.asarray(x) - stats["mean"]) / np.sqrt(stats["var"] + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-4, atol=1e-5)
    # Without running statistics: batch statistics in evaluation too, and no state.
    stateless = ops.BatchNorm(affine=False, track_running_stats=False)
    assert stateless.init(jax.random.key(0), x, False) == {}
    np.testing.assert_allclose(stateless.apply({}, x, False), y, rtol=1e-5, atol=1e-6)


def test_factorized_reduce_matches_reference_on_even_inputs():
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    fr = ops.FactorizedReduce(4, 6, affine=False, track_running_stats=False)
    variables = fr.init(jax.random.key(1), x, True)
    y = fr.apply(variables, x, True)
    p = variables["params"]
    r = np.maximum(np.asarray(x), 0)
    a = r[:, ::2, ::2] @ np.asarray(p["kernel_1"][0, 0])
    b = r[:, 1::2, 1::2] @ np.asarray(p["kernel_2"][0, 0])
    z = np.concatenate([a, b], -1)
    z = (z - z.mean((0, 1, 2))) / np.sqrt(z.var((0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(y, z, rtol=1e-4, atol=1e-4)


def test_mac_counting_uses_the_reference_form():
    x = jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32)
    with ops.count_macs() as macs:
        jax.eval_shape(lambda x: ops.conv2d(x, jnp.zeros((3, 3, 4, 6)), 2, 1), x)
    assert macs[0] == 4 * 4 * 3 * 3 * 4 * 6
    with ops.count_macs() as macs:
        jax.eval_shape(
            lambda x: ops.separable_conv(x, jnp.zeros((5, 5, 4)), jnp.zeros((4, 4)), 1, 2), x
        )
    assert macs[0] == 8 * 8 * (5 * 5 * 4 + 4 * 4)
