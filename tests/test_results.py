"""dnas/results.py: result tables of finished `dnas run` workdirs (their summary.json written here
with known numbers), checked against numbers computed in the test: each group's mean, spread and
interval over seeds, the paired comparison with the random genotypes of the same seeds (retrained
in another group's runs), the three files, and the errors."""

import csv
import io
import json
import math

import numpy as np
import pytest

from dnas import results, stats

GENO = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"  # noqa: E501


def summary(acc, random=None, params=1000, macs=2_000_000, search_s=10.0, wall_s=5.0):
    searched = {"genotype": GENO, "test_accuracy": acc, "params": params, "macs": macs,
                "wall_s": wall_s}  # fmt: skip
    retrain = {"searched": searched}
    if random is not None:
        retrain["random"] = {**searched, "test_accuracy": random, "genotype": "random"}
    return {"search_wall_s": search_s, "retrain": retrain}


def make_runs(tmp_path, table):
    """table: group -> seed -> summary; the runs as read back from their workdirs."""
    runs = []
    for group, by_seed in table.items():
        for seed, s in by_seed.items():
            workdir = tmp_path / f"{group}-seed{seed}"
            workdir.mkdir()
            (workdir / "summary.json").write_text(json.dumps(s))
            runs.append(results.read_run(str(workdir), group, seed))
    return runs


def test_groups_and_the_paired_random_baseline(tmp_path):
    darts = {0: summary(0.95, random=0.90, params=1000), 1: summary(0.93, random=0.94, params=3000),
             2: summary(0.97, random=0.91, params=2000)}  # fmt: skip
    gdas = {1: summary(0.96, search_s=20.0), 0: summary(0.92, search_s=30.0)}
    runs = make_runs(tmp_path, {"darts": darts, "gdas": gdas})
    rows = results.group_rows(runs)
    assert [r["group"] for r in rows] == ["darts", "gdas", results.RANDOM_GROUP]
    d, g, rnd = rows
    assert d["seeds"] == [0, 1, 2] and d["values"] == pytest.approx([95.0, 93.0, 97.0])
    assert d["mean"] == pytest.approx(95.0) and d["std"] == pytest.approx(2.0)
    half = 4.303 * 2.0 / math.sqrt(3)  # t_{0.975, 2} from a printed table
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((95 - half, 95 + half), rel=1e-3)
    assert d["params"] == 2000 and d["macs"] == 2e6 and d["retrain_s"] == 5.0
    # darts against the random genotypes of seeds 0-2: differences 5, -1, 6.
    p = stats.paired([95.0, 93.0, 97.0], [90.0, 94.0, 91.0])
    assert d["vs_random_pairs"] == 3 and d["vs_random_diff"] == pytest.approx(10 / 3)
    assert d["vs_random_p"] == pytest.approx(p.p_value) and 0 < p.p_value < 1
    # gdas' runs retrained no random cell: it is paired with darts' of the same seeds (0 and 1).
    assert g["seeds"] == [0, 1] and g["values"] == pytest.approx([92.0, 96.0])
    assert g["search_s"] == 25.0 and g["vs_random_pairs"] == 2
    assert g["vs_random_diff"] == pytest.approx(((92 - 90) + (96 - 94)) / 2)
    assert rnd["seeds"] == [0, 1, 2] and rnd["values"] == pytest.approx([90.0, 94.0, 91.0])
    assert "vs_random_diff" not in rnd

    paths = results.write_tables(rows, str(tmp_path))
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == sorted(results.FILES)
    md = (tmp_path / "results.md").read_text()
    assert "| darts | 3 | 95.00 +- 2.00 |" in md and "+3.33 [" in md and "3 pairs" in md
    assert f"| {results.RANDOM_GROUP} | 3 | 91.67 +- 2.08 |" in md
    back = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert [r["group"] for r in back] == [r["group"] for r in rows]
    assert float(back[0]["mean"]) == pytest.approx(95.0) and back[0]["seeds"] == "0 1 2"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metric"] == "test_accuracy" and saved["rows"][0]["values"] == d["values"]
    assert "params" not in saved["rows"][2]  # the random row: accuracies only


def test_one_seed_prints_dashes_and_json_has_no_nan(tmp_path):
    rows = results.group_rows(make_runs(tmp_path, {"darts": {0: summary(0.9, random=0.8)}}))
    assert math.isnan(rows[0]["std"]) and math.isnan(rows[0]["vs_random_p"])
    results.write_tables(rows, str(tmp_path))
    assert "| darts | 1 | 90.00 +- - | [-, -] |" in (tmp_path / "results.md").read_text()
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text and json.loads(text)["rows"][0]["std"] is None


def test_language_models_report_perplexity(tmp_path):
    s = {"search_wall_s": 3.0, "retrain": {"searched": {
        "genotype": "g", "test_perplexity": 25.9, "params": 7191, "macs_per_token": 5579,
        "wall_s": 9.9}}}  # fmt: skip
    (run,) = make_runs(tmp_path, {"transformer": {0: s}})
    assert run.metric == "test_perplexity" and run.value == 25.9 and run.macs == 5579
    assert "test ppl" in results.markdown(results.group_rows([run]), run.metric)


def test_unfinished_malformed_and_inconsistent_runs_are_refused(tmp_path):
    (tmp_path / "running").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no summary\.json: the run has not finished"):
        results.read_run(str(tmp_path / "running"), "darts", 0)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text('{"retrain": {}}')
    with pytest.raises(ValueError, match=r"not a dnas run summary \(KeyError: 'searched'\)"):
        results.read_run(str(tmp_path / "bad"), "darts", 0)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "summary.json").write_text('{"retrain": {"searched": {"test_acc')
    with pytest.raises(ValueError, match="not a dnas run summary"):
        results.read_run(str(tmp_path / "half"), "darts", 0)
    runs = make_runs(tmp_path, {"a": {0: summary(0.9)}})
    with pytest.raises(ValueError, match="seed"):
        results.group_rows(runs + runs)
    with pytest.raises(ValueError, match="no finished runs"):
        results.group_rows([])
    text = runs[0]._replace(metric="test_perplexity")
    with pytest.raises(ValueError, match="different metrics"):
        results.group_rows([runs[0], text._replace(group="b")])
    nan = runs[0]._replace(value=float("nan"))
    with pytest.raises(ValueError, match="not finite"):
        results.group_rows([nan])
    np.testing.assert_equal(len(results.group_rows(runs)), 1)  # no random row without one
