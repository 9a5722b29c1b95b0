"""Hardware cost tables and objectives (issue 15, first part): the expected cost against
independent computations (one-hot sums, finite differences), the JSON format and the ProxylessNAS
YAML reader round-tripped, the published objectives at hand-computed points."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dnas import hardware, spaces

SPACE = spaces.get("darts_cnn")  # two groups (normal, reduce), several cells per group
SPACE_NB201 = spaces.get("nb201")
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
    assert hardware.objective("mul_logpow")(loss, cost, target) == pytest.approx(2 * 0.2 * 2**0.6)
    assert hardware.objective("add_abs")(loss, 0.5 * target, target) == pytest.approx(2 + 0.05)
    assert hardware.objective("add_abs", scale=1.0)(loss, 1.5 * target, target) == pytest.approx(
        2.5
    )
    # TF-NAS pulls the cost to the target from both sides; add_linear only downwards.
    slope = lambda name, c: jax.grad(lambda c: hardware.objective(name)(loss, c, target))(c)
    assert slope("add_abs", 0.5 * target) < 0 < slope("add_abs", 1.5 * target)
    assert slope("add_linear", 0.5 * target) > 0 and slope("add_linear", 1.5 * target) > 0
    with pytest.raises(KeyError, match="unknown hardware objective 'latency'"):
        hardware.objective("latency")


# ------------------------------------------------------------------------------------------
# The hardware objective in the search step (search_step.HardwareObjective).


def _toy_search(objective_name, order="first", **objective_kwargs):
    """A search step on a toy problem: the 'supernet' output is sum_k p_k (w . x_k) for one mixed
    row, p = softmax(alpha), the loss 0.5 (out - y)^2; a table of 3 ops' latencies. Returns the
    step, its initial state, and a function that computes the alpha objective directly."""
    from dnas import search_step, strategies
    from dnas.state import SearchState

    table = hardware.CostTable(
        ("latency_ms",), {"normal": np.array([[[[1.0], [4.0], [9.0]]]])}, np.array([2.0])
    )
    xs = jnp.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7]])  # one input per op

    def loss_fn(params, alphas, batch, key, step, mix=None):
        del key, step
        mix = mix if mix is not None else strategy.mix_weights(alphas, None, None)
        out = jnp.sum(mix["normal"][0] * (xs @ params["w"]))
        loss = 0.5 * (out - batch["y"]) ** 2
        return loss, {"loss": loss}

    space = type("S", (), {"mask": None})()
    ctx = strategies.Context(space=space, order=order, weight_tx=optax.sgd(0.1),
                             learning_rate=0.1)  # fmt: skip
    strategy = strategies.darts(ctx)
    objective = hardware.objective(objective_name, **objective_kwargs)
    target = 6.0
    hw = search_step.HardwareObjective(objective, table, "latency_ms", target, strategy)
    step_fn = search_step.make_step(
        loss_fn, strategy, optax.sgd(0.1), optax.sgd(1.0), lambda s: 0.1, hardware_objective=hw
    )
    params, alphas = {"w": jnp.array([0.5, -1.0])}, {"normal": jnp.array([[0.2, -0.1, 0.4]])}
    state = SearchState(
        step=jnp.zeros((), jnp.int32), params=params, alphas=alphas,
        weight_opt_state=optax.sgd(0.1).init(params), alpha_opt_state=optax.sgd(1.0).init(alphas),
        rng=jax.random.key(0),
    )  # fmt: skip

    def direct(alphas, params, y):
        loss = loss_fn(params, alphas, {"y": y}, None, None)[0]
        cost = hardware.expected_cost(strategy.final_weights(alphas), table)[0]
        return objective(loss, cost, target)

    return step_fn, state, direct


@pytest.mark.parametrize("name", ["mul_log", "add_linear", "mul_logpow", "add_abs"])
def test_the_search_step_descends_the_hardware_objective_exactly(name):
    """With SGD(lr=1) on the alphas, the step's alpha update is minus the gradient of
    objective(val loss, E[latency]) computed directly by autodiff (the chain rule through the
    hypergradient is exact), and its metrics report E[latency] and the objective."""
    step_fn, state, direct = _toy_search(name)
    val, train = {"y": jnp.asarray(3.0)}, {"y": jnp.asarray(-1.0)}
    new, metrics = jax.jit(step_fn)(state, train, val)
    expected = jax.grad(direct)(state.alphas, state.params, val["y"])
    np.testing.assert_allclose(
        state.alphas["normal"] - new.alphas["normal"], expected["normal"], rtol=1e-5, atol=1e-7
    )
    p = np.exp([0.2, -0.1, 0.4]) / np.exp([0.2, -0.1, 0.4]).sum()
    np.testing.assert_allclose(metrics["val/expected_latency_ms"], 2.0 + p @ [1, 4, 9], rtol=1e-6)
    np.testing.assert_allclose(
        metrics["val/objective"], direct(state.alphas, state.params, val["y"]), rtol=1e-6
    )


def test_the_hardware_objective_pulls_the_alphas_to_cheap_ops():
    """Many steps of add_linear with a large scale: the probability of the cheapest op grows."""
    step_fn, state, _ = _toy_search("add_linear", scale=50.0)
    val, train = {"y": jnp.asarray(0.0)}, {"y": jnp.asarray(0.0)}
    step_fn = jax.jit(step_fn)
    for _ in range(20):
        state, _ = step_fn(state, train, val)
    p = jax.nn.softmax(state.alphas["normal"][0])
    assert p[0] > 0.9


def test_a_search_of_a_config_with_a_hardware_objective_optimises_it():
    """`config.hardware` through `search_step.setup`: the space's cost model is the table, the
    step reports E[macs] under softmax(alpha) and the objective, and the alpha gradient is the
    objective's."""
    from dnas import configlib, data, search_step

    config = configlib.default_config()
    config.space, config.search.layers, config.search.C = "nb201", 1, 2
    config.search.batch_size, config.search.alpha_lr = 8, 0.1
    config.hardware.objective, config.hardware.resource = "add_linear", "macs"
    config.hardware.target, config.hardware.scale = 1e4, 1e3
    configlib.validate(config)
    su = search_step.setup(config)
    state = search_step.create_state(config, su)
    train = data.batch_at(su.weights_source, 8, 0, seed=config.seed)
    val = data.batch_at(su.alphas_source, 8, 0, seed=config.seed)
    step = jax.jit(su.step_fn)
    new, metrics = step(state, train, val)
    table = hardware.CostTable(
        hardware.COST_RESOURCES, su.space.op_costs(su.model, su.info.input_shape), np.zeros(3)
    )
    p = {g: jax.nn.softmax(a, -1) for g, a in state.alphas.items()}
    macs = hardware.expected_cost(p, table)[1]
    assert macs > 0
    np.testing.assert_allclose(metrics["val/expected_macs"], macs, rtol=1e-5)
    np.testing.assert_allclose(
        metrics["val/objective"], metrics["val/loss"] + 1e3 * (macs - 1e4) / 1e4, rtol=1e-5
    )
    # The cost term dominates the gradient (scale 1e3 against a loss gradient of ~1e-3): Adam's
    # first step moves every alpha by -lr * sign(gradient), down for the ops with more
    # multiply-adds than the row's expectation, up for the others.
    c = table.per_group["normal"][0, :, :, 1]  # (rows, ops) multiply-adds
    above = c > np.sum(np.asarray(p["normal"]) * c, -1, keepdims=True)
    moved = np.asarray(new.alphas["normal"] - state.alphas["normal"])
    np.testing.assert_allclose(moved, np.where(above, -0.1, 0.1), rtol=1e-3)


