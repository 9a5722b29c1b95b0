"""The dnas benchmark: compile time, step time, peak memory, achieved FLOP rate against the
device's peak, and input-pipeline throughput of the DARTS search step and of the DARTS_V2
retraining step, side by side with PyTorch where it runs, and the issue's goals checked.

    python scripts/bench.py                       # BENCHMARKS.md's main table (batch 16)
    python scripts/bench.py --measure search_first search_second --batch 16 64
    python scripts/bench.py --measure search_first --layers 5 8 11 --no-torch --no-remat
    python scripts/bench.py --measure search_first --devices 1 2 4 8 --no-torch   # simulated
    python scripts/bench.py --precision bfloat16 --no-torch
    python scripts/bench.py --measure search_first train --C 4 --layers 2 --size 8 --batch 2 \\
        --train-batch 2 --train-C 4 --train-layers 2 --steps 1   # smoke run, ~1.5 min here

Measurements (`--measure`):
  search_first, search_second, search_fd   the full DARTS search step (alpha step on a
      validation batch, then weight step on a training batch, in-jit augmentation, both
      optimisers): first order, exact second order, the paper's finite-difference second order.
      DARTS supernet, C=--C, --layers cells, --size x --size x 3 inputs, 10 classes.
  train   one retraining step of NetworkCIFAR(DARTS_V2), C=--train-C (36), --train-layers (20)
      cells, auxiliary head, drop-path, at --train-batch (32: the reference's 4.5 s).

Each (measurement, batch, layers, devices) runs in a fresh subprocess, so its peak resident
memory (ru_maxrss, `peak_mb`) is its own; on an accelerator `device_peak_mb` is the device's own
peak (`memory_stats`). `--devices N` > 1 uses N devices, on a CPU N simulated ones
(`--xla_force_host_platform_device_count`), and shards the batch over them (dnas/parallel.py).
`--precision` sets `config.precision`; `--sep-impl auto` leaves `search.sep_impl` and
`train.sep_impl` at the config's defaults, and each row records what they were (with `auto`,
the autotuner's measurements at set-up, cached on disk after the first run, are in `init_s`).

Reference arithmetic (`ref_gflop`, `gflops_per_s`). XLA's cost analysis (`xla_gflop`, kept
as its own column) counts what the compiled program does, which is not the network's
arithmetic: the fused separable convolution (ops.py, `sep_impl="fused"`) does k^2 C / (k^2 + C)
times the reference FLOPs, remat recomputes forwards, and XLA counts elementwise work too. The
reference count is the one the papers use: `dnas.ops.count_macs()` around `jax.eval_shape` of the
model's training forward gives the multiply-adds per image of its convolutions and dense layers
(separable convolutions as depthwise + pointwise, every op of every mixed edge; for the retrained
network the auxiliary head included), and FLOP = 2 MACs. A forward and backward costs 3
forwards (the backward computes the input and the weight gradients, one forward each), so

  search_first    6 forwards per image: the alpha half (fwd+bwd on a validation batch, 3) and
                  the weight half (fwd+bwd on a training batch, 3);
                  ref = 2 * 3 * 2 * MACs * batch (~58 GFLOP at C=16, 8 cells, 32x32, batch 16:
                  300.3 M MACs per image, dnas's count equal to a hand count:
                  tests/test_bench_script.py);
  search_second,  15 forwards per image, the DARTS paper's accounting of its unrolled step
  search_fd       (Liu et al. 2019, Sec. 2.3 and eq. 7-8): the virtual weight step w' (fwd+bwd
                  on the training batch, 3), the validation fwd+bwd at w' (3), the
                  Hessian-vector product (the paper's finite difference: two training fwd+bwd
                  at w+ and w-, 6; the exact double backward is counted the same), and the real
                  weight step (3);
  train           3 forwards per image of NetworkCIFAR(DARTS_V2) with its auxiliary head.

`gflops_per_s` is `ref_gflop / step_s`; `peak_frac` divides it by the peak of the devices used
(scripts/device_peaks.py: the dense float32 or bfloat16 peak of a known GPU or TPU per device,
times the devices; otherwise, on a CPU, a measured 2048^3 matmul rate of the whole machine, which
simulated devices share). The device kind and which peak was used are printed.

Input pipeline (`pipeline_img_s`, `consume_img_s`, `pipeline_ratio`). The loops' host-side
input: `data.batches` (grain worker threads assembling `data.batch_at` batches, the loops'
defaults) moved to the devices by `parallel.shard_batch`, one stream per batch the step takes
(the search: training and validation). Timed alone for --pipeline-batches steps after one, on
the benchmark's in-memory random images, and set beside what the step consumes: images per step
(2 x batch for the search, batch for retraining) / step_s. `pipeline_ratio` = pipeline /
consumption; `input` is "ok" at 2 or more, "tight" from 1 (on a CPU the loop's pipeline threads
share the cores with the step, so it would slow the step), "bound" below 1 (the step waits for
data).

PyTorch. The PyTorch figures come from scripts/torch_darts.py (`pip install torch==2.13.0`: a
CPU build from local disk here), run in their own subprocess with as many threads as cores, for
the same order (PyTorch's exact second order is a double backward through the unrolled step),
always in float32. They run only on a CPU backend (the comparison is a CPU one; on GPUs and TPUs
they are skipped, and the script says so) and when torch is importable. Where torch_darts fails
(e.g. its search step at fewer than 3 cells, where no cell is a normal one) the row keeps
dnas's figures and records `torch_error`.

Prints a table, the goals of issue 17 on this machine with their measured values and pass/fail
("n/a" when the rows they need were not measured), then one JSON object per measurement on its
own line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # scripts/ is not a package
import device_peaks

MEASUREMENTS = ("search_first", "search_second", "search_fd", "train")
SEP_IMPLS = ("auto", "fused", "depthwise", "shifted")
_ORDER = {"search_first": "first", "search_second": "second", "search_fd": "finite_difference"}
# Forward passes' worth of arithmetic per image of one step (the module docstring).
FORWARD_EQUIVALENTS = {"search_first": 6, "search_second": 15, "search_fd": 15, "train": 3}


def ref_gflop(what: str, macs_per_image: int, batch: int) -> float:
    """The reference GFLOP of one `what` step: 2 FLOP per multiply-add, FORWARD_EQUIVALENTS
    forwards per image, `batch` images per batch."""
    return 2 * FORWARD_EQUIVALENTS[what] * macs_per_image * batch / 1e9


def images_per_step(what: str, batch: int) -> int:
    """Images one step consumes: a training and a validation batch for the search step."""
    return batch if what == "train" else 2 * batch


def search_macs(model, input_shape: tuple[int, ...], params, mix_weights) -> int:
    """Multiply-adds per image of the supernet's training forward (every op of every edge)."""
    import jax
    import jax.numpy as jnp

    from dnas import ops

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    apply = lambda p, x, w: model.apply({"params": p}, x, w, train=True)
    with ops.count_macs() as macs:
        jax.eval_shape(apply, params, x, mix_weights)
    return macs[0]


