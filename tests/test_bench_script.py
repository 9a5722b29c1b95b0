"""scripts/bench.py's pure parts: the reference FLOP accounting (multiply-adds counted by hand
for tiny networks), the device-peak table, the input-pipeline timer and the goals summary. The
benchmark itself (compilations, subprocesses) is not run here."""

import importlib.util
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import data, evaluate, ops, parallel, relaxations, spaces

_SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # bench.py imports device_peaks by name
    spec.loader.exec_module(module)
    return module


device_peaks = _load("device_peaks")
bench = _load("bench")

SEP_FORMS = [impl for impl in ops.SEP_IMPLS if impl != "auto"]


def test_reference_gflop_of_each_step():
    macs, batch = 303_881_984, 16  # the C=16, 8-cell supernet at 32x32 (~300 M)
    first = bench.ref_gflop("search_first", macs, batch)
    assert first == 2 * 3 * 2 * macs * batch / 1e9
    assert 58 < first < 58.5  # the issue's ~58 GFLOP
    assert bench.ref_gflop("search_second", macs, batch) == 2 * 15 * macs * batch / 1e9
    assert bench.ref_gflop("search_fd", macs, batch) == bench.ref_gflop("search_second", macs, 16)
    assert bench.ref_gflop("train", macs, batch) == 2 * 3 * macs * batch / 1e9
    assert bench.images_per_step("search_first", 16) == 32
    assert bench.images_per_step("train", 16) == 16


