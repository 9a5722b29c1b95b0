"""The CLI a researcher expects (issue 14): `dnas --version`, `dnas list`, `dnas eval`, `dnas
export`, `dnas run`'s retraining folders resumed by `dnas train`, the per-epoch line of
non-interactive logs, and the `dnas plot` defects (each test named after one).

One tiny `dnas run`-like pipeline (NAS-Bench-201 supernet, 1 search epoch, 2 retraining epochs on
the 8x8 digits) is shared by the module: its retraining is stopped after a mid-epoch checkpoint and
finished by `dnas train --workdir <run>/retrain_searched`."""

import contextlib
import importlib.metadata
import io
import json
import re
import shutil
import textwrap

import jax
import numpy as np
import pytest

from dnas import checkpoint, cli, configlib, data, pipeline, search, spaces, strategies, train

TINY = textwrap.dedent(
    """
    from dnas import configlib

    def get_config():
        c = configlib.default_config()
        c.space = "nb201"
        c.search.C, c.search.layers, c.search.epochs, c.search.batch_size = 2, 1, 1, 64
        c.train.C, c.train.layers, c.train.epochs, c.train.batch_size = 4, 1, 2, 64
        c.baseline = False
        c.checkpoint_every_steps = 5
        c.log_every_steps = 1
        c.progress = False
        return c
    """
)
STOP_AT = 10  # the retraining is stopped once this step's checkpoint is on disk (mid-epoch 1)


class _Stopped(Exception):
    """Stands for a crash of the process right after a checkpoint."""


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """(root, config path, run workdir, stderr of the run, stderr of the resume): a tiny `dnas
    run` whose retraining stops after its step-STOP_AT checkpoint, then `dnas train --workdir
    <run>/retrain_searched` with the same config file."""
    root = tmp_path_factory.mktemp("cli_commands")
    path = root / "tiny.py"
    path.write_text(TINY)
    config = configlib.load(str(path))
    workdir = root / "run"
    save = checkpoint.Checkpointer.save

    def save_then_stop(self, step, state, *, metadata=None, wait=True):
        saved = save(self, step, state, metadata=metadata, wait=True)
        if self.workdir.name == "retrain_searched" and step >= STOP_AT:
            self.close()
            raise _Stopped(step)
        return saved

    run_err, resume_err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint.Checkpointer, "save", save_then_stop)
        mp.setattr(search, "_DOT_FALLBACK_SAID", [False])
        with contextlib.redirect_stderr(run_err), pytest.raises(_Stopped):
            pipeline.run(config, str(workdir))
    assert not (workdir / "retrain_searched" / "results.json").exists()
    folder = workdir / "retrain_searched"
    with contextlib.redirect_stderr(resume_err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["train", "--config", str(path), "--workdir", str(folder)])
    assert code == 0, resume_err.getvalue()[-2000:]
    # `dnas run` again, as after any interruption: the search and the retraining are done; it
    # evaluates and writes the summary.
    with contextlib.redirect_stderr(io.StringIO()):
        pipeline.run(config, str(workdir))
    return root, path, workdir, run_err.getvalue(), resume_err.getvalue()


# ---------------------------------------------------------------------------------------------
# dnas run's retraining folders resume with dnas train.


def test_a_run_retraining_folder_resumes_with_dnas_train(pipeline_run):
    _, _, workdir, _, _ = pipeline_run
    folder = workdir / "retrain_searched"
    results = json.loads((folder / "results.json").read_text())
    found = spaces.load_json(workdir / "genotype.json")
    assert results["genotype"] == found.to_string()  # the folder's genotype, not the config's
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    # The stopped process compiled at step 0, the resumed one at the checkpoint it restored.
    # (and `dnas run`, run again, at the end).
    compiled_at = [r["step"] for r in records if "train/compile_s" in r]
    assert compiled_at == [0, STOP_AT, results["steps"]]
    steps_per_epoch = len(data.digits_splits().train) // 64
    assert results["steps"] == 2 * steps_per_epoch
    assert max(checkpoint.Checkpointer(folder).all_steps()) == results["steps"]


