"""NAS-Bench-201 ground truth (dnas/spaces/nb201.py, the nb201 space's ground_truth):
a table of all 15,625 architectures written here (accuracies made up, each a known function of
the architecture's index), read back and queried by arch string and by genotype; every way a
table can be wrong refused on one line naming the file and line; `dnas info --benchmark`; a
search logging its derived cell's accuracies every epoch; and scripts/nb201_to_csv.py against a
stand-in of the official API."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from dnas import configlib, pipeline, results, spaces, viz
from dnas.spaces import nb201 as benchmarks

ROOT = Path(__file__).resolve().parents[1]
ARCHS = list(benchmarks.all_arch_strings())
# The arch string the issue shows, and DARTS' collapse to all skip connections.
NAMED = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"  # noqa: E501
ALL_SKIP = "+".join("|" + "".join(f"skip_connect~{i}|" for i in range(n)) for n in (1, 2, 3))


def accuracy(i: int, column: str) -> float:
    """The made-up accuracy of architecture i: distinct per architecture and per column."""
    return round(10 + (i * 7919 % 15625) / 200 + benchmarks.COLUMNS.index(column), 4)


def write(path: Path, rows: list[list[str]], header=("arch", *benchmarks.COLUMNS)) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def full_rows(columns=benchmarks.COLUMNS) -> list[list[str]]:
    return [[a, *(str(accuracy(i, c)) for c in columns)] for i, a in enumerate(ARCHS)]


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return write(tmp_path_factory.mktemp("nb201") / "nb201.csv", full_rows())


def test_all_architectures_once_in_canonical_form():
    assert len(ARCHS) == len(set(ARCHS)) == benchmarks.NUM_ARCHS == 15625
    assert NAMED in ARCHS and ALL_SKIP in ARCHS
    for arch in ARCHS[::977]:  # the parser's genotype prints back the same string
        assert benchmarks.arch_string(spaces.load(arch)) == arch


def test_table_answers_by_arch_string_and_by_genotype(table_path):
    table = benchmarks.load_table(table_path)
    assert table.columns == benchmarks.COLUMNS and len(table.rows) == 15625
    i = ARCHS.index(NAMED)
    want = {c: accuracy(i, c) for c in benchmarks.COLUMNS}
    assert table.lookup(NAMED) == want
    assert table.lookup(spaces.load(NAMED)) == want
    # The same architecture with a node's edges listed out of order is the same row.
    shuffled = (
        "|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+|skip_connect~2|skip_connect~0|"
        "nor_conv_3x3~1|"
    )
    assert table.lookup(shuffled) == want
    assert benchmarks.load_table(table_path) is table  # read once per file version
    with pytest.raises(benchmarks.BenchmarkError, match="nb201 space, got a darts_cnn genotype"):
        table.lookup(spaces.load("DARTS_V2"))
    with pytest.raises(benchmarks.BenchmarkError, match="NAS-Bench-201 arch string"):
        table.lookup("|nor_conv_3x3~0|+|bogus~0|")


def test_test_columns_alone_make_a_table_rows_in_any_order_and_a_bom(tmp_path):
    rows = full_rows(benchmarks.TEST_COLUMNS)[::-1]
    rows[0][0] = "  " + rows[0][0] + " "  # surrounding whitespace is ignored
    path = write(tmp_path / "t.csv", rows, ("arch", *benchmarks.TEST_COLUMNS))
    path.write_text("\ufeff" + path.read_text())  # saved by a spreadsheet: a byte-order mark
    table = benchmarks.load_table(path)
    assert table.columns == benchmarks.TEST_COLUMNS
    assert table.lookup(ALL_SKIP) == {c: accuracy(ARCHS.index(ALL_SKIP), c) for c in table.columns}


def _refused(tmp_path, rows, match, header=("arch", *benchmarks.COLUMNS)):
    path = write(tmp_path / "bad.csv", rows, header)
    with pytest.raises(benchmarks.BenchmarkError, match=match) as err:
        benchmarks.load_table(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    return str(err.value)


def test_every_wrong_table_is_refused_with_its_line(tmp_path):
    rows = full_rows()
    # Columns: missing, unknown (a typo), repeated.
    _refused(tmp_path, [r[:2] + r[3:] for r in rows], r":1: no column 'cifar100_test'",
             ("arch", "cifar10_test", *benchmarks.COLUMNS[2:]))  # fmt: skip
    _refused(tmp_path, rows, r":1: unknown column 'cifar10-test'",
             ("arch", "cifar10-test", *benchmarks.COLUMNS[1:]))  # fmt: skip
    _refused(tmp_path, [[*r, r[1]] for r in rows], r":1: column 'cifar10_test' appears twice",
             ("arch", *benchmarks.COLUMNS, "cifar10_test"))  # fmt: skip
    # Rows: a malformed arch (line 2 + index), a repeated one, a short row, bad accuracies.
    bad = [r[:] for r in rows]
    bad[5][0] = (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|conv_7x7~1|skip_connect~2|"
    )
    _refused(tmp_path, bad, r":7: .*conv_7x7")
    bad = [r[:] for r in rows]
    bad[9][0] = bad[3][0]
    _refused(tmp_path, bad, rf":11: {__import__('re').escape(ARCHS[3])} repeats line 5")
    bad = [r[:] for r in rows]
    bad[0] = bad[0][:3]
    _refused(tmp_path, bad, r":2: 3 fields; the header has 7")
    for value in ("n/a", "nan", "101", "-1", ""):
        bad = [r[:] for r in rows]
        bad[1][2] = value
        _refused(tmp_path, bad, r":3: cifar100_test is .*expected an accuracy in percent, 0-100")
    # Incomplete: names an architecture it lacks and how to get the whole table.
    message = _refused(tmp_path, rows[:-1], "15,624 of NAS-Bench-201's 15,625 architectures")
    assert ARCHS[-1] in message and "scripts/nb201_to_csv.py" in message
    _refused(tmp_path, [], r"0 of NAS-Bench-201's")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(benchmarks.BenchmarkError, match=r"empty.csv:1: empty file"):
        benchmarks.load_table(tmp_path / "empty.csv")
    with pytest.raises(benchmarks.BenchmarkError, match=r"cannot be read \(No such file"):
        benchmarks.load_table(tmp_path / "absent.csv")


def test_config_refuses_a_benchmark_for_another_space_or_a_missing_file(table_path, tmp_path):
    c = configlib.default_config()
    c.space, c.benchmark.table = "nb201", str(table_path)
    configlib.validate(c)
    c.space = "darts_cnn"
    with pytest.raises(configlib.ConfigError, match="'darts_cnn' has no benchmark of published"):
        configlib.validate(c)
    c.space, c.benchmark.table = "nb201", str(tmp_path / "absent.csv")
    with pytest.raises(configlib.ConfigError, match="is not a file"):
        configlib.validate(c)
    assert "benchmark.table" in configlib.RESULT_NEUTRAL  # added to a run, it resumes


def _dnas(*args):
    return subprocess.run([sys.executable, "-m", "dnas.cli", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_info_adds_the_published_accuracies(table_path, tmp_path):
    proc = _dnas("info", "--genotype", NAMED, "--benchmark", str(table_path), "--layers", "1",
                 "--init-channels", "4")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    i = ARCHS.index(NAMED)
    assert out["benchmark"] == {c: accuracy(i, c) for c in benchmarks.COLUMNS} | {
        "table": str(table_path)
    }
    assert out["genotype"] == NAMED and out["params"] > 0
    bad = write(tmp_path / "short.csv", full_rows()[:100])
    proc = _dnas("info", "--genotype", NAMED, "--benchmark", str(bad))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("dnas info: error: ") and proc.stderr.count("\n") == 1
    assert "100 of NAS-Bench-201's 15,625" in proc.stderr
    proc = _dnas("info", "--genotype", "DARTS_V2", "--benchmark", str(table_path))
    assert proc.returncode == 2 and "'darts_cnn' has no benchmark table" in proc.stderr


def test_search_logs_its_derived_cells_accuracies_every_epoch(table_path, tmp_path):
    c = configlib.default_config()
    c.space, c.benchmark.table = "nb201", str(table_path)
    s = c.search
    # test_search_methods' tiny search: the same program, loaded from the session's cache.
    s.C, s.layers, s.epochs, s.batch_size = 2, 1, 3, 128
    c.checkpoint_every_steps, c.log_every_steps, c.progress = 100, 5, False
    geno = pipeline.search_genotype(c, str(tmp_path / "run"))
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "epoch" in r]
    derived = [r["genotype"] for r in records if "genotype" in r]
    assert len(epochs) == len(derived) == 3
    for record, arch in zip(epochs, derived, strict=True):
        i = ARCHS.index(benchmarks.arch_string(spaces.load(arch)))
        for column in benchmarks.COLUMNS:
            assert record[f"benchmark/{column}"] == accuracy(i, column)
    assert benchmarks.arch_string(geno) == benchmarks.arch_string(spaces.load(derived[-1]))
    # `dnas plot`'s diagnostics figure has the curves (the NAS-Bench-201 paper's figure).
    fig = viz.diagnostics(viz.load_run(str(tmp_path / "run")))
    (ax,) = [a for a in fig.axes if a.get_title().startswith("the derived cell's published")]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    keys = [f"benchmark/{c}" for c in benchmarks.COLUMNS]
    assert lines == {k: [r[k] for r in epochs] for k in keys}
    # A study's "search" trial: the finished search summarised with the table's accuracies of
    # its cell and of the seed's random cell (no retraining), which the study's table reports.
    summary = pipeline.run(c, str(tmp_path / "run"), retrain=False)
    random = spaces.get("nb201").random_genotype(np.random.default_rng(c.seed))
    truth = lambda g: {k: accuracy(ARCHS.index(benchmarks.arch_string(g)), k)
                       for k in benchmarks.COLUMNS}  # fmt: skip
    assert "retrain" not in summary
    assert summary["benchmark"] == {"searched": truth(geno), "random": truth(random)}
    run = results.read_run(str(tmp_path / "run"), "darts", c.seed)
    assert run.metric == "benchmark/cifar10_test"
    assert (run.value, run.random_value) == (truth(geno)["cifar10_test"],
                                             truth(random)["cifar10_test"])  # fmt: skip
    (row, random_row) = results.group_rows([run])
    assert row["benchmark/cifar100_test"] == truth(geno)["cifar100_test"]
    assert random_row["benchmark/cifar100_test"] == truth(random)["cifar100_test"]
    table = results.markdown([row, random_row], run.metric)
    assert "cifar10_test (%, published) mean +- std" in table
    assert f"| darts | 1 | {truth(geno)['cifar10_test']:.2f} +- - |" in table


def test_a_bad_table_stops_the_search_before_its_workdir(tmp_path):
    c = configlib.default_config()
    c.space, c.progress = "nb201", False
    c.benchmark.table = str(write(tmp_path / "short.csv", full_rows()[:10]))
    with pytest.raises(benchmarks.BenchmarkError, match="10 of NAS-Bench-201's"):
        pipeline.search_genotype(c, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


class FakeAPI:
    """The official APIs' calls the converter uses, over the made-up accuracies."""

    KEYS: ClassVar = {"cifar10": ("cifar10_test", None), "cifar10-valid": (None, "cifar10_valid"),
            "cifar100": ("cifar100_test", "cifar100_valid"),
            "ImageNet16-120": ("imagenet16_120_test", "imagenet16_120_valid")}  # fmt: skip

    def __len__(self):
        return len(ARCHS)

    def arch(self, i):
        return ARCHS[i]

    def get_more_info(self, i, dataset, hp, is_random):
        assert hp == "200" and is_random is False
        test, valid = self.KEYS[dataset]
        info = {"train-accuracy": 100.0}
        if test:
            info["test-accuracy"] = accuracy(i, test)
        if valid:
            info["valid-accuracy"] = accuracy(i, valid)
        return info


def test_converter_writes_the_table_from_the_official_api(tmp_path):
    spec = importlib.util.spec_from_file_location("nb201_to_csv", ROOT / "scripts/nb201_to_csv.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table = script.write_table(FakeAPI(), str(tmp_path / "nb201.csv"))
    assert table.path == str(tmp_path / "nb201.csv") and table.columns == benchmarks.COLUMNS
    for arch in (NAMED, ALL_SKIP, ARCHS[0]):
        i = ARCHS.index(arch)
        assert table.lookup(arch) == {c: accuracy(i, c) for c in benchmarks.COLUMNS}
    assert [p.name for p in tmp_path.iterdir()] == ["nb201.csv"]  # no temporary file left

    class Broken(FakeAPI):
        def __len__(self):
            return 100  # a partial file: refused, and nothing written

    with pytest.raises(benchmarks.BenchmarkError, match="100 of NAS-Bench-201's"):
        script.write_table(Broken(), str(tmp_path / "partial.csv"))
    assert [p.name for p in tmp_path.iterdir()] == ["nb201.csv"]
