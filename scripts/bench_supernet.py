"""Compile time, step time and peak memory of one supernet forward+backward step.

    python scripts/bench_supernet.py   # DARTS, C=16, 8 cells, 32x32x3, batch 16 and 64
    python scripts/bench_supernet.py --space nb201 --batch 64

The step is the gradient of the cross-entropy with respect to the weights and the alphas (through
the softmax), i.e. one half of a first-order DARTS search step. Each configuration runs in a fresh
subprocess, so the reported peak resident memory (ru_maxrss) is that configuration's own. Prints
a table and one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import subprocess
import sys
import time


def worker(args: argparse.Namespace) -> dict:
    import jax
    import numpy as np
    import optax

    from dnas import spaces
    from dnas.state import init_variables

    batch = args.batch[0]
    space = spaces.get(args.space)
    model = space.supernet(
        10, C=args.C, layers=args.layers, sep_impl=args.sep_impl, remat=args.remat
    )
    x = jax.random.normal(jax.random.key(0), (batch, args.size, args.size, 3))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
    alphas = space.init_alphas(jax.random.key(2))

    def mix(alphas):
        return jax.tree.map(lambda a: jax.nn.softmax(a, -1), alphas)

    t0 = time.perf_counter()
    params = init_variables(model, jax.random.key(3), x, mix(alphas))["params"]
    jax.block_until_ready(params)
    init_s = time.perf_counter() - t0

    def loss(params, alphas, x, y):
        logits = model.apply({"params": params}, x, mix(alphas))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    t0 = time.perf_counter()
    compiled = step.lower(params, alphas, x, y).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(params, alphas, x, y))  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, alphas, x, y))
        times.append(time.perf_counter() - t0)
    memory = compiled.memory_analysis()
    return {
        "name": f"supernet_fwd_bwd_{args.space}",
        "space": args.space,
        "C": args.C,
        "layers": args.layers,
        "size": args.size,
        "batch": batch,
        "sep_impl": args.sep_impl,
        "remat": args.remat,
        "init_s": round(init_s, 2),
        "compile_s": round(compile_s, 2),
        "step_s": round(float(np.median(times)), 3),
        "step_min_s": round(min(times), 3),
        "xla_temp_mb": round(memory.temp_size_in_bytes / 2**20, 1) if memory else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "jax": jax.__version__,
        "devices": jax.device_count(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="darts_cnn")
    p.add_argument("--C", type=int, default=16)
    p.add_argument(
        "--layers", type=int, default=None,
        help="depth as the space counts it (NB201: cells per stage); default: the space's search "
        "setting (DARTS 8, NB201 5)",
    )  # fmt: skip
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    p.add_argument("--sep-impl", default="fused", choices=["fused", "depthwise"])
    p.add_argument("--remat", action="store_true", help="jax.checkpoint every edge")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.layers is None:  # the space's own default depth of its search network
        from dnas import spaces

        build = spaces.get(args.space).supernet
        layers = inspect.signature(build).parameters.get("layers")
        if layers is None or layers.default is inspect.Parameter.empty:
            p.error(f"space {args.space!r} has no default depth: pass --layers")
        args.layers = layers.default
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return
    rows = []
    for batch in args.batch:
        cmd = [sys.executable, __file__, "--worker", "--batch", str(batch)]
        for flag in ("space", "C", "layers", "size", "steps", "sep_impl"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd += ["--remat"] if args.remat else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'space':10} {'batch':>5} {'init s':>7} {'compile s':>9} {'step s':>7} {'peak MB':>8}")
    for r in rows:
        print(
            f"{r['space']:10} {r['batch']:>5} {r['init_s']:>7} {r['compile_s']:>9} "
            f"{r['step_s']:>7} {r['peak_rss_mb']:>8}"
        )
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
