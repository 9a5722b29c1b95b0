"""`dnas explain WORKDIR`: which edges and operations of a found cell matter.

Alpha values alone are a poor answer to that question (Wang et al., "Rethinking Architecture
Selection in Differentiable NAS", ICLR 2021), so dnas measures it, on the two kinds of workdir:

- A trained network (a `dnas train` workdir or a `dnas run` retraining folder, `retrain_<name>/`):
  its accuracy on a split (the test split by default) with each edge of a cell type removed, in
  every cell of that type at once, and with the edge's op replaced by each op of the space that
  has no parameters there (`none` aside: that is the removal). The best alternative is the one
  that keeps the most accuracy. The network is the trained one, evaluated as `dnas eval` does
  (inference mode, its running statistics); the edits are applied at apply time (`network`'s
  `edits`), so every variant is one compiled program and the data are read once.
  **Choice**: an op with parameters (a convolution) has no trained weights as an alternative, so
  it is not evaluated: the result lists it under `untested` (training each alternative is a
  retraining per edge and op). The BatchNorm layers keep their trained running statistics, so a
  drop includes the shift an edit causes in the statistics downstream (what the edited network,
  as trained, would do); the variants run on one device.
- A search: each op's share of its mixed edge's output, `||w_k op_k(x)|| / sum_j ||w_j op_j(x)||`
  on one fixed validation batch, averaged over the cells of a type (`supernet.op_shares`), beside
  its mixing weight (the strategy's final weights: a softmax of the alphas for DARTS), over the
  epochs the search logged (`search.explain_every_epochs`). A search
  that logged none gets its final epoch's, computed here from its last checkpoint.

A `dnas run` workdir holds both: its search and every retraining folder are explained. The numbers
go to `explain.json`, the figures (`viz.edge_removal`, `viz.op_replacement`, `viz.op_shares`) beside
it, in `WORKDIR/explain/` or `out`.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnas import configlib, data, network, search, spaces, train
from dnas import workdir as workdir_lib
from dnas.errors import ConfigError

DIR = "explain"
RESULT = "explain.json"
SCHEMA_VERSION = 1


def retrainings(workdir: str) -> list[str]:
    """The retraining folders of a `dnas run` workdir (`retrain_<name>/`), by name."""
    return sorted(
        os.path.join(workdir, e) for e in os.listdir(workdir)
        if e.startswith("retrain_") and os.path.isdir(os.path.join(workdir, e))
    )  # fmt: skip


def _cell_space(space: spaces.Space, workdir: str) -> None:
    if space.topology is None or space.modality != "image":
        raise ConfigError(
            f"dnas explain removes and replaces the edges of cells; {workdir} holds a network of "
            f"the {space.name!r} space, which has no cells"
        )


# --------------------------------------------------------------------------------------------------
# A trained network: edges removed, ops replaced.


def _variants(slots: list[network.Slot], base: dict[str, np.ndarray], ops: tuple[str, ...]):
    """(slot, what, edits) of every variant: the unchanged network (slot None), each edge removed
    ('none') and each edge's op replaced by each of its substitutes but its own op."""
    out = [(None, "", base)]
    for slot in slots:
        for what in ("none", *(op for op in slot.substitutes if op not in ("none", slot.op))):
            edits = {g: e.copy() for g, e in base.items()}
            edits[slot.group][slot.index] = 0.0
            if what != "none":
                edits[slot.group][slot.index, 1 + ops.index(what)] = 1.0
            out.append((slot, what, edits))
    return out


