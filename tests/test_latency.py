"""Latency tables measured by dnas (issue 15, points 2 and 5): the cell spaces' candidates against
their cost model, `measure_table` on a tiny NAS-Bench-201 supernet (C=4, one cell per stage, 8x8
digits, 3 runs), the table's JSON round trip with the new `correction`, `dnas lut` and `dnas
latency` end to end, their one-line refusals, and `time_fn`'s units. No test asserts a speed: the
machine is shared; only that times are positive, finite and in milliseconds."""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_space_recipe import SPACE as CHAIN  # a registered-in-test space without candidates

from dnas import cli, configlib, hardware, latency, search_step, spaces

NB201 = spaces.get("nb201")
SHAPE = (8, 8, 1)  # digits
TINY = dict(num_classes=10, C=4, layers=1)
LUT_FLAGS = ["--batch", "2", "--runs", "3", "--warmup", "1", "--fixed-samples", "2",
             "--config.search.C=4", "--config.search.layers=1"]  # fmt: skip


@pytest.mark.parametrize(
    "name,size", [("darts_cnn", dict(C=4, layers=5)), ("nb201", dict(C=4, layers=1))]
)
def test_candidates_cover_every_mixed_edge_and_count_as_the_cost_model(name, size):
    space = spaces.get(name)
    model = space.supernet(10, **size)
    candidates = space.candidates(model, SHAPE)
    costs = space.op_costs(model, SHAPE)
    none = space.op_index("none")
    want = {
        (g, n, e, k)
        for g, c in costs.items()
        for n in range(c.shape[0]) for e in range(c.shape[1]) for k in range(c.shape[2])
        if k != none
    }  # fmt: skip
    got = [(c.group, c.position, c.row, space.op_index(c.op)) for c in candidates]
    assert len(got) == len(set(got)) and set(got) == want
    counted = {}
    for c in candidates:  # each candidate on its own: the same multiply-adds as the table's
        key = (repr(c.module), c.input_shape)
        if key not in counted:
            counted[key] = hardware.module_costs(c.module, c.input_shape)
        macs = costs[c.group][c.position, c.row, space.op_index(c.op), 1]
        assert counted[key][1] == macs, (c.group, c.position, c.row, c.op)
        assert len(c.input_shape) == 3
    table = hardware.cost_model(space, model, SHAPE)
    assert table.resources == hardware.COST_RESOURCES
    for g in costs:
        np.testing.assert_array_equal(table.per_group[g], costs[g])


@pytest.fixture(scope="module")
def measured():
    return latency.measure_table(
        NB201, SHAPE, **TINY, batch=2, runs=3, warmup=1, fixed_samples=2,
        meta={"dataset": "digits"},
    )  # fmt: skip


def test_measure_table_times_every_candidate(measured):
    table = measured
    assert table.resources == ("latency_ms",)
    model = NB201.supernet(10, C=4, layers=1)
    lat, spread = table.per_group["normal"][..., 0], table.extra["spread_ms"]["normal"]
    for c in NB201.candidates(model, SHAPE):
        k = NB201.op_index(c.op)
        assert np.isfinite(lat[c.position, c.row, k]) and lat[c.position, c.row, k] > 0
        assert np.isfinite(spread[c.position, c.row, k]) and spread[c.position, c.row, k] >= 0
    assert (lat[:, :, NB201.op_index("none")] == 0).all()
    # Identical modules at identical shapes are timed once: one entry per (cell, op) here.
    np.testing.assert_array_equal(lat, np.broadcast_to(lat[:, :1], lat.shape))
    meta = table.meta
    for key in ("backend", "device_kind", "jax", "batch", "dtype", "input_shape", "runs",
                "warmup", "space", "C", "layers", "date", "fixed_estimate"):  # fmt: skip
        assert key in meta, key
    assert (meta["space"], meta["C"], meta["layers"], meta["batch"], meta["runs"]) == (
        "nb201",
        4,
        1,
        2,
        3,
    )
    assert meta["input_shape"] == list(SHAPE) and meta["dataset"] == "digits"
    assert len(meta["fixed_residuals_ms"]) == 2 and np.isfinite(table.fixed).all()
    assert table.fixed[0] == pytest.approx(np.median(meta["fixed_residuals_ms"]))


def test_the_measured_table_round_trips(measured, tmp_path):
    path = tmp_path / "lut.json"
    hardware.save_table(path, measured, NB201.name, NB201.ops)
    data = json.loads(path.read_text())
    assert data["version"] == 1 and "correction" not in data
    assert all("spread_ms" in e for e in data["entries"] if e["op"] != "none")
    back = hardware.load_table(path, NB201.ops, NB201.alpha_shapes, space="nb201")
    np.testing.assert_array_equal(back.per_group["normal"], measured.per_group["normal"])
    np.testing.assert_array_equal(back.fixed, measured.fixed)
    np.testing.assert_array_equal(
        back.extra["spread_ms"]["normal"], measured.extra["spread_ms"]["normal"]
    )
    assert back.meta == json.loads(json.dumps(measured.meta)) and back.correction == {}


