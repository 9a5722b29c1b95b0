"""The search and retraining loops end to end on a tiny NAS-Bench-201 supernet: exact resume after
kill -9, retraining from the genotype JSON a search wrote, config and dataset errors."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dnas import configlib, data, search, search_step, spaces, train
from dnas import workdir as workdir_lib

TINY = textwrap.dedent(
    """
    from dnas import configlib

    def get_config():
        c = configlib.default_config()
        c.space = "nb201"
        c.search.C, c.search.layers, c.search.epochs, c.search.batch_size = 2, 1, 2, 64
        c.train.C, c.train.layers, c.train.epochs, c.train.batch_size = 4, 1, 1, 64
        c.checkpoint_every_steps = 4
        c.log_every_steps = 3
        c.progress = False
        return c
    """
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    path = root / "tiny.py"
    path.write_text(TINY)
    # The session's compilation cache (conftest.py), shared with the subprocesses: the killed run
    # and the resumed one compile the same step.
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(root / "xla_cache")
    return root, path, cache, configlib.load(str(path))


@pytest.fixture(scope="module")
def uninterrupted(tiny):
    root, _, _, config = tiny
    workdir = root / "uninterrupted"
    geno = search.run(config, str(workdir))
    return workdir, geno


def test_search_writes_its_outputs(uninterrupted):
    workdir, geno = uninterrupted
    outputs = ("config.json", "metrics.jsonl", "genotype.json", "alphas.npz", "checkpoints",
               "alpha_history")  # fmt: skip
    for name in outputs:
        assert (workdir / name).exists(), name
    assert spaces.load_json(workdir / "genotype.json") == geno
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(0 < r["alpha_entropy/normal"] <= np.log(5) + 1e-9 for r in epochs)
    # Every epoch's mixing weights (DARTS: softmax of the alphas) and raw alphas, as arrays; the
    # last epoch's alphas are the final ones.
    files = sorted(p.name for p in (workdir / "alpha_history").iterdir())
    assert files == ["epoch_0001.npz", "epoch_0002.npz"]
    for name in files:
        with np.load(workdir / "alpha_history" / name) as f:
            alphas, weights = f["alphas/normal"], f["normal"]
        assert weights.shape == alphas.shape == (6, 5)
        softmax = np.exp(alphas - alphas.max(-1, keepdims=True))
        np.testing.assert_allclose(weights, softmax / softmax.sum(-1, keepdims=True), rtol=1e-5)
    with np.load(workdir / "alphas.npz") as f:
        np.testing.assert_array_equal(alphas, f["normal"])
    assert any("genotype" in r for r in records)
    assert all(np.isfinite(r["train/loss"]) for r in records if "train/loss" in r)


def test_resume_after_kill_gives_identical_alphas(tiny, uninterrupted, search_killed_at_checkpoint):
    root, path, _, config = tiny
    workdir = root / "killed"
    # kill -9 once the first checkpoint is complete, mid-run
    saved = search_killed_at_checkpoint(path, workdir, workdir / "checkpoints", timeout=300)
    assert not (workdir / "genotype.json").exists()
    assert saved and max(saved) > 0
    geno = search.run(config, str(workdir))  # resumes
    expected_dir, expected_geno = uninterrupted
    assert geno == expected_geno
    got = np.load(workdir / "alphas.npz")
    want = np.load(expected_dir / "alphas.npz")
    for cell in want.files:
        np.testing.assert_array_equal(got[cell], want[cell])
    # So are the per-epoch records of the mixing weights and alphas.
    history = sorted(p.name for p in (expected_dir / "alpha_history").iterdir())
    assert sorted(p.name for p in (workdir / "alpha_history").iterdir()) == history
    for name in history:
        with (
            np.load(workdir / "alpha_history" / name) as g,
            np.load(expected_dir / "alpha_history" / name) as w,
        ):
            assert sorted(g.files) == sorted(w.files)
            for key in w.files:
                np.testing.assert_array_equal(g[key], w[key])
    # The search being deterministic, a resume that started over from step 0 would end with the
    # same alphas. Each process logs its compile time at the step it starts from: the killed one
    # at 0, the resumed one at the checkpoint's step.
    from dnas.metrics import read_metrics

    records = read_metrics(workdir)  # skips a line torn by the kill
    starts = [r["step"] for r in records if "search/compile_s" in r]
    assert starts == [0, max(saved)]


def test_retraining_from_the_searched_genotype_json(tiny, uninterrupted):
    root, _, _, config = tiny
    workdir, geno = uninterrupted
    config = configlib.override(config, [f"train.genotype={workdir / 'genotype.json'}"])
    results = train.run(config, str(root / "retrain"))
    assert results["genotype"] == geno.to_string()
    # The parameters of the NAS-Bench-201 network of this genotype at train.C and train.layers,
    # counted by hand: 3x3 stem conv + BN; per cell, every nor_conv_kxk edge is a k x k conv + BN
    # (the other ops have none); ResNet reduction blocks (two 3x3 conv + BN, 1x1 shortcut conv);
    # the last BN; the classifier (weights and bias).
    info = data.get_info(config.dataset)
    C, N, classes = config.train.C, config.train.layers, info.num_classes
    kernel = {"nor_conv_1x1": 1, "nor_conv_3x3": 9}
    ops = [op for node in geno.normal for op, _ in node]
    cell = lambda c: sum(kernel[op] * c * c + 2 * c for op in ops if op in kernel)
    block = lambda a, b: 9 * a * b + 2 * b + 9 * b * b + 2 * b + a * b
    expected = (
        9 * info.channels * C + 2 * C
        + N * (cell(C) + cell(2 * C) + cell(4 * C))
        + block(C, 2 * C) + block(2 * C, 4 * C)
        + 2 * 4 * C + 4 * C * classes + classes
    )  # fmt: skip
    assert results["params"] == expected
    # One epoch of a C=4 network is too short for an accuracy floor that would not be flaky.
    assert 0.0 <= results["test_accuracy"] <= 1.0
    saved = json.loads((root / "retrain" / "results.json").read_text())
    assert saved["test_accuracy"] == results["test_accuracy"]
    assert saved["space"] == "nb201"


def test_dnas_train_refuses_a_genotype_of_another_space_than_config_space(tmp_path):
    # It used to train an NB201 genotype with space=darts_cnn recorded in config.json.
    config = configlib.override(
        configlib.default_config(), ["train.genotype=|nor_conv_3x3~0|+|none~0|skip_connect~1|"
                                     "+|none~0|none~1|avg_pool_3x3~2|"]
    )  # fmt: skip
    with pytest.raises(configlib.ConfigError, match=r"set --config\.space=nb201"):
        train.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_a_search_extended_within_its_fixed_schedule_equals_the_longer_search(tiny):
    # search.lr_schedule_epochs fixes the cosine's length, and DARTS has no other schedule over
    # the search: 1 epoch, then resumed with epochs=2, is the 2-epoch search bit for bit.
    root, _, _, config = tiny
    fixed = configlib.override(config, ["search.lr_schedule_epochs=2"])
    extended = root / "extended"
    search.run(configlib.override(fixed, ["search.epochs=1"]), str(extended))
    search.run(fixed, str(extended))
    search.run(fixed, str(root / "longer"))
    a = workdir_lib.load_arrays(extended / "alphas.npz")
    b = workdir_lib.load_arrays(root / "longer" / "alphas.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    genotypes = [(w / "genotype.json").read_text() for w in (extended, root / "longer")]
    assert genotypes[0] == genotypes[1]


def test_resuming_with_another_config_is_refused(tiny, uninterrupted):
    _, _, _, config = tiny
    workdir, _ = uninterrupted
    other = configlib.override(config, ["search.alpha_lr=0.1"])
    with pytest.raises(configlib.ConfigError, match=r"config\.json differs in search\.alpha_lr;"):
        search.run(other, str(workdir))


def test_fields_added_since_a_workdir_was_written_are_not_a_difference():
    """A workdir written before a field existed resumes when the field is at its default (or
    neutral where the default config lacks it); any other value, or a changed or dropped
    field, is named."""
    defaults = configlib.default_config().to_dict()
    changes = lambda old, current: workdir_lib.config_changes(old, current, defaults)
    current = configlib.default_config().to_dict()
    old = json.loads(json.dumps(current))
    del old["search"]["lr_offset_epochs"]
    assert changes(old, current) == []
    current["strategy_args"] = {"resource_lambda": 0.0}
    assert changes(old, current) == []
    current["strategy_args"] = {"resource_lambda": 0.01}
    current["search"]["lr_offset_epochs"] = 5
    assert changes(old, current) == [
        "search.lr_offset_epochs", "strategy_args.resource_lambda",
    ]  # fmt: skip
    current = configlib.default_config().to_dict()
    old["search"]["lr"] = 1.0
    del current["seed"]
    assert changes(old, current) == ["search.lr", "seed"]


@pytest.mark.parametrize(
    "assignment,message",
    [
        ("search.epoch=3", "unknown config key 'search.epoch'; did you mean search.epochs"),
        ("search.epochs=three", "--config.search.epochs expects a value of type int, got 'three'"),
        ("search.lr=[1]", "expects a value of type float"),
        ("progress=maybe", "expects true or false"),
        ("search", "needs a value"),
        ("search=1", "is a group"),
    ],
)
def test_config_override_errors(assignment, message):
    with pytest.raises(configlib.ConfigError, match=message.replace("[", r"\[")):
        configlib.override(configlib.default_config(), [assignment])


def test_config_override_of_a_none_field():
    config = configlib.default_config()
    assert config.search.flip is None  # the dataset's default
    for text, value in (("false", False), ("True", True), ("none", None), ("1", 1)):
        assert configlib.override(config, [f"search.flip={text}"]).search.flip == value


def test_config_file_errors(tmp_path):
    with pytest.raises(configlib.ConfigError, match="does not exist"):
        configlib.load(str(tmp_path / "missing.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config():\n    raise RuntimeError('boom')\n")
    with pytest.raises(configlib.ConfigError, match="failed: RuntimeError: boom"):
        configlib.load(str(bad))


def test_missing_dataset_fails_fast_with_instructions(tmp_path, monkeypatch):
    # "Fast": refused before tfds is asked for anything (it would try to download) and before
    # any model is built.
    import tensorflow_datasets as tfds

    def must_not_run(*args, **kwargs):
        raise AssertionError("reached past the preparedness check")

    for name in ("data_source", "load"):
        monkeypatch.setattr(tfds, name, must_not_run)
    monkeypatch.setattr(search_step, "create_state", must_not_run)
    config = configlib.override(
        configlib.default_config(), ["dataset=cifar10", f"data_dir={tmp_path}"]
    )
    with pytest.raises(data.DatasetNotPreparedError, match="tfds build cifar10"):
        search_step.setup(config)


def test_a_second_run_loads_the_compiled_step_from_the_cache(tiny):
    # Whether the executable came from the cache is read from JAX's own cache-hit events (which
    # the search records), not inferred from compile times, which vary with the machine's load.
    root, path, _, _ = tiny
    cache = root / "default_cache"  # what config.compilation_cache_dir points to by default
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    hits = []
    for i in range(2):
        workdir = root / f"cached{i}"
        cmd = [sys.executable, "-m", "dnas.cli", "search", "--config", str(path),
               "--config.search.epochs=1", f"--config.compilation_cache_dir={cache}",
               "--workdir", str(workdir)]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
        records = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
        hits += [r["search/compile_cache_hits"] for r in records if "search/compile_s" in r]
        if i == 0:
            entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first run wrote nothing to the cache"
    assert hits[0] == 0 and hits[1] >= 1, hits
    assert sorted(p.name for p in cache.iterdir()) == entries  # nothing compiled anew


def test_cli_reports_config_errors_on_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "dnas.cli", "search", "--config.search.epoch=3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("dnas search: error: unknown config")