def train_macs(model, input_shape: tuple[int, ...], variables) -> int:
    """Multiply-adds per image of the evaluation network's training forward, auxiliary head
    included."""
    import jax
    import jax.numpy as jnp

    from dnas import ops

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)

    def apply(v, x):
        return model.apply(
            v, x, train=True, drop_path_rate=0.0, rngs={"dropout": jax.random.key(0)},
            mutable=["batch_stats"],
        )  # fmt: skip

    with ops.count_macs() as macs:
        jax.eval_shape(apply, variables, x)
    return macs[0]


def pipeline_images_per_s(sources, batch_size: int, mesh, num_batches: int) -> float:
    """Images per second of the loops' input alone: `data.batches` over each of `sources` (one
    stream per batch of a step, as the loops zip them), each batch put on `mesh`'s devices and
    waited for; timed over `num_batches` steps after a first one."""
    import jax

    from dnas import data, parallel

    streams = [data.batches(s, batch_size, seed=i) for i, s in enumerate(sources)]
    try:
        groups = parallel.shard_batches(zip(*streams, strict=True), mesh)
        jax.block_until_ready(next(groups))  # starts the worker threads
        t0 = time.perf_counter()
        for _ in range(num_batches):
            jax.block_until_ready(next(groups))
        seconds = time.perf_counter() - t0
    finally:
        for s in streams:
            s.close()
    return num_batches * len(sources) * batch_size / seconds


