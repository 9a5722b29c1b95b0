"""Figures of searches and retrainings: cell diagrams, alpha evolution, training curves, runs side
by side. Needs the `viz` extra (`pip install 'dnas[viz]'`: matplotlib, graphviz).

Everything reads what a run writes (`metrics.jsonl`, `config.json`, `genotype.json`,
`summary.json`), so it works on any workdir, finished or not, without the run's code or devices:

    run = viz.load_run("runs/run-20261124-101500")
    viz.cell_graph(run.genotype, "normal")      # graphviz.Digraph: a notebook shows it inline
    viz.alpha_heatmaps(run, "normal")           # matplotlib Figure: one heatmap per edge
    viz.save_all(run, "figures/")               # what `dnas plot` writes

Cell diagrams follow the DARTS paper's figures: the inputs c_{k-2} and c_{k-1} (NAS-Bench-201: one
input), the intermediate nodes, the output c_{k} fed by the concatenated nodes, each edge labelled
with its op (`none` edges are not drawn: they carry nothing). `cell_graph` builds a graphviz graph
(rendering needs the graphviz `dot` program: `DotNotFoundError` says how to install it);
`cell_figure` draws the same graph with matplotlib alone, used for strips of cells over epochs and
whenever `dot` is missing.

Figures are `matplotlib.figure.Figure` objects made without pyplot: no global state, nothing to
close; Jupyter displays them inline after `%matplotlib inline` (which registers the figure
formatter that importing pyplot would). Files are written atomically (a temporary name, then a
rename), so an interrupted `dnas plot` leaves no half-written figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dnas import metrics, spaces
from dnas import workdir as workdir_lib
from dnas.genotype import Genotype
from dnas.spaces import cells as cells_lib
from dnas.spaces.base import CellTopology, Diagram, Space

_INSTALL_GRAPHVIZ = (
    "`apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS), "
    "`conda install -c conda-forge graphviz`"
)
INSTALL_DOT = f"install graphviz's `dot` program: {_INSTALL_GRAPHVIZ}"
# What `dnas run` / `dnas search` say once, and `dnas plot` as a note, when `dot` is missing.
DOT_FALLBACK = (
    f"cell diagrams drawn with matplotlib: graphviz's `dot` is not installed (to install it: "
    f"{_INSTALL_GRAPHVIZ})"
)
FORMATS = ("svg", "png", "pdf")


class DotNotFoundError(RuntimeError):
    """The graphviz `dot` program is not installed; the message says how to install it."""


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f"dnas.viz needs {module}: pip install 'dnas[viz]' (matplotlib and graphviz)"
        ) from None


def _figure(**kw):
    _require("matplotlib")
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kw)


# ---------------------------------------------------------------------------------------------
# Reading a run.


def read_jsonl(path: str) -> list[dict]:
    """The records of a `metrics.jsonl` ([] when there is none; `metrics.read_metrics`)."""
    return metrics.read_metrics(path) if os.path.exists(path) else []


@dataclasses.dataclass
class Run:
    """A workdir's logs, read once. `records` are the search's (or training's) metrics lines;
    `retrain` maps a retraining's name (searched, random) to its records."""

    workdir: str
    config: dict
    records: list[dict]
    genotype: Genotype | None
    summary: dict | None
    retrain: dict[str, list[dict]]

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.workdir))

    @property
    def space(self) -> Space:
        return spaces.get(self.config.get("space", spaces.DEFAULT))

    @property
    def is_search(self) -> bool:
        """Whether `records` are a search's (epoch records, or the search step's own metrics:
        a search stopped in its first epoch has no epoch record yet) rather than a training's."""
        return any(
            "epoch" in r or any(k.startswith(("search/", "val/", "grad_norm/alphas")) for k in r)
            for r in self.records
        )

    def nothing_logged(self) -> str | None:
        """Why the workdir has nothing to draw yet (no genotype, no record with a value, no
        retraining or stage records), or None when it has something."""
        if self.genotype is not None or any(self.retrain.values()):
            return None
        if any(set(r) - {"step", "time"} for r in self.records):
            return None
        stages = [e for e in os.listdir(self.workdir) if re.fullmatch(r"stage_\d+", e)]
        if any(read_jsonl(os.path.join(self.workdir, e, "metrics.jsonl")) for e in stages):
            return None
        every = self.config.get("log_every_steps")
        return (
            "it holds config.json but no logged step yet (the run is starting or compiling, or "
            "stopped before its first log"
            + (f" at step {every}" if isinstance(every, int) else "")
            + ") and no genotype.json"
        )

    def search_val_accuracy(self) -> float | None:
        """The search's last validation accuracy: over the whole validation split
        (`eval_val/accuracy`, logged at every epoch end), else the mean of the last epoch's
        logged `val/accuracy` batches (workdirs from before `eval_val/`); None for a training."""
        if not self.is_search:
            return None
        steps, values = self.series("eval_val/accuracy")
        if len(steps):
            return float(values[-1])
        steps, values = self.series("val/accuracy")
        epochs = [r["step"] for r in self.epoch_records()]
        if not len(steps):
            return None
        since = epochs[-2] if len(epochs) > 1 else 0  # the last epoch's steps
        last = values[(steps > since) & (steps <= (epochs[-1] if epochs else steps[-1]))]
        return float(np.mean(last)) if len(last) else float(values[-1])

    def search_seconds(self) -> float | None:
        """The search's wall time: `dnas run`'s summary.json, else the `search/wall_s` metric."""
        if self.summary and "search_wall_s" in self.summary:
            return float(self.summary["search_wall_s"])
        steps, values = self.series("search/wall_s")
        return float(values[-1]) if len(steps) else None

    def series(self, key: str, records: Sequence[dict] | None = None) -> tuple[np.ndarray, ...]:
        """(steps, values) of a logged scalar, by step; a step logged twice (a resumed run)
        keeps its last value (`metrics.series`)."""
        return metrics.series(self.records if records is None else records, key)

    def epoch_records(self) -> list[dict]:
        """The per-epoch records (mixing weights, genotype, diagnostics), one per epoch (the last
        one written wins, as after a resumed epoch)."""
        by_step: dict[int, dict] = {}  # scalars and texts of one step come as separate lines
        for r in self.records:
            by_step.setdefault(r["step"], {}).update(r)
        by_epoch = {r["epoch"]: r for r in by_step.values() if "epoch" in r}
        return [by_epoch[e] for e in sorted(by_epoch)]

    def alpha_history(self, cell: str = "normal") -> tuple[np.ndarray, np.ndarray]:
        """(epochs, weights (epochs, num_edges, num_ops)): the mixing weights the search recorded
        at the end of every epoch (`alpha_history/epoch_<N>.npz`; the strategy's deterministic
        weights: softmax(alpha) for DARTS), in the space's edge and op order."""
        history = workdir_lib.read_alpha_history(self.workdir)
        epochs = [epoch for epoch, arrays in history if cell in arrays]
        weights = [arrays[cell] for _, arrays in history if cell in arrays]
        if not weights:  # a workdir of dnas before alpha_history/: per-op metric names
            epochs, weights = self._logged_alphas(cell)
        if not weights:
            raise ValueError(f"{self.workdir}: no logged mixing weights of the {cell!r} cell")
        return np.asarray(epochs), np.stack(weights)

    def _logged_alphas(self, cell: str) -> tuple[list[int], list[np.ndarray]]:
        """The mixing weights older dnas logged as `alpha/<cell>/<edge>/<op>` metrics."""
        labels, epochs, weights = self.space.row_labels[cell], [], []
        for r in self.epoch_records():
            w = np.full((len(labels), self.space.num_ops), np.nan)
            for key, value in r.items():
                kind, group, edge, op = ([*key.split("/", 3), "", "", ""])[:4]
                if (kind, group) == ("alpha", cell) and edge in labels and op in self.space.ops:
                    w[labels.index(edge), self.space.op_index(op)] = value
            if not np.isnan(w).all():
                epochs.append(r["epoch"])
                weights.append(w)
        return epochs, weights

    def genotypes(self) -> list[tuple[int, Genotype]]:
        """(epoch, genotype derived at the end of that epoch)."""
        return [
            (r["epoch"], spaces.parse(r["genotype"], self.space.name))
            for r in self.epoch_records()
            if "genotype" in r
        ]

    def test_accuracy(self, name: str = "searched") -> float | None:
        """The retrained `name` cell's test accuracy (summary.json of `dnas run`); for a
        `dnas train` workdir, its own (results.json)."""
        r = (self.summary or {}).get("retrain", {}).get(name)
        if r is None and name == "searched":
            path = os.path.join(self.workdir, "results.json")
            if os.path.exists(path):
                with open(path) as f:
                    r = json.load(f)
        return None if r is None else r.get("test_accuracy")


