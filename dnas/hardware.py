"""Hardware costs of a supernet's candidates, and the differentiable objectives built on them.

A `CostTable` holds, for every alpha group of a space, the cost of every candidate op at every
position: `per_group[group]` is (positions, rows, ops, resources), a position being one cell of
that type (DARTS: the normal cells share the normal alphas, each at its own resolution) or 1 for
a chain of blocks; `fixed` is what the network costs outside its mixed rows (stem, head). Any
resource fits: latency measured on the device (`latency_ms`), energy (`energy_mj`), memory
(`memory_mb`), or the space's cost model (parameters, multiply-adds, memory access).

The expected cost under mixing weights p (softmax, Gumbel samples, binary gates: whatever the
strategy mixes with) is linear in p:

    E[C]_r = fixed_r + sum_groups sum_positions sum_rows sum_ops p[row, op] * table[pos, row, op, r]

so one-hot weights give exactly the table's sum over the chosen ops, and its gradient is the
table itself. `OBJECTIVES` are the published ways of trading a task loss against E[C] and a
target T: ProxylessNAS' `mul_log` and `add_linear`, FBNet's `fbnet`, TF-NAS' `tfnas`.

Tables are JSON files (`save_table`, `load_table`; the format below) measured by dnas on the
device or written elsewhere; `read_proxyless_yaml` reads the ProxylessNAS authors' latency tables.

The JSON format (`FORMAT`, version 1)::

    {"format": "dnas.cost_table", "version": 1, "space": "proxyless",
     "resources": ["latency_ms"],            # the cost columns, in order
     "meta": {"backend": "cpu", "device_kind": "...", "jax": "0.10.2", "batch": 1,
              "dtype": "float32", "input_shape": [32, 32, 3], ...},   # free-form provenance
     "fixed": {"latency_ms": 0.31},
     "entries": [{"group": "blocks", "position": 0, "row": 3, "op": "mb5_e6",
                  "latency_ms": 0.12, "spread_ms": 0.004}, ...]}

Every (group, position, row, op) of the space has one entry, except parameter-free ops that
compute nothing (`none`, `zero`), which may be left out (cost 0). An entry may carry more fields
(`spread_ms`, `energy_mj`, `memory_mb`, ...): the columns read are `resources`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from dnas.types import Array, MixWeights

FORMAT = "dnas.cost_table"
VERSION = 1
FREE_OPS = ("none", "zero")  # ops that compute nothing: a table may leave them out (cost 0)


class CostTable(NamedTuple):
    """Costs of a space's candidates (see the module docstring)."""

    resources: tuple[str, ...]
    per_group: Mapping[str, np.ndarray]  # group -> (positions, rows, ops, resources)
    fixed: np.ndarray  # (resources,)
    meta: Mapping[str, Any] = {}

    def index(self, resource: str) -> int:
        if resource not in self.resources:
            raise KeyError(
                f"the cost table has no {resource!r}; it has {', '.join(self.resources)}"
            )
        return self.resources.index(resource)


def expected_cost(weights: MixWeights, table: CostTable) -> Array:
    """E[C] per resource, (resources,): `table.fixed` plus every mixed row's cost weighted by
    `weights` (group -> (rows, ops)), summed over the positions sharing the group's weights."""
    total = jnp.asarray(table.fixed, jnp.float32)
    for group, costs in table.per_group.items():
        w = weights[group]
        if w.shape != costs.shape[1:3]:
            raise ValueError(
                f"mixing weights of {group!r} have shape {tuple(w.shape)}, the cost table "
                f"(rows, ops) {costs.shape[1:3]}: a table of another space or size"
            )
        total = total + jnp.einsum("ek,nekr->r", w, jnp.asarray(costs, w.dtype))
    return total


def expected_row_costs(weights: MixWeights, table: CostTable) -> dict[str, Array]:
    """E[C] of every mixed row on its own: group -> (positions, rows, resources) (what SNAS'
    resource penalty takes the logarithm of)."""
    return {
        g: jnp.einsum("ek,nekr->ner", weights[g], jnp.asarray(c, weights[g].dtype))
        for g, c in table.per_group.items()
    }


# ------------------------------------------------------------------------------------------
# Objectives: (task loss, expected cost, target) -> the loss the architecture minimises.


