"""The performance levers of issue 17 not taken by dnas, each measured alone on this backend.

    python scripts/bench_levers.py                     # all three
    python scripts/bench_levers.py --measure layout im2col
    python scripts/bench_levers.py --measure scan_cells --cells 5

- `layout`: a depthwise k x k convolution (XLA's grouped convolution) and a 1x1 convolution,
  forward+backward, with activations in NHWC (dnas) against NCHW (PyTorch's), at the DARTS search
  shapes (batch 16, C=16: 32x32x16, 16x16x32, 8x8x64) and retraining shapes (batch 32, C=36).
- `im2col`: the depthwise convolution's weight gradient as a contraction of im2col patches with
  the output gradient (`lax.conv_general_dilated_patches` + einsum: one product per tap and
  channel, summed over N, H, W) against XLA's own gradient and dnas's `shifted` form. The three
  are checked to be the same function first.
- `scan_cells`: a run of identical DARTS_V2 normal cells (the retraining network's stages:
  C=36, 32x32x144 inputs, batch 32) compiled unrolled, as `dnas` builds it, against one
  `flax.linen.scan` over the cells (parameters stacked): compile time of forward+backward and
  step time.

Each row prints the median ms of forward+backward (`dnas.latency.time_fn`) and, for
`scan_cells`, the compile seconds. Figures and the command are in BENCHMARKS.md (issue 17).
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dnas import latency, ops, spaces
from dnas.spaces import darts_cnn

SEARCH = [(16, 32, 16), (16, 16, 32), (16, 8, 64)]  # (batch, H=W, C)
RETRAIN = [(32, 32, 36), (32, 16, 72), (32, 8, 144)]


def _fwd_bwd(f, *args):
    """The jitted forward+backward of sum(f(*args)^2) with respect to every argument."""
    grad = jax.jit(jax.grad(lambda *a: jnp.sum(jnp.square(f(*a))), argnums=range(len(args))))
    grad.lower(*args).compile()
    return grad


def _ms(f, *args, runs: int) -> float:
    return latency.time_fn(_fwd_bwd(f, *args), *args, runs=runs, warmup=2)[0]


def _dw(layout: str, stride: int, padding: int):
    dims = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")

    def f(x, w):
        return lax.conv_general_dilated(
            x, w, (stride, stride), ((padding, padding),) * 2, dimension_numbers=dims,
            feature_group_count=x.shape[-1] if layout == "NHWC" else x.shape[1],
        )  # fmt: skip

    return f


def _pw(layout: str):
    dims = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")
    return lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dims)


def measure_layout(runs: int) -> None:
    rng = np.random.default_rng(0)
    print("layout: forward+backward ms, NHWC (dnas) vs NCHW")
    print(f"{'op':>10} {'shape NxHxWxC':>16} {'NHWC':>8} {'NCHW':>8} {'NCHW/NHWC':>10}")
    for n, hw, c in SEARCH + RETRAIN:
        x = jnp.asarray(rng.standard_normal((n, hw, hw, c)), jnp.float32)
        x_nchw = jnp.transpose(x, (0, 3, 1, 2))
        for name, k in (("dw 3x3", 3), ("dw 5x5", 5), ("pw 1x1", 1)):
            if k == 1:
                w = jnp.asarray(rng.standard_normal((1, 1, c, c)), jnp.float32)
                a = _ms(_pw("NHWC"), x, w, runs=runs)
                b = _ms(_pw("NCHW"), x_nchw, jnp.transpose(w, (3, 2, 0, 1)), runs=runs)
            else:
                w = jnp.asarray(rng.standard_normal((k, k, 1, c)), jnp.float32)
                a = _ms(_dw("NHWC", 1, k // 2), x, w, runs=runs)
                b = _ms(_dw("NCHW", 1, k // 2), x_nchw, jnp.transpose(w, (3, 2, 0, 1)), runs=runs)
            print(f"{name:>10} {f'{n}x{hw}x{hw}x{c}':>16} {a:8.2f} {b:8.2f} {b / a:10.2f}")


def depthwise_im2col(stride: int, padding: int):
    """XLA's depthwise convolution whose weight gradient is the im2col contraction."""
    conv = _dw("NHWC", stride, padding)

    @jax.custom_vjp
    def f(x, w):
        return conv(x, w)

    def fwd(x, w):
        return conv(x, w), (x, w)

    def bwd(res, g):
        x, w = res
        k, c = w.shape[0], w.shape[-1]
        (dx,) = jax.vjp(lambda x: conv(x, w), x)[1](g)
        p = lax.conv_general_dilated_patches(
            x, (k, k), (stride, stride), ((padding, padding),) * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )  # fmt: skip  # (N, OH, OW, C * k * k), channel-major
        p = p.reshape(*p.shape[:3], c, k * k)
        dw = jnp.einsum("nhwcq,nhwc->qc", p, g).reshape(k, k, 1, c)
        return dx, dw

    f.defvjp(fwd, bwd)
    return f