def test_a_correction_is_stored_read_and_applied(measured, tmp_path):
    genotype = NB201.random_genotype(np.random.default_rng(0))
    raw = latency.predict(NB201, measured, genotype)["latency_ms"]
    fit = {"scale": 2.0, "offset": 0.5, "n": 7}
    table = measured._replace(correction={"latency_ms": fit})
    path = tmp_path / "lut.json"
    hardware.save_table(path, table, NB201.name, NB201.ops)
    assert json.loads(path.read_text())["correction"] == {"latency_ms": fit}
    back = hardware.load_table(path, NB201.ops, NB201.alpha_shapes)
    assert back.correction == {"latency_ms": fit}
    got = latency.predict(NB201, back, genotype)["latency_ms"]
    assert got == pytest.approx(2.0 * raw + 0.5, rel=1e-5)
    assert latency.predict(NB201, hardware.uncorrected(back), genotype)["latency_ms"] == (
        pytest.approx(raw, rel=1e-6)
    )
    data = json.loads(path.read_text())
    for bad, message in [({"energy_mj": fit}, "not a resource"),
                         ({"latency_ms": {"scale": 1.0}}, "finite numbers")]:  # fmt: skip
        with pytest.raises(hardware.CostTableError, match=message):
            hardware.from_json(data | {"correction": bad}, NB201.ops, NB201.alpha_shapes)