def test_dnas_train_refuses_a_search_workdir(pipeline_run, capsys):
    _, path, workdir, _, _ = pipeline_run
    before = (workdir / "genotype.json").read_text()
    code, out, err = _run(capsys, "train", "--config", str(path), "--workdir", str(workdir))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "holds a search, not a training; its retrainings are in" in err
    assert (workdir / "genotype.json").read_text() == before  # not overwritten


# ---------------------------------------------------------------------------------------------
# The per-epoch line of non-interactive logs.

_LINE = re.compile(
    r"^(?P<desc>search|train) epoch (?P<epoch>\d+)/(?P<epochs>\d+) \(step (?P<step>\d+)\): "
    r"train loss (?P<tl>\S+) acc (?P<ta>\S+)% \| val loss (?P<vl>\S+) acc (?P<va>\S+)% \| \S+ s$"
)


def _epoch_lines(text: str) -> list[dict]:
    return [m.groupdict() for m in map(_LINE.match, text.splitlines()) if m]


def _by_step(path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in map(json.loads, path.read_text().splitlines()) if key in r}


def test_non_interactive_logs_get_one_line_per_epoch_with_the_whole_validation_split(pipeline_run):
    _, _, workdir, run_err, resume_err = pipeline_run
    search_lines = [x for x in _epoch_lines(run_err) if x["desc"] == "search"]
    assert [(x["epoch"], x["epochs"]) for x in search_lines] == [("1", "1")]
    # The search's validation split is the alphas' half of the training split; its accuracy
    # over every example of it is a multiple of 1 / its size (one batch's would be of 1/64).
    n_val = len(data.search_split(data.digits_splits().train)[1])
    line = search_lines[0]
    val = _by_step(workdir / "metrics.jsonl", "eval_val/accuracy")[int(line["step"])]
    assert abs(val * n_val - round(val * n_val)) < 1e-6
    assert f"{100 * val:.1f}" == line["va"]
    # The retraining stopped mid-epoch 1: `dnas train` ended both epochs.
    assert [x["desc"] for x in _epoch_lines(run_err)] == ["search"]
    train_lines = _epoch_lines(resume_err)
    assert [(x["desc"], x["epoch"], x["epochs"]) for x in train_lines] == [
        ("train", "1", "2"), ("train", "2", "2"),
    ]  # fmt: skip
    # The values are the logged ones: eval_val over the whole val split; the train means over
    # the epoch's steps (every step is logged here).
    line, metrics = train_lines[1], workdir / "retrain_searched" / "metrics.jsonl"
    step = int(line["step"])
    assert f"{_by_step(metrics, 'eval_val/loss')[step]:.4g}" == line["vl"]
    first = step - step // 2 + 1  # the epoch's first step
    for key, shown, scale in (("train/loss", "tl", "{:.4g}"), ("train/accuracy", "ta", "{:.1f}")):
        values = [v for s, v in _by_step(metrics, key).items() if first <= s <= step]
        assert len(values) == step // 2
        mean = sum(values) / len(values) * (100 if key.endswith("accuracy") else 1)
        assert scale.format(mean) == line[shown]


def test_eval_val_of_the_last_epoch_equals_dnas_eval_on_the_val_split(pipeline_run, capsys):
    _, _, workdir, _, _ = pipeline_run
    folder = workdir / "retrain_searched"
    code, out, _ = _run(capsys, "eval", str(folder), "--split", "val")
    assert code == 0
    result = json.loads(out)
    assert result["examples"] == len(data.digits_splits().val)
    logged = _by_step(folder / "metrics.jsonl", "eval_val/accuracy")
    assert result["accuracy"] == pytest.approx(logged[result["step"]], abs=1e-9)


# ---------------------------------------------------------------------------------------------
# dnas eval.