def test_hardware_lut_measure_times_the_search_supernet_once_per_workdir(tmp_path, monkeypatch):
    """hardware.lut=measure: the search's own supernet timed on this device into
    <workdir>/lut.json, with the search's sizes in its meta; a resumed search reads it again
    instead of timing anew."""
    from dnas import configlib, latency, search, search_step

    config = configlib.default_config()
    config.space, config.search.layers, config.search.C = "nb201", 1, 2
    config.hardware.objective, config.hardware.target = "add_abs", 1.0
    config.hardware.lut, config.progress = "measure", False
    configlib.validate(config)
    calls = []
    measure = latency.measure_table
    monkeypatch.setattr(
        latency, "measure_table",
        lambda *a, **kw: calls.append(kw) or measure(*a, **kw | {"runs": 2, "fixed_samples": 1}),
    )  # fmt: skip
    measured = search.measured_lut(config, str(tmp_path))
    assert measured.hardware.lut == str(tmp_path / "lut.json") and config.hardware.lut == "measure"
    assert len(calls) == 1 and calls[0]["batch"] == 1
    table = hardware.load_table(measured.hardware.lut, SPACE_NB201.ops, SPACE_NB201.alpha_shapes)
    assert table.meta["C"] == 2 and table.meta["input_shape"] == [8, 8, 1]
    assert np.all(table.per_group["normal"][..., SPACE_NB201.op_index("nor_conv_3x3"), 0] > 0)
    assert search.measured_lut(config, str(tmp_path)).hardware.lut == measured.hardware.lut
    assert len(calls) == 1  # read again, not timed again
    # The search's set-up takes it, and refuses a table of other sizes.
    other = configlib.override(measured, ["search.C=4"])
    with pytest.raises(configlib.ConfigError, match=r"was measured for \{'C': 2\}"):
        search_step.cost_table(other, SPACE_NB201, None, (8, 8, 1))


