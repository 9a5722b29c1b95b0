"""Compile time, step time and peak memory of the full DARTS search step (alpha step on a
validation batch + weight step on a training batch), first order, exact second order and the
paper's finite-difference second order.

    python scripts/bench_search.py                                    # all three, batch 16 and 64
    python scripts/bench_search.py --order first --batch 16 --steps 3

DARTS supernet C=16, 8 cells, 32x32x3 random data (the step's cost does not depend on the
pixels), 10 classes. Each configuration runs in a fresh subprocess (its own peak memory). Prints
a table and one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def worker(args: argparse.Namespace) -> dict:
    import jax
    import numpy as np

    from dnas import configlib, data, loop, search

    batch = args.batch[0]
    order = args.order[0]
    config = configlib.default_config()
    config.order = order
    s = config.search
    s.C, s.layers, s.batch_size = args.C, args.layers, batch
    info = data.DatasetInfo(
        "random32", None, args.size, 3, 10, mean=(0.5,) * 3, std=(0.25,) * 3, crop_padding=4,
        flip=True,
    )  # fmt: skip
    # The loop's own setup, on an in-memory random dataset of CIFAR's shape.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4 * batch, args.size, args.size, 3), np.uint8)
    source = data.ArraySource(images, rng.integers(0, 10, 4 * batch).astype(np.int32))
    su = search.setup(config, info=info, splits=data.Splits(source, None, source))
    t0 = time.perf_counter()
    state = search.create_state(config, su)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    b1 = data.batch_at(source, batch, 0, seed=0)
    b2 = data.batch_at(source, batch, 1, seed=0)
    step, compile_s = loop.compile_step(su.step_fn, "step", False, state, b1, b2)
    state, m = step(state, b1, b2)  # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state, m = step(state, b1, b2)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    memory = step.memory_analysis()
    return {
        "name": f"search_step_{order}",
        "order": order,
        "C": args.C,
        "layers": args.layers,
        "size": args.size,
        "batch": batch,
        "init_s": round(init_s, 2),
        "compile_s": round(compile_s, 2),
        "step_s": round(float(np.median(times)), 3),
        "step_min_s": round(min(times), 3),
        "xla_temp_mb": round(memory.temp_size_in_bytes / 2**20, 1) if memory else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "jax": jax.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--order", nargs="+", default=["first", "second", "finite_difference"])
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return
    rows = []
    for order in args.order:
        for batch in args.batch:
            cmd = [sys.executable, __file__, "--worker", "--order", order, "--batch", str(batch)]
            for flag in ("C", "layers", "size", "steps"):
                cmd += [f"--{flag}", str(getattr(args, flag))]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"{'order':18} {'batch':>5} {'compile s':>9} {'step s':>7} {'peak MB':>8}")
    for r in rows:
        print(
            f"{r['order']:18} {r['batch']:>5} {r['compile_s']:>9} {r['step_s']:>7} "
            f"{r['peak_rss_mb']:>8}"
        )
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