def load_run(workdir: str) -> Run:
    """Reads a workdir of `dnas search`, `dnas train` or `dnas run`."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"no workdir {workdir!r}")
    config_path = os.path.join(workdir, "config.json")
    config = {}
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    if not records and not os.path.exists(config_path):
        raise FileNotFoundError(
            f"{workdir!r} has neither metrics.jsonl nor config.json: not a dnas workdir"
        )
    geno = None
    if os.path.exists(os.path.join(workdir, workdir_lib.GENOTYPE)):
        geno = spaces.load_json(os.path.join(workdir, workdir_lib.GENOTYPE))
    summary = None
    if os.path.exists(os.path.join(workdir, "summary.json")):
        with open(os.path.join(workdir, "summary.json")) as f:
            summary = json.load(f)
    retrain = {}
    for entry in sorted(os.listdir(workdir)):
        if entry.startswith("retrain_"):
            retrain[entry[len("retrain_") :]] = read_jsonl(
                os.path.join(workdir, entry, "metrics.jsonl")
            )
    return Run(workdir, config, records, geno, summary, retrain)


# ---------------------------------------------------------------------------------------------
# Cell diagrams.


def topology_of(space: Space) -> CellTopology:
    """The cell topology that a cell diagram draws; a ValueError for spaces without cells."""
    if space.topology is None:
        raise ValueError(f"space {space.name!r} has no cells to draw")
    return space.topology


def node_names(space: CellTopology) -> dict[int, str]:
    """Display names of a cell's nodes: DARTS' c_{k-2}, c_{k-1}, 0..3 and the output c_{k};
    NAS-Bench-201's in, 1, 2, 3 (3 is the output)."""
    if space.num_inputs == 2:
        names = {0: "c_{k-2}", 1: "c_{k-1}"}
    else:
        names = {i: ("in" if i == 0 else f"in{i}") for i in range(space.num_inputs)}
    for i, node in enumerate(space.nodes):
        names[node] = str(i) if space.num_inputs == 2 else str(node)
    return names


def cell_edges(geno: Genotype, cell: str = "normal") -> list[tuple[str, str, str]]:
    """The edges a cell diagram draws, (source, destination, label) with `node_names`: every
    (op, input) of the genotype except `none`, then the unlabelled edges from the concatenated
    nodes to the output c_{k} (NAS-Bench-201: the last node is the output; no extra edges)."""
    space = topology_of(geno.search_space)
    names = node_names(space)
    out = []
    for dst, node in zip(space.nodes, geno[cell], strict=True):
        for op, src in node:
            if op != "none":
                out.append((names[src], names[dst], op))
    if space.num_inputs == 2:
        out += [(names[n], "c_{k}", "") for n in cells_lib.concat(geno, space, cell)]
    return out


_COLOURS = {"input": "darkseagreen2", "node": "lightblue", "output": "palegoldenrod"}


def _node_kind(space: CellTopology, name: str) -> str:
    names = node_names(space)
    inputs = {names[i] for i in range(space.num_inputs)}
    if name in inputs:
        return "input"
    if name == "c_{k}" or (space.num_inputs == 1 and name == names[max(space.nodes)]):
        return "output"
    return "node"


def cell_graph(geno: Genotype, cell: str = "normal", *, title: str | None = None):
    """The cell as a `graphviz.Digraph` in the DARTS paper's style (left to right; inputs green,
    intermediate nodes blue, output yellow; edges labelled with ops). A notebook displays it
    inline; `save_graph` writes it. Building it needs only the graphviz Python package;
    rendering needs `dot`."""
    space = topology_of(geno.search_space)
    g = _digraph(f"{cell}_cell", title)
    edges = cell_edges(geno, cell)
    names = [node_names(space)[i] for i in range(space.num_inputs)]
    names += [node_names(space)[n] for n in space.nodes]
    if space.num_inputs == 2:
        names.append("c_{k}")
    for name in names:
        g.node(name, fillcolor=_COLOURS[_node_kind(space, name)])
    for src, dst, label in edges:
        g.edge(src, dst, label=label, fillcolor="gray")
    return g


