"""Figures show what the runs logged: cell diagrams against genotypes, alpha heatmaps against the
logged weights and the final alphas, comparisons against the runs' own series."""

import html
import json
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("graphviz")

from dnas import cli, configlib, search, spaces, viz

NB201_ARCH = "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"


def drawn_edges(ax) -> list[tuple[str, str, str]]:
    """(source, destination, label) of the labelled edges `viz.draw_cell` drew on an Axes (it
    tags each label with the gid `src->dst`)."""
    out = []
    for t in ax.texts:
        gid = t.get_gid() or ""
        if "->" in gid:
            src, dst = gid.split("->")
            out.append((src, dst, t.get_text()))
    return out


def expected_edges(geno, cell):
    """(source, destination, op) of the genotype's non-`none` edges, named as in the papers'
    figures, built here from the genotype's fields."""
    first = geno.search_space.topology.num_inputs
    if first == 2:
        name = lambda n: {0: "c_{k-2}", 1: "c_{k-1}"}.get(n, str(n - 2))
    else:
        name = lambda n: "in" if n == 0 else str(n)
    return sorted(
        (name(src), name(first + j), op)
        for j, node in enumerate(getattr(geno, cell))
        for op, src in node
        if op != "none"
    )


@pytest.mark.parametrize("spec", ["darts_v2", "pcdarts", NB201_ARCH])
def test_cell_graph_edges_and_labels_equal_the_genotype(spec):
    geno = spaces.load(spec)
    for cell in geno.search_space.topology.cell_types:
        graph = viz.cell_graph(geno, cell)
        edges = viz.graph_edges(graph)
        labelled = sorted(e for e in edges if e[2])
        assert labelled == expected_edges(geno, cell)
        if geno.search_space.topology.num_inputs == 2:  # the concatenated nodes feed c_{k}
            into_output = sorted(src for src, dst, label in edges if dst == "c_{k}")
            assert into_output == sorted(str(n - 2) for n in geno[f"{cell}_concat"])
        # The matplotlib drawing shows the same labelled edges.
        fig = viz.cell_figure(geno, [cell])
        assert sorted(drawn_edges(fig.axes[0])) == expected_edges(geno, cell)


@pytest.mark.skipif(not viz.dot_available(), reason="graphviz's dot is not installed")
def test_rendered_svg_has_the_genotype_edges(tmp_path):
    """What `dot` drew, read back from the SVG: every edge's title (src->dst) and label."""
    geno = spaces.load("darts_v2")
    path = viz.save_graph(viz.cell_graph(geno, "reduce"), str(tmp_path / "reduce.svg"))
    assert svg_edges(Path(path).read_text()) == expected_edges(geno, "reduce")
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(ValueError, match="svg, png, pdf"):
        viz.save_graph(viz.cell_graph(geno, "normal"), str(tmp_path / "x.jpg"))


def test_missing_dot_is_named_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    geno = spaces.load("darts_v2")
    with pytest.raises(viz.DotNotFoundError, match="apt-get install graphviz"):
        viz.save_graph(viz.cell_graph(geno, "normal"), str(tmp_path / "n.svg"))
    # The cell files are still written, by matplotlib.
    paths = viz.save_cells(geno, str(tmp_path), "png")
    assert [Path(p).name for p in paths] == ["cell_normal.png", "cell_reduce.png"]
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in paths)


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """A tiny NAS-Bench-201 search, 3 epochs."""
    c = configlib.default_config()
    c.space, c.progress = "nb201", False
    s = c.search
    s.C, s.layers, s.epochs, s.batch_size = 2, 1, 3, 128
    c.checkpoint_every_steps, c.log_every_steps = 100, 2
    workdir = tmp_path_factory.mktemp("viz") / "search"
    geno = search.run(c, str(workdir))
    return workdir, geno