def edge_effects(workdir: str, *, split: str = "test", batch_size: int | None = None) -> dict:
    """The accuracy of the network trained in `workdir` on `split` with each edge removed and each
    op replaced (module docstring); a dict for `explain.json`."""
    if split not in train.SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(train.SPLITS)}")
    config, su, state = train.load_trained(workdir)
    genotype = su.genotype
    space = spaces.get(genotype.space)
    _cell_space(space, workdir)
    source = getattr(su.splits, split)
    if source is None:
        raise ValueError(f"dataset {config.dataset!r} has no {split} split")
    groups = space.topology.cell_types
    base = network.unchanged_edits({g: len(spaces.cells.flat(genotype, g)) for g in groups},
                                   space.num_ops)  # fmt: skip
    slots = network.edit_slots(su.model, su.info.input_shape, base, su.dtype)
    variants = _variants(slots, base, space.ops)
    stacked = {g: jnp.asarray(np.stack([v[2][g] for v in variants])) for g in groups}

    @jax.jit
    def step(state, batch, stacked):
        return jax.lax.map(lambda e: su.eval_step(state, batch, e), stacked)

    totals = None
    for batch in data.eval_batches(source, batch_size or config.train.batch_size):
        out = step(state, batch, stacked)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    accuracy = totals["correct"] / totals["n"]
    base_acc = float(accuracy[0])
    edges: dict[str, list[dict]] = {g: [] for g in groups}
    by_slot: dict[tuple[str, int], dict] = {}
    for (slot, what, _), acc in zip(variants[1:], accuracy[1:], strict=True):
        key = (slot.group, slot.index)
        if key not in by_slot:
            untested = [op for op in space.discrete_ops or space.ops
                        if op not in slot.substitutes and op != slot.op]  # fmt: skip
            by_slot[key] = {
                "index": slot.index, "op": slot.op, "src": slot.src, "dst": slot.dst,
                "removed_accuracy": None, "removed_drop": None, "replaced": {},
                "best_alternative": None, "best_alternative_accuracy": None,
                "best_alternative_drop": None, "untested": untested,
            }  # fmt: skip
            edges[slot.group].append(by_slot[key])
        record = by_slot[key]
        if what == "none":
            record["removed_accuracy"] = float(acc)
            record["removed_drop"] = base_acc - float(acc)
        else:
            record["replaced"][what] = float(acc)
    for record in by_slot.values():
        if record["replaced"]:
            best = max(record["replaced"], key=lambda op: record["replaced"][op])  # first on ties
            record["best_alternative"] = best
            record["best_alternative_accuracy"] = record["replaced"][best]
            record["best_alternative_drop"] = base_acc - record["replaced"][best]
    return {
        "kind": "trained", "workdir": os.path.abspath(workdir), "space": space.name,
        "genotype": genotype.to_json(), "genotype_string": genotype.to_string(),
        "dataset": config.dataset, "split": split, "examples": len(source),
        "step": int(state.step), "accuracy": base_acc, "edges": edges,
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------
# A search: op shares over the epochs.


def op_shares(workdir: str) -> dict:
    """Each op's share of its mixed edge's output beside its mixing weight, per epoch the search
    logged (`alpha_history/`), or its final epoch computed from the last checkpoint."""
    path = os.path.join(workdir, workdir_lib.CONFIG)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir} has no {workdir_lib.CONFIG}: not a dnas workdir")
    config = configlib.load_json(path)
    space = spaces.get(config.space)
    _cell_space(space, workdir)
    history = workdir_lib.read_alpha_history(workdir)
    logged = [(e, a) for e, a in history if all(f"{search.SHARES}/{g}" in a for g in space.groups)]
    source = "logged"
    if logged:
        epochs = [e for e, _ in logged]
        weights = {g: [a[g] for _, a in logged] for g in space.groups}
        shares = {g: [a[f"{search.SHARES}/{g}"] for _, a in logged] for g in space.groups}
    else:
        source = "checkpoint"
        _, su, state = train.load_searched(workdir)
        fn = jax.jit(search.op_shares_fn(su))
        final = jax.device_get(fn(state.params, state.alphas, search.monitor_batch(config, su)))
        mix = jax.device_get(su.strategy.final_weights(state.alphas))
        epochs = [int(state.step) // su.steps_per_epoch]
        weights = {g: [np.asarray(mix[g])] for g in space.groups}
        shares = {g: [np.asarray(final[g])] for g in space.groups}
    return {
        "kind": "search", "workdir": os.path.abspath(workdir), "space": space.name,
        "ops": list(space.ops), "source": source, "epochs": epochs,
        "groups": {
            g: {
                "rows": list(space.row_labels[g]),
                "weights": np.asarray(weights[g], float).round(6).tolist(),
                "shares": np.asarray(shares[g], float).round(6).tolist(),
            }
            for g in space.groups
        },
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The command.


def explain(
    workdir: str, *, out: str | None = None, split: str = "test", batch_size: int | None = None,
    fmt: str = "png",
) -> dict:  # fmt: skip
    """Explains `workdir` (module docstring): writes `explain.json`, then the figures, to
    `WORKDIR/explain/` (or `out`) and returns the result with the paths written. What cannot be
    explained in a `dnas run` workdir (a retraining without a checkpoint, a search that cannot
    be read back) is listed under `skipped` with the reason; with nothing explained, the first
    reason is the error. The output folder and the figures' needs are checked first."""
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"no workdir {workdir!r}")
    out = os.path.abspath(out or os.path.join(workdir, DIR))
    _check_output(out, fmt)
    result: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "workdir": workdir}
    if train.holds_search(workdir):
        result["trained"], result["skipped"] = {}, []
        errors = []
        try:
            result["search"] = op_shares(workdir)
        except (FileNotFoundError, ConfigError, ValueError) as err:
            errors.append(err)
            result["skipped"].append({"workdir": workdir, "reason": str(err)})
        for path in retrainings(workdir):
            if not workdir_lib.has_checkpoints(path):
                reason = "its retraining saved no checkpoint yet"
                result["skipped"].append({"workdir": path, "reason": reason})
                continue
            trained = edge_effects(path, split=split, batch_size=batch_size)
            result["trained"][os.path.basename(path)] = trained
        if errors and not result["trained"]:
            raise errors[0]
    else:
        result["trained"] = {".": edge_effects(workdir, split=split, batch_size=batch_size)}
    path = os.path.join(out, RESULT)
    os.makedirs(out, exist_ok=True)
    workdir_lib.atomic_write_text(path, _dumps(result))  # the numbers first
    result["figures"] = save(result, out, fmt)
    workdir_lib.atomic_write_text(path, _dumps(result))
    result["path"] = path
    return result