def test_eval_prints_the_test_loss_and_accuracy_of_the_checkpoint(pipeline_run, capsys):
    _, _, workdir, _, _ = pipeline_run
    folder = workdir / "retrain_searched"
    code, out, _ = _run(capsys, "eval", str(folder))
    assert code == 0
    result = json.loads(out)
    results = json.loads((folder / "results.json").read_text())
    assert result["split"] == "test" and result["dataset"] == "digits"
    assert result["examples"] == len(data.digits_splits().test) == 360
    assert result["step"] == result["total_steps"] == results["steps"]
    assert result["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-9)
    assert result["loss"] == pytest.approx(results["test_loss"], rel=1e-5)


@pytest.mark.parametrize(
    "dataset,message",
    [
        ("cifar10", "dataset 'cifar10' (32x32x3 images, 10 classes) does not fit the network of"),
        ("mnist", "unknown dataset 'mnist'"),
    ],
)
def test_eval_refuses_another_dataset_s_shape_on_one_line(
    pipeline_run, capsys, monkeypatch, dataset, message
):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(tfds, "builder", lambda *a, **k: pytest.fail("tfds was asked"))
    _, _, workdir, _, _ = pipeline_run
    code, out, err = _run(capsys, "eval", str(workdir / "retrain_searched"), "--dataset", dataset)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert message in err


def test_eval_of_a_search_workdir_names_its_retrainings(pipeline_run, capsys):
    _, _, workdir, _, _ = pipeline_run
    code, out, err = _run(capsys, "eval", str(workdir))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"its retrainings are in {workdir / 'retrain_searched'}" in err


def test_eval_of_a_training_still_running_names_its_process(pipeline_run, capsys, lock_holder):
    _, _, workdir, _, _ = pipeline_run
    folder = workdir / "retrain_searched"
    holder = lock_holder(folder)
    code, out, err = _run(capsys, "eval", str(folder))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"is in use by process {holder.pid}" in err


# ---------------------------------------------------------------------------------------------
# dnas export.


def test_export_rebuilds_the_network_with_the_checkpointed_logits(pipeline_run, tmp_path, capsys):
    _, _, workdir, _, _ = pipeline_run
    folder = workdir / "retrain_searched"
    out = tmp_path / "exported"
    code, stdout, _ = _run(capsys, "export", str(folder), "--out", str(out))
    assert code == 0 and str(out) in stdout
    assert sorted(p.name for p in out.iterdir()) == ["genotype.json", "model.json", "params.npz"]
    model = json.loads((out / "model.json").read_text())
    assert model["genotype"] == spaces.load_json(folder / "genotype.json").to_string()
    assert (model["space"], model["num_classes"], model["input_shape"]) == ("nb201", 10, [8, 8, 1])
    assert (model["C"], model["layers"], model["dataset"]) == (4, 1, "digits")
    # The three documented lines, run as a user would, in the export folder, with numpy, flax
    # and dnas only.
    import flax

    import dnas

    namespace = {"json": json, "np": np, "flax": flax, "dnas": dnas}
    with contextlib.chdir(out):
        exec("\n".join(model["rebuild"]), namespace)
    images = data.digits_splits().test.images[:16]
    namespace["images"] = images
    exec(model["apply"], namespace)
    # The same batch through the network and the state the checkpoint holds.
    _, su, state = train.load_trained(str(folder))
    x = data.preprocess(None, images, su.info, train=False)
    want, _ = su.model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, x, train=False
    )
    got, _ = namespace["net"].apply(namespace["variables"], x, train=False)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # The documented `apply` line normalises with numpy, whose float32 division may differ from
    # XLA's in the last bit.
    np.testing.assert_allclose(np.asarray(namespace["logits"]), np.asarray(want), atol=1e-5)
    # Parameters and BatchNorm statistics, every array of the checkpoint's.
    with np.load(out / "params.npz") as f:
        keys = set(f.files)
    want_keys = {
        "/".join(str(getattr(k, "key", k)) for k in path)
        for path, _ in jax.tree_util.tree_leaves_with_path(
            {"params": state.params, "batch_stats": state.batch_stats}
        )
    }
    assert keys == want_keys and any(k.startswith("batch_stats/") for k in keys)