def input_verdict(ratio: float) -> str:
    return "ok" if ratio >= 2 else "tight" if ratio >= 1 else "bound"


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _device_peak_mb() -> float | None:
    """The first device's peak allocation (GPU, TPU), or None where it is not reported (CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**20, 1)


def _random_source(batch: int, size: int, seed: int = 0):
    import numpy as np

    from dnas import data

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (4 * batch, size, size, 3), np.uint8)
    info = data.DatasetInfo(
        "random", None, size, 3, 10, mean=(0.5,) * 3, std=(0.25,) * 3, crop_padding=4, flip=True,
        cutout_length=16 if size >= 32 else 0,
    )  # fmt: skip
    source = data.ArraySource(images, rng.integers(0, 10, 4 * batch).astype(np.int32))
    return info, data.Splits(source, None, source)


def _time_steps(step, state, batches, steps: int) -> tuple[list[float], object]:
    import jax

    state, m = step(state, *batches)  # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = step(state, *batches)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return times, state


def worker(args: argparse.Namespace) -> dict:
    """One dnas measurement in this process."""
    import jax
    import numpy as np

    from dnas import configlib, data, loop, parallel, search_step, spaces, train

    what, batch, layers, devices = args.measure[0], args.batch[0], args.layers[0], args.devices[0]
    mesh = parallel.make_mesh(devices)
    config = configlib.default_config()
    config.precision = args.precision
    t0 = time.perf_counter()
    if what == "train":
        batch, C, layers = args.train_batch, args.train_C, args.train_layers
        info, splits = _random_source(batch, args.size)
        t = config.train
        t.C, t.layers, t.batch_size, t.drop_path_prob, t.epochs = C, layers, batch, 0.2, 600
        if args.sep_impl != "auto":
            t.sep_impl = args.sep_impl
        t.cutout_length = 16
        su = train.setup(config, spaces.load("DARTS_V2"), info=info, splits=splits)
        state = train.create_state(config, su)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        macs = train_macs(su.model, info.input_shape, variables)
        # Mid-training: drop-path on (its rate ramps from 0 over the epochs).
        state = parallel.replicate(state.replace(step=state.step + 100 * su.steps_per_epoch), mesh)
        batches = (parallel.shard_batch(data.batch_at(splits.train, batch, 0, seed=0), mesh),)
        sources = (splits.train,)
        sep_impl = config.train.sep_impl
    else:
        C = args.C
        config.order = _ORDER[what]
        s = config.search
        s.C, s.layers, s.batch_size, s.remat = C, layers, batch, args.remat
        if args.sep_impl != "auto":
            s.sep_impl = args.sep_impl
        info, splits = _random_source(batch, args.size)
        su = search_step.setup(config, info=info, splits=splits)
        state = search_step.create_state(config, su)
        macs = search_macs(
            su.model, info.input_shape, state.params, su.strategy.final_weights(state.alphas)
        )
        state = parallel.replicate(state, mesh)
        batches = tuple(
            parallel.shard_batch(data.batch_at(splits.train, batch, i, seed=0), mesh)
            for i in range(2)
        )
        sources = (su.weights_source, su.alphas_source)
        sep_impl = config.search.sep_impl
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    step, compiled = loop.compile_step(su.step_fn, what, False, state, *batches, mesh=mesh)
    times, _ = _time_steps(step, state, batches, args.steps)
    peak_mb, device_peak_mb = _peak_mb(), _device_peak_mb()  # before the pipeline's buffers
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = step.memory_analysis()
    step_s = float(np.median(times))
    xla_gflop = cost.get("flops", float("nan")) / 1e9 if cost else float("nan")
    ref = ref_gflop(what, macs, batch)
    consume = images_per_step(what, batch) / step_s
    pipeline = pipeline_images_per_s(sources, batch, mesh, args.pipeline_batches)
    return {
        "name": what,
        "batch": batch,
        "C": C,
        "layers": layers,
        "size": args.size,
        "devices": devices,
        "precision": args.precision,
        "remat": bool(args.remat) and what != "train",
        "sep_impl": sep_impl,
        "init_s": round(init_s, 2),
        "compile_s": round(compiled["compile_s"], 2),
        "compile_cache_hits": compiled["compile_cache_hits"],
        "step_s": round(step_s, 4),
        "step_min_s": round(min(times), 4),
        "peak_mb": peak_mb,
        "device_peak_mb": device_peak_mb,
        "xla_temp_mb": round(memory.temp_size_in_bytes / 2**20, 1) if memory else None,
        "macs_per_image": macs,
        "ref_gflop": float(f"{ref:.6g}"),
        "gflops_per_s": float(f"{ref / step_s:.4g}"),
        "xla_gflop": float(f"{xla_gflop:.6g}"),
        "pipeline_img_s": round(pipeline, 1),
        "consume_img_s": round(consume, 1),
        "pipeline_ratio": round(pipeline / consume, 2),
        "input": input_verdict(pipeline / consume),
        "jax": jax.__version__,
    }


def peak_worker(args: argparse.Namespace) -> dict:
    """The platform, device kind and one device's peak (scripts/device_peaks.py)."""
    platform_name, kind, peak = device_peaks.device_peak(args.precision)
    return {"platform": platform_name, "device_kind": kind, "peak_gflops": round(peak.gflops, 1),
            "peak_source": peak.source}  # fmt: skip