def mul_log(a: float = 0.2, b: float = 0.3) -> Callable[[Array, Array, float], Array]:
    """ProxylessNAS' `mul#log`: loss * a * (log E / log T)^b (the authors' a=0.2, b=0.3)."""
    return lambda loss, cost, target: loss * a * (jnp.log(cost) / math.log(target)) ** b


def add_linear(scale: float = 0.1) -> Callable[[Array, Array, float], Array]:
    """ProxylessNAS' `add#linear`: loss + scale * (E - T) / T (the authors' scale=0.1)."""
    return lambda loss, cost, target: loss + scale * (cost - target) / target


def fbnet(a: float = 0.2, b: float = 0.6) -> Callable[[Array, Array, float], Array]:
    """FBNet's loss: loss * a * (log E)^b (alpha=0.2, beta=0.6; E in ms). No target: the
    trade-off is set by a and b."""
    return lambda loss, cost, target: loss * a * jnp.log(cost) ** b


def tfnas(scale: float = 0.1) -> Callable[[Array, Array, float], Array]:
    """TF-NAS' loss: loss + scale * |E / T - 1| (lambda=0.1), which pulls E to the target from
    either side."""
    return lambda loss, cost, target: loss + scale * jnp.abs(cost / target - 1.0)


OBJECTIVES: dict[str, Callable[..., Callable[[Array, Array, float], Array]]] = {
    "mul_log": mul_log,
    "add_linear": add_linear,
    "fbnet": fbnet,
    "tfnas": tfnas,
}


def objective(name: str, **kwargs: float) -> Callable[[Array, Array, float], Array]:
    try:
        factory = OBJECTIVES[name]
    except KeyError:
        raise KeyError(
            f"unknown hardware objective {name!r}; valid: {', '.join(OBJECTIVES)}"
        ) from None
    return factory(**kwargs)


# ------------------------------------------------------------------------------------------
# The JSON format.


class CostTableError(ValueError):
    """A cost table file that does not fit the format or the space; the message says what."""


def to_json(table: CostTable, space: str, ops: Sequence[str]) -> dict[str, Any]:
    """`table` in the JSON format, ops named by `ops` (the space's candidate order)."""
    entries = []
    for group, costs in table.per_group.items():
        positions, rows, num_ops, _ = costs.shape
        for n in range(positions):
            for e in range(rows):
                for k in range(num_ops):
                    values = {r: float(costs[n, e, k, i]) for i, r in enumerate(table.resources)}
                    entries.append(
                        {"group": group, "position": n, "row": e, "op": ops[k], **values}
                    )
    return {
        "format": FORMAT,
        "version": VERSION,
        "space": space,
        "resources": list(table.resources),
        "meta": dict(table.meta),
        "fixed": {r: float(v) for r, v in zip(table.resources, table.fixed, strict=True)},
        "entries": entries,
    }


def from_json(
    data: Mapping[str, Any], ops: Sequence[str], alpha_shapes: Mapping[str, tuple[int, int]],
    *, where: str = "cost table",
) -> CostTable:  # fmt: skip
    """A `CostTable` from the JSON format, checked against the space's `ops` and `alpha_shapes`
    (group -> (rows, ops)): a missing or unknown entry is a `CostTableError` naming it."""
    if data.get("format") != FORMAT:
        raise CostTableError(f"{where}: not a {FORMAT} file (format: {data.get('format')!r})")
    if data.get("version") != VERSION:
        raise CostTableError(
            f"{where}: version {data.get('version')!r}; this dnas reads version {VERSION}"
        )
    resources = tuple(data.get("resources") or ())
    if not resources:
        raise CostTableError(f'{where}: no resources listed (e.g. "resources": ["latency_ms"])')
    index = {op: k for k, op in enumerate(ops)}
    positions: dict[str, int] = {g: 0 for g in alpha_shapes}
    for entry in data.get("entries", []):
        if entry.get("group") not in alpha_shapes:
            raise CostTableError(
                f"{where}: entry of unknown group {entry.get('group')!r}; the space has "
                f"{', '.join(alpha_shapes)}"
            )
        positions[entry["group"]] = max(positions[entry["group"]], int(entry["position"]) + 1)
    per_group = {
        g: np.full((max(n, 1), *alpha_shapes[g], len(resources)), np.nan)
        for g, n in positions.items()
    }
    for entry in data.get("entries", []):
        g, n, e, op = entry["group"], int(entry["position"]), int(entry["row"]), entry["op"]
        if op not in index:
            raise CostTableError(f"{where}: unknown op {op!r}; the space's ops: {', '.join(ops)}")
        if not 0 <= e < alpha_shapes[g][0]:
            raise CostTableError(f"{where}: {g} row {e} out of range (0-{alpha_shapes[g][0] - 1})")
        try:
            per_group[g][n, e, index[op]] = [float(entry[r]) for r in resources]
        except KeyError as err:
            raise CostTableError(
                f"{where}: entry {g}/{n}/{e}/{op} has no {err.args[0]!r}"
            ) from None
    for g, costs in per_group.items():
        for k, op in enumerate(ops):
            if op in FREE_OPS:
                costs[:, :, k][np.isnan(costs[:, :, k])] = 0.0
        missing = np.argwhere(np.isnan(costs[..., 0]))
        if len(missing):
            n, e, k = missing[0]
            raise CostTableError(
                f"{where}: {len(missing)} entries missing, e.g. {g} position {n} row {e} op "
                f"{ops[k]!r}: every op of every row needs one (`dnas lut` measures them all)"
            )
    fixed_map = data.get("fixed") or {}
    fixed = np.array([float(fixed_map.get(r, 0.0)) for r in resources])
    return CostTable(resources, per_group, fixed, dict(data.get("meta") or {}))