def measure_im2col(runs: int) -> None:
    rng = np.random.default_rng(0)
    # The same function first: values and both gradients against XLA's.
    x = jnp.asarray(rng.standard_normal((2, 9, 9, 5)))
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 5)))
    for s in (1, 2):
        ref = _fwd_bwd(_dw("NHWC", s, 1), x, w)(x, w)
        got = _fwd_bwd(depthwise_im2col(s, 1), x, w)(x, w)
        for a, b in zip(ref, got, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-4)
    print("im2col: depthwise k x k forward+backward ms: XLA's gradient, im2col weight gradient,")
    print("dnas's shifted form")
    print(f"{'k':>3} {'s':>2} {'shape NxHxWxC':>16} {'xla':>8} {'im2col':>8} {'shifted':>8}")
    for n, hw, c in SEARCH + RETRAIN:
        x = jnp.asarray(rng.standard_normal((n, hw, hw, c)), jnp.float32)
        for k, s in ((3, 1), (5, 1), (3, 2)):
            w = jnp.asarray(rng.standard_normal((k, k, 1, c)), jnp.float32)
            p = k // 2
            a = _ms(_dw("NHWC", s, p), x, w, runs=runs)
            b = _ms(depthwise_im2col(s, p), x, w, runs=runs)
            sh = _ms(lambda x, w, s=s, p=p: ops.depthwise_shifted(x, w[:, :, 0], s, p, 1), x, w,
                     runs=runs)  # fmt: skip
            print(f"{k:>3} {s:>2} {f'{n}x{hw}x{hw}x{c}':>16} {a:8.2f} {b:8.2f} {sh:8.2f}")


class _Cells(nn.Module):
    """`cells` identical DARTS_V2 normal cells, unrolled (as dnas's networks) or scanned."""

    cells: int
    scan: bool
    C: int = 36
    sep_impl: str = "fused"

    @nn.compact
    def __call__(self, s0, s1):
        geno = spaces.load("DARTS_V2")
        if not self.scan:
            for i in range(self.cells):
                cell = darts_cnn.DartsCell(
                    geno, self.C, False, False, self.sep_impl, name=f"cell_{i}"
                )
                s0, s1 = s1, cell(s0, s1, True)
            return s1

        C, impl = self.C, self.sep_impl

        class Step(nn.Module):
            @nn.compact
            def __call__(self, carry, _):
                s0, s1 = carry
                out = darts_cnn.DartsCell(geno, C, False, False, impl, name="cell")(s0, s1, True)
                return (s1, out), None

        scanned = nn.scan(
            Step, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
            length=self.cells,
        )  # fmt: skip
        (_, s1), _ = scanned(name="cells")((s0, s1), None)
        return s1


def measure_scan_cells(cells: int, runs: int, sep_impl: str) -> None:
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.standard_normal((32, 32, 32, 144)), jnp.float32)
    print(f"scan_cells: {cells} identical DARTS_V2 normal cells, C=36, 32x32x144, batch 32, "
          f"separable form {sep_impl}")  # fmt: skip
    print(f"{'form':>9} {'compile s':>10} {'step ms':>9}")
    for scan in (False, True):
        model = _Cells(cells, scan, sep_impl=sep_impl)
        variables = model.init(jax.random.key(0), s, s)

        def loss(params, s0, s1, model=model, variables=variables):
            out, _ = model.apply({**variables, "params": params}, s0, s1, mutable=["batch_stats"])
            return jnp.mean(jnp.square(out))

        grad = jax.jit(jax.grad(loss))
        start = time.perf_counter()
        compiled = grad.lower(variables["params"], s, s).compile()
        seconds = time.perf_counter() - start
        ms = latency.time_fn(compiled, variables["params"], s, s, runs=runs, warmup=1)[0]
        print(f"{'scan' if scan else 'unrolled':>9} {seconds:10.1f} {ms:9.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--measure", nargs="+", default=["layout", "im2col", "scan_cells"],
                   choices=["layout", "im2col", "scan_cells"])  # fmt: skip
    p.add_argument("--cells", type=int, default=5, help="cells in the scan_cells run")
    p.add_argument("--runs", type=int, default=10, help="timed calls per row")
    p.add_argument("--sep-impl", nargs="+", default=["fused", "shifted"],
                   help="separable-convolution forms of the scan_cells rows")  # fmt: skip
    args = p.parse_args()
    print(f"backend {jax.default_backend()}: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    for what in args.measure:
        if what == "layout":
            measure_layout(args.runs)
        elif what == "im2col":
            measure_im2col(args.runs)
        else:
            for impl in args.sep_impl:
                measure_scan_cells(args.cells, max(3, args.runs // 3), impl)


if __name__ == "__main__":
    main()
