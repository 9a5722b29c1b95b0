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
target T: ProxylessNAS' `mul_log` and `add_linear`, FBNet's `mul_logpow`, TF-NAS' `add_abs`.

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
(`spread_ms`, `energy_mj`, `memory_mb`, ...): the columns read are `resources`; the other numeric
fields are kept as `CostTable.extra` (e.g. the spread of each timing) and written back.

An optional `correction` (added by `dnas latency --fit`; a file without one reads as before, so
the version stays 1) calibrates the per-op sum against whole networks timed on the device:
resource -> {"scale": a, "offset": b, ...provenance}, and the cost `expected_cost` returns is
a * (fixed + sum of the entries) + b, still linear in the mixing weights (`uncorrected(table)`
gives the table's own sum)::

     "correction": {"latency_ms": {"scale": 1.08, "offset": 0.21, "n": 30,
                                   "mape_before": 0.19, "mape_after": 0.04}}

`within_budget` discretises under a budget: the most probable architecture (one op per row)
whose cost is in a range, found exactly by dynamic programming (`hardware.discretise=budget`).

`candidate_costs` and `cost_model` are the space's cost model (`COST_RESOURCES`: parameters,
multiply-adds, memory access per image), counted on its candidates (`Space.candidates`);
`dnas/latency.py` measures latency tables on the running JAX backend.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnas.types import Array, MixWeights

if TYPE_CHECKING:  # annotations only: the spaces' supernets build on this module
    import flax.linen as nn

    from dnas.spaces.base import Space

FORMAT = "dnas.cost_table"
VERSION = 1
FREE_OPS = ("none", "zero")  # ops that compute nothing: a table may leave them out (cost 0)
# The columns of the cost model (`candidate_costs`), per image: parameters, multiply-adds,
# memory access (parameters plus input and output activations, ShuffleNet V2's MAC).
COST_RESOURCES = ("params", "macs", "memory_access")
_ENTRY_KEYS = ("group", "position", "row", "op")


class CostTable(NamedTuple):
    """Costs of a space's candidates (see the module docstring)."""

    resources: tuple[str, ...]
    per_group: Mapping[str, np.ndarray]  # group -> (positions, rows, ops, resources)
    fixed: np.ndarray  # (resources,)
    meta: Mapping[str, Any] = {}
    # resource -> {"scale": a, "offset": b, ...}: `expected_cost` is a * (table's sum) + b.
    correction: Mapping[str, Mapping[str, float]] = {}
    # Per-entry fields that are not cost columns (e.g. `spread_ms`): name -> group ->
    # (positions, rows, ops), NaN where an entry has none.
    extra: Mapping[str, Mapping[str, np.ndarray]] = {}

    def index(self, resource: str) -> int:
        if resource not in self.resources:
            raise KeyError(
                f"the cost table has no {resource!r}; it has {', '.join(self.resources)}"
            )
        return self.resources.index(resource)


def expected_cost(weights: MixWeights, table: CostTable) -> Array:
    """E[C] per resource, (resources,): `table.fixed` plus every mixed row's cost weighted by
    `weights` (group -> (rows, ops)), summed over the positions sharing the group's weights;
    then the table's `correction` where it has one (a * E + b per resource, fitted on whole
    networks by `dnas latency --fit`; `uncorrected(table)` leaves it out)."""
    return _corrected(_table_sum(weights, table), table)


def uncorrected(table: CostTable) -> CostTable:
    """`table` without its correction: `expected_cost` is then the plain per-op sum."""
    return table._replace(correction={})


def _corrected(total: Array, table: CostTable) -> Array:
    if not table.correction:
        return total
    a, b = np.ones(len(table.resources)), np.zeros(len(table.resources))
    for r, fit in table.correction.items():
        a[table.index(r)], b[table.index(r)] = fit["scale"], fit["offset"]
    return total * jnp.asarray(a, total.dtype) + jnp.asarray(b, total.dtype)