def _darts_supernet_by_hand(C: int, size: int, num_classes: int) -> int:
    """Multiply-adds per image of the one-cell DARTS supernet (`layers=1`: its only cell is a
    reduction cell of 2C channels), counted from the reference network's structure."""
    c, hw_in, hw = 2 * C, size * size, (size // 2) ** 2
    stem = hw_in * 3 * 3 * 3 * (3 * C)
    preprocess = 2 * hw_in * (3 * C) * c  # two 1x1 ReLUConvBN, 3C -> c
    separable = {k: k * k * c + c * c for k in (3, 5)}  # depthwise + pointwise, at the output
    # sep_conv: two separable blocks; dil_conv: one; pools and none: none.
    ops_at_output = 2 * separable[3] + 2 * separable[5] + separable[3] + separable[5]
    # skip_connect: identity at stride 1, FactorizedReduce (two 1x1 c -> c/2) at stride 2.
    input_edges = 8 * hw * (ops_at_output + 2 * c * (c // 2))  # from c_{k-2}, c_{k-1}: stride 2
    node_edges = 6 * hw * ops_at_output
    classifier = 4 * c * num_classes
    return stem + preprocess + input_edges + node_edges + classifier


def _one_cell_supernet_macs(sep_impl: str, C: int = 4, size: int = 8) -> tuple[int, int]:
    """(bench.search_macs, evaluate.model_stats' macs) of the one-cell supernet."""
    space = spaces.get("darts_cnn")
    model = space.supernet(10, C=C, layers=1, sep_impl=sep_impl)
    mix = relaxations.softmax({g: jnp.zeros(s) for g, s in space.alpha_shapes.items()})
    x = jnp.zeros((1, size, size, 3))
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, mix))["params"]
    macs = bench.search_macs(model, (size, size, 3), params, mix)
    return macs, evaluate.model_stats(model, (size, size, 3), mix, train=True)["macs"]


@pytest.mark.parametrize("sep_impl", SEP_FORMS)
def test_search_macs_are_dnas_count_in_every_form(sep_impl):
    macs, stats = _one_cell_supernet_macs(sep_impl)
    assert macs == stats == _one_cell_supernet_macs("fused")[0]


def test_search_macs_equal_a_hand_count():
    assert _one_cell_supernet_macs("fused")[0] == _darts_supernet_by_hand(4, 8, 10) == 310_336


def test_train_macs_add_the_auxiliary_head():
    C, layers, size = 4, 2, 8
    genotype = spaces.load("DARTS_V2")
    model = genotype.search_space.network(
        genotype, 10, input_shape=(size, size, 3), C=C, layers=layers, auxiliary=True,
        sep_impl="fused",
    )  # fmt: skip
    x = jnp.zeros((1, size, size, 3))
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x))
    macs = bench.train_macs(model, (size, size, 3), variables)
    inference = evaluate.model_stats(model, (size, size, 3))["macs"]
    # The head reads the 2/3 cell's output: 4 * 4C = 64 channels at 2x2 (two reductions).
    head = 2 * 2 * 64 * 128 + 1 * (2 * 2 * 128) * 768 + 768 * 10  # 1x1 conv, 2x2 conv, linear
    assert macs == inference + head


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("NVIDIA A100-SXM4-40GB", "NVIDIA A100"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100"),
        ("NVIDIA A100-PCIE-40GB", "NVIDIA A100"),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
        ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
        ("NVIDIA H100 NVL", "NVIDIA H100 NVL"),
        ("NVIDIA H200", "NVIDIA H200"),
        ("TPU v4", "TPU v4"),
        ("TPU v5 lite", "TPU v5e"),
        ("TPU v5e", "TPU v5e"),
        ("TPU v5", "TPU v5p"),
        ("TPU v5p", "TPU v5p"),
        ("TPU v6 lite", "TPU v6e"),
        ("cpu", None),
        ("TPU v4 lite", None),  # v4i: not a v4
        ("TPU v3", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_device_kinds_map_to_the_table(kind, name):
    row = device_peaks.lookup(kind)
    assert (row and row.name) == name
    assert (device_peaks.table_peak(kind) is None) == (name is None)


def test_table_peaks_per_precision():
    a100 = device_peaks.table_peak("NVIDIA A100-SXM4-40GB", "float32")
    assert a100.gflops == 19_500 and "float32" in a100.source
    assert device_peaks.table_peak("NVIDIA H100 80GB HBM3", "bfloat16").gflops == 989_000
    assert device_peaks.table_peak("NVIDIA H200", "float32").gflops == 67_000
    v6e = device_peaks.table_peak("TPU v6 lite", "float32")  # TPUs: bf16 only
    assert v6e.gflops == 918_000 and "bf16 only" in v6e.source
    assert device_peaks.table_peak("TPU v5 lite", "bfloat16").gflops == 197_000
    assert device_peaks.table_peak("TPU v5", "bfloat16").gflops == 459_000
    assert device_peaks.table_peak("TPU v4", "bfloat16").gflops == 275_000
    with pytest.raises(ValueError, match="precision"):
        device_peaks.table_peak("TPU v4", "float16")


def test_measured_matmul_rate_is_positive():
    assert math.isfinite(device_peaks.measure_matmul_gflops(n=64, runs=2))


def test_pipeline_throughput_of_two_streams():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 8, 3), np.uint8)
    source = data.ArraySource(images, rng.integers(0, 10, 16).astype(np.int32))
    rate = bench.pipeline_images_per_s((source, source), 4, parallel.make_mesh(1), 3)
    assert rate > 0 and math.isfinite(rate)
    assert [bench.input_verdict(r) for r in (3.0, 1.2, 0.5)] == ["ok", "tight", "bound"]


def _row(name, step_s, compile_s=10.0, peak_mb=500.0, torch_step_s=None, torch_peak_mb=None):
    row = {"name": name, "batch": 16, "layers": 8, "size": 32, "devices": 1, "C": 16,
           "precision": "float32", "step_s": step_s, "compile_s": compile_s,
           "peak_mb": peak_mb}  # fmt: skip
    if torch_step_s is not None:
        row |= {"torch_step_s": torch_step_s, "torch_peak_mb": torch_peak_mb,
                "ratio": round(step_s / torch_step_s, 2)}  # fmt: skip
    return row


