"""The dnas benchmark: compile time, step time, peak memory and FLOP rate of the search step and
of the DARTS_V2 retraining step, side by side with PyTorch when it is importable.

    python scripts/bench.py                       # BENCHMARKS.md's main table (batch 16)
    python scripts/bench.py --measure search_first search_second --batch 16 64
    python scripts/bench.py --measure search_first --layers 5 8 11 --no-torch --no-remat
    python scripts/bench.py --measure search_first --devices 1 2 4 8 --no-torch   # simulated

Measurements (`--measure`):
  search_first, search_second, search_fd   the full DARTS search step (alpha step on a
      validation batch, then weight step on a training batch, in-jit augmentation, both
      optimisers): first order, exact second order, the paper's finite-difference second order.
      DARTS supernet, C=--C, --layers cells, --size x --size x 3 inputs, 10 classes.
  train   one retraining step of NetworkCIFAR(DARTS_V2), C=36, 20 cells, auxiliary head,
      drop-path, at --train-batch (32: the reference's 4.5 s).

Each (measurement, batch, layers, devices) runs in a fresh subprocess, so its peak resident
memory (ru_maxrss) is its own; `--devices N` > 1 simulates N CPU devices
(`--xla_force_host_platform_device_count`) and shards the batch over them (dnas/parallel.py).
The PyTorch figures come from scripts/torch_darts.py (`pip install torch==2.13.0`: a CPU build
from local disk here), run in their own subprocess with as many threads as cores, for the same
order (PyTorch's exact second order is a double backward through the unrolled step).

Prints a table, then one JSON object per measurement on its own line: name, batch, compile_s,
step_s (median of --steps steps after one warm-up step), peak_mb, gflops (XLA's count per step),
gflops_per_s, and torch_step_s / torch_peak_mb / ratio where PyTorch ran.
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

MEASUREMENTS = ("search_first", "search_second", "search_fd", "train")
_ORDER = {"search_first": "first", "search_second": "second", "search_fd": "finite_difference"}


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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


def _sep_impl(args, what: str) -> str:
    if args.sep_impl != "auto":
        return args.sep_impl
    return "fused" if what == "train" else "shifted"


def worker(args: argparse.Namespace) -> dict:
    """One dnas measurement in this process."""
    import jax
    import numpy as np

    from dnas import configlib, data, loop, parallel, search_step, spaces, train

    what, batch, layers, devices = args.measure[0], args.batch[0], args.layers[0], args.devices[0]
    sep_impl = _sep_impl(args, what)
    mesh = parallel.make_mesh(devices)
    config = configlib.default_config()
    t0 = time.perf_counter()
    if what == "train":
        batch = args.train_batch
        info, splits = _random_source(batch, args.size)
        t = config.train
        t.C, t.layers, t.batch_size, t.drop_path_prob, t.epochs = 36, 20, batch, 0.2, 600
        t.sep_impl = sep_impl
        config.train.cutout_length = 16
        su = train.setup(config, spaces.load("DARTS_V2"), info=info, splits=splits)
        state = train.create_state(config, su)
        # Mid-training: drop-path on (its rate ramps from 0 over the epochs).
        state = parallel.replicate(state.replace(step=state.step + 100 * su.steps_per_epoch), mesh)
        batches = (parallel.shard_batch(data.batch_at(splits.train, batch, 0, seed=0), mesh),)
    else:
        config.order = _ORDER[what]
        s = config.search
        s.C, s.layers, s.batch_size, s.remat = args.C, layers, batch, args.remat
        s.sep_impl = sep_impl
        info, splits = _random_source(batch, args.size)
        su = search_step.setup(config, info=info, splits=splits)
        state = parallel.replicate(search_step.create_state(config, su), mesh)
        batches = tuple(
            parallel.shard_batch(data.batch_at(splits.train, batch, i, seed=0), mesh)
            for i in range(2)
        )
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    step, compiled = loop.compile_step(su.step_fn, what, False, state, *batches, mesh=mesh)
    times, _ = _time_steps(step, state, batches, args.steps)
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = step.memory_analysis()
    step_s = float(np.median(times))
    gflops = cost.get("flops", float("nan")) / 1e9 if cost else float("nan")
    return {
        "name": what,
        "batch": batch,
        "C": 36 if what == "train" else args.C,
        "layers": 20 if what == "train" else layers,
        "size": args.size,
        "devices": devices,
        "remat": bool(args.remat) and what != "train",
        "sep_impl": sep_impl,
        "init_s": round(init_s, 2),
        "compile_s": round(compiled["compile_s"], 2),
        "step_s": round(step_s, 3),
        "step_min_s": round(min(times), 3),
        "peak_mb": _peak_mb(),
        "xla_temp_mb": round(memory.temp_size_in_bytes / 2**20, 1) if memory else None,
        "gflops": round(gflops, 1),
        "gflops_per_s": round(gflops / step_s, 2),
        "jax": jax.__version__,
    }


def torch_worker(args: argparse.Namespace) -> dict:
    """The same measurement with scripts/torch_darts.py."""
    import statistics

    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_darts

    torch.set_num_threads(os.cpu_count() or 1)
    what, batch, layers = args.measure[0], args.batch[0], args.layers[0]
    if what == "train":
        batch = args.train_batch
        step = torch_darts.make_train_step(batch, args.size)
    else:
        step = torch_darts.make_search_step(args.C, layers, batch, args.size, _ORDER[what])
    step()  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"torch_step_s": round(statistics.median(times), 3), "torch_peak_mb": _peak_mb(),
            "torch": torch.__version__}  # fmt: skip


def _have_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _child(args: argparse.Namespace, flag: str, what: str, batch: int, layers: int, devices: int):
    cmd = [sys.executable, os.path.abspath(__file__), flag, "--measure", what,
           "--batch", str(batch), "--layers", str(layers), "--devices", str(devices)]  # fmt: skip
    for name in ("C", "size", "steps", "train_batch"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--remat" if args.remat else "--no-remat"]
    cmd += ["--sep-impl", args.sep_impl]
    env = dict(os.environ)
    if devices > 1:
        flags = env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
        env["XLA_FLAGS"] = flags.strip()
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--measure", nargs="+", default=["search_first", "search_second", "train"],
                   choices=MEASUREMENTS)  # fmt: skip
    p.add_argument("--batch", type=int, nargs="+", default=[16], help="search batch sizes")
    p.add_argument("--layers", type=int, nargs="+", default=[8], help="supernet cells")
    p.add_argument("--devices", type=int, nargs="+", default=[1], help="simulated CPU devices")
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    p.add_argument(
        "--remat", action=argparse.BooleanOptionalAction, default=True,
        help="jax.checkpoint per supernet edge (default on, as in the CIFAR-10 configs)",
    )  # fmt: skip
    p.add_argument(
        "--sep-impl", default="auto", choices=("auto", "fused", "depthwise", "shifted"),
        help="separable convolutions: one dense conv (fused), grouped conv then pointwise\n"
             "(depthwise), or k*k shifted slices then pointwise (shifted); auto: what the\n"
             "CIFAR-10 configs use (shifted to search, fused to retrain)",
    )  # fmt: skip
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker or args.torch_worker:
        print(json.dumps(worker(args) if args.worker else torch_worker(args)), flush=True)
        return

    use_torch = not args.no_torch and _have_torch()
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
          file=sys.stderr)  # fmt: skip
    rows = []
    for what in args.measure:
        for batch in [args.train_batch] if what == "train" else args.batch:
            for layers in [20] if what == "train" else args.layers:
                for devices in args.devices:
                    row = _child(args, "--worker", what, batch, layers, devices)
                    if use_torch and devices == 1:
                        row |= _child(args, "--torch-worker", what, batch, layers, 1)
                        row["ratio"] = round(row["step_s"] / row["torch_step_s"], 2)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    header = ("name", "batch", "layers", "devices", "compile_s", "step_s", "peak_mb", "gflops",
              "gflops_per_s", "torch_step_s", "torch_peak_mb", "ratio")  # fmt: skip
    print(" ".join(f"{h:>13}" for h in header))
    for r in rows:
        print(" ".join(f"{r.get(h, '-')!s:>13}" for h in header))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