def _digraph(name: str, title: str | None):
    """An empty `graphviz.Digraph` in the cell diagrams' style (left to right, filled boxes,
    helvetica), titled `title`."""
    graphviz = _require("graphviz")
    g = graphviz.Digraph(
        name=name, format="svg",
        edge_attr={"fontsize": "14", "fontname": "helvetica", "penwidth": "1.5"},
        node_attr={"style": "filled", "shape": "rect", "align": "center", "fontsize": "16",
                   "height": "0.5", "width": "0.5", "penwidth": "2", "fontname": "helvetica"},
        graph_attr={"rankdir": "LR"},
    )  # fmt: skip
    if title:
        g.attr(label=title, labelloc="t", fontsize="18", fontname="helvetica")
    return g


_DOT_EDGE = re.compile(r'^\s*"?(?P<src>[^"\s]+)"?\s*->\s*"?(?P<dst>[^"\s]+)"?\s*\[(?P<attrs>.*)\]')


def graph_edges(graph) -> list[tuple[str, str, str]]:
    """(source, destination, label) of every edge in a graphviz graph's DOT source: what the
    drawing shows, read back (tests compare it with the genotype)."""
    out = []
    for line in graph.source.splitlines():
        m = _DOT_EDGE.match(line)
        if m:
            label = re.search(r'label="?([^"\s\]]*)"?', m["attrs"])
            out.append((m["src"], m["dst"], label.group(1) if label else ""))
    return out


def dot_available() -> bool:
    return shutil.which("dot") is not None


def save_graph(graph, path: str) -> str:
    """Renders a graphviz graph to `path` (.svg, .png or .pdf) atomically."""
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"cannot write {path!r}: the format must be one of {', '.join(FORMATS)}")
    if not dot_available():
        raise DotNotFoundError(f"rendering a cell diagram needs graphviz's `dot`: {INSTALL_DOT}")
    data = graph.pipe(format=fmt)
    workdir_lib.atomic_write_bytes(path, data)
    return path


def _layout(space: CellTopology) -> dict[str, tuple[float, float]]:
    """Node positions of the matplotlib drawing: inputs on the left, intermediate nodes in a
    zigzag left to right, the output on the right."""
    names = node_names(space)
    pos = {}
    for i in range(space.num_inputs):
        pos[names[i]] = (0.0, 1.6 - 3.2 * i if space.num_inputs == 2 else 0.0)
    for j, node in enumerate(space.nodes):
        pos[names[node]] = (1.6 * (j + 1), 1.0 if j % 2 == 0 else -1.0)
    if space.num_inputs == 2:
        pos["c_{k}"] = (1.6 * (space.num_intermediate + 1), 0.0)
    return pos


def draw_blocks(ax, geno: Genotype, group: str = "blocks", title: str | None = None) -> None:
    """Draws a chain's choices on a matplotlib Axes: one box per block (alpha row) from left to
    right, labelled with its row label and op, coloured by the op (a skipped block, an op that
    computes nothing, in grey)."""
    space = geno.search_space
    chosen = space.ops_used(geno)[group]
    rows = np.argwhere(space.genotype_mix(geno)[group] > 0)[:, 0]
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    for i, (row, op) in enumerate(zip(rows, chosen, strict=True)):
        free = op in ("none", "zero", "skip_connect", "skip")
        colour = "0.85" if free else palette(space.op_index(op) % 10)
        ax.text(i, 0, f"{space.row_labels[group][row]}\n{op}", ha="center", va="center",
                fontsize=7, rotation=90, gid=f"block:{row}",
                bbox={"boxstyle": "square,pad=0.4", "fc": colour, "ec": "black",
                      "alpha": 0.9})  # fmt: skip
    ax.set_xlim(-0.8, len(chosen) - 0.2)
    ax.set_ylim(-1, 1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def draw_cell(ax, geno: Genotype, cell: str = "normal", title: str | None = None) -> None:
    """Draws the cell on a matplotlib Axes: the same nodes and labelled edges as `cell_graph`;
    a space without cells (a chain of blocks) is drawn by `draw_blocks`."""
    from matplotlib.patches import FancyArrowPatch

    if geno.search_space.topology is None:
        return draw_blocks(ax, geno, cell, title)
    space = topology_of(geno.search_space)
    pos = _layout(space)
    for k, (src, dst, label) in enumerate(cell_edges(geno, cell)):
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        bend = 0.2 if (k % 2) else -0.2
        ax.add_patch(FancyArrowPatch(
            (x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, lw=1.2, color="0.35",
            connectionstyle=f"arc3,rad={bend}", shrinkA=14, shrinkB=14, gid=f"{src}->{dst}",
        ))  # fmt: skip
        if label:
            # The midpoint of the arc (quadratic Bezier with control point offset by `bend`).
            mx, my = (x0 + x1) / 2 + bend * (y1 - y0) / 2, (y0 + y1) / 2 - bend * (x1 - x0) / 2
            ax.text(mx, my, label, fontsize=7, ha="center", va="center", gid=f"{src}->{dst}",
                    zorder=4,  # above the node boxes
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.8})  # fmt: skip
    colours = {"input": "#b4eeb4", "node": "#add8e6", "output": "#eee8aa"}
    for name, (x, y) in pos.items():
        ax.text(x, y, name.replace("_{", "$_{").replace("}", "}$") if "_{" in name else name,
                ha="center", va="center", fontsize=9, gid=f"node:{name}", zorder=3,
                bbox={"boxstyle": "square,pad=0.35", "fc": colours[_node_kind(space, name)],
                      "ec": "black"})  # fmt: skip
    xs, ys = zip(*pos.values(), strict=True)
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.9)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def cell_figure(geno: Genotype, cells: Sequence[str] | None = None, title: str | None = None):
    """The genotype's cells (default: all) side by side, drawn with matplotlib alone."""
    cells = list(cells or geno.search_space.groups)
    fig = _figure(figsize=(6.0 * len(cells), 3.6))
    axes = fig.subplots(1, len(cells), squeeze=False)[0]
    for ax, cell in zip(axes, cells, strict=True):
        draw_cell(ax, geno, cell, f"{cell} cell")
    if title:
        fig.suptitle(title)
    return fig


def diagram_graph(diagram: Diagram, *, title: str | None = None, name: str = "diagram"):
    """A space's own `Diagram` (`Space.diagrams`) as a `graphviz.Digraph`, in the cell
    diagrams' style (left to right; inputs green, nodes blue, outputs yellow)."""
    g = _digraph(name, title)
    for node, kind in diagram.nodes:
        g.node(node, fillcolor=_COLOURS[kind])
    for src, dst, label in diagram.edges:
        g.edge(src, dst, label=label, fillcolor="gray")
    return g


