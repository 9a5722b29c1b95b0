"""The notebooks run top to bottom: each is executed headless (nbclient, in an ipykernel) with a
tiny configuration injected after its `parameters` cell, as papermill does; any cell error fails
the test, and the outputs must hold the figures and numbers the notebook is for."""

import json
import re
from pathlib import Path

import pytest

from dnas import configlib, pipeline, viz

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("graphviz")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# A seconds-long search and retraining: NAS-Bench-201's one-input cell, 2 channels, 1 cell per
# stage, 2 search epochs (so the alphas have a history), 1 training epoch.
TINY = [
    "space=nb201", "search.C=2", "search.layers=1", "search.epochs=2", "search.batch_size=128",
    "train.C=2", "train.layers=1", "train.epochs=1", "train.batch_size=128", "baseline=false",
    "progress=false", "checkpoint_every_steps=1000", "log_every_steps=2",
]  # fmt: skip
FIGURES = ("image/png", "image/svg+xml")


def execute(name: str, params: dict, cwd: Path):
    """Runs notebooks/<name> with `params` assigned in a cell after its `parameters` cell;
    returns the executed notebook (nbclient raises CellExecutionError on a cell error)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters', found {len(tagged)}"
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert tagged[0] == first_code, f"{name}: the parameters cell is not the first code cell"
    source = "# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(tagged[0] + 1, injected)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
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
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source


def test_quick_tour(tmp_path):
    workdir = tmp_path / "tour"
    nb = execute("01_quick_tour.ipynb", {"WORKDIR": str(workdir), "OVERRIDES": TINY}, tmp_path)
    results = json.loads((workdir / "retrain" / "results.json").read_text())
    printed = re.search(r"test accuracy (\d+\.\d+)%", text(nb))
    assert printed, text(nb)
    assert float(printed.group(1)) == pytest.approx(100 * results["test_accuracy"], abs=0.01)
    assert f"{results['params']:,} parameters" in text(nb)
    # Heatmaps, lines, diagnostics, the cell, the genotype strip, the retraining curves.
    assert figures(nb) >= 6
    if viz.dot_available():  # the cell diagram is graphviz's SVG
        assert any("image/svg+xml" in o.get("data", {}) for o in outputs(nb))


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory) -> list[str]:
    """Two `dnas run` workdirs (seeds 0 and 1) of the tiny config."""
    root = tmp_path_factory.mktemp("runs")
    config = configlib.override(configlib.load(None), TINY)
    workdirs = []
    for seed in (0, 1):
        workdir = str(root / f"tiny-seed{seed}")
        pipeline.run(configlib.override(config, [f"seed={seed}"]), workdir)
        workdirs.append(workdir)
    return workdirs


# Notebooks 2 and 3 share one test, so that the runs they read are made once even when xdist
# spreads the tests over workers.
def test_explore_and_compare_runs(finished_runs, tmp_path):
    seed0, seed1 = finished_runs
    nb = execute("02_explore_a_run.ipynb", {"WORKDIR": seed0, "DATASET": "cifar10"}, tmp_path)
    printed = text(nb)
    assert viz.load_run(seed0).genotype.to_string() in printed
    assert "test acc" in printed  # the summary of `dnas run`
    # DARTS_V2's CIFAR-10 network (C=36, 20 cells): the paper's 3.3M parameters.
    darts_v2 = re.search(r"DARTS_V2\s+(\d+\.\d+)M params", printed)
    assert darts_v2, printed
    assert float(darts_v2.group(1)) == pytest.approx(3.3, abs=0.1)
    assert figures(nb) >= 7

    groups = {"seeds 0-1": [seed0, seed1], "seed 1": [seed1]}
    nb = execute("03_compare_runs.ipynb", {"GROUPS": groups, "DATASET": "cifar10"}, tmp_path)
    printed = text(nb)
    assert "'group': 'seeds 0-1', 'runs': 2" in printed
    assert "'group': 'seed 1', 'runs': 1" in printed
    assert figures(nb) >= 2  # compare_runs, compare_genotypes