def torch_worker(args: argparse.Namespace) -> dict:
    """The same measurement with scripts/torch_darts.py."""
    import statistics

    import torch
    import torch_darts

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    what, batch, layers = args.measure[0], args.batch[0], args.layers[0]
    if what == "train":
        batch = args.train_batch
        step = torch_darts.make_train_step(
            batch, args.size, C=args.train_C, layers=args.train_layers
        )
    else:
        step = torch_darts.make_search_step(args.C, layers, batch, args.size, _ORDER[what])
    step()  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"torch_step_s": round(statistics.median(times), 4), "torch_peak_mb": _peak_mb(),
            "torch": torch.__version__}  # fmt: skip


def _have_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


# ---------------------------------------------------------------------------------------------
# The goals.


def _label(r: dict) -> str:
    label = f"{r['name']} batch {r['batch']} layers {r['layers']}"
    return label + (f" devices {r['devices']}" if r.get("devices", 1) > 1 else "")


def goals(rows: list[dict]) -> list[dict]:
    """Issue 17's goals checked on `rows`: one result per row a goal applies to, {"goal", "row",
    "value", "limit", "status": "pass" | "fail" | "n/a"}; a goal that no row measures gets one
    "n/a" result (row and value None)."""
    first = [r for r in rows if r["name"] == "search_first"]

    def same_run(r: dict, f: dict) -> bool:
        keys = ("batch", "layers", "size", "devices", "C", "precision")
        return all(r.get(k) == f.get(k) for k in keys)

    second = []
    for r in rows:
        if r["name"] == "search_second":
            f = next((f for f in first if same_run(r, f)), None)
            if f is not None:
                second.append((r, r["step_s"] / f["step_s"]))
    checks = {
        "search_first step <= 0.5x PyTorch's": (
            [(r, r["ratio"]) for r in first if r.get("ratio") is not None], 0.5),
        "search_second (exact) step <= 2x dnas search_first": (second, 2.0),
        "search_first compile <= 60 s": ([(r, r["compile_s"]) for r in first], 60.0),
        "train step <= 1x PyTorch's": (
            [(r, r["ratio"]) for r in rows if r["name"] == "train" and r.get("ratio") is not None],
            1.0),
        "peak memory <= PyTorch's": (
            [(r, r["peak_mb"] / r["torch_peak_mb"]) for r in rows if r.get("torch_peak_mb")],
            1.0),
    }  # fmt: skip
    out = []
    for goal, (measured, limit) in checks.items():
        if not measured:
            out.append({"goal": goal, "row": None, "value": None, "limit": limit, "status": "n/a"})
        for r, value in measured:
            status = "pass" if value <= limit else "fail"
            out.append({"goal": goal, "row": _label(r), "value": round(value, 3), "limit": limit,
                        "status": status})  # fmt: skip
    return out


def format_goals(results: list[dict]) -> str:
    lines = ["goals (issue 17) on this machine:"]
    for g in results:
        value = "-" if g["value"] is None else f"{g['value']:g} (limit {g['limit']:g})"
        lines.append(f"  {g['status']:>4}  {g['goal']:<52} {value:<24} {g['row'] or ''}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The driver: one subprocess per measurement.

_FORWARDED = ("C", "size", "steps", "train_batch", "train_C", "train_layers", "precision",
              "sep_impl", "pipeline_batches")  # fmt: skip


def _child(args: argparse.Namespace, flag: str, what: str, batch: int, layers: int, devices: int):
    cmd = [sys.executable, os.path.abspath(__file__), flag, "--measure", what,
           "--batch", str(batch), "--layers", str(layers), "--devices", str(devices)]  # fmt: skip
    for name in _FORWARDED:
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--remat" if args.remat else "--no-remat"]
    env = dict(os.environ)
    if devices > 1:  # only the host platform reads it: accelerators use their own devices
        flags = env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
        env["XLA_FLAGS"] = flags.strip()
    if flag != "--torch-worker":
        out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    # A PyTorch failure (e.g. torch_darts at a size it does not support) leaves dnas's row.
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr)
        error = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return {"torch_error": error}
    return json.loads(done.stdout.strip().splitlines()[-1])


