"""Hardware cost tables and objectives (issue 15, first part): the expected cost against
independent computations (one-hot sums, finite differences), the JSON format and the ProxylessNAS
YAML reader round-tripped, the published objectives at hand-computed points."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import hardware, spaces

SPACE = spaces.get("darts_cnn")  # two groups (normal, reduce), several cells per group
SHAPES = dict(SPACE.alpha_shapes)


def _table(seed: int = 0, positions: dict | None = None) -> hardware.CostTable:
    rng = np.random.default_rng(seed)
    positions = positions or {"normal": 3, "reduce": 2}
    per_group = {
        g: rng.uniform(0.1, 2.0, (positions[g], *SHAPES[g], 2)) for g in SHAPES
    }  # fmt: skip
    for costs in per_group.values():
        costs[:, :, SPACE.op_index("none")] = 0.0
    return hardware.CostTable(("latency_ms", "energy_mj"), per_group, np.array([0.5, 3.0]))


def test_one_hot_weights_cost_exactly_the_table_sum_of_the_chosen_ops():
    table = _table()
    rng = np.random.default_rng(1)
    chosen = {g: rng.integers(0, SPACE.num_ops, SHAPES[g][0]) for g in SHAPES}
    weights = {g: jax.nn.one_hot(chosen[g], SPACE.num_ops) for g in SHAPES}
    want = table.fixed.copy()
    for g, ops in chosen.items():
        for pos in range(table.per_group[g].shape[0]):
            for row, op in enumerate(ops):
                want += table.per_group[g][pos, row, op]
    got = hardware.expected_cost(weights, table)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_expected_cost_and_its_gradient_against_finite_differences():
    table = _table()
    alphas = SPACE.init_alphas(jax.random.key(0), 1.0)
    cost = lambda a: hardware.expected_cost({g: jax.nn.softmax(v) for g, v in a.items()}, table)[0]
    grad = jax.grad(cost)(alphas)

    def reference(a: dict) -> float:  # float64 numpy, written out: the same E[LAT]
        total = table.fixed[0]
        for g, logits in a.items():
            p = np.exp(logits - logits.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            total += (p[None] * table.per_group[g][..., 0]).sum()
        return total

    a64 = {g: np.asarray(v, np.float64) for g, v in alphas.items()}
    np.testing.assert_allclose(cost(alphas), reference(a64), rtol=1e-5)
    eps = 1e-5
    for g in SHAPES:
        for row, op in [(0, 0), (3, 4), (SHAPES[g][0] - 1, SPACE.num_ops - 1)]:
            plus, minus = dict(a64), dict(a64)
            plus[g], minus[g] = a64[g].copy(), a64[g].copy()
            plus[g][row, op] += eps
            minus[g][row, op] -= eps
            fd = (reference(plus) - reference(minus)) / (2 * eps)
            np.testing.assert_allclose(grad[g][row, op], fd, rtol=1e-3, atol=1e-6)
    # With respect to the weights themselves the gradient is the table, summed over positions.
    weights = {g: jax.nn.softmax(a) for g, a in alphas.items()}
    by_weights = jax.grad(lambda w: hardware.expected_cost(w, table)[1])(weights)
    for g in SHAPES:
        np.testing.assert_allclose(by_weights[g], table.per_group[g][..., 1].sum(0), rtol=1e-6)


def test_row_costs_add_up_to_the_expected_cost():
    table = _table(2)
    weights = {g: jax.nn.softmax(a) for g, a in SPACE.init_alphas(jax.random.key(3), 1.0).items()}
    rows = hardware.expected_row_costs(weights, table)
    total = table.fixed + sum(np.asarray(r).sum((0, 1)) for r in rows.values())
    np.testing.assert_allclose(hardware.expected_cost(weights, table), total, rtol=1e-6)


def test_a_table_of_another_shape_is_refused():
    table = _table()
    weights = {g: jnp.ones((2, SPACE.num_ops)) for g in SHAPES}
    with pytest.raises(ValueError, match="a table of another space or size"):
        hardware.expected_cost(weights, table)


def test_the_json_format_round_trips(tmp_path):
    table = _table(4)._replace(meta={"backend": "cpu", "batch": 1})
    path = tmp_path / "lut.json"
    hardware.save_table(path, table, SPACE.name, SPACE.ops)
    data = json.loads(path.read_text())
    assert data["format"] == "dnas.cost_table" and data["version"] == 1
    assert data["fixed"] == {"latency_ms": 0.5, "energy_mj": 3.0}
    back = hardware.load_table(path, SPACE.ops, SHAPES)
    assert back.resources == table.resources and back.meta == table.meta
    for g in SHAPES:
        np.testing.assert_array_equal(back.per_group[g], table.per_group[g])
    # `none` may be left out (it computes nothing); any other missing entry is named.
    data["entries"] = [e for e in data["entries"] if e["op"] != "none"]
    again = hardware.from_json(data, SPACE.ops, SHAPES)
    np.testing.assert_array_equal(again.per_group["normal"], table.per_group["normal"])
    del data["entries"][5]
    with pytest.raises(hardware.CostTableError, match="1 entries missing"):
        hardware.from_json(data, SPACE.ops, SHAPES)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"format": "other"}, "not a dnas.cost_table file"),
        ({"version": 2}, "this dnas reads version 1"),
        ({"resources": []}, "no resources listed"),
        ({"entries": [{"group": "cells", "position": 0, "row": 0, "op": "none"}]},
         "unknown group 'cells'"),
        ({"entries": [{"group": "normal", "position": 0, "row": 0, "op": "conv_9x9",
                       "latency_ms": 1.0}]}, "unknown op 'conv_9x9'"),
        ({"entries": [{"group": "normal", "position": 0, "row": 99, "op": "none",
                       "latency_ms": 1.0}]}, "row 99 out of range"),
        ({"entries": [{"group": "normal", "position": 0, "row": 0, "op": "skip_connect"}]},
         "has no 'latency_ms'"),
    ],
)  # fmt: skip
def test_a_malformed_table_is_one_clear_error(change, message):
    data = {"format": "dnas.cost_table", "version": 1, "resources": ["latency_ms"], "entries": []}
    with pytest.raises(hardware.CostTableError, match=message):
        hardware.from_json(data | change, SPACE.ops, SHAPES)


def test_the_proxylessnas_yaml_reader(tmp_path):
    path = tmp_path / "mobile_lut.yaml"
    path.write_text(
        "expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:5-stride:2-idskip:0:\n"
        "  count: 20\n  mean: 1.4218\n  std: 0.0132\n"
        "Conv_1-input:7x7x320-output:7x7x1280:\n  count: 20\n  mean: 0.9157\n"
    )
    entries = hardware.read_proxyless_yaml(path)
    assert entries == [
        {"op": "expanded_conv", "input": (112, 112, 16), "output": (56, 56, 24), "expand": 3,
         "kernel": 5, "stride": 2, "idskip": 0, "mean": 1.4218, "std": 0.0132},
        {"op": "Conv_1", "input": (7, 7, 320), "output": (7, 7, 1280), "mean": 0.9157},
    ]  # fmt: skip
    path.write_text("expanded_conv-input:8x8x16:\n  count: 3\n")
    with pytest.raises(hardware.CostTableError, match="has no `mean`"):
        hardware.read_proxyless_yaml(path)


def test_the_objectives_at_hand_computed_points():
    loss, target = 2.0, math.e  # log T = 1
    cost = math.e**2  # log E = 2
    assert hardware.objective("mul_log")(loss, cost, target) == pytest.approx(2 * 0.2 * 2**0.3)
    assert hardware.objective("add_linear")(loss, cost, target) == pytest.approx(
        2 + 0.1 * (math.e**2 - math.e) / math.e
    )
    assert hardware.objective("fbnet")(loss, cost, target) == pytest.approx(2 * 0.2 * 2**0.6)
    assert hardware.objective("tfnas")(loss, 0.5 * target, target) == pytest.approx(2 + 0.05)
    assert hardware.objective("tfnas", scale=1.0)(loss, 1.5 * target, target) == pytest.approx(2.5)
    # TF-NAS pulls the cost to the target from both sides; add_linear only downwards.
    slope = lambda name, c: jax.grad(lambda c: hardware.objective(name)(loss, c, target))(c)
    assert slope("tfnas", 0.5 * target) < 0 < slope("tfnas", 1.5 * target)
    assert slope("add_linear", 0.5 * target) > 0 and slope("add_linear", 1.5 * target) > 0
    with pytest.raises(KeyError, match="unknown hardware objective 'latency'"):
        hardware.objective("latency")