def test_alpha_heatmaps_show_the_logged_weights(search_run):
    workdir, geno = search_run
    topology = spaces.get("nb201").topology
    # The epochs metrics.jsonl logged, and the mixing weights the search recorded at the end of
    # each, (E, K) in edge and op order, read here straight from alpha_history/epoch_<N>.npz.
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    epochs = sorted(r["epoch"] for r in records if "epoch" in r)
    assert epochs == [1, 2, 3]
    logged = {}  # epoch -> (E, K)
    for epoch in epochs:
        with np.load(workdir / "alpha_history" / f"epoch_{epoch:04d}.npz") as f:
            logged[epoch] = f["normal"]
        assert logged[epoch].shape == (topology.num_edges, topology.num_ops)
    run = viz.load_run(str(workdir))
    fig = viz.alpha_heatmaps(run, "normal")
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == topology.num_edges
    for e, im in enumerate(images):
        want = np.stack([logged[ep][e] for ep in (1, 2, 3)]).T  # ops x epochs
        np.testing.assert_array_equal(np.asarray(im.get_array()), want)
    # The last epoch's weights are softmax(alpha) of the alphas the search saved.
    with np.load(workdir / "alphas.npz") as f:
        softmax = np.asarray(jax.nn.softmax(f["normal"], axis=-1))
    np.testing.assert_allclose(logged[3], softmax, rtol=1e-5)
    # Lines: one per op and edge, the same values.
    lines = viz.alpha_lines(run, "normal")
    ax0 = lines.axes[0]
    for k, line in enumerate(ax0.lines):
        np.testing.assert_array_equal(line.get_ydata(), [logged[ep][0, k] for ep in (1, 2, 3)])
    # The genotype strip draws the genotype logged at each epoch.
    strip = viz.genotype_strip(run, "normal")
    last = strip.axes[len(run.genotypes()) - 1]
    assert sorted(drawn_edges(last)) == expected_edges(geno, "normal")


def svg_edges(svg: str) -> list[tuple[str, str, str]]:
    """(source, destination, label) of the labelled edges graphviz drew in an SVG."""
    drawn = []
    for block in re.findall(r'<g id="edge\d+" class="edge">(.*?)</g>', svg, re.S):
        src, dst = html.unescape(re.search(r"<title>(.*?)</title>", block).group(1)).split("->")
        labels = re.findall(r">([a-z_0-9x]+)</text>", block)
        if labels:
            drawn.append((src, dst, labels[0]))
    return sorted(drawn)


def test_search_writes_its_cell_diagrams(search_run):
    workdir, geno = search_run
    path = workdir / "cell_normal.svg"
    if viz.dot_available():
        assert svg_edges(path.read_text()) == expected_edges(geno, "normal")
    else:  # the matplotlib drawing, as SVG
        assert path.read_text().lstrip().startswith("<?xml")


def test_dnas_plot_writes_every_figure_and_compares_runs(search_run, tmp_path, capsys):
    workdir, _ = search_run
    assert cli.main(["plot", str(workdir), "--out", str(tmp_path / "one")]) == 0
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted([
        "cell_normal.png", "alpha_heatmap_normal.png", "alpha_lines_normal.png",
        "genotype_strip_normal.png", "diagnostics.png", "search_curves.png",
    ])  # fmt: skip
    # Two "seeds" of one group: the comparison's mean curve is the mean of their series.
    for seed in (0, 1):
        shutil.copytree(workdir, tmp_path / "runs" / f"tiny-seed{seed}")
    other = tmp_path / "runs" / "tiny-seed1" / "metrics.jsonl"
    lines = [json.loads(x) for x in other.read_text().splitlines()]
    for r in lines:
        if "val/accuracy" in r:
            r["val/accuracy"] = 1.0
    other.write_text("".join(json.dumps(r) + "\n" for r in lines))
    dirs = [str(tmp_path / "runs" / f"tiny-seed{s}") for s in (0, 1)]
    assert cli.main(["plot", *dirs, "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.png").exists()
    runs = [viz.load_run(d) for d in dirs]
    fig = viz.compare_runs({"tiny": runs}, keys=("val/accuracy",))
    steps, values = runs[0].series("val/accuracy")
    (mean_line,) = fig.axes[0].lines
    np.testing.assert_allclose(mean_line.get_ydata(), (values + 1.0) / 2)
    np.testing.assert_array_equal(mean_line.get_xdata(), steps)
    assert cli.main(["plot", *dirs]) == 2  # several workdirs need --out
    assert "need --out" in capsys.readouterr().err


def test_unreadable_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no workdir"):
        viz.load_run(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a dnas workdir"):
        viz.load_run(str(tmp_path / "empty"))
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "metrics.jsonl").write_text('{"step": 1, "lr": 0.1}\n{"step": 2, "l')
    run = viz.load_run(str(tmp_path / "torn"))
    assert run.series("lr")[1].tolist() == [0.1]
    with pytest.raises(ValueError, match="no retraining 'searched'"):
        viz.training_curves(run, "searched")
    with pytest.raises(ValueError, match="no logged mixing weights"):
        viz.alpha_heatmaps(run)


def test_alpha_history_of_a_workdir_from_before_alpha_history(tmp_path):
    """Workdirs written before `alpha_history/` logged the mixing weights as per-op metric names;
    their figures still draw from those."""
    space = spaces.get("nb201")
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(space.num_ops), size=(2, len(space.row_labels["normal"])))
    (tmp_path / "config.json").write_text(json.dumps({"space": "nb201"}))
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for epoch, w in enumerate(weights, start=1):
            record = {"step": 10 * epoch, "epoch": epoch}
            for e, label in enumerate(space.row_labels["normal"]):
                record |= {f"alpha/normal/{label}/{op}": float(w[e, k])
                           for k, op in enumerate(space.ops)}  # fmt: skip
            f.write(json.dumps(record) + "\n")
    epochs, got = viz.load_run(str(tmp_path)).alpha_history("normal")
    np.testing.assert_array_equal(epochs, [1, 2])
    np.testing.assert_allclose(got, weights)