HEADER = ("name", "batch", "layers", "devices", "sep_impl", "compile_s", "step_s", "peak_mb",
          "ref_gflop", "gflops_per_s", "peak_frac", "xla_gflop", "pipeline_img_s",
          "consume_img_s", "pipeline_ratio", "input", "torch_step_s", "torch_peak_mb",
          "ratio")  # fmt: skip


def format_table(rows: list[dict]) -> str:
    widths = [max(len(h), *(len(str(r.get(h, "-"))) for r in rows)) for h in HEADER]
    lines = [" ".join(f"{h:>{w}}" for h, w in zip(HEADER, widths, strict=True))]
    for r in rows:
        cells = (f"{r.get(h, '-')!s:>{w}}" for h, w in zip(HEADER, widths, strict=True))
        lines.append(" ".join(cells))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--measure", nargs="+", default=["search_first", "search_second", "train"],
                   choices=MEASUREMENTS)  # fmt: skip
    p.add_argument("--batch", type=int, nargs="+", default=[16], help="search batch sizes")
    p.add_argument("--layers", type=int, nargs="+", default=[8], help="supernet cells")
    p.add_argument("--devices", type=int, nargs="+", default=[1],
                   help="devices to shard the batch over (simulated on a CPU)")  # fmt: skip
    p.add_argument("--C", type=int, default=16, help="supernet channels")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-C", type=int, default=36, help="retrained network's channels")
    p.add_argument("--train-layers", type=int, default=20, help="retrained network's cells")
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    p.add_argument("--pipeline-batches", type=int, default=50,
                   help="steps' worth of input timed for pipeline_img_s")  # fmt: skip
    p.add_argument("--precision", default="float32", choices=device_peaks.PRECISIONS,
                   help="config.precision (PyTorch always runs float32)")  # fmt: skip
    p.add_argument(
        "--remat", action=argparse.BooleanOptionalAction, default=True,
        help="jax.checkpoint per supernet edge (default on, as in the CIFAR-10 configs)",
    )  # fmt: skip
    p.add_argument(
        "--sep-impl", default="auto", choices=SEP_IMPLS,
        help="separable convolutions: one dense conv (fused), grouped conv then pointwise\n"
             "(depthwise), or k*k shifted slices then pointwise (shifted); auto: the config's\n"
             "default for search.sep_impl and train.sep_impl (recorded in each row)",
    )  # fmt: skip
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peak-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker or args.torch_worker or args.peak_worker:
        run = worker if args.worker else torch_worker if args.torch_worker else peak_worker
        print(json.dumps(run(args)), flush=True)
        return

    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
          file=sys.stderr)  # fmt: skip
    device = _child(args, "--peak-worker", args.measure[0], args.batch[0], args.layers[0], 1)
    peak_line = (
        f"device: {device['device_kind']} ({device['platform']}); peak "
        f"{device['peak_gflops']:g} GFLOP/s per device, {device['peak_source']}"
    )
    print(f"# {peak_line}", file=sys.stderr)
    use_torch = not args.no_torch
    if use_torch and not _have_torch():
        print("# PyTorch not importable: no PyTorch comparison", file=sys.stderr)
        use_torch = False
    if use_torch and device["platform"] != "cpu":
        print(f"# PyTorch comparison skipped: it is a CPU one, and JAX runs on "
              f"{device['platform']}", file=sys.stderr)  # fmt: skip
        use_torch = False
    rows = []
    for what in args.measure:
        for batch in [args.train_batch] if what == "train" else args.batch:
            for layers in [args.train_layers] if what == "train" else args.layers:
                for devices in args.devices:
                    row = _child(args, "--worker", what, batch, layers, devices)
                    # Simulated CPU devices share the machine's cores (and its measured peak).
                    peak = device["peak_gflops"] * (1 if device["platform"] == "cpu" else devices)
                    row |= {"device_kind": device["device_kind"], "peak_gflops": peak,
                            "peak_source": device["peak_source"],
                            "peak_frac": float(f"{row['gflops_per_s'] / peak:.3g}")}  # fmt: skip
                    if use_torch and devices == 1:
                        row |= _child(args, "--torch-worker", what, batch, layers, 1)
                        if "torch_step_s" in row:
                            row["ratio"] = round(row["step_s"] / row["torch_step_s"], 2)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    print(peak_line)
    print(format_table(rows))
    print()
    print(format_goals(goals(rows)))
    print()
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