def _check_output(out: str, fmt: str) -> None:
    """A one-line error now, not after the evaluation, if `out` cannot be a folder written here
    or the figures cannot be drawn."""
    from dnas import viz

    if fmt not in viz.FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; valid formats: {', '.join(viz.FORMATS)}")
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("dnas explain draws with matplotlib: pip install 'dnas[viz]'")
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out} is a file, not a folder")
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK):
        raise PermissionError(errno.EACCES, "permission denied", existing)


def _dumps(result: dict) -> str:
    return json.dumps(result, indent=1) + "\n"


def save(result: dict, out: str, fmt: str = "png") -> list[str]:
    """The figures of `result` into `out` (created): the edge removals and op replacements of
    each trained network, the op shares of each cell type of the search."""
    from dnas import viz

    os.makedirs(out, exist_ok=True)
    written = []
    for name, trained in result.get("trained", {}).items():
        prefix = "" if name == "." else f"{name}_"
        for figure, make in (("edge_removal", viz.edge_removal),
                             ("op_replacement", viz.op_replacement)):  # fmt: skip
            path = os.path.join(out, f"{prefix}{figure}.{fmt}")
            written.append(viz.save_figure(make(trained), path))
    found = result.get("search")
    if found is not None:
        for group in found["groups"]:
            path = os.path.join(out, f"op_shares_{group}.{fmt}")
            written.append(viz.save_figure(viz.op_shares(found, group), path))
    return written


__all__ = ["DIR", "RESULT", "edge_effects", "explain", "op_shares", "retrainings", "save"]