def _table_sum(weights: MixWeights, table: CostTable) -> Array:
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
    resource penalty takes the logarithm of); the table's entries, without its correction (which
    is fitted on whole networks)."""
    return {
        g: jnp.einsum("ek,nekr->ner", weights[g], jnp.asarray(c, weights[g].dtype))
        for g, c in table.per_group.items()
    }


# ------------------------------------------------------------------------------------------
# Objectives: (task loss, expected cost, target) -> the loss the architecture minimises.


def mul_log(a: float = 0.2, b: float = 0.3) -> Callable[[Array, Array, float], Array]:
    """ProxylessNAS' `mul#log`: loss * a * (log E / log T)^b (the authors' a=0.2, b=0.3)."""
    return lambda loss, cost, target: loss * a * (jnp.log(cost) / jnp.log(target)) ** b


def add_linear(scale: float = 0.1) -> Callable[[Array, Array, float], Array]:
    """ProxylessNAS' `add#linear`: loss + scale * (E - T) / T (the authors' scale=0.1)."""
    return lambda loss, cost, target: loss + scale * (cost - target) / target


def mul_logpow(a: float = 0.2, b: float = 0.6) -> Callable[[Array, Array, float], Array]:
    """FBNet's loss: loss * a * (log E)^b (alpha=0.2, beta=0.6; E in ms). No target: the
    trade-off is set by a and b."""
    return lambda loss, cost, target: loss * a * jnp.log(cost) ** b


def add_abs(scale: float = 0.1) -> Callable[[Array, Array, float], Array]:
    """TF-NAS' loss: loss + scale * |E / T - 1| (lambda=0.1), which pulls E to the target from
    either side."""
    return lambda loss, cost, target: loss + scale * jnp.abs(cost / target - 1.0)


TARGETLESS = frozenset({"mul_logpow"})  # objectives that read no target T
OBJECTIVES: dict[str, Callable[..., Callable[[Array, Array, float], Array]]] = {
    "mul_log": mul_log,
    "add_linear": add_linear,
    "mul_logpow": mul_logpow,
    "add_abs": add_abs,
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
# The cost model: parameters, multiply-adds and memory access of each candidate.


def module_costs(module: nn.Module, input_shape: tuple[int, ...]) -> np.ndarray:
    """(3,) `COST_RESOURCES` of `module` applied at inference to one example of `input_shape`:
    its parameters, multiply-adds (`evaluate.model_stats`) and memory access (parameters plus
    the input's and the output's elements). Traced abstractly."""
    from dnas import evaluate  # lazy: only the cost model counts

    stats = evaluate.model_stats(module, input_shape, train=False)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    y, _ = jax.eval_shape(
        lambda k, x: module.init_with_output(k, x, train=False), jax.random.key(0), x
    )
    params = stats["params_total"]
    access = (
        params + math.prod(input_shape) + sum(math.prod(a.shape[1:]) for a in jax.tree.leaves(y))
    )
    return np.array([params, stats["macs"], access], np.float64)


def candidate_costs(
    candidates: Sequence[tuple], ops: Sequence[str], alpha_shapes: Mapping[str, tuple[int, int]]
) -> dict[str, np.ndarray]:
    """Alpha group -> (positions, rows, ops, 3) `module_costs` of every candidate (a
    `spaces.base.Candidate`, or a tuple of its fields: group, position, row, op, module, input
    shape); zeros where there is none (`none`). Groups without a candidate are left out.
    Identical candidates (the module's repr and the input shape) are counted once."""
    positions: dict[str, int] = {}
    for group, position, *_ in candidates:
        positions[group] = max(positions.get(group, 0), position + 1)
    out = {
        g: np.zeros((positions[g], *shape, len(COST_RESOURCES)))
        for g, shape in alpha_shapes.items() if g in positions
    }  # fmt: skip
    counted: dict[tuple, np.ndarray] = {}
    for group, position, row, op, module, shape in candidates:
        key = (repr(module), tuple(shape))
        if key not in counted:
            counted[key] = module_costs(module, tuple(shape))
        out[group][position, row, list(ops).index(op)] = counted[key]
    return out


def cost_model(space: Space, supernet: nn.Module, input_shape: tuple[int, ...]) -> CostTable:
    """The cost model of `space` as a `CostTable` (`COST_RESOURCES`, fixed part 0): the space's
    `op_costs` of `supernet` on inputs of `input_shape` (H, W, C), which spaces listing their
    candidates count with `candidate_costs`."""
    costs = space.op_costs(supernet, tuple(input_shape))
    meta = {"space": space.name, "input_shape": list(input_shape), "per": "image"}
    return CostTable(COST_RESOURCES, costs, np.zeros(len(COST_RESOURCES)), meta)


# ------------------------------------------------------------------------------------------
# Discretisation under a budget.


class Budgeted(NamedTuple):
    """`within_budget`'s answer: one-hot mixing weights of the chosen architecture, its cost
    by the table (with the table's correction), and its log-probability under the weights."""

    weights: dict[str, np.ndarray]
    cost: float
    log_prob: float


def within_budget(
    weights: Mapping[str, np.ndarray], table: CostTable, resource: str, high: float,
    low: float = 0.0, *, steps: int = 4000,
) -> Budgeted:  # fmt: skip
    """The most probable architecture whose cost is in [low, high]: one op per row of every
    group of `table`, maximising sum over rows of log weights[group][row, op] (the mixing
    weights as independent per-row distributions, e.g. softmax(alpha); a weight of 0, a masked
    or excluded op, is never chosen) subject to low <= cost <= high, the cost being what
    `expected_cost` gives for the one-hot weights (`resource`'s column, with the table's
    correction).

    A multiple-choice knapsack, solved exactly by dynamic programming over the cost in `steps`
    units of (high - fixed part) (each row's cost rounded to a unit: the sum is off by at most
    rows / (2 steps) of that, 0.26% for a 21-row chain); the answer's cost is then recomputed
    exactly. Every op must cost >= 0 (a latency, a size). ValueError, with the cheapest and the
    dearest architecture's costs, when no architecture fits."""
    r = table.index(resource)
    scale, offset = 1.0, 0.0
    if resource in table.correction:
        scale, offset = table.correction[resource]["scale"], table.correction[resource]["offset"]
    if scale <= 0:
        raise ValueError(f"the table's correction of {resource!r} has scale {scale} <= 0")
    # Bounds on the sum of the rows' costs (without the fixed part and the correction).
    fixed = float(table.fixed[r])
    hi, lo = (high - offset) / scale - fixed, (low - offset) / scale - fixed
    rows = []  # (group, row, costs (ops,), log-probabilities (ops,))
    for group, costs in table.per_group.items():
        c = np.asarray(costs, np.float64)[..., r].sum(0)  # over the positions sharing the row
        w = np.asarray(weights[group], np.float64)
        if w.shape != c.shape:
            raise ValueError(
                f"mixing weights of {group!r} have shape {w.shape}, the cost table {c.shape}"
            )
        if (c < 0).any():
            raise ValueError(f"the table has negative {resource!r} costs: budgets need >= 0")
        lp = np.where(w > 0, np.log(np.where(w > 0, w, 1.0)), -np.inf)
        rows += [(group, i, c[i], lp[i]) for i in range(c.shape[0])]
    cheapest = sum(min(c[np.isfinite(p)]) for _, _, c, p in rows)
    dearest = sum(max(c[np.isfinite(p)]) for _, _, c, p in rows)

    def total(x: float) -> float:
        return scale * (fixed + x) + offset

    if hi < cheapest or lo > dearest or hi < lo:
        raise ValueError(
            f"no architecture costs {resource} between {low:g} and {high:g}: by the table they "
            f"cost {total(cheapest):.4g} to {total(dearest):.4g}; set the target inside that range"
        )
    unit = max(hi, 1e-12) / steps
    n = steps + 1
    best = np.full(n, -np.inf)
    best[0] = 0.0
    choice = np.zeros((len(rows), n), np.int16)
    for i, (_, _, c, lp) in enumerate(rows):
        units = np.rint(c / unit).astype(np.int64)
        new = np.full(n, -np.inf)
        for k in np.flatnonzero(np.isfinite(lp)):
            u = units[k]
            if u >= n:
                continue
            cand = np.full(n, -np.inf)
            cand[u:] = best[: n - u] + lp[k]
            better = cand > new
            new[better], choice[i, better] = cand[better], k
        best = new
    floor = max(int(np.ceil(lo / unit - 1e-9)), 0)
    if floor >= n or not np.isfinite(best[floor:]).any():
        raise ValueError(
            f"no architecture costs {resource} between {low:g} and {high:g} (to the table's "
            f"resolution, {scale * unit:.3g}); widen the range"
        )
    at = floor + int(np.argmax(best[floor:]))
    log_prob = float(best[at])
    # Groups the table does not cost keep their weights (the space's rule chooses there).
    out = {g: np.asarray(w, np.float32) for g, w in weights.items()}
    out |= {g: np.zeros(np.asarray(weights[g]).shape, np.float32) for g in table.per_group}
    exact = 0.0
    for i in reversed(range(len(rows))):
        group, row, c, _ = rows[i]
        k = int(choice[i, at])
        out[group][row, k] = 1.0
        exact += c[k]
        at -= int(np.rint(c[k] / unit))
    return Budgeted(out, total(exact), log_prob)


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
                    for name, by_group in table.extra.items():
                        value = by_group.get(group)
                        if value is not None and not np.isnan(value[n, e, k]):
                            values[name] = float(value[n, e, k])
                    entries.append(
                        {"group": group, "position": n, "row": e, "op": ops[k], **values}
                    )
    out = {
        "format": FORMAT,
        "version": VERSION,
        "space": space,
        "resources": list(table.resources),
        "meta": dict(table.meta),
        "fixed": {r: float(v) for r, v in zip(table.resources, table.fixed, strict=True)},
    }
    if table.correction:
        out["correction"] = {r: dict(fit) for r, fit in table.correction.items()}
    return out | {"entries": entries}


def from_json(
    data: Mapping[str, Any], ops: Sequence[str], alpha_shapes: Mapping[str, tuple[int, int]],
    *, where: str = "cost table",
) -> CostTable:  # fmt: skip
    """A `CostTable` from the JSON format, checked against the space's `ops` and `alpha_shapes`
    (group -> (rows, ops)): a missing or unknown entry is a `CostTableError` naming it."""
    if not isinstance(data, Mapping):
        raise CostTableError(f"{where}: not a {FORMAT} file (a JSON {type(data).__name__})")
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
    entries = data.get("entries", [])
    if not isinstance(entries, list):
        raise CostTableError(f"{where}: `entries` must be a list of entries")
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or any(k not in entry for k in _ENTRY_KEYS):
            raise CostTableError(
                f"{where}: entry {i} is not an object with {', '.join(_ENTRY_KEYS)}"
            )
        if entry.get("group") not in alpha_shapes:
            raise CostTableError(
                f"{where}: entry of unknown group {entry.get('group')!r}; the space has "
                f"{', '.join(alpha_shapes)}"
            )
        if not isinstance(entry["position"], int) or not isinstance(entry["row"], int):
            raise CostTableError(f"{where}: entry {i}: position and row must be integers")
        if entry["position"] < 0:
            raise CostTableError(f"{where}: entry {i}: negative position {entry['position']}")
        positions[entry["group"]] = max(positions[entry["group"]], int(entry["position"]) + 1)
    per_group = {
        g: np.full((max(n, 1), *alpha_shapes[g], len(resources)), np.nan)
        for g, n in positions.items()
    }
    extra: dict[str, dict[str, np.ndarray]] = {}
    for entry in entries:
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
        except (TypeError, ValueError):
            raise CostTableError(
                f"{where}: entry {g}/{n}/{e}/{op}: a cost is not a number"
            ) from None
        for name, value in entry.items():
            if name in _ENTRY_KEYS or name in resources or not isinstance(value, (int, float)):
                continue
            if name not in extra:
                extra[name] = {h: np.full(c.shape[:3], np.nan) for h, c in per_group.items()}
            extra[name][g][n, e, index[op]] = float(value)
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
    correction = _read_correction(data.get("correction") or {}, resources, where)
    meta = dict(data.get("meta") or {})
    return CostTable(resources, per_group, fixed, meta, correction, extra)


def _read_correction(
    data: Any, resources: tuple[str, ...], where: str
) -> dict[str, dict[str, float]]:
    if not isinstance(data, Mapping):
        raise CostTableError(f"{where}: `correction` must map a resource to {{scale, offset}}")
    out = {}
    for r, fit in data.items():
        if r not in resources:
            raise CostTableError(
                f"{where}: correction of {r!r}, which is not a resource ({', '.join(resources)})"
            )
        ok = isinstance(fit, Mapping) and all(
            isinstance(fit.get(k), (int, float)) and math.isfinite(fit[k])
            for k in ("scale", "offset")
        )
        if not ok:
            raise CostTableError(
                f"{where}: correction of {r!r} needs finite numbers `scale` and `offset`"
            )
        out[r] = dict(fit)
    return out


def save_table(path: str | os.PathLike, table: CostTable, space: str, ops: Sequence[str]) -> None:
    from dnas import workdir  # lazy: workdir is I/O, this module is the objective's maths

    text = json.dumps(to_json(table, space, ops), indent=1) + "\n"
    workdir.atomic_write_text(path, text)


def _read(path: str | os.PathLike) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CostTableError(f"{path}: not JSON ({err})") from None


def table_space(path: str | os.PathLike) -> str:
    """The search space a table file names (its `space`)."""
    data = _read(path)
    if not isinstance(data, Mapping) or data.get("format") != FORMAT or "space" not in data:
        raise CostTableError(f"{path}: not a {FORMAT} file naming its space")
    return str(data["space"])


def load_table(
    path: str | os.PathLike, ops: Sequence[str], alpha_shapes: Mapping[str, tuple[int, int]],
    *, space: str | None = None,
) -> CostTable:  # fmt: skip
    """The table in file `path` (`from_json`); with `space`, a table of another space is a
    `CostTableError`."""
    data = _read(path)
    known = isinstance(data, Mapping) and data.get("format") == FORMAT
    if space is not None and known and data.get("space") != space:
        raise CostTableError(
            f"{path}: a table of search space {data.get('space')!r}, not {space!r}"
        )
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
    "COST_RESOURCES", "FORMAT", "OBJECTIVES", "TARGETLESS", "CostTable", "CostTableError",
    "add_abs", "add_linear", "candidate_costs", "cost_model", "expected_cost",
    "expected_row_costs", "from_json", "load_table", "module_costs", "mul_log", "mul_logpow",
    "objective", "parse_proxyless_key", "read_proxyless_yaml", "save_table", "table_space",
    "to_json", "uncorrected",
]  # fmt: skip
