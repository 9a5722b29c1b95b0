"""The notebooks run top to bottom as shipped (no parameters injected): each is executed headless
(nbclient, in an ipykernel) from a copy of `notebooks/` in a temporary folder beside a link to
the repository's `experiments/`, so that the `../runs/` they write is the test's own. Their
shipped parameters are small: a tiny NAS-Bench-201 run (notebooks 1 and 2, which makes one when
its workdir is missing) and a small study on Ray (notebook 3). Any cell error fails the test, and
the outputs must hold the figures and numbers the notebook is for."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnas import cli, configlib, pipeline, results, study, viz
from dnas import workdir as workdir_lib

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("graphviz")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FIGURES = ("image/png", "image/svg+xml")


def execute(name: str, root: Path):
    """Runs notebooks/<name> as shipped from `root`/notebooks (its `../runs` is `root`/runs, its
    `../experiments` the repository's); returns the executed notebook (nbclient raises
    CellExecutionError on a cell error)."""
    (root / "notebooks").mkdir(exist_ok=True)
    if not (root / "experiments").exists():
        (root / "experiments").symlink_to(ROOT / "experiments")
    shutil.copy(NOTEBOOKS / name, root / "notebooks" / name)
    nb = nbformat.read(root / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3",
        resources={"metadata": {"path": str(root / "notebooks")}},
    )  # fmt: skip
    client.execute()
    return nb


def outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def text(nb) -> str:
    """Everything the cells printed to stdout."""
    return "".join(o.text for o in outputs(nb) if o.output_type == "stream" and o.name == "stdout")


def figures(nb) -> int:
    return sum(any(m in o.get("data", {}) for m in FIGURES) for o in outputs(nb))


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebooks_are_saved_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # papermill's convention, for users who run them with other parameters: one cell tagged
    # `parameters`, the first code cell.
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert tagged == [first_code], f"{name}: the parameters cell must be the first code cell"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source


def test_quick_tour(tmp_path):
    nb = execute("01_quick_tour.ipynb", tmp_path)
    workdir = tmp_path / "runs" / "notebook_tour"
    results_json = json.loads((workdir / "retrain" / "results.json").read_text())
    printed = re.search(r"test accuracy (\d+\.\d+)%", text(nb))
    assert printed, text(nb)
    assert float(printed.group(1)) == pytest.approx(100 * results_json["test_accuracy"], abs=0.01)
    assert f"{results_json['params']:,} parameters" in text(nb)
    # Heatmaps, lines, diagnostics, the cell, the genotype strip, the retraining curves.
    assert figures(nb) >= 6
    if viz.dot_available():  # the cell diagram is graphviz's SVG
        assert any("image/svg+xml" in o.get("data", {}) for o in outputs(nb))


def test_explore_a_run_makes_one_when_there_is_none(tmp_path):
    nb = execute("02_explore_a_run.ipynb", tmp_path)
    workdir = str(tmp_path / "runs" / "notebook_run")
    printed = text(nb)
    assert viz.load_run(workdir).genotype.to_string() in printed
    assert "test acc" in printed  # the summary of `dnas run`
    # DARTS_V2's CIFAR-10 network (C=36, 20 cells): the paper's 3.3M parameters.
    darts_v2 = re.search(r"DARTS_V2\s+(\d+\.\d+)M params", printed)
    assert darts_v2, printed
    assert float(darts_v2.group(1)) == pytest.approx(3.3, abs=0.1)
    assert figures(nb) >= 7


def test_explain_a_cell_logs_the_op_shares_and_explains_the_retraining(tmp_path):
    nb = execute("04_explain_a_cell.ipynb", tmp_path)
    workdir = tmp_path / "runs" / "notebook_explain"
    printed = text(nb)
    tested = json.loads((workdir / "retrain" / "results.json").read_text())
    # The search logged the shares at both epoch ends (search.explain_every_epochs=1).
    assert "op shares of epochs [1, 2] (logged)" in printed
    history = workdir_lib.read_alpha_history(str(workdir / "search"))
    assert [e for e, arrays in history if "shares/normal" in arrays] == [1, 2]
    # The unchanged retrained network is the one the retraining tested.
    base = re.search(r"test accuracy (\d+\.\d+)% on (\d+) examples", printed)
    assert base, printed
    slack = 100 * 1.5 / int(base.group(2))
    assert float(base.group(1)) == pytest.approx(100 * tested["test_accuracy"], abs=slack)
    assert len(re.findall(r"normal \S+ +\d -> \d: removed", printed)) == 6
    assert figures(nb) >= 3  # the op shares, the edge removals, the replacements


TIMES = ("search_s", "retrain_s")  # wall times: the only fields two runs of a study may differ in


def _seed_dirs(study_dir: Path) -> list[Path]:
    return sorted(p for p in study_dir.glob("*/seed*") if p.is_dir())


def _study(*args: str, **kw) -> subprocess.Popen:
    command = [sys.executable, "-c", "import sys; from dnas import cli; sys.exit(cli.main())"]
    return subprocess.Popen([*command, "study", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)  # fmt: skip


def _untimed(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.endswith("_s")}  # wall_s, compile_s, ...


def _results(trial: Path, which: str = "searched") -> dict:
    return json.loads((trial / f"retrain_{which}" / "results.json").read_text())


def test_a_killed_study_resumed_by_notebook_3_ends_with_the_uninterrupted_table(tmp_path):
    """`experiments/studies/smoke.py` (2 configs x 2 seeds on Ray, the random cells retrained in
    the first config's trials), killed with SIGKILL once its first trial has finished, is
    resumed by notebook 3 run as shipped (it runs its study into ../runs/study-smoke, skipping
    finished trials). A study's table is a function of its trials' summaries, and the trials that
    were not cut short ran uninterrupted; so each trial the kill cut short is run again
    uninterrupted, and the table of those summaries must be the study's. Its numbers are the
    trials' own `results.json`."""
    study_dir = tmp_path / "runs" / "study-smoke"
    spec = str(ROOT / "experiments" / "studies" / "smoke.py")
    first = _study(spec, "--dir", str(study_dir), start_new_session=True)
    deadline = time.time() + 600
    while not any((d / "summary.json").exists() for d in _seed_dirs(study_dir)):
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline, "no trial finished in 10 minutes"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the driver, Ray's processes and the trials
    first.wait()
    first.stdout.close()
    finished = {d for d in _seed_dirs(study_dir) if (d / "summary.json").exists()}
    cut = [d for d in _seed_dirs(study_dir) if d not in finished and (d / "config.json").exists()]
    checkpointed = [d for d in cut if any(d.glob("**/checkpoints/[0-9]*"))]
    assert 1 <= len(finished) < 4

    nb = execute("03_compare_runs.ipynb", tmp_path)
    assert f"4 trials, {len(finished)} finished, {4 - len(finished)} to run" in text(nb)
    for d in checkpointed:  # resumed from its own checkpoints, not started again
        log = (study_dir / "logs" / f"{d.parent.name}__{d.name}.log").read_text()
        assert re.search(r"resumed .* at step [1-9]", log), log
    table = json.loads((study_dir / "results.json").read_text())
    markdown = [o for o in outputs(nb) if "text/markdown" in o.get("data", {})]
    assert markdown and results.markdown(table["rows"]) == markdown[0]["data"]["text/markdown"]
    assert figures(nb) >= 3  # the study's figure, the curves, the cells

    # The uninterrupted table: the trials resumed from a checkpoint run again, uninterrupted (a
    # trial cut before its first checkpoint started again from scratch).
    summaries = {}
    for d in _seed_dirs(study_dir):
        ref = d
        if d in (checkpointed or cut):
            ref = tmp_path / "uninterrupted" / d.parent.name / d.name
            pipeline.run(configlib.load(str(d)), str(ref))  # the trial's own config.json
            for which in ("searched", "random"):
                if (d / f"retrain_{which}").exists():
                    assert _untimed(_results(ref, which)) == _untimed(_results(d, which))
        summaries[d] = results.read_run(str(ref), d.parent.name, int(d.name[4:]))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMES} for r in rows]
    uninterrupted = json.loads(json.dumps(results.group_rows(list(summaries.values()))))
    assert strip(uninterrupted) == strip(table["rows"])

    # The table's numbers are the trials' own.
    rows = {r["group"]: r for r in table["rows"]}
    assert list(rows) == ["darts", "gdas", results.RANDOM_GROUP]
    for group in ("darts", "gdas"):
        retrained = [_results(study_dir / group / f"seed{s}") for s in (0, 1)]
        assert rows[group]["seeds"] == [0, 1]
        assert rows[group]["values"] == pytest.approx([100 * r["test_accuracy"] for r in retrained])
        assert rows[group]["params"] == pytest.approx(sum(r["params"] for r in retrained) / 2)
        assert rows[group]["genotypes"] == [r["genotype"] for r in retrained]
    random = [_results(study_dir / "darts" / f"seed{s}", "random") for s in (0, 1)]
    assert rows[results.RANDOM_GROUP]["values"] == pytest.approx(
        [100 * r["test_accuracy"] for r in random]
    )
    diffs = [a - b for a, b in zip(rows["gdas"]["values"], rows[results.RANDOM_GROUP]["values"],
                                   strict=True)]  # fmt: skip
    assert rows["gdas"]["vs_random_diff"] == pytest.approx(sum(diffs) / 2)

    # `dnas study --table-only` prints the table; `dnas plot STUDYDIR` draws it.
    assert cli.main(["study", spec, "--dir", str(study_dir), "--table-only"]) == 0
    assert cli.main(["plot", str(study_dir)]) == 0
    assert (study_dir / "results.png").stat().st_size > 0
    assert study.read_description(str(study_dir))["groups"] == ["darts", "gdas"]