def test_fit_correction_and_the_agreement_measures():
    p = np.array([1.0, 2.0, 3.0, 4.0])
    fit = latency.fit_correction(p, 1.5 * p + 0.25)
    assert fit["scale"] == pytest.approx(1.5) and fit["offset"] == pytest.approx(0.25)
    assert fit["mape_after"] == pytest.approx(0.0, abs=1e-12) and fit["n"] == 4
    flat = latency.fit_correction([2.0, 2.0], [3.0, 3.0])  # no spread: a per-network offset
    assert (flat["scale"], flat["offset"]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        latency.fit_correction([1.0], [1.0])
    assert latency.mape([1.1, 1.8], [1.0, 2.0]) == pytest.approx(0.1)
    x, y = [1.0, 2.0, 2.0, 3.0, 5.0], [2.0, 1.0, 4.0, 4.0, 9.0]  # ties on both sides
    ranks = latency._average_ranks(np.array(x))
    np.testing.assert_array_equal(ranks, [0.0, 1.5, 1.5, 3.0, 4.0])
    own = np.corrcoef(ranks, latency._average_ranks(np.array(y)))[0, 1]
    assert latency.rank_correlation(x, y) == pytest.approx(own)
    assert latency.rank_correlation([1.0], [2.0]) is None


def test_time_fn_measures_milliseconds():
    median, spread = latency.time_fn(lambda: time.sleep(0.02), runs=3, warmup=0)
    assert 15 < median < 200 and 0 <= spread < 200  # a sanity check of units, not a speed
    with pytest.raises(ValueError, match="runs"):
        latency.time_fn(lambda: None, runs=0)


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_dnas_lut_and_dnas_latency_end_to_end(tmp_path, capsys):
    path = tmp_path / "lut.json"
    code, out, err = _run(capsys, "lut", "--space", "nb201", *LUT_FLAGS, "--out", str(path))
    assert code == 0, err
    assert "normal: 72 candidates" in out and "wrote" in out
    table = hardware.load_table(path, NB201.ops, NB201.alpha_shapes, space="nb201")
    assert table.meta["dataset"] == "digits" and table.meta["C"] == 4
    code, out, err = _run(capsys, "latency", "--space", "nb201", "--lut", str(path),
                          "--random", "3", "--seed", "1", "--fit")  # fmt: skip
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    archs, summary = lines[:-1], lines[-1]
    assert len(archs) == 3 and summary["n"] == 3
    for line in archs:
        assert {"genotype", "predicted_ms", "measured_ms", "spread_ms"} <= set(line)
        assert line["measured_ms"] > 0 and NB201.name == spaces.parse(line["genotype"]).space
    assert {"spearman", "mape", "mape_before", "mape_after", "scale", "offset"} <= set(summary)
    fitted = hardware.load_table(path, NB201.ops, NB201.alpha_shapes)
    fit = fitted.correction["latency_ms"]
    assert (fit["scale"], fit["offset"]) == (summary["scale"], summary["offset"])
    # The next prediction applies the correction to the table's own sum.
    genotype = spaces.parse(archs[0]["genotype"])
    code, out, err = _run(capsys, "latency", "--space", "nb201", "--lut", str(path),
                          "--genotype", archs[0]["genotype"], "--runs", "2")  # fmt: skip
    assert code == 0, err
    line = json.loads(out.splitlines()[0])
    raw = latency.predict(NB201, hardware.uncorrected(fitted), genotype)["latency_ms"]
    assert line["predicted_ms"] == pytest.approx(fit["scale"] * raw + fit["offset"], rel=1e-5)
    assert json.loads(out.splitlines()[1])["spearman"] is None  # one network: undefined
    # Another batch: refused, or timed with a warning when allowed.
    argv = ["latency", "--space", "nb201", "--lut", str(path), "--genotype", archs[0]["genotype"],
            "--runs", "2", "--batch", "4"]  # fmt: skip
    code, out, err = _run(capsys, *argv)
    assert code == 2 and "batch 4 (table: 2)" in err and "--allow-mismatch" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = _run(capsys, *argv, "--allow-mismatch")
    assert code == 0 and "warning: batch 4" in err and len(out.splitlines()) == 2


def test_refusals_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(spaces.SPACES, CHAIN.name, CHAIN)
    out_path = tmp_path / "chain.json"
    code, _, err = _run(capsys, "lut", "--space", CHAIN.name, "--out", str(out_path))
    assert code == 2 and "does not list its candidate ops" in err and "nb201" in err
    assert len(err.strip().splitlines()) == 1 and not out_path.exists()
    code, _, err = _run(capsys, "lut", "--space", "nope", "--out", str(out_path))
    assert code == 2 and "'nope' is not valid" in err and "darts_cnn" in err
    code, _, err = _run(capsys, "lut", "--space", "nb201", "--dataset", "nope", "--out", "x")
    assert code == 2 and "dataset='nope'" in err and "digits" in err

    table = hardware.CostTable(
        ("latency_ms",), {"normal": np.ones((1, *NB201.alpha_shapes["normal"], 1))}, np.zeros(1),
        {"C": 4, "layers": 1, "input_shape": [8, 8, 1], "num_classes": 10, "batch": 1},
    )  # fmt: skip
    lut = tmp_path / "nb201.json"
    hardware.save_table(lut, table, NB201.name, NB201.ops)
    darts = spaces.get("darts_cnn")
    for argv, message in [
        (["--space", "darts_cnn", "--lut", str(lut), "--random", "1"],
         "a table of search space 'nb201', not 'darts_cnn'"),
        (["--space", "nb201", "--lut", str(lut), "--genotype", darts.to_string(
            darts.random_genotype(np.random.default_rng(0)))],
         "--genotype is a darts_cnn genotype; --space is nb201"),
    ]:  # fmt: skip
        code, _, err = _run(capsys, "latency", *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    bad = tmp_path / "bad.json"
    for text, message in [("{not json", "not JSON"),
                          ('{"format": "dnas.cost_table", "version": 1, "space": "nb201", '
                           '"resources": ["latency_ms"], "entries": [{"group": "normal"}]}',
                           "entry 0 is not an object with group, position, row, op"),
                          ("[1, 2]", "not a dnas.cost_table file")]:  # fmt: skip
        bad.write_text(text)
        code, _, err = _run(capsys, "latency", "--space", "nb201", "--lut", str(bad),
                            "--random", "1")  # fmt: skip
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_host_variables_are_positive_and_shaped_like_init():
    model = NB201.supernet(10, C=4, layers=1)
    x = np.zeros((1, *SHAPE), np.float32)
    mix = {g: jnp.zeros(s) for g, s in NB201.alpha_shapes.items()}
    init = lambda k: model.init(k, x, mix, train=False)
    variables = latency.host_variables(init)
    shapes = jax.eval_shape(init, jax.random.key(0))
    assert jax.tree.structure(variables) == jax.tree.structure(shapes)
    assert all((np.asarray(v) > 0).all() for v in jax.tree.leaves(variables))


def test_dnas_lut_and_dnas_latency_on_the_transformer_text_space(tmp_path, capsys):
    """A text space's table: its candidates timed on (batch, bptt, C) activations, its networks
    on token ids; the entries are where the cost model puts the same ops, and `dnas latency`
    times the table's networks again."""
    path = tmp_path / "lut.json"
    config = "experiments/transformer/char_search.py:smoke"
    code, out, err = _run(capsys, "lut", "--config", config, "--batch", "2", "--runs", "2",
                          "--warmup", "1", "--fixed-samples", "1", "--out", str(path))  # fmt: skip
    assert code == 0, err
    assert "8-token pydoc sequences" in out and "wrote" in out
    space = spaces.get("transformer")
    table = hardware.load_table(path, space.ops, space.alpha_shapes, space="transformer")
    assert table.meta["input_shape"] == [8] and table.meta["num_classes"] > 50
    model = space.supernet(table.meta["num_classes"], C=8, layers=table.meta["layers"])
    params = space.op_costs(model, (8,))  # the cost model: params > 0 exactly where timed
    for group, entries in table.per_group.items():
        timed = entries[..., 0] > 0
        assert timed.any() and (timed == (params[group][..., 0] > 0)).all(), group
    # The search takes it as its table (hardware.lut=FILE): its setting is the config's.
    search = configlib.override(configlib.load(config), [f"hardware.lut={path}"])
    assert search_step.cost_table(search, space, model, (8,)).meta == table.meta
    code, out, err = _run(capsys, "latency", "--lut", str(path), "--random", "2", "--runs", "2")
    assert code == 0, err
    archs = [json.loads(line) for line in out.splitlines()[:-1]]
    assert len(archs) == 2 and all(a["measured_ms"] > 0 for a in archs)
