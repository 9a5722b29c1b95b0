"""Dense peak FLOP rates of common accelerators, looked up by `jax.Device.device_kind`, and a
measured peak where the table has none (CPUs): the denominators of scripts/bench.py's
`peak_frac`.

Table figures are the vendors' dense (not 2:4 sparse) peaks per device (one GPU, one TPU chip)
in TFLOP/s:

    device (device_kind)                       float32   bfloat16
    NVIDIA A100 SXM/PCIe ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB",
                          "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe")
                                                  19.5      312     (tensor cores)
    NVIDIA H100 SXM ("NVIDIA H100 80GB HBM3")     67        989
    NVIDIA H100 PCIe ("NVIDIA H100 PCIe")         51        756
    NVIDIA H100 NVL ("NVIDIA H100 NVL")           60        835
    NVIDIA H200 ("NVIDIA H200")                   67        989     (the H100 SXM's compute)
    NVIDIA H200 NVL ("NVIDIA H200 NVL")           60        835
    TPU v4 ("TPU v4")                             -         275
    TPU v5e ("TPU v5 lite")                       -         197
    TPU v5p ("TPU v5")                            -         459
    TPU v6e, Trillium ("TPU v6 lite")             -         918

The kind strings are those JAX reports (jax's own TPU tests and XLA's device tables name "TPU v4",
"TPU v5 lite", "TPU v5", "TPU v6 lite"; CUDA names the GPUs as above). GPUs match by substring
(the name carries the memory size and form factor), the PCIe and NVL variants first; TPUs match
the whole kind (or its alias "TPU v5e", "TPU v5p", "TPU v6e"), so "TPU v4 lite" (v4i, not in the
table) is not taken for a v4.

float32: the GPU figure is the IEEE float32 (CUDA-core) peak. At JAX's default matmul precision
XLA may run float32 convolutions on TF32 tensor cores (A100 156, H100 SXM 495 TFLOP/s dense), so
a float32 `peak_frac` above 1 on a GPU means TF32 was used. TPUs are "bf16 only": their matrix
units multiply bfloat16, and a float32 matmul at JAX's default precision is one bfloat16 pass
(`precision="highest"` takes six), so for float32 the TPU's bfloat16 peak is used, labelled
"bf16 only" in `Peak.source`.

A CPU (or any device not in the table) has its peak measured: the best of a few runs of a
2048 x 2048 x 2048 matmul in the run's dtype, jitted, on the default device (~190 GFLOP/s in
float32 on this project's 2-core machine).
"""

from __future__ import annotations

import dataclasses
import re
import time

PRECISIONS = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class DevicePeak:
    """One table row: `pattern` (a regex, case-insensitive, searched in the device kind), the
    dense peaks in TFLOP/s (`float32` None: bf16 only)."""

    name: str
    pattern: str
    float32: float | None
    bfloat16: float


PEAKS: tuple[DevicePeak, ...] = (
    DevicePeak("NVIDIA H100 PCIe", r"H100.*PCIe", 51.0, 756.0),
    DevicePeak("NVIDIA H100 NVL", r"H100 NVL", 60.0, 835.0),
    DevicePeak("NVIDIA H100 SXM", r"H100", 67.0, 989.0),
    DevicePeak("NVIDIA H200 NVL", r"H200 NVL", 60.0, 835.0),
    DevicePeak("NVIDIA H200", r"H200", 67.0, 989.0),
    DevicePeak("NVIDIA A100", r"A100", 19.5, 312.0),
    DevicePeak("TPU v4", r"^TPU v4$", None, 275.0),
    DevicePeak("TPU v5e", r"^TPU v5( lite|e)$", None, 197.0),
    DevicePeak("TPU v5p", r"^TPU v5p?$", None, 459.0),
    DevicePeak("TPU v6e", r"^TPU v6( lite|e)$", None, 918.0),
)


@dataclasses.dataclass(frozen=True)
class Peak:
    """The peak used for one run: GFLOP/s of one device, and where it came from."""

    gflops: float
    source: str  # "table: NVIDIA A100 float32", "table: TPU v4 bf16 only", "measured ..."


def lookup(device_kind: str) -> DevicePeak | None:
    """The table row of `device_kind` (the first that matches), or None."""
    kind = device_kind.strip()
    for row in PEAKS:
        if re.search(row.pattern, kind, re.IGNORECASE):
            return row
    return None


def table_peak(device_kind: str, precision: str = "float32") -> Peak | None:
    """The table's peak of one `device_kind` device at `precision`, or None if not in the table."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    row = lookup(device_kind)
    if row is None:
        return None
    if precision == "bfloat16":
        return Peak(row.bfloat16 * 1e3, f"table: {row.name} bfloat16")
    if row.float32 is None:
        return Peak(row.bfloat16 * 1e3, f"table: {row.name} bf16 only (float32 runs as bf16)")
    return Peak(row.float32 * 1e3, f"table: {row.name} float32")


def measure_matmul_gflops(precision: str = "float32", n: int = 2048, runs: int = 5) -> float:
    """GFLOP/s of the best of `runs` jitted n x n x n matmuls (2 n^3 FLOP) on the default device."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(precision)
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), dtype)
    b = jax.random.normal(kb, (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))  # compile, warm up
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def device_peak(precision: str = "float32") -> tuple[str, str, Peak]:
    """(platform, device kind, peak of one device) of `jax.devices()[0]`: the table's figure, or
    a measured matmul rate where the table has none."""
    import jax

    device = jax.devices()[0]
    peak = table_peak(device.device_kind, precision)
    if peak is None:
        gflops = measure_matmul_gflops(precision)
        peak = Peak(gflops, f"measured: best 2048^3 {precision} matmul")
    return device.platform, device.device_kind, peak
