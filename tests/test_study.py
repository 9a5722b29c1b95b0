"""dnas study's grid and its refusals, without Ray: which trials a study has, with which configs,
and what is refused before anything runs; a "retrain" trial run in this process. A study run on
Ray, killed and run again, is in tests/test_notebooks.py (notebook 3 runs the same study)."""

import json
import os
from pathlib import Path

import pytest

from dnas import cli, results, study
from dnas.study import Group, Study, StudyError

ROOT = Path(__file__).resolve().parents[1]
DARTS = str(ROOT / "experiments" / "darts" / "cifar10_search.py") + ":nb201_smoke"
GDAS = str(ROOT / "experiments" / "gdas" / "cifar10_search.py") + ":nb201_smoke"


def test_a_study_crosses_groups_grid_and_seeds(tmp_path):
    s = Study(
        groups=[Group("darts", DARTS, overrides={"search.epochs": 3, "log_every_steps": 9}),
                Group("gdas", GDAS, overrides=["train.epochs=2"])],
        seeds=(4, 7),
        grid={"search.alpha_weight_decay": (0.0, 0.01)},
        overrides={"log_every_steps": 5, "search.batch_size": 32},
    )  # fmt: skip
    trials = study.trials(s, str(tmp_path))
    names = [t.name for t in trials]
    assert names == [f"{g}_search.alpha_weight_decay={v}/seed{seed}" for seed in (4, 7)
                     for g in ("darts", "gdas") for v in ("0.0", "0.01")]  # fmt: skip
    assert trials[1].group == "darts search.alpha_weight_decay=0.01"
    assert trials[1].workdir == str(tmp_path / "darts_search.alpha_weight_decay=0.01" / "seed4")
    for t in trials:
        c = t.config
        assert c.seed == t.seed and c.progress is False
        assert c.search.alpha_weight_decay == float(t.group.split("=")[1])
        assert c.search.batch_size == 32  # the study's override
        darts = t.group.startswith("darts")
        assert c.strategy == ("darts" if darts else "gdas")
        # The group's own overrides come after the study's.
        assert c.log_every_steps == (9 if darts else 5)
        assert (c.search.epochs, c.train.epochs) == ((3, 1) if darts else (2, 2))
        # Each seed's random cell is retrained once: in the first row's trial.
        assert c.baseline == (t.group == "darts search.alpha_weight_decay=0.0")
    assert all(not t.finished for t in trials)