def save_table(path: str | os.PathLike, table: CostTable, space: str, ops: Sequence[str]) -> None:
    from dnas import workdir  # lazy: workdir is I/O, this module is the objective's maths

    text = json.dumps(to_json(table, space, ops), indent=1) + "\n"
    workdir.atomic_write_text(path, text)


def load_table(
    path: str | os.PathLike, ops: Sequence[str], alpha_shapes: Mapping[str, tuple[int, int]]
) -> CostTable:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise CostTableError(f"{path}: not JSON ({err})") from None
    return from_json(data, ops, alpha_shapes, where=os.fspath(path))


# ------------------------------------------------------------------------------------------
# ProxylessNAS' published latency tables.

_SHAPE = re.compile(r"^\d+(x\d+)*$")


def parse_proxyless_key(key: str) -> dict[str, Any]:
    """One key of a ProxylessNAS latency table, e.g. `expanded_conv-input:112x112x16-output:
    56x56x24-expand:3-kernel:5-stride:2-idskip:0` -> {"op": "expanded_conv", "input": (112,
    112, 16), "output": (56, 56, 24), "expand": 3, "kernel": 5, "stride": 2, "idskip": 0}:
    shapes as tuples, numbers as ints, anything else as text."""
    op, *fields = key.split("-")
    out: dict[str, Any] = {"op": op}
    for field in fields:
        name, sep, value = field.partition(":")
        if not sep or not name:
            raise CostTableError(
                f"ProxylessNAS table key {key!r}: field {field!r} is not NAME:VALUE"
            )
        if _SHAPE.match(value):
            parts = tuple(int(v) for v in value.split("x"))
            out[name] = parts if "x" in value else parts[0]
        else:
            out[name] = value
    return out


def read_proxyless_yaml(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of a ProxylessNAS latency table (YAML: key -> {mean: ms, ...}, read with
    `yaml.safe_load`), each `parse_proxyless_key(key)` plus its `mean` (and `std` where given)
    in milliseconds."""
    import yaml  # lazy: only this reader needs it

    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise CostTableError(f"{path}: expected a mapping of table keys, got {type(data).__name__}")
    out = []
    for key, value in data.items():
        if not isinstance(value, dict) or "mean" not in value:
            raise CostTableError(f"{path}: entry {key!r} has no `mean` (milliseconds)")
        entry = parse_proxyless_key(str(key)) | {"mean": float(value["mean"])}
        if "std" in value:
            entry["std"] = float(value["std"])
        out.append(entry)
    return out


__all__ = [
    "FORMAT", "OBJECTIVES", "CostTable", "CostTableError", "add_linear", "expected_cost",
    "expected_row_costs", "fbnet", "from_json", "load_table", "mul_log", "objective",
    "parse_proxyless_key", "read_proxyless_yaml", "save_table", "tfnas", "to_json",
]  # fmt: skip