# ---------------------------------------------------------------------------------------------
# Knowledge distillation (issue 19): the run's retraining and its search's supernet as teachers.


def _records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_distillation_from_a_trained_network_and_from_a_supernet_s_logits(
    pipeline_run, tmp_path, capsys
):
    _, path, workdir, _, _ = pipeline_run
    teacher = workdir / "retrain_searched"
    student = tmp_path / "student"
    args = ["train", "--config", str(path), f"--config.train.genotype={workdir / 'genotype.json'}",
            "--config.train.C=2", "--config.train.epochs=1"]  # fmt: skip
    code, _, err = _run(capsys, *args, "--workdir", str(student),
                        f"--config.train.teacher={teacher}")  # fmt: skip
    assert code == 0, err[-2000:]
    results = json.loads((student / "results.json").read_text())
    kd = results["distillation"]
    assert (kd["kd_weight"], kd["kd_temperature"], kd["teacher"]["kind"]) == (0.9, 4.0, "trained")
    assert kd["teacher"]["step"] == json.loads((teacher / "results.json").read_text())["steps"]
    assert json.loads((student / "teacher.json").read_text()) == kd["teacher"]
    logged = [r for r in _records(student) if "train/kd" in r]
    assert logged and all(r["train/kd"] > 0 for r in logged)
    for r in logged:  # no auxiliary head on NAS-Bench-201: the loss is the mixture alone
        assert r["train/loss"] == pytest.approx(0.1 * r["train/ce"] + 0.9 * r["train/kd"], 1e-5)
    # A resume whose teacher is not the one recorded is refused (its training went on, say).
    record = json.loads((student / "teacher.json").read_text())
    (student / "teacher.json").write_text(json.dumps(record | {"fingerprint": "0" * 64}))
    code, out, err = _run(capsys, *args, "--workdir", str(student),
                          f"--config.train.teacher={teacher}")  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "from a teacher that has changed since" in err and "new --workdir" in err

    # `dnas logits` of the search's supernet (under its final mixing weights), checked against
    # the supernet restored and applied here; then a student distils from the file.
    file = tmp_path / "supernet.npz"
    code, out, err = _run(capsys, "logits", str(workdir), "--out", str(file), "--batch-size", "64")
    assert code == 0 and "supernet teacher's logits of" in out, err[-2000:]
    source = data.digits_splits().train
    with np.load(file) as f:
        logits, labels = f["logits"], f["labels"]
    assert logits.shape == (len(source), 10) and np.array_equal(labels, source.labels)
    _, su, state = train.load_searched(str(workdir))
    x = data.preprocess(None, source.images[:64], su.info, train=False)
    want = su.model.apply({"params": state.params}, x, su.strategy.final_weights(state.alphas),
                          train=True)  # fmt: skip
    np.testing.assert_allclose(logits[:64], np.asarray(want), rtol=1e-5, atol=1e-5)
    code, _, err = _run(capsys, *args, "--workdir", str(tmp_path / "from_file"),
                        f"--config.train.teacher={file}")  # fmt: skip
    assert code == 0, err[-2000:]
    results = json.loads((tmp_path / "from_file" / "results.json").read_text())
    assert results["distillation"]["teacher"]["kind"] == "logits"

    # The search's weight step distils from the same file; the alphas' step does not.
    code, _, err = _run(capsys, "search", "--config", str(path), "--workdir",
                        str(tmp_path / "search"), f"--config.search.teacher={file}")  # fmt: skip
    assert code == 0, err[-2000:]
    logged = _records(tmp_path / "search")
    assert any("train/kd" in r for r in logged) and not any("val/kd" in r for r in logged)
    assert json.loads((tmp_path / "search" / "teacher.json").read_text())["kind"] == "logits"

    # A file of another training split is refused on one line, before anything is written.
    short = tmp_path / "short.npz"
    np.savez(short, logits=logits[:-1], labels=labels[:-1], dataset="digits", split="train")
    code, out, err = _run(capsys, *args, "--workdir", str(tmp_path / "refused"),
                          f"--config.train.teacher={short}")  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"holds logits of shape [{len(source) - 1}, 10]" in err
    assert not (tmp_path / "refused").exists()