def test_dnas_plot_draws_a_latency_sweep_s_pareto_front(tmp_path, capsys):
    """A sweep root (its pareto.json, scripts/pareto.py) is drawn as accuracy against measured
    latency and against multiply-adds: one dot per run at its values, a star per reference
    network, a dotted line per target."""
    points = [
        {"target_ms": t, "seed": s, "test_accuracy": acc, "measured_ms": ms, "macs": macs}
        for t, s, acc, ms, macs in [(3.0, 0, 0.95, 3.1, 1e5), (3.0, 1, 0.96, 2.9, 1.1e5),
                                    (4.0, 0, 0.97, 4.2, 2e5)]
    ]  # fmt: skip
    refs = [{"label": "published", "test_accuracy": 0.98, "measured_ms": 6.0, "macs": 4e5}]
    (tmp_path / "pareto.json").write_text(json.dumps({"points": points, "reference": refs}))
    assert cli.main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "pareto.png").stat().st_size > 0
    assert "Pareto front" in capsys.readouterr().out
    fig = viz.pareto_figure(points, refs)
    latency, macs = fig.axes
    dots = [c.get_offsets().data.tolist() for c in latency.collections]
    assert dots[:2] == [[[3.1, 95.0], [2.9, 96.0]], [[4.2, 97.0]]]
    assert dots[2] == [[6.0, 98.0]] and latency.texts[0].get_text() == "published"
    assert sorted(line.get_xdata()[0] for line in latency.lines) == [3.0, 4.0]
    assert [c.get_offsets().data.tolist() for c in macs.collections][2] == [[4e5, 98.0]]


def test_a_chain_genotype_is_drawn_as_its_blocks(tmp_path):
    """A space without cells (a chain of blocks) is drawn as one box per block, left to right,
    labelled with its row and op; `zero` (a skipped block) in grey."""
    geno = spaces.load("proxyless_mobile")
    fig = viz.cell_figure(geno)
    texts = fig.axes[0].texts
    assert [t.get_text().split("\n")[1] for t in texts] == list(geno.blocks)
    assert [t.get_gid() for t in texts] == [f"block:{i}" for i in range(len(geno.blocks))]
    zero = [t for t in texts if t.get_text().endswith("\nzero")]
    assert zero and all(t.get_bbox_patch().get_facecolor()[:3] == (0.85,) * 3 for t in zero)
    (path,) = viz.save_cells(geno, str(tmp_path), "png")
    assert path.endswith("cell_blocks.png") and (tmp_path / "cell_blocks.png").stat().st_size
