"""What verified checkpoints cost: SHA-256 of a state's arrays, and a save and a restore with it.

    python scripts/bench_checkpoint.py                 # states of 4, 16 and 64 MB
    python scripts/bench_checkpoint.py --mb 128 --leaves 500

Every `Checkpointer.save` hashes each array of the state before it returns (the caller may donate
the arrays next), and every restore hashes the restored arrays again (`dnas/checkpoint.py`). For
each state size this prints the median over `--repeats` of: the hashing alone (`hash_ms`), the time
`save(wait=False)` blocks the step loop (`save_blocking_ms`: hashing, orbax's device-to-host copy
and the step's folders), a whole save (`save_ms`, waited for) and a verified restore
(`restore_ms`). A table, then one JSON object per size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time


def measure(mb: int, leaves: int, repeats: int) -> dict:
    import jax
    import numpy as np

    from dnas import checkpoint

    per_leaf = mb * 2**20 // 4 // leaves
    rng = np.random.default_rng(0)
    state = {f"w{i:04d}": jax.numpy.asarray(rng.standard_normal(per_leaf, np.float32))
             for i in range(leaves)}  # fmt: skip
    hash_ms, blocking_ms, save_ms, restore_ms = [], [], [], []
    with tempfile.TemporaryDirectory() as workdir, checkpoint.Checkpointer(workdir) as ckpt:
        for step in range(1, repeats + 1):
            t0 = time.perf_counter()
            checkpoint._checksums(state)
            hash_ms.append(1e3 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            ckpt.save(step, state, wait=False)
            blocking_ms.append(1e3 * (time.perf_counter() - t0))
            ckpt.wait_until_finished()
            save_ms.append(1e3 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            ckpt.restore(state, step)
            restore_ms.append(1e3 * (time.perf_counter() - t0))
    median = lambda xs: round(statistics.median(xs), 1)
    gb_s = mb / 1024 / (median(hash_ms) / 1e3)
    return {
        "mb": mb, "leaves": leaves, "hash_ms": median(hash_ms),
        "save_blocking_ms": median(blocking_ms), "save_ms": median(save_ms),
        "restore_ms": median(restore_ms), "hash_gb_s": round(gb_s, 2),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--leaves", type=int, default=300)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rows = [measure(mb, args.leaves, args.repeats) for mb in args.mb]
    keys = list(rows[0])
    print(" ".join(f"{k:>16}" for k in keys))
    for r in rows:
        print(" ".join(f"{r[k]:>16}" for k in keys))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