# ---------------------------------------------------------------------------------------------
# dnas list and --version.


def test_version_is_the_installed_package_s(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dnas {importlib.metadata.version('dnas')}"


def test_list_names_what_the_registries_hold(capsys, monkeypatch):
    # Entries registered at run time show up: nothing is hard-coded in the CLI.
    monkeypatch.setitem(strategies.STRATEGIES, "my_strategy", strategies.darts)
    info = data.DatasetInfo("my_data", "my_tfds", 4, 1, 3, mean=(0.5,), std=(0.5,))
    monkeypatch.setitem(data.DATASETS, "my_data", info)
    code, out, _ = _run(capsys, "list", "--json")
    assert code == 0
    cat = json.loads(out)
    assert list(cat["spaces"]) == list(spaces.SPACES)
    for name, space in spaces.SPACES.items():
        assert cat["spaces"][name]["ops"] == list(space.ops)
        assert cat["spaces"][name]["alpha_shapes"] == {
            g: list(s) for g, s in space.alpha_shapes.items()
        }
        assert cat["genotypes"][name] == list(space.known)
    assert list(cat["strategies"]) == list(strategies.STRATEGIES)
    assert cat["strategies"]["gdas"]["args"] == {"tau_max": 10.0, "tau_min": 0.1}
    assert cat["datasets"]["my_data"] == {
        "source": "tfds", "tfds_name": "my_tfds", "input_shape": [4, 4, 1], "num_classes": 3,
    }  # fmt: skip
    assert cat["datasets"]["digits"]["source"] == "embedded"
    assert cat["selections"] == list(pipeline.SELECTIONS)
    code, text, _ = _run(capsys, "list")
    assert code == 0
    names = [*spaces.SPACES, *strategies.STRATEGIES, *data.DATASETS, *spaces.known()]
    assert all(re.search(rf"\b{re.escape(n)}\b", text) for n in names)
    assert "14x8" in text and "8 ops" in text  # the DARTS space's alphas and op count
    with pytest.raises(SystemExit) as exit_info:  # no config to override
        cli.main(["list", "--config.seed=1"])
    assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# dnas plot's defects.


def test_plot_on_a_config_only_workdir_says_there_is_nothing_to_plot_yet(tmp_path, capsys):
    workdir = tmp_path / "young"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(configlib.default_config().to_dict()))
    code, out, _ = _run(capsys, "plot", str(workdir))
    assert code == 0  # a valid workdir of a run that has not logged yet: not an error
    assert out.strip() == (
        f"{workdir}: nothing to plot yet: it holds config.json but no logged step yet (the run "
        "is starting or compiling, or stopped before its first log at step 20) and no "
        "genotype.json; no figure written"
    )
    assert "0 figures" not in out and not (workdir / "figures").exists()


