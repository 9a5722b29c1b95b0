"""Step times of the DARTS recurrent protocols at the paper's sizes (Penn Treebank's vocabulary).

    python scripts/bench_lm.py                    # search (size 300, batch 256) and evaluation
                                                  # (size 850, batch 64) steps, BPTT 35
    python scripts/bench_lm.py --order second     # the second-order search step
    python scripts/bench_lm.py --steps 3 --only search

The steps are dnas' own (`search_step.setup` and `lm.train_setup` on
`experiments/darts_rnn/ptb_search.py`), on a synthetic corpus in the Penn Treebank layout with
its 10,000-word vocabulary (the step time does not depend on which words they are). Each
measurement runs in a fresh subprocess (its peak resident memory is its own). Prints one JSON
object per measurement: compile seconds, median step seconds, tokens per second, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "darts_rnn", "ptb_search.py")


def write_corpus(directory: str, vocab: int, tokens: int, seed: int = 0) -> None:
    """train/valid/test.txt of random words w0..w{vocab-1}, 20 words a line (every word of the
    vocabulary appears in train.txt, so the vocabulary is exactly `vocab` + <eos>)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for name, n in (("train.txt", tokens), ("valid.txt", tokens // 10), ("test.txt", tokens // 10)):
        ids = rng.integers(0, vocab - 1, n)
        if name == "train.txt":
            ids[: vocab - 1] = np.arange(vocab - 1)
        words = [f"w{i}" for i in ids]
        lines = [" ".join(words[i : i + 20]) for i in range(0, len(words), 20)]
        with open(os.path.join(directory, name), "w") as f:
            f.write("\n".join(lines) + "\n")


def worker(args: argparse.Namespace) -> dict:
    import jax

    from dnas import configlib, lm, search_step, spaces, text

    config = configlib.load(CONFIG)
    config = configlib.override(
        config, [f"data.text_dir={args.text_dir}", f"order={args.order}", "progress=false"]
    )
    t0 = time.perf_counter()
    if args.only == "search":
        su = search_step.setup(config)
        state = search_step.create_state(config, su)
        batch = next(lm.search_batches(su.text, 0))
        fn, tokens = su.step_fn, config.search.batch_size * config.text.bptt
        vocab = su.text.corpus.vocab_size
    else:
        genotype = spaces.load("darts_v2", space="darts_rnn")
        su = lm.train_setup(config, genotype)
        state = lm.init_train_state(config, su)
        batch = (su.stream.batch(0),)
        # The mean length of a 'normal' segment: the padded batch computes max_len positions.
        fn, tokens = su.step_fn, config.train.batch_size * config.text.bptt
        vocab = su.corpus.vocab_size
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    step = jax.jit(fn, donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, *batch).compile()
    compile_s = time.perf_counter() - t0
    state, _ = compiled(state, *batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state, out = compiled(state, *batch)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    del text
    return {
        "step": args.only,
        "order": args.order if args.only == "search" else None,
        "size": config.search.C if args.only == "search" else config.train.C,
        "batch": config.search.batch_size if args.only == "search" else config.train.batch_size,
        "bptt": config.text.bptt,
        "vocab": vocab,
        "init_s": round(init_s, 1),
        "compile_s": round(compile_s, 1),
        "step_s": round(median, 3),
        "tokens_per_s": round(tokens / median),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "device": jax.devices()[0].device_kind,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", choices=("search", "eval"), help="one of the two steps")
    p.add_argument("--order", default="first", choices=("first", "second"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--tokens", type=int, default=400_000, help="synthetic training words")
    p.add_argument("--text-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.text_dir and args.only:  # a worker
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory() as d:
        write_corpus(d, 10_000, args.tokens)
        for only in [args.only] if args.only else ["search", "eval"]:
            cmd = [sys.executable, __file__, "--only", only, "--order", args.order,
                   "--steps", str(args.steps), "--text-dir", d]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode:
                sys.exit(f"{only} step failed:\n{out.stderr[-3000:]}")
            print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