# --------------------------------------------------------------------------------------------------
# Discretisation under a budget (hardware.discretise=budget).


def _brute_force(log_p, costs, fixed, low, high):
    """The best (log-probability, ops) over every architecture of rows x ops, by enumeration."""
    import itertools

    best = (-np.inf, None)
    for ops_ in itertools.product(*(range(c.shape[0]) for c in costs)):
        cost = fixed + sum(c[k] for c, k in zip(costs, ops_, strict=True))
        lp = sum(p[k] for p, k in zip(log_p, ops_, strict=True))
        if low <= cost <= high and lp > best[0]:
            best = (lp, ops_)
    return best


def test_within_budget_is_the_most_probable_architecture_in_the_range_by_enumeration():
    rng = np.random.default_rng(0)
    for trial in range(40):
        rows, ops_ = int(rng.integers(1, 5)), int(rng.integers(2, 5))
        costs = rng.uniform(0, 1, (2, rows, ops_, 1))  # two positions share each row's weights
        w = rng.dirichlet(np.ones(ops_), rows)
        w[rng.integers(rows), rng.integers(ops_)] = 0.0  # a masked op: never chosen
        correction = {"latency_ms": {"scale": 1.1, "offset": 0.2}} if trial % 2 else {}
        table = hardware.CostTable(("latency_ms",), {"g": costs}, np.array([0.3]),
                                   correction=correction)  # fmt: skip
        a, b = (1.1, 0.2) if trial % 2 else (1.0, 0.0)
        row_costs = [a * c for c in costs.sum(0)[..., 0]]
        high = a * (0.3 + rng.uniform(0.5, 1.5) * rows) + b
        low = high - rng.uniform(0.1, 1.0)
        with np.errstate(divide="ignore"):
            want_lp, want = _brute_force(np.log(w), row_costs, a * 0.3 + b, low, high)
        if want is None:
            with pytest.raises(ValueError, match="no architecture costs"):
                hardware.within_budget({"g": w}, table, "latency_ms", high, low, steps=10**5)
            continue
        got = hardware.within_budget({"g": w}, table, "latency_ms", high, low, steps=10**5)
        np.testing.assert_allclose(got.log_prob, want_lp, rtol=1e-9)
        one_hot = got.weights["g"]
        assert np.all(one_hot.sum(1) == 1) and np.all(w[one_hot == 1] > 0)
        # Its cost is expected_cost of the one-hot weights, inside the range.
        np.testing.assert_allclose(
            got.cost, hardware.expected_cost({"g": one_hot}, table)[0], rtol=1e-5
        )
        assert low - 1e-6 <= got.cost <= high + 1e-6


def test_within_budget_says_the_range_of_costs_when_nothing_fits():
    table = hardware.CostTable(("latency_ms",), {"g": np.array([[[[1.0], [2.0]]]])}, np.zeros(1))
    w = {"g": np.array([[0.5, 0.5]])}
    with pytest.raises(ValueError, match="cost 1 to 2; set the target inside that range"):
        hardware.within_budget(w, table, "latency_ms", 0.5)
    assert hardware.within_budget(w, table, "latency_ms", 1.5).cost == 1.0