def test_goals_pass_fail_and_not_measured():
    rows = [
        _row("search_first", 1.0, 30.0, peak_mb=900, torch_step_s=2.5, torch_peak_mb=1000),
        _row("search_second", 2.5),
        _row("train", 4.0, peak_mb=1200, torch_step_s=4.5, torch_peak_mb=1000),
    ]
    results = bench.goals(rows)
    status = {(g["goal"], g["row"]): (g["value"], g["status"]) for g in results}
    first = "search_first batch 16 layers 8"
    assert status["search_first step <= 0.5x PyTorch's", first] == (0.4, "pass")
    assert status["search_second (exact) step <= 2x dnas search_first",
                  "search_second batch 16 layers 8"] == (2.5, "fail")  # fmt: skip
    assert status["search_first compile <= 60 s", first] == (30.0, "pass")
    assert status["train step <= 1x PyTorch's", "train batch 16 layers 8"] == (0.89, "pass")
    assert status["peak memory <= PyTorch's", first] == (0.9, "pass")
    assert status["peak memory <= PyTorch's", "train batch 16 layers 8"] == (1.2, "fail")
    assert len(results) == 6

    # No PyTorch, no second order, no retraining: those goals are n/a, one line each.
    results = bench.goals([_row("search_first", 1.0, compile_s=75.0)])
    by_goal = {g["goal"]: g for g in results}
    assert len(results) == len(by_goal) == 5
    assert by_goal["search_first compile <= 60 s"]["status"] == "fail"
    assert [g["status"] for g in results].count("n/a") == 4
    text = bench.format_goals(results)
    assert text.count("n/a") == 4 and "fail" in text
    assert all(g["status"] == "n/a" for g in bench.goals([]))


def test_second_order_is_paired_with_the_first_order_of_the_same_run():
    rows = [_row("search_first", 1.0), _row("search_second", 1.5) | {"batch": 64}]
    (g,) = [g for g in bench.goals(rows) if g["goal"].startswith("search_second")]
    assert g["status"] == "n/a"  # batch 64 has no first-order row


def test_table_shows_missing_columns_as_dashes():
    table = bench.format_table([_row("search_first", 1.0) | {"ref_gflop": 58.3}])
    header, line = table.splitlines()
    assert header.split() == list(bench.HEADER)
    assert "58.3" in line and " - " in line


def test_levers_forms_compute_the_same_functions():
    """scripts/bench_levers.py times forms of one function: the im2col weight gradient and the
    NCHW layout against XLA's NHWC depthwise convolution (values and both gradients, float64),
    and a scan over identical cells against the same cells unrolled, their parameters stacked."""
    levers = _load("bench_levers")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 9, 9, 5)))
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 5)))
    with jax.enable_x64(True):
        x, w = x.astype(jnp.float64), w.astype(jnp.float64)
        for stride in (1, 2):
            ref = levers._fwd_bwd(levers._dw("NHWC", stride, 1), x, w)(x, w)
            got = levers._fwd_bwd(levers.depthwise_im2col(stride, 1), x, w)(x, w)
            to_nchw = lambda a: jnp.transpose(a, (0, 3, 1, 2))
            nchw = levers._fwd_bwd(levers._dw("NCHW", stride, 1), to_nchw(x),
                                   jnp.transpose(w, (3, 2, 0, 1)))  # fmt: skip
            dx, dw = nchw(to_nchw(x), jnp.transpose(w, (3, 2, 0, 1)))
            for a, b in zip(ref, got, strict=True):
                np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(jnp.transpose(dx, (0, 2, 3, 1)), ref[0], rtol=1e-10)
            np.testing.assert_allclose(jnp.transpose(dw, (2, 3, 1, 0)), ref[1], rtol=1e-10)
    s = jnp.asarray(rng.standard_normal((2, 8, 8, 16)), jnp.float32)
    unrolled, scanned = levers._Cells(3, False, C=4), levers._Cells(3, True, C=4)
    v = jax.jit(unrolled.init)(jax.random.key(0, impl="unsafe_rbg"), s, s)  # compiles fast
    stack = lambda col: jax.tree.map(lambda *a: jnp.stack(a), *[v[col][f"cell_{i}"] for i in
                                                                range(3)])  # fmt: skip
    stacked = {col: {"cells": {"cell": stack(col)}} for col in ("params", "batch_stats")}
    shapes = jax.eval_shape(scanned.init, jax.random.key(0), s, s)
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(lambda x: x.shape, shapes)
    a, _ = jax.jit(lambda v: unrolled.apply(v, s, s, mutable=["batch_stats"]))(v)
    b, _ = jax.jit(lambda v: scanned.apply(v, s, s, mutable=["batch_stats"]))(stacked)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
