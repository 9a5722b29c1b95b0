"""What Ray costs a study (`dnas study`), apart from its trials: starting a local cluster, the
first tasks (worker processes start and import jax), the same tasks on the reused workers, and
the shutdown. One JSON line.

    python scripts/bench_ray.py                 # a local cluster with this machine's CPUs
    python scripts/bench_ray.py --tasks 4
"""

from __future__ import annotations

import argparse
import json
import time


def _task(i: int) -> float:
    import jax.numpy as jnp  # what a trial imports first

    return float(jnp.sum(jnp.ones(3))) + i


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=2, help="tasks at once (default 2)")
    args = p.parse_args()
    t = time.perf_counter()
    import ray

    out = {"ray": ray.__version__, "import_s": time.perf_counter() - t}
    t = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    out["init_s"] = time.perf_counter() - t
    task = ray.remote(num_cpus=1)(_task)
    for name in ("first_tasks_s", "same_tasks_again_s"):
        t = time.perf_counter()
        ray.get([task.remote(i) for i in range(args.tasks)])
        out[name] = time.perf_counter() - t
    t = time.perf_counter()
    ray.shutdown()
    out["shutdown_s"] = time.perf_counter() - t
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