def _stopped_in_first_epoch(pipeline_run, tmp_path, last_step: int):
    """The search of the pipeline's run as it was at `last_step` of its first epoch: its config
    and the metrics records logged up to then; no epoch end, no alphas, no genotype."""
    _, _, workdir, _, _ = pipeline_run
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copy(workdir / "config.json", stopped / "config.json")
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("epoch" in r for r in records)
    kept = [r for r in records if r["step"] <= last_step and "epoch" not in r]
    (stopped / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    return stopped


def test_plot_of_a_search_stopped_in_its_first_epoch_writes_no_empty_figure(
    pipeline_run, tmp_path, capsys
):
    from dnas import viz

    # Stopped before its first log (step 3): only the compile record.
    stopped = _stopped_in_first_epoch(pipeline_run, tmp_path, 0)
    code, out, err = _run(capsys, "plot", str(stopped))
    assert code == 0 and "nothing to plot yet: no figure has data" in out
    assert not (stopped / "figures").exists()
    for name in ("alpha_heatmap_normal", "genotype_strip_normal", "diagnostics", "search_curves"):
        assert f"note: {name}.png skipped: " in err
    # Stopped at step 6: curves have data, the per-epoch figures none (skipped, saying which).
    shutil.rmtree(stopped)
    stopped = _stopped_in_first_epoch(pipeline_run, tmp_path, 6)
    code, out, err = _run(capsys, "plot", str(stopped))
    assert code == 0 and "1 figures in" in out
    assert sorted(p.name for p in (stopped / "figures").iterdir()) == ["search_curves.png"]
    assert "note: diagnostics.png skipped: no epoch has ended yet" in err
    assert "note: alpha_heatmap_normal.png skipped: " in err
    fig = viz.training_curves(viz.load_run(str(stopped)))
    assert all(ax.lines for ax in fig.axes)  # loss, accuracy and learning rate all drawn


def test_compare_fills_search_only_runs_columns_and_marks_what_they_lack(
    pipeline_run, tmp_path, capsys
):
    from dnas import viz

    _, _, workdir, _, _ = pipeline_run
    runs = tmp_path / "runs"
    shutil.copytree(workdir, runs / "full-seed0")
    shutil.copytree(workdir, runs / "searchonly-seed0", ignore=shutil.ignore_patterns(
        "summary.json", "retrain_*"))  # fmt: skip
    out_dir = tmp_path / "cmp"
    code, out, _ = _run(
        capsys, "plot", str(runs / "full-seed0"), str(runs / "searchonly-seed0"), "--out",
        str(out_dir),
    )  # fmt: skip
    assert code == 0
    table = json.loads((out_dir / "compare.json").read_text())
    full, search_only = table
    assert search_only["group"] == "searchonly" and search_only["test_acc_mean"] is None
    summary = json.loads((workdir / "summary.json").read_text())
    assert full["test_acc_mean"] == pytest.approx(
        100 * summary["retrain"]["searched"]["test_accuracy"]
    )
    # What a search-only run has: its validation accuracy (over the whole split, at the last
    # epoch end) and its wall time.
    val = _by_step(workdir / "metrics.jsonl", "eval_val/accuracy")
    for row in table:
        assert row["search_val_acc_mean"] == pytest.approx(100 * val[max(val)])
    wall = _by_step(workdir / "metrics.jsonl", "search/wall_s")
    assert search_only["search_s_mean"] == pytest.approx(wall[max(wall)])
    assert full["search_s_mean"] == summary["search_wall_s"]
    # The text table: "-" where a value is missing, never an empty cell.
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("full", "se"))}
    assert lines["searchonly"].split()[2] == "-"
    assert f"{100 * val[max(val)]:.2f}" in lines["searchonly"]
    assert "-" not in lines["full"].split()
    # The figure's test-accuracy panel marks the group without a retraining.
    groups = {"full": [viz.load_run(str(runs / "full-seed0"))],
              "searchonly": [viz.load_run(str(runs / "searchonly-seed0"))]}  # fmt: skip
    panel = viz.compare_runs(groups).axes[-1]
    assert [t.get_gid() for t in panel.texts] == ["missing:1"]


# ---------------------------------------------------------------------------------------------
# Graphviz's dot, the fallback said once; TensorBoard reads the event files.


