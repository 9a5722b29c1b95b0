"""DARTS-PT's fine-tuning runs through the shared loop: a smoke search killed with kill -9 during
the fine-tuning and resumed ends bit-identical to an uninterrupted one, and it started from the
fine-tuning's own checkpoint; the fine-tuning writes metrics and checkpoints in `<workdir>/pt/`."""

import json
import textwrap

import numpy as np
import pytest

from dnas import configlib, pipeline
from dnas.metrics import read_metrics

TINY_PT = textwrap.dedent(
    """
    from dnas import configlib

    def get_config():
        c = configlib.default_config()
        c.space = "nb201"
        c.search.C, c.search.layers, c.search.epochs, c.search.batch_size = 2, 1, 1, 64
        c.search.selection, c.search.pt_interval, c.search.pt_eval_batches = "pt", 1, 1
        c.checkpoint_every_steps = 4
        c.log_every_steps = 3
        c.progress = False
        return c
    """
)


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory):
    root = tmp_path_factory.mktemp("pt")
    path = root / "tiny_pt.py"
    path.write_text(TINY_PT)
    config = configlib.load(str(path))
    expected = root / "uninterrupted"
    return root, path, config, expected, pipeline.search_genotype(config, str(expected))


def test_pt_fine_tuning_writes_metrics_and_checkpoints(tiny_pt):
    *_, expected, geno = tiny_pt
    records = read_metrics(expected / "pt")
    assert any("train/loss" in r for r in records) and any("pt/compile_s" in r for r in records)
    assert (expected / "pt" / "checkpoints").is_dir()
    decisions = [json.loads(x) for x in (expected / "pt_decisions.jsonl").read_text().splitlines()]
    # NAS-Bench-201: one operation decision per edge, one per fine-tuning epoch.
    assert [d["epoch"] for d in decisions] == list(range(6))
    assert sorted(d["edge"] for d in decisions) == sorted(geno.search_space.row_labels["normal"])
    chosen = {d["edge"]: d["op"] for d in decisions}
    labels = geno.search_space.row_labels["normal"]
    ops = geno.search_space.ops
    mix = geno.search_space.genotype_mix(geno)["normal"]
    assert {labels[e]: ops[int(np.argmax(mix[e]))] for e in range(len(labels))} == chosen


def test_pt_resumes_bit_identically_after_kill(tiny_pt, search_killed_at_checkpoint):
    root, path, config, expected, expected_geno = tiny_pt
    workdir = root / "killed"
    saved = search_killed_at_checkpoint(path, workdir, workdir / "pt" / "checkpoints")
    assert not (workdir / "genotype.json").exists()
    assert saved and max(saved) > 0

    geno = pipeline.search_genotype(config, str(workdir))  # resumes
    assert geno == expected_geno
    for name in ("alphas.npz", "pt/alphas.npz"):
        got, want = np.load(workdir / name), np.load(expected / name)
        assert got.files == want.files
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key])
    assert (workdir / "pt_decisions.jsonl").read_text() == (
        expected / "pt_decisions.jsonl"
    ).read_text()
    # The fine-tuning started again from its checkpoint, not from its first step: each process
    # logs its compile time at the step it starts from.
    starts = [r["step"] for r in read_metrics(workdir / "pt") if "pt/compile_s" in r]
    assert starts == [0, max(saved)]