def test_a_search_discretised_under_a_budget(tmp_path):
    """search.budget_choice and save_budget on the nb201 space's cost model (parameters): the
    genotype is the most probable one of at most `target` parameters and at least floor x
    target, found by enumerating nb201's 5^6 genotypes; budget.json says it and what the argmax
    would be."""
    from dnas import configlib, search, search_step

    config = configlib.default_config()
    config.space, config.search.layers, config.search.C = "nb201", 1, 2
    config.hardware.discretise, config.hardware.resource = "budget", "params"
    config.hardware.target = 1.0  # set below, from the argmax's size
    su = search_step.setup(configlib.validate(config))
    table = hardware.cost_model(su.space, su.model, su.info.input_shape)
    costs = table.per_group["normal"][..., 0].sum(0)  # (rows, ops) parameters
    rng = np.random.default_rng(3)
    weights = {"normal": rng.dirichlet(np.ones(5), 6)}
    argmax = su.space.discretise(weights)
    argmax_cost = float(hardware.expected_cost(su.space.genotype_mix(argmax), table)[0])
    # The budget: a random genotype's size (so something fits), below the argmax's.
    other = su.space.random_genotype(np.random.default_rng(0))
    target = float(hardware.expected_cost(su.space.genotype_mix(other), table)[0])
    assert 0 < target < argmax_cost
    config.hardware.target, config.hardware.floor = target, 0.9
    want_lp, want = _brute_force(np.log(weights["normal"]), list(costs), 0.0,
                                 0.9 * config.hardware.target, config.hardware.target)  # fmt: skip
    budget = search_step.cost_table(config, su.space, su.model, su.info.input_shape)
    genotype = search.budget_choice(config, su.space, budget, weights)
    search.save_budget(config, su.space, budget, weights, genotype, argmax, str(tmp_path))
    mix = su.space.genotype_mix(genotype)["normal"]
    assert tuple(np.argmax(mix, 1)) == want
    record = json.loads((tmp_path / search.BUDGET).read_text())
    assert record["chosen"]["genotype"] == genotype.to_string()
    assert record["argmax"]["genotype"] == argmax.to_string()
    np.testing.assert_allclose(record["argmax"]["params"], argmax_cost)
    assert 0.9 * config.hardware.target <= record["chosen"]["params"] <= config.hardware.target
    np.testing.assert_allclose(record["chosen"]["log_prob"], want_lp, rtol=1e-6)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"hardware.discretise": "budget", "hardware.resource": "params"}, "needs hardware.target"),
        ({"hardware.discretise": "budget", "hardware.target": 1e4, "hardware.resource": "params",
          "space": "darts_cnn"}, "chooses one op per row"),
        ({"hardware.discretise": "budget", "hardware.target": 1e4, "hardware.resource": "params",
          "search.selection": "random"}, "set one of them"),
        ({"hardware.discretise": "argmin"}, "hardware.discretise"),
        ({"hardware.floor": 1.5}, "hardware.floor"),
    ],
)  # fmt: skip
def test_budget_discretisation_refuses_what_it_cannot_do(change, message):
    from dnas import configlib

    config = configlib.default_config()
    config.space, config.search.layers = "nb201", 1
    for key, value in change.items():
        section, _, field = key.rpartition(".")
        (config[section] if section else config)[field] = value
    with pytest.raises(configlib.ConfigError, match=message):
        configlib.validate(config)


def test_a_budget_nothing_meets_fails_before_the_search_trains(tmp_path):
    from dnas import configlib, search

    config = configlib.default_config()
    config.space, config.search.layers, config.search.C = "nb201", 1, 2
    config.hardware.discretise, config.hardware.resource = "budget", "params"
    # 0.99e9 to 1e9 parameters: no nb201 cell of 2 channels is so large.
    config.hardware.target, config.hardware.floor, config.progress = 1e9, 0.99, False
    with pytest.raises(configlib.ConfigError, match=r"no architecture costs params between "
                                                    r"9.9e\+08 and 1e\+09: by the table they "
                                                    r"cost 0 to \d+"):  # fmt: skip
        search.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists() or not any(
        (tmp_path / "run" / "checkpoints").iterdir()
    )