def test_config_paths_are_relative_to_the_study_file(tmp_path):
    spec = ROOT / "experiments" / "studies" / "smoke.py"
    trials = study.trials(study.load(str(spec)), str(tmp_path), str(spec.parent))
    assert [(t.name, t.config.strategy, t.config.space, t.config.baseline) for t in trials] == [
        ("darts/seed0", "darts", "nb201", True), ("gdas/seed0", "gdas", "nb201", False),
        ("darts/seed1", "darts", "nb201", True), ("gdas/seed1", "gdas", "nb201", False),
    ]  # fmt: skip
    # The methods table's study: every method with a CIFAR-10 search config, DARTS first.
    spec = ROOT / "experiments" / "studies" / "methods_digits.py"
    methods = study.load(str(spec)).groups
    dirs = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/cifar10_search.py"))
    assert [g.name for g in methods] == ["darts", *[d for d in dirs if d != "darts"]]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"kind": "train"}, "Study.kind must be one of"),
        ({"groups": []}, "Study.groups is empty"),
        ({"seeds": (0, 0)}, "Study.seeds must be distinct integers"),
        ({"resources": {"gpus": 1}}, "unknown ['gpus']"),
        ({"grid": {"search.alpha_lr": ()}}, "Study.grid['search.alpha_lr'] must be a non-empty"),
        ({"groups": [Group("a b", DARTS)]}, "group name 'a b'"),
        ({"groups": [Group("a", DARTS), Group("a", GDAS)]}, "group names repeat"),
        ({"groups": [Group("a", DARTS, {"search.alpha_rl": 0.1})]},
         "group 'a': unknown config key 'search.alpha_rl'; did you mean search.alpha_lr"),
        ({"groups": [Group("a", DARTS, {"search.epochs": -1})]}, "group 'a': search.epochs"),
        ({"groups": [Group("a", "missing.py")]}, "group 'a': config file"),
        ({"kind": "retrain"}, "a 'retrain' study needs Group(genotype=...)"),
        ({"kind": "search"}, "a 'search' study scores each cell by the space's benchmark table"),
        ({"overrides": "seed=1"}, "overrides must be a dict or a list"),
    ],
)  # fmt: skip
def test_a_bad_study_is_refused_before_anything_is_written(tmp_path, changes, message):
    s = Study(**{"groups": [Group("a", DARTS)], "seeds": (0,)} | changes)
    with pytest.raises(StudyError) as err:
        study.run(s, str(tmp_path / "study"))
    assert message in str(err.value)
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize(
    "source,message",
    [
        (None, "does not exist"),
        ("x = 1\n", "has no get_study() function"),
        ("def get_study():\n    return {}\n", "must return a dnas.study.Study, got dict"),
        ("def get_study():\n    return 1 / 0\n", "failed: ZeroDivisionError: division by zero"),
        ("def get_study():\n    return nothing.groups\n", "failed: NameError"),
    ],
)
def test_a_bad_study_file_is_one_line(tmp_path, capsys, source, message):
    path = tmp_path / "s.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(StudyError) as err:
        study.load(str(path))
    assert message in str(err.value)
    assert cli.main(["study", str(path), "--dir", str(tmp_path / "d")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def _summary(accuracy: float, random: float | None) -> dict:
    searched = {"test_accuracy": accuracy, "params": 100, "macs": 1e6, "wall_s": 3.0,
                "genotype": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"}  # fmt: skip
    retrain = {"searched": searched}
    if random is not None:
        retrain["random"] = dict(searched, test_accuracy=random)
    return {"search_wall_s": 5.0, "retrain": retrain}


def test_table_only_and_plot_read_the_finished_trials(tmp_path, capsys):
    """A study directory's finished trials are tabulated without Ray (`--table-only`, `dnas
    plot`), unfinished ones left out; a study with none finished says so."""
    s = Study(groups=[Group("darts", DARTS), Group("gdas", GDAS)], seeds=(0, 1, 2))
    trials = study.trials(s, str(tmp_path))
    study.write_description(s, trials, str(tmp_path), "s.py")
    spec = str(tmp_path / "no-file.py")  # --table-only does not read the study file
    assert cli.main(["study", spec, "--dir", str(tmp_path), "--table-only"]) == 2
    assert "no trial of" in capsys.readouterr().err
    accuracy = {
        ("darts", 0): (0.9, 0.5),
        ("darts", 1): (0.8, 0.6),
        ("gdas", 0): (0.7, None),
        ("gdas", 1): (0.6, None),
        ("darts", 2): (0.95, 0.55),
    }  # gdas seed 2 unfinished
    for t in trials:
        if (t.group, t.seed) in accuracy:
            os.makedirs(t.workdir)
            with open(os.path.join(t.workdir, results.SUMMARY), "w") as f:
                json.dump(_summary(*accuracy[(t.group, t.seed)]), f)
    assert cli.main(["study", spec, "--dir", str(tmp_path), "--table-only"]) == 0
    printed = capsys.readouterr().out
    assert "| darts | 3 | 88.33 +- 7.64 |" in printed
    assert "| gdas | 2 | 65.00 +- 7.07 |" in printed
    assert "| random genotype | 3 | 55.00 +- 5.00 |" in printed
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows[1]["vs_random_diff"] == pytest.approx(((70 - 50) + (60 - 60)) / 2)
    assert cli.main(["plot", str(tmp_path), "--format", "svg"]) == 0
    assert (tmp_path / "results.svg").read_text().startswith("<?xml")


def test_a_resource_request_the_local_cluster_cannot_meet_is_refused(tmp_path):
    """A trial asking for a GPU on a local cluster without one would wait forever: refused
    before anything is written (a joined cluster only warns: an autoscaler may add nodes)."""
    s = Study(groups=[Group("a", DARTS)], seeds=(0,), resources={"num_gpus": 1})
    with pytest.raises(StudyError, match=r"asks for \{'num_gpus': 1\} but the cluster has"):
        study.run(s, str(tmp_path / "study"))
    assert not (tmp_path / "study").exists()


def test_a_retrain_trial_retrains_its_groups_cell_and_searches_nothing(tmp_path):
    """kind="retrain": a trial retrains its group's genotype (no search ran: none of a search's
    files, search time 0) and its summary and results name that cell; run again, a finished
    trial is read back, not run."""
    from dnas import spaces

    cell = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|none~2|"
    s = Study(groups=[Group("given", DARTS, genotype=cell)], seeds=(3,), kind="retrain",
              baseline=False,
              overrides={"train.layers": 1, "train.epochs": 1, "train.batch_size": 64})  # fmt: skip
    (trial,) = study.trials(s, str(tmp_path))
    summary = study.run_trial(trial, s.kind)
    genotype = spaces.load(cell)
    assert summary["genotype"] == genotype.to_json()
    assert (summary["strategy"], summary["search_wall_s"]) == ("", 0)
    assert list(summary["retrain"]) == ["searched"]
    workdir = Path(trial.workdir)
    retrained = json.loads((workdir / "retrain_searched" / "results.json").read_text())
    assert retrained == summary["retrain"]["searched"]
    assert retrained["genotype"] == genotype.to_string()
    assert sorted(os.listdir(workdir)) == ["retrain_searched", results.SUMMARY]
    assert trial.finished
    (workdir / "retrain_searched" / "results.json").unlink()  # a rerun would write it again
    assert study.run_trial(trial, s.kind) == summary
    assert not (workdir / "retrain_searched" / "results.json").exists()