def draw_diagram(ax, diagram: Diagram, title: str | None = None) -> None:
    """A `Diagram` on a matplotlib Axes: nodes left to right in their order (inputs and
    outputs on the middle line, the others in a zigzag), labelled arrows."""
    from matplotlib.patches import FancyArrowPatch

    pos, zig = {}, 0
    for i, (node, kind) in enumerate(diagram.nodes):
        y = 0.0
        if kind == "node":
            y, zig = (0.8 if zig % 2 == 0 else -0.8), zig + 1
        pos[node] = (1.3 * i, y)
    colours = {"input": "#b4eeb4", "node": "#add8e6", "output": "#eee8aa"}
    for k, (src, dst, label) in enumerate(diagram.edges):
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        bend = 0.25 if k % 2 else -0.25
        ax.add_patch(FancyArrowPatch(
            (x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10, lw=1.0, color="0.35",
            connectionstyle=f"arc3,rad={bend}", shrinkA=12, shrinkB=12, gid=f"{src}->{dst}",
        ))  # fmt: skip
        if label:
            mx, my = (x0 + x1) / 2 + bend * (y1 - y0) / 2, (y0 + y1) / 2 - bend * (x1 - x0) / 2
            ax.text(mx, my, label, fontsize=6, ha="center", va="center", zorder=4,
                    gid=f"{src}->{dst}", bbox={"boxstyle": "round,pad=0.1", "fc": "white",
                                               "ec": "none", "alpha": 0.8})  # fmt: skip
    for node, kind in diagram.nodes:
        x, y = pos[node]
        ax.text(
            x,
            y,
            node,
            ha="center",
            va="center",
            fontsize=7,
            gid=f"node:{node}",
            zorder=3,
            bbox={"boxstyle": "square,pad=0.3", "fc": colours[kind], "ec": "black"},
        )
    xs, ys = zip(*pos.values(), strict=True)
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def save_cells(geno: Genotype, out_dir: str, fmt: str = "svg", prefix: str = "cell") -> list[str]:
    """Writes one diagram per cell type, `<prefix>_<cell>.<fmt>`: graphviz when `dot` is
    installed, else the matplotlib drawing (a chain's blocks: `draw_blocks`); a space with its
    own figures (`Space.diagrams`: the recurrent cell, a transformer's layers) writes those,
    `<prefix>_<name>.<fmt>`. Returns the paths."""
    paths = []
    diagrams = geno.search_space.diagrams
    if diagrams is not None:
        for name, diagram in diagrams(geno).items():
            path = os.path.join(out_dir, f"{prefix}_{name}.{fmt}")
            if dot_available():
                save_graph(diagram_graph(diagram, title=name, name=name), path)
            else:
                width = max(4.0, 0.9 * len(diagram.nodes))
                fig = _figure(figsize=(width, 2.8))
                draw_diagram(fig.subplots(), diagram, name)
                save_figure(fig, path)
            paths.append(path)
        return paths
    for cell in geno.search_space.groups:
        path = os.path.join(out_dir, f"{prefix}_{cell}.{fmt}")
        if geno.search_space.topology is None:  # a chain: its blocks in a row (matplotlib)
            rows = geno.search_space.alpha_shapes[cell][0]
            fig = _figure(figsize=(max(4.0, 0.45 * rows), 2.2))
            draw_blocks(fig.subplots(), geno, cell, f"{cell}")
            save_figure(fig, path)
        elif dot_available():
            save_graph(cell_graph(geno, cell, title=f"{cell} cell"), path)
        else:
            save_figure(cell_figure(geno, [cell]), path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# Alpha evolution.


def _edge_grid(space: Space, cell: str):
    """A figure with one panel per edge (block), five to a row; (figure, the edges' axes)."""
    num = space.alpha_shapes[cell][0]
    cols = min(num, 5)
    rows = -(-num // cols)
    fig = _figure(figsize=(15, 2.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for ax in axes.ravel()[num:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:num]


def _edge_title(space: Space, cell: str, e: int) -> str:
    if space.topology is None:
        return space.row_labels[cell][e]
    names = node_names(space.topology)
    src, dst = space.topology.edges[e]
    return f"{names[src]} -> {names[dst]}"


def alpha_heatmaps(run: Run, cell: str = "normal"):
    """One heatmap per edge: ops (rows) by epochs (columns), coloured by the logged mixing
    weight. `ax.images[0].get_array()` of edge e is `alpha_history(cell)[1][:, e].T`."""
    epochs, w = run.alpha_history(cell)
    space = run.space
    fig, axes = _edge_grid(space, cell)
    # One colour scale for every edge, spanning the logged range (weights of a short search stay
    # close to uniform, and a 0-1 scale would show nothing).
    vmin, vmax = float(np.nanmin(w)), float(np.nanmax(w))
    for e, ax in enumerate(axes):
        extent = (epochs[0] - 0.5, epochs[-1] + 0.5, space.num_ops - 0.5, -0.5)
        im = ax.imshow(w[:, e].T, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax,
                       interpolation="nearest", gid=f"edge:{e}", extent=extent)  # fmt: skip
        ax.set_title(_edge_title(space, cell, e), fontsize=9)
        ax.set_yticks(range(space.num_ops), space.ops, fontsize=7)
        ax.set_xlabel("epoch", fontsize=8)
    fig.colorbar(im, ax=fig.axes, shrink=0.6, label="mixing weight")
    fig.suptitle(f"{run.name}: {cell} cell mixing weights per edge")
    return fig


def alpha_lines(run: Run, cell: str = "normal"):
    """One panel per edge, one line per op: the logged mixing weight over epochs."""
    epochs, w = run.alpha_history(cell)
    space = run.space
    fig, axes = _edge_grid(space, cell)
    for e, ax in enumerate(axes):
        for k, op in enumerate(space.ops):
            ax.plot(epochs, w[:, e, k], label=op, lw=1.2)
        ax.set_title(_edge_title(space, cell, e), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle(f"{run.name}: {cell} cell mixing weights per edge")
    return fig


def sgas_scores(run: Run, cell: str = "normal"):
    """SGAS (`search.sgas`): one panel per edge, its score and the three measures behind it
    (edge importance, selection certainty, selection stability) over the epochs, as the search
    logged them (`sgas_scores.jsonl`); a star at the decision (with its op) and a cross where
    the edge was pruned (`sgas_decisions.jsonl`). `ax.lines[0].get_ydata()` of edge e is its
    score per epoch."""
    lines = [r for r in read_jsonl(os.path.join(run.workdir, "sgas_scores.jsonl"))
             if r["group"] == cell]  # fmt: skip
    if not lines:
        raise ValueError(f"{run.workdir} holds no SGAS scores of the {cell} cell")
    decisions = [d for d in read_jsonl(os.path.join(run.workdir, "sgas_decisions.jsonl"))
                 if d["group"] == cell]  # fmt: skip
    epochs = [r["epoch"] for r in lines]
    space = run.space
    fig, axes = _edge_grid(space, cell)
    styles = {"score": ("k", 1.8), "importance": ("tab:blue", 1.0),
              "certainty": ("tab:orange", 1.0), "stability": ("tab:green", 1.0)}  # fmt: skip
    for e, ax in enumerate(axes):
        for key, (colour, width) in styles.items():
            ax.plot(epochs, [r[key][e] for r in lines], color=colour, lw=width, label=key)
        ax.set_title(_edge_title(space, cell, e), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    for d in decisions:
        ax = axes[d["row"]]
        ax.plot([d["epoch"]], [d["score"]], "*", color="tab:red", ms=12, label="decided")
        ax.annotate(d["op"], (d["epoch"], d["score"]), fontsize=7, color="tab:red",
                    xytext=(3, -10), textcoords="offset points")  # fmt: skip
        for row in d["pruned"]:
            axes[row].axvline(d["epoch"], color="tab:gray", ls=":", lw=1)
            axes[row].set_title(axes[row].get_title() + " (pruned)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles[: len(styles)], labels[: len(styles)], loc="outside right center",
               fontsize=8)  # fmt: skip
    fig.suptitle(f"{run.name}: SGAS scores of the {cell} cell's edges (star: decided)")
    return fig


# ---------------------------------------------------------------------------------------------
# Explaining a cell (`dnas explain`, `dnas.explain`): figures of its explain.json.


def _slot_label(topology: CellTopology, edge: Mapping[str, Any]) -> str:
    names = node_names(topology)
    return f"{edge['op']}  {names[edge['src']]} -> {names[edge['dst']]}"


def edge_removal(trained: Mapping[str, Any]):
    """A trained network's accuracy drop (points) when each edge is removed from every cell of
    its type, and when its op is replaced by the best parameter-free alternative; one panel per
    cell type, edges in genotype order. `ax.patches` of panel g: the removal bars, then the
    replacement bars (0 where the edge has no alternative)."""
    topology = topology_of(spaces.get(trained["space"]))
    groups = list(trained["edges"])
    rows = max(len(v) for v in trained["edges"].values())
    fig = _figure(figsize=(6.5 * len(groups), 0.42 * rows + 1.8))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, group in zip(axes, groups, strict=True):
        edges = trained["edges"][group]
        y = np.arange(len(edges))
        removed = [100 * e["removed_drop"] for e in edges]
        replaced = [100 * (e["best_alternative_drop"] or 0.0) for e in edges]
        ax.barh(y - 0.2, removed, 0.4, color="tab:red", label="edge removed")
        ax.barh(y + 0.2, replaced, 0.4, color="tab:blue", label="op replaced (best alternative)")
        for i, e in enumerate(edges):
            if e["best_alternative"]:
                ax.annotate(e["best_alternative"], (replaced[i], y[i] + 0.2), fontsize=7,
                            xytext=(2, -3), textcoords="offset points")  # fmt: skip
        ax.set_yticks(y, [_slot_label(topology, e) for e in edges], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"{trained['split']} accuracy drop (points)")
        ax.set_title(f"{group} cell", fontsize=10)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"{os.path.basename(trained['workdir'])}: {100 * trained['accuracy']:.2f}% "
        f"{trained['split']} accuracy, edges removed or replaced in every cell of their type"
    )
    return fig


def op_replacement(trained: Mapping[str, Any]):
    """A trained network's accuracy drop (points) for each edge (rows) with its op replaced by
    each parameter-free op of the space (columns; `none`: the edge removed; ops with parameters,
    untested without training, are left out); the edge's own op is marked. One heatmap per cell
    type; `ax.images[0].get_array()` of panel g is the (edges, ops) drop in points, NaN where
    an op was not tried on that edge."""
    space = spaces.get(trained["space"])
    topology = topology_of(space)
    groups = list(trained["edges"])
    tried = {op for edges in trained["edges"].values() for e in edges for op in e["replaced"]}
    columns = ["none", *(op for op in space.ops if op in tried and op != "none")]
    fig = _figure(figsize=(1.3 * len(columns) * len(groups) + 5, 0.42 * topology.num_edges + 2))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    base = trained["accuracy"]
    drops = {}
    for group in groups:
        edges = trained["edges"][group]
        d = np.full((len(edges), len(columns)), np.nan)
        for i, e in enumerate(edges):
            d[i, 0] = 100 * e["removed_drop"]
            for op, acc in e["replaced"].items():
                d[i, columns.index(op)] = 100 * (base - acc)
            if e["op"] in columns:
                d[i, columns.index(e["op"])] = 0.0
        drops[group] = d
    finite = np.concatenate([d[np.isfinite(d)] for d in drops.values()])
    vmax = max(float(np.abs(finite).max()) if finite.size else 0.0, 1e-9)
    for ax, group in zip(axes, groups, strict=True):
        edges, d = trained["edges"][group], drops[group]
        im = ax.imshow(d, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto",
                       interpolation="nearest")  # fmt: skip
        for i, e in enumerate(edges):
            for j, op in enumerate(columns):
                if op == e["op"]:
                    ax.text(j, i, "own", ha="center", va="center", fontsize=7)
                elif np.isfinite(d[i, j]):
                    ax.text(j, i, f"{d[i, j]:.1f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(edges)), [_slot_label(topology, e) for e in edges], fontsize=8)
        ax.set_title(f"{group} cell", fontsize=10)
    fig.colorbar(im, ax=list(axes), shrink=0.7, label="accuracy drop (points)")
    fig.suptitle(
        f"{os.path.basename(trained['workdir'])}: each edge's op replaced by a parameter-free "
        "op, without training (none: the edge removed)"
    )
    return fig


def op_shares(found: Mapping[str, Any], cell: str = "normal"):
    """A search's op shares (`dnas.explain.op_shares`): one panel per edge, per op its share of
    the edge's output (solid) and its mixing weight (dashed, same colour) over the epochs
    logged. `ax.lines[2 * k].get_ydata()` of edge e is op k's share per epoch."""
    space = spaces.get(found["space"])
    g = found["groups"][cell]
    epochs = found["epochs"]
    shares, weights = np.asarray(g["shares"]), np.asarray(g["weights"])
    fig, axes = _edge_grid(space, cell)
    marker = "o" if len(epochs) == 1 else None
    for e, ax in enumerate(axes):
        for k, op in enumerate(space.ops):
            (line,) = ax.plot(epochs, shares[:, e, k], lw=1.6, marker=marker, label=op)
            ax.plot(epochs, weights[:, e, k], lw=1.0, ls="--", marker=marker,
                    color=line.get_color())  # fmt: skip
        ax.set_title(_edge_title(space, cell, e), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle(
        f"{os.path.basename(found['workdir'])}: {cell} cell, each op's share of its edge's output "
        "(solid) and its mixing weight (dashed)"
    )
    return fig


def genotype_strip(run: Run, cell: str = "normal", max_cells: int = 6):
    """The cell derived at the end of evenly spaced epochs (first and last included), left to
    right: how the architecture changed during the search."""
    history = run.genotypes()
    if not history:
        raise ValueError(f"{run.workdir}: no genotype logged per epoch")
    idx = np.unique(np.linspace(0, len(history) - 1, min(max_cells, len(history))).round())
    chosen = [history[int(i)] for i in idx]
    fig = _figure(figsize=(5.5 * min(len(chosen), 3), 3.4 * -(-len(chosen) // 3)))
    axes = fig.subplots(-(-len(chosen) // 3), min(len(chosen), 3), squeeze=False).ravel()
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    for ax, (epoch, geno) in zip(axes, chosen, strict=False):
        draw_cell(ax, geno, cell, f"epoch {epoch}")
    fig.suptitle(f"{run.name}: {cell} cell over the search")
    return fig


_PANEL_TITLES = {"benchmark": "the derived cell's published results (benchmark.table)"}


def diagnostics(run: Run):
    """Mean entropy of the mixing weights per cell type, skip connections in the normal cell and
    parameter-free ops per cell type, over epochs (and, when logged, the Hessian eigenvalue and
    the derived cell's published results: `benchmark.table`, e.g. NAS-Bench-201's)."""
    recs = run.epoch_records()
    keys = sorted({k for r in recs for k in r
                   if k.startswith(("alpha_entropy/", "skip_connections/", "parameter_free_ops/",
                                    "hessian/", "benchmark/"))})  # fmt: skip
    if not keys:
        raise ValueError("no epoch has ended yet: the diagnostics are logged at epoch ends")
    groups = {}
    for k in keys:
        groups.setdefault(k.split("/")[0], []).append(k)
    fig = _figure(figsize=(4.5 * max(len(groups), 1), 3.2))
    axes = fig.subplots(1, max(len(groups), 1), squeeze=False)[0]
    for ax, (group, ks) in zip(axes, groups.items(), strict=False):
        for k in ks:
            epochs = [r["epoch"] for r in recs if k in r]
            ax.plot(epochs, [r[k] for r in recs if k in r], marker="o", ms=3, label=k)
        ax.set_title(_PANEL_TITLES.get(group, group.replace("_", " ")))
        ax.set_xlabel("epoch")
        ax.ticklabel_format(axis="y", useOffset=False)  # entropy stays near log(ops) early on
        ax.legend(fontsize=8)
    fig.suptitle(f"{run.name}: search diagnostics")
    return fig


# ---------------------------------------------------------------------------------------------
# Training curves and comparisons.

_CURVES = (
    ("loss", ("train/loss", "val/loss", "eval_val/loss")),
    ("accuracy", ("train/accuracy", "val/accuracy", "eval_val/accuracy")),
    ("learning rate", ("lr",)),
)


_PERPLEXITY = ("perplexity", ("train/perplexity", "val/perplexity", "eval_val/perplexity"))


def training_curves(run: Run, which: str = "search"):
    """Loss, accuracy (a language model's: perplexity, log scale) and learning rate over steps
    of the search (`which='search'`) or of a retraining (`which='searched'`, `'random'`; a
    `dnas train` workdir is its own 'search')."""
    records = run.records if which == "search" else run.retrain.get(which)
    if records is None:
        raise ValueError(
            f"{run.workdir} has no retraining {which!r}; it has: "
            f"{', '.join(['search', *run.retrain]) or '(none)'}"
        )
    if not any(len(run.series(k, records)[0]) for _, keys in _CURVES for k in keys):
        raise ValueError(
            "no loss, accuracy or learning rate logged yet (they are written every "
            "log_every_steps steps and at epoch ends)"
        )
    curves = list(_CURVES)
    logged = lambda keys: any(len(run.series(k, records)[0]) for k in keys)
    if not logged(_CURVES[1][1]) and logged(_PERPLEXITY[1]):  # a language model
        curves[1] = _PERPLEXITY
    fig = _figure(figsize=(13, 3.2))
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (title, keys) in zip(axes, curves, strict=True):
        for k in keys:
            steps, values = run.series(k, records)
            if len(steps):
                ax.plot(steps, values, label=k, lw=1.2)
        if title == _PERPLEXITY[0]:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=8)
    what = (
        ("search" if run.is_search else "training") if which == "search" else f"retraining {which}"
    )
    fig.suptitle(f"{run.name}: {what}")
    return fig


def _stack(runs: Sequence[Run], key: str, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps common to every run, and the runs' values there (runs, steps)."""
    series = []
    for r in runs:
        records = r.records if which == "search" else r.retrain.get(which, [])
        series.append(dict(zip(*r.series(key, records), strict=True)))
    common = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return np.asarray(common), np.array([[s[t] for t in common] for s in series])


def compare_runs(
    groups: Mapping[str, Sequence[Run]],
    keys: Sequence[str] = ("val/accuracy", "train/loss"),
    which: str = "search",
):
    """Several groups of runs (e.g. methods, each with several seeds): per key, each group's mean
    over its runs with a +-1 std band; plus, when the runs were retrained (`dnas run`), each
    group's test accuracy mean +- std with the single seeds as dots."""
    with_test = any(r.test_accuracy() is not None for rs in groups.values() for r in rs)
    panels = len(keys) + int(with_test)
    fig = _figure(figsize=(4.6 * panels, 3.4))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=False):
        for label, runs in groups.items():
            steps, values = _stack(runs, key, which)
            if not len(steps):
                continue
            mean, std = values.mean(0), values.std(0)
            (line,) = ax.plot(steps, mean, label=f"{label} (n={len(runs)})", lw=1.4)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=8)
    if with_test:
        ax = axes[-1]
        missing = []
        for i, runs in enumerate(groups.values()):
            acc = [100 * a for a in (r.test_accuracy() for r in runs) if a is not None]
            if acc:
                ax.errorbar(i, np.mean(acc), yerr=np.std(acc), fmt="o", capsize=5, ms=8)
                ax.scatter([i] * len(acc), acc, s=12, color="0.4", zorder=3)
            else:
                missing.append(i)
        # A group that was not retrained (search-only runs) is marked "-", not left blank.
        for i in missing:
            ax.text(i, 0.5, "-\nnot\nretrained", transform=ax.get_xaxis_transform(), ha="center",
                    va="center", fontsize=8, color="0.4", gid=f"missing:{i}")  # fmt: skip
        ax.set_xlim(-0.5, len(groups) - 0.5)
        ax.set_xticks(range(len(groups)), list(groups), rotation=30, ha="right")
        ax.set_title("retrained test accuracy (%)")
    return fig


def summary_table(groups: Mapping[str, Sequence[Run]]) -> list[dict[str, Any]]:
    """Per group: runs, retrained test accuracy mean and std (%), the search's validation
    accuracy mean and std (%, `Run.search_val_accuracy`) and wall time mean (s); None where no
    run of the group has the value (a search-only run has no test accuracy; `format_table` shows
    it as "-")."""
    rows = []
    for label, runs in groups.items():
        acc = [100 * a for a in (r.test_accuracy() for r in runs) if a is not None]
        val = [100 * a for a in (r.search_val_accuracy() for r in runs) if a is not None]
        wall = [w for w in (r.search_seconds() for r in runs) if w is not None]
        rows.append({
            "group": label, "runs": len(runs),
            "test_acc_mean": float(np.mean(acc)) if acc else None,
            "test_acc_std": float(np.std(acc)) if acc else None,
            "search_val_acc_mean": float(np.mean(val)) if val else None,
            "search_val_acc_std": float(np.std(val)) if val else None,
            "search_s_mean": float(np.mean(wall)) if wall else None,
        })  # fmt: skip
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """`summary_table`'s rows as a text table: accuracies as mean +- std (%), a value no run of
    the group has as "-"."""

    def pm(row, key):
        mean, std = row[f"{key}_mean"], row[f"{key}_std"]
        return "-" if mean is None else f"{mean:.2f} +- {std:.2f}"

    header = ("group", "runs", "test acc %", "search val acc %", "search s")
    lines = [[str(r["group"]), str(r["runs"]), pm(r, "test_acc"), pm(r, "search_val_acc"),
              "-" if r["search_s_mean"] is None else f"{r['search_s_mean']:.1f}"]
             for r in rows]  # fmt: skip
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]
    return "\n".join(
        "  ".join(
            x.ljust(w) if i == 0 else x.rjust(w)
            for i, (x, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *lines]
    )


def save_comparison(
    groups: Mapping[str, Sequence[Run]], out_dir: str, fmt: str = "png"
) -> tuple[str, str, list[dict[str, Any]]]:
    """`compare_runs`' figure as `<out_dir>/compare.<fmt>` and `summary_table`'s rows as
    `<out_dir>/compare.json` (null where a group lacks a value); returns (figure path, table path,
    rows)."""
    figure = save_figure(compare_runs(groups), os.path.join(out_dir, f"compare.{fmt}"))
    rows = summary_table(groups)
    table = os.path.join(out_dir, "compare.json")
    workdir_lib.atomic_write_text(table, json.dumps(rows, indent=2) + "\n")
    return os.path.abspath(figure), os.path.abspath(table), rows


def compare_genotypes(
    genotypes: Mapping[str, Genotype],
    dataset: str = "cifar10",
    C: int | None = None,
    layers: int | None = None,
    cell: str = "normal",
):
    """Cells of several genotypes side by side (e.g. a searched one and DARTS_V2), titled with
    the parameters and multiply-adds of the network each gives on `dataset` (C and layers: the
    paper's evaluation network unless given). Returns (figure, rows)."""
    from dnas import data, evaluate

    info = data.get_info(dataset)
    rows = []
    fig = _figure(figsize=(4.5 * len(genotypes), 3.4))
    axes = fig.subplots(1, len(genotypes), squeeze=False)[0]
    for ax, (name, geno) in zip(axes, genotypes.items(), strict=True):
        model = geno.search_space.network(geno, info.num_classes, input_shape=info.input_shape,
                                          C=C, layers=layers)  # fmt: skip
        stats = evaluate.model_stats(model, info.input_shape)
        rows.append({"genotype": name, "params_M": stats["params"] / 1e6,
                     "macs_M": stats["macs"] / 1e6, "string": geno.to_string()})  # fmt: skip
        draw_cell(ax, geno, cell, f"{name}\n{stats['params'] / 1e6:.2f}M params, "
                                  f"{stats['macs'] / 1e6:.0f}M MACs")  # fmt: skip
    fig.suptitle(f"{cell} cells; networks for {dataset}")
    return fig, rows


def pareto_figure(points: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]] = ()):
    """Accuracy against measured latency and against multiply-adds (hardware-aware search): one
    dot per searched network (`points`: `test_accuracy` in [0, 1], `measured_ms`, `macs`, and
    `target_ms`, the latency target it was searched for, which colours it and is drawn as a
    dotted line on the latency panel), a star per published or baseline network
    (`reference`, with a `label`). A point without a value is left out of that panel."""
    fig = _figure(figsize=(9.6, 3.8))
    axes = fig.subplots(1, 2)
    targets = sorted({p["target_ms"] for p in points if p.get("target_ms") is not None})
    import matplotlib

    colours = matplotlib.colormaps["viridis"].resampled(max(len(targets), 2))
    colour = {t: colours(i) for i, t in enumerate(targets)}
    for ax, key, label in ((axes[0], "measured_ms", "measured latency (ms)"),
                           (axes[1], "macs", "multiply-adds")):  # fmt: skip
        for t in targets:
            sel = [p for p in points if p.get("target_ms") == t and p.get(key) is not None]
            ax.scatter([p[key] for p in sel], [100 * p["test_accuracy"] for p in sel], s=30,
                       color=colour[t], label=f"target {t:g} ms", zorder=3)  # fmt: skip
            if key == "measured_ms":
                ax.axvline(t, color=colour[t], ls=":", lw=1)
        for r in reference:
            if r.get(key) is None:
                continue
            ax.scatter([r[key]], [100 * r["test_accuracy"]], marker="*", s=120, color="tab:red",
                       zorder=4)  # fmt: skip
            ax.annotate(r["label"], (r[key], 100 * r["test_accuracy"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    if targets:
        axes[0].legend(fontsize=8)
    return fig


def study_figure(rows: Sequence[Mapping[str, Any]], metric: str = "test_accuracy"):
    """A study's table (`results.group_rows`) drawn: per group (the random genotypes last) a box
    of its seeds' metric with each seed a dot and the mean's 95% interval as a bar beside it;
    then the groups' mean metric against their mean cost, parameters and search + retraining
    time, with std bars (a panel only where the groups have that cost)."""
    fig = _figure(figsize=(12.0, 3.8))
    axes = fig.subplots(1, 3, width_ratios=(1.4, 1, 1))
    label = {"test_accuracy": "test accuracy (%)", "test_perplexity": "test perplexity"}.get(
        metric, f"{metric.removeprefix('benchmark/')} (%, published)"
    )
    ax = axes[0]
    values = [r["values"] for r in rows]
    positions = np.arange(len(rows))
    ax.boxplot(values, positions=positions, widths=0.5, showfliers=False,
               medianprops={"color": "tab:orange"})  # fmt: skip
    rng = np.random.default_rng(0)  # a fixed jitter: the same study draws the same figure
    for i, v in enumerate(values):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=16, color="k", zorder=3)
        r = rows[i]
        if np.isfinite(r.get("ci_low") or np.nan):
            ax.errorbar(i + 0.33, r["mean"], yerr=[[r["mean"] - r["ci_low"]],
                        [r["ci_high"] - r["mean"]]], fmt="o", color="tab:blue", ms=4,
                        capsize=3)  # fmt: skip
    ax.set_xticks(positions, [r["group"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(label)
    ax.set_title("per group: seeds, box, mean's 95% interval", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    costs = (("params", "parameters"), ("time_s", "search + retraining time (s)"))
    for ax, (key, xlabel) in zip(axes[1:], costs, strict=True):
        shown = 0
        for r in rows:
            cost = r.get(key)
            if key == "time_s":
                parts = [r.get("search_s"), r.get("retrain_s")]
                parts = [p for p in parts if p is not None and np.isfinite(p)]
                cost = sum(parts) if parts else None
            if cost is None or not np.isfinite(cost):
                continue
            std = r.get("std")
            ax.errorbar(cost, r["mean"], yerr=std if std is not None and np.isfinite(std) else None,
                        fmt="o", capsize=3, label=r["group"])  # fmt: skip
            shown += 1
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no group has this cost", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)  # fmt: skip
    return fig


def save_study(study_dir: str, out_dir: str | None = None, fmt: str = "png") -> str:
    """`study_figure` of a study's `results.json` as `<out_dir or study_dir>/results.<fmt>`."""
    with open(os.path.join(study_dir, "results.json")) as f:
        data = json.load(f)
    none_to_nan = lambda r: {k: np.nan if v is None else v for k, v in r.items()}
    fig = study_figure([none_to_nan(r) for r in data["rows"]], data["metric"])
    return os.path.abspath(save_figure(fig, os.path.join(out_dir or study_dir, f"results.{fmt}")))


PARETO = "pareto.json"  # a latency-target sweep's results (scripts/pareto.py)


def save_pareto(root: str, out_dir: str | None = None, fmt: str = "png") -> str:
    """`pareto_figure` of the sweep in `root` (its `pareto.json`: `points` and `reference`) as
    `<out_dir or root>/pareto.<fmt>`; returns the path."""
    with open(os.path.join(root, PARETO)) as f:
        data = json.load(f)
    fig = pareto_figure(data.get("points", []), data.get("reference", []))
    return os.path.abspath(save_figure(fig, os.path.join(out_dir or root, f"pareto.{fmt}")))


# ---------------------------------------------------------------------------------------------
# Writing figures.


def save_figure(fig, path: str, dpi: int = 120) -> str:
    """Saves a matplotlib figure atomically (format from the extension)."""
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"cannot write {path!r}: the format must be one of {', '.join(FORMATS)}")
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    workdir_lib.atomic_write_bytes(path, buf.getvalue())
    return path


def save_all(run: Run, out_dir: str, fmt: str = "png") -> tuple[list[str], list[str]]:
    """Every figure of a run into `out_dir`: cell diagrams of its genotype, alpha heatmaps and
    lines, the genotype strip and the diagnostics per cell type, search and retraining curves.
    A figure without data (a search stopped in its first epoch has no alphas per epoch yet, a
    run that logged no step has no curve) is skipped, not drawn empty. Returns (written paths,
    notes on what was left out and why); `out_dir` is created only when something is written."""
    written, notes = [], []
    figures = []  # (file name, function making the figure)
    if run.is_search:
        for cell in run.space.groups:
            for name, make in (("alpha_heatmap", alpha_heatmaps), ("alpha_lines", alpha_lines),
                               ("genotype_strip", genotype_strip)):  # fmt: skip
                figures.append((f"{name}_{cell}", lambda make=make, cell=cell: make(run, cell)))
        figures.append(("diagnostics", lambda: diagnostics(run)))
        if os.path.exists(os.path.join(run.workdir, "sgas_scores.jsonl")):
            for cell in run.space.groups:
                figures.append((f"sgas_scores_{cell}", lambda cell=cell: sgas_scores(run, cell)))
    if run.records:
        name = "search_curves" if run.is_search else "train_curves"
        figures.append((name, lambda: training_curves(run)))
    for which in run.retrain:
        figures.append((f"retrain_{which}_curves", lambda which=which: training_curves(run, which)))
    if run.genotype is not None:
        if not dot_available():
            notes.append(DOT_FALLBACK)
        written += save_cells(run.genotype, out_dir, fmt)
    for name, make in figures:
        try:
            fig = make()
        except ValueError as err:
            notes.append(f"{name}.{fmt} skipped: {err}")
            continue
        written.append(save_figure(fig, os.path.join(out_dir, f"{name}.{fmt}")))
    # P-DARTS / DrNAS progressive searches: every stage is a search of its own.
    stages = [e for e in os.listdir(run.workdir) if re.fullmatch(r"stage_\d+", e)]
    for stage in sorted(stages, key=lambda e: int(e.split("_")[1])):
        stage_dir = os.path.join(run.workdir, stage)
        if os.path.exists(os.path.join(stage_dir, "metrics.jsonl")):
            more, more_notes = save_all(load_run(stage_dir), os.path.join(out_dir, stage), fmt)
            written += more
            notes += [f"{stage}: {n}" for n in more_notes]
    return written, notes


__all__ = [
    "DotNotFoundError",
    "Run",
    "alpha_heatmaps",
    "alpha_lines",
    "cell_edges",
    "cell_figure",
    "cell_graph",
    "compare_genotypes",
    "compare_runs",
    "diagnostics",
    "draw_blocks",
    "draw_cell",
    "edge_removal",
    "format_table",
    "genotype_strip",
    "graph_edges",
    "load_run",
    "op_replacement",
    "op_shares",
    "pareto_figure",
    "save_all",
    "save_cells",
    "save_comparison",
    "save_figure",
    "save_graph",
    "save_pareto",
    "sgas_scores",
    "summary_table",
    "training_curves",
]