def test_dnas_run_says_once_that_cell_diagrams_fall_back_to_matplotlib(
    pipeline_run, tmp_path, monkeypatch, capsys
):
    from dnas import viz

    _, _, workdir, run_err, _ = pipeline_run
    fallback = "dnas: cell diagrams drawn with matplotlib: graphviz's `dot` is not installed"
    assert run_err.count(fallback) == (0 if viz.dot_available() else 1)
    # A staged method draws cells after every stage: still one line.
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setattr(search, "_DOT_FALLBACK_SAID", [False])
    genotype = spaces.load_json(workdir / "genotype.json")
    for stage in range(3):
        search.save_cell_diagrams(genotype, str(tmp_path / f"stage_{stage}"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(fallback) and "apt-get install graphviz" in err
    assert (tmp_path / "stage_2" / "cell_normal.svg").exists()


def test_tensorboard_reads_the_event_files(pipeline_run):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    _, _, workdir, _, _ = pipeline_run
    folder = workdir / "retrain_searched"
    events = event_accumulator.EventAccumulator(str(folder / "tb"))
    events.Reload()
    logged = _by_step(folder / "metrics.jsonl", "train/loss")
    got = {e.step: e.value for e in events.Scalars("train/loss")}
    # The stopped process's last events may be lost with it (TensorBoard's writer flushes every
    # 30 s; metrics.jsonl every line); the resumed one's are all there.
    assert {s for s in logged if s > STOP_AT} <= set(got) <= set(logged)
    assert all(got[s] == pytest.approx(logged[s], rel=1e-6) for s in got)


# ---------------------------------------------------------------------------------------------
# dnas explain (issue 19): the run's search and its retraining.


def test_explain_a_run_s_search_and_retraining(pipeline_run, tmp_path, capsys):
    _, _, workdir, _, _ = pipeline_run
    out = tmp_path / "explain"
    code, printed, err = _run(capsys, "explain", str(workdir), "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "explain.json").read_text())
    assert list(result["trained"]) == ["retrain_searched"]
    trained = result["trained"]["retrain_searched"]
    # The unchanged network is the checkpoint `dnas eval` evaluates.
    code, text, _ = _run(capsys, "eval", str(workdir / "retrain_searched"))
    assert code == 0
    tested = json.loads(text)
    assert trained["examples"] == tested["examples"]
    assert trained["accuracy"] == pytest.approx(tested["accuracy"], abs=1.5 / tested["examples"])
    edges = trained["edges"]["normal"]
    assert [(e["src"], e["dst"]) for e in edges] == [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    for e in edges:
        # NAS-Bench-201's parameter-free ops; its convolutions would need training.
        assert set(e["replaced"]) == {"skip_connect", "avg_pool_3x3"} - {e["op"]}
        assert set(e["untested"]) == {"nor_conv_1x1", "nor_conv_3x3"} - {e["op"]}
        best = max(e["replaced"], key=e["replaced"].get)
        assert e["best_alternative"] == best
        drop = trained["accuracy"] - e["replaced"][best]
        assert e["best_alternative_drop"] == pytest.approx(drop)
        if e["op"] == "none":  # removing an edge that carries nothing changes nothing
            assert e["removed_drop"] == 0.0
        assert f"{e['op']:14} {e['src']} -> {e['dst']}" in printed
    # The search logged no shares: its final epoch's, from the checkpoint, beside the final
    # mixing weights (DARTS: the softmax of the saved alphas).
    found = result["search"]
    assert (found["source"], found["epochs"]) == ("checkpoint", [1])
    alphas = np.load(workdir / "alphas.npz")["normal"]
    weights = np.exp(alphas) / np.exp(alphas).sum(-1, keepdims=True)
    np.testing.assert_allclose(found["groups"]["normal"]["weights"][0], weights, atol=2e-6)
    shares = np.asarray(found["groups"]["normal"]["shares"][0])
    np.testing.assert_allclose(shares.sum(-1), 1.0, atol=1e-5)
    assert np.all(shares[:, spaces.get("nb201").ops.index("none")] == 0)
    names = {"retrain_searched_edge_removal.png", "retrain_searched_op_replacement.png",
             "op_shares_normal.png", "explain.json"}  # fmt: skip
    assert {p.name for p in out.iterdir()} == names
    code, _, err = _run(capsys, "explain", str(tmp_path / "nowhere"))
    assert code == 2 and err.count("\n") == 1 and "no workdir" in err
    # An output that cannot be a folder is refused before the evaluation, leaving nothing.
    code, _, err = _run(capsys, "explain", str(workdir), "--out", str(out / "explain.json"))
    assert code == 2 and err.count("\n") == 1 and "is a file, not a folder" in err
    assert {p.name for p in out.iterdir()} == names
