"""Config validation before anything compiles: every field of the default config has a documented
range (`configlib.FIELDS`), refused values and nonsensical combinations are one-line errors naming
the key, the value and the range, from the library's entry points and from the command line
alike; `strategy_args` from the command line; a workdir's config.json as a config; `dnas config`.
No test here compiles a step."""

import ast
import json
import re
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from dnas import cli, configlib, data, pipeline, progressive, search, spaces, sweep, train
from dnas.genotype import show
from dnas.spaces import darts_cnn

ROOT = Path(__file__).resolve().parents[1]


def _config(**changes) -> ml_collections.ConfigDict:
    """The default config with `changes` (dotted keys as `a__b`), set in its dict so that any
    type goes (as a config file may write it)."""
    d = configlib.default_config().to_dict()
    for key, value in changes.items():
        *path, leaf = key.split("__")
        node = d
        for part in path:
            node = node[part]
        node[leaf] = value
    return ml_collections.ConfigDict(d)


def _refusal(config) -> str:
    with pytest.raises(configlib.ConfigError) as err:
        configlib.validate(config)
    message = str(err.value)
    assert "\n" not in message
    return message


# Every field: values refused by its range, and a boundary value it accepts (with the default
# config around it: search.layers' boundary is DARTS' 3, search.lr's is lr_min).
NAN = float("nan")
CASES = {
    "seed": ([-1, 0.5], 0),
    "dataset": (["mnist", None], "cifar10"),
    "data_dir": ([3], ""),
    "data.text_dir": ([3], "/data/penn"),
    "space": (["nasnet"], "nb201"),
    "strategy": (["darts_v3"], "gdas"),
    "order": (["third"], "finite_difference"),
    "strategy_args": ([[1], "fd_eps=0.1"], {}),
    "search.C": ([0, -4, 4.0], 1),
    "search.layers": ([0, -1], 3),
    "search.epochs": ([0, -1, True], 1),
    "search.batch_size": ([0, -64], 1),
    "search.train_portion": ([0.0, 1.0, NAN], 0.9),
    "search.lr": ([0.0, -0.1, NAN, float("inf")], 0.001),
    "search.lr_min": ([-0.1], 0.0),
    "search.lr_schedule_epochs": ([-1], 0),
    "search.lr_offset_epochs": ([-1], 0),
    "search.momentum": ([1.0, -0.1], 0.0),
    "search.weight_decay": ([-3e-4], 0.0),
    "search.grad_clip": ([-5.0], 0.0),
    "search.alpha_lr": ([-3e-4], 0.0),
    "search.alpha_b1": ([1.0], 0.0),
    "search.alpha_b2": ([1.0], 0.0),
    "search.alpha_weight_decay": ([-1e-3], 0.0),
    "search.alpha_init_scale": ([-1e-3], 0.0),
    "search.alpha_warmup_epochs": ([-1], 0),
    "search.fd_clip": ([1, "true"], True),
    "search.sep_impl": (["cudnn"], "shifted"),
    "search.remat": (["yes"], True),
    "search.partial_channels": ([0], 4),
    "search.single_op": ([None], True, {"strategy": "gdas"}),  # one-hot mixing
    "search.hessian_every_epochs": ([-1], 0),
    "search.hessian_iters": ([0], 1),
    "search.explain_every_epochs": ([-1], 1),
    "search.early_stop": (["soon"], "stable"),
    "search.early_stop_skips": ([-1], 0),
    "search.early_stop_patience": ([0], 1),
    "search.selection": (["greedy"], "pt"),
    "search.selection_archs": ([0], 1),
    "search.selection_batches": ([0], 1),
    "search.selection_rerank": ([-1], 0),
    "search.evolution_population": ([0], 1),
    "search.evolution_sample_size": ([0], 1),
    "search.pt_interval": ([0], 1),
    "search.pt_eval_batches": ([0], 1),
    "search.crop_padding": ([-2], -1),
    "search.flip": (["maybe", 1], True),
    "search.cutout_length": ([-2], -1),
    "search.sgas": (["cri3", True], "cri1", {"search__epochs": 45}),
    "search.sgas_warmup_epochs": ([-1], 0),
    "search.sgas_decision_freq": ([0], 1),
    "search.sgas_history": ([0], 1),
    "search.sgas_shrink": (["no"], False),
    "search.sgas_freeze_decided": (["yes"], True),
    "search.teacher": ([3], "some/teacher"),
    "search.kd_weight": ([-0.1, 1.5], 0.0),
    "search.kd_temperature": ([0, -1.0], 1.0),
    "train.genotype": ([0], "darts_v2"),
    "hardware.objective": (["latency", None], ""),
    "hardware.resource": ([3], "macs"),
    "hardware.target": ([-1.0, NAN], 0.0),
    "hardware.lut": ([None], ""),
    "hardware.lut_batch": ([0, 1.5], 1),
    "hardware.sampled": (["yes"], True),
    "hardware.discretise": (["argmax", None], ""),
    "hardware.floor": ([1.5, -0.1, NAN], 0.9),
    "hardware.a": (["x", NAN], 0.1),
    "hardware.b": (["x"], None),
    "hardware.scale": ([[1]], 2.0),
    "benchmark.table": ([3, None], ""),  # a path (its file and space: test_benchmarks.py)
    "train.C": ([0, -3], 1),
    "train.layers": ([0], 3),
    "train.epochs": ([0, -1], 1),
    "train.batch_size": ([0, -64], 1),
    "train.lr": ([0.0], 1e-9),
    "train.lr_min": ([-1e-9], 0.05),
    "train.momentum": ([1.0], 0.0),
    "train.weight_decay": ([-1.0], 0.0),
    "train.grad_clip": ([-1.0], 0.0),
    "train.auxiliary": (["no"], False),
    "train.auxiliary_weight": ([-0.4], 0.0),
    "train.drop_path_prob": ([1.0, -0.1], 0.0),
    "train.crop_padding": ([-2], -1),
    "train.flip": (["maybe"], False),
    "train.cutout_length": ([-2], -1),
    "train.sep_impl": (["cudnn"], "depthwise"),
    "train.teacher": ([3], "some/teacher"),
    "train.kd_weight": ([-0.1, 1.5], 0.0),
    "train.kd_temperature": ([0, -1.0], 1.0),
    "text.level": (["bytes", 1], "char"),
    "text.max_tokens": ([-1, 1.5], 5000),
    "text.bptt": ([1, 35.0], 70),
    "text.max_seq_len_delta": ([-1], 0),
    "text.search_lengths": (["random"], "normal"),
    "text.train_lengths": (["halved"], "fixed"),
    "text.eval_batch_size": ([0], 1),
    "text.test_batch_size": ([0], 10),
    "text.tar_beta": ([-1e-3, NAN], 0.0),
    "text.dropout": (["0.5", NAN], 0.5),
    "text.dropouth": ([[0.1]], 0.1),
    "text.dropoutx": (["x"], None),
    "text.dropouti": ([NAN], 0.0),
    "text.dropoute": ([True], 0.1),
    "text.nonmono": ([-1, 2.5], 0),
    "sweep.seeds": ([7], "0-7"),
    "sweep.param": ([None], "search.lr", {"sweep__param_values": "1e-3"}),
    "sweep.param_values": ([1.0], "1e-3,1e-2", {"sweep__param": "search.lr"}),
    "num_devices": ([-1], 0),
    "precision": (["float16", "fp32"], "bfloat16"),
    "compilation_cache_dir": ([None], ""),
    "baseline": (["true"], False),
    "checkpoint_every_steps": ([0, -200], 1),
    "log_every_steps": ([0], 1),
    "progress": ([1], False),
}


def test_every_field_of_the_default_config_has_a_documented_range_and_a_test_case():
    keys = configlib.leaf_keys(configlib.default_config())
    assert sorted(configlib.FIELDS) == sorted(keys), "document a new field in configlib.FIELDS"
    assert sorted(CASES) == sorted(keys), "add the new field's refused and accepted values here"
    for key, field in configlib.FIELDS.items():
        assert field.doc and field.check.words(), key
    configlib.validate(configlib.default_config())


@pytest.mark.parametrize("key", sorted(CASES))
def test_each_field_refuses_what_its_range_excludes_and_accepts_its_boundary(key):
    bad, good, *context = CASES[key]  # context: other fields the good value needs
    words = configlib.FIELDS[key].check.words()
    for value in bad:
        message = _refusal(_config(**{key.replace(".", "__"): value}))
        assert message.startswith(f"{key}={show(value)} is ") and message.endswith(words)
    configlib.validate(_config(**{key.replace(".", "__"): good}, **(context or [{}])[0]))


def test_the_range_words_are_the_ones_documented():
    assert _refusal(_config(search__epochs=0)) == (
        "search.epochs=0 is out of range: an integer >= 1"
    )
    assert _refusal(_config(search__train_portion=1.0)) == (
        "search.train_portion=1.0 is out of range: a number 0 < x < 1"
    )
    assert _refusal(_config(search__lr=0.0)) == "search.lr=0.0 is out of range: a number > 0"
    assert _refusal(_config(train__flip="maybe")) == (
        "train.flip='maybe' is not valid: true, false or none"
    )


@pytest.mark.parametrize(
    "key,valid",
    [
        ("space", spaces.SPACES),
        ("strategy", configlib.strategies.STRATEGIES),
        ("dataset", data.DATASETS),
        ("order", ("first", "second", "finite_difference")),
        ("search.selection", pipeline.SELECTIONS),
        ("search.early_stop", search.EARLY_STOP),
        ("search.sep_impl", ("auto", "fused", "depthwise", "shifted")),
        ("train.sep_impl", ("auto", "fused", "depthwise", "shifted")),
    ],
)
def test_an_unknown_name_is_one_line_with_the_valid_names(key, valid):
    message = _refusal(_config(**{key.replace(".", "__"): "nope"}))
    assert message.startswith(f"{key}='nope' is not valid: one of ")
    assert all(repr(name) in message for name in valid)


def test_the_choices_are_the_ones_the_search_acts_on():
    assert tuple(pipeline.SELECTIONS) == configlib.SELECTIONS
    assert search.EARLY_STOP == configlib.EARLY_STOP


def test_a_registered_space_is_a_valid_name_at_once(monkeypatch):
    monkeypatch.setitem(spaces.SPACES, "tiny_chain", spaces.get("nb201")._replace(name="x"))
    configlib.validate(_config(space="tiny_chain"))


def test_unknown_and_missing_keys_are_refused():
    config = configlib.default_config()
    config.search.epoch = 3  # a config file's typo
    assert _refusal(config).startswith("unknown config key 'search.epoch'; did you mean")
    d = configlib.default_config().to_dict()
    del d["search"]["lr"]
    assert "the config has no search.lr" in _refusal(ml_collections.ConfigDict(d))


# ------------------------------------------------------------------------------------------
# The defects of issue 14, each refused before anything compiles or is written.


def _refused_before_the_workdir(tmp_path, entry, config, message):
    """`entry(config, workdir)` refuses `config` with `message` and writes nothing in `workdir`
    (the workdir lock of the stages, `workdir.exclusive`, may have made the empty folder)."""
    workdir = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
    with pytest.raises(configlib.ConfigError, match=re.escape(message)):
        entry(config, str(workdir))
    assert not workdir.exists() or not list(workdir.iterdir())


@pytest.mark.parametrize("epochs", [0, -1])
def test_search_epochs_zero_or_negative(tmp_path, epochs):
    # They used to compile for a minute and exit 0 with a genotype of untrained alphas.
    _refused_before_the_workdir(
        tmp_path, pipeline.search_genotype, _config(search__epochs=epochs),
        f"search.epochs={epochs} is out of range: an integer >= 1",
    )  # fmt: skip


def test_a_negative_batch_size(tmp_path):
    message = "search.batch_size=-64 is out of range: an integer >= 1"
    _refused_before_the_workdir(tmp_path, search.run, _config(search__batch_size=-64), message)
    message = "train.batch_size=-64 is out of range: an integer >= 1"
    config = _config(train__batch_size=-64, train__genotype="darts_v2")
    _refused_before_the_workdir(tmp_path, train.run, config, message)


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_search_layers_zero_and_too_few_for_the_darts_space(tmp_path, layers):
    # 0 cells: a supernet without cells; 1 or 2: reduction cells only, the normal alphas unused.
    message = _refusal(_config(search__layers=layers))
    assert message.startswith(f"search.layers={layers} is out of range")
    if layers:
        assert "search space 'darts_cnn': an integer >= 3" in message
    _refused_before_the_workdir(
        tmp_path, pipeline.run, _config(search__layers=layers), f"search.layers={layers}"
    )


def test_batch_size_zero(tmp_path):
    # A ZeroDivisionError in data.py.
    for key in ("search", "train"):
        config = _config(**{f"{key}__batch_size": 0}, train__genotype="darts_v2")
        message = f"{key}.batch_size=0 is out of range: an integer >= 1"
        _refused_before_the_workdir(tmp_path, pipeline.run, config, message)


def test_C_zero(tmp_path):
    # A ZeroDivisionError in ops.py.
    _refused_before_the_workdir(
        tmp_path, search.run, _config(search__C=0), "search.C=0 is out of range: an integer >= 1"
    )
    _refused_before_the_workdir(
        tmp_path, train.run, _config(train__C=0, train__genotype="darts_v2"),
        "train.C=0 is out of range: an integer >= 1",
    )  # fmt: skip


@pytest.mark.parametrize("key", ["checkpoint_every_steps", "log_every_steps"])
def test_checkpoint_every_steps_zero_and_log_every_steps_zero(tmp_path, key):
    # ZeroDivisionErrors in loop.py, after compiling.
    _refused_before_the_workdir(
        tmp_path, sweep.run, _config(**{key: 0}), f"{key}=0 is out of range: an integer >= 1"
    )


def test_every_entry_point_validates_first(tmp_path):
    config = _config(search__epochs=0, train__genotype="darts_v2")
    for entry in (search.run, train.run, sweep.run, pipeline.run, pipeline.search_genotype):
        _refused_before_the_workdir(tmp_path, entry, config, "search.epochs=0")


@pytest.mark.parametrize("command", ["search", "train", "run", "sweep", "config"])
def test_every_config_command_validates_first(capsys, tmp_path, command):
    workdir = tmp_path / "w"
    where = ["--workdir", str(workdir)] if command != "config" else []
    code = cli.main([command, *where, "--config.search.epochs=0"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and not workdir.exists()
    assert err == f"dnas {command}: error: search.epochs=0 is out of range: an integer >= 1\n"


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_dnas_info_init_channels_zero_or_negative(capsys, value):
    # They used to end in ZeroDivisionError tracebacks.
    for what in (["--genotype", "darts_v2"], ["--supernet", "darts_cnn"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["info", *what, "--init-channels", value])
        err = capsys.readouterr().err
        assert exit_.value.code == 2
        assert err.splitlines()[-1] == (
            f"dnas info: error: argument --init-channels: expected an integer >= 1, got {value!r}"
        )


def test_dnas_info_supernet_init_channels_zero_is_not_sixteen(capsys):
    # `--init-channels 0` silently became C=16; it is refused, and 1 is 1.
    with pytest.raises(SystemExit):
        cli.main(["info", "--supernet", "nb201", "--init-channels", "0", "--dataset", "digits"])
    capsys.readouterr()
    assert cli.main(["info", "--supernet", "nb201", "--init-channels", "1", "--dataset", "digits",
                     "--layers", "1"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["C"] == 1


def test_dnas_info_layers_too_few_for_the_space(capsys):
    assert cli.main(["info", "--genotype", "darts_v2", "--layers", "2"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "dnas info: error: --layers 2 is out of range for search space 'darts_cnn': an integer "
        ">= 3 (the depth at which every cell type has a cell)\n"
    )


# ------------------------------------------------------------------------------------------
# Combinations that make no sense.


def test_the_spaces_say_how_few_layers_they_take():
    assert spaces.get("darts_cnn").min_layers == 3 and spaces.get("nb201").min_layers == 1
    # DARTS places its reduction cells at layers // 3 and 2 * layers // 3: below 3 cells there
    # is no normal cell at all.
    for layers in (1, 2):
        assert all(reduction for _, reduction in darts_cnn.cell_layout(4, layers))
    assert [r for _, r in darts_cnn.cell_layout(4, 3)] == [False, True, True]
    configlib.validate(_config(space="nb201", search__layers=1, train__layers=1))
    message = _refusal(_config(train__layers=2))
    assert message.startswith("train.layers=2 is out of range for search space 'darts_cnn'")


def test_a_batch_larger_than_the_split_it_draws_from():
    assert data.DATASETS["digits"].train_examples == len(data.digits_splits().train) == 1258
    # The search draws from halves of the 1,258 training digits: 629 each at train_portion 0.5.
    configlib.validate(_config(search__batch_size=629))
    message = _refusal(_config(search__batch_size=630))
    assert message == (
        "search.batch_size=630 exceeds the 629 examples of each half of the search split (1258 "
        "training examples of digits, train_portion=0.5)"
    )
    # train_portion 0.9: floor(0.9 * 1258) = 1132 for the weights, 126 for the alphas.
    configlib.validate(_config(search__batch_size=126, search__train_portion=0.9))
    message = _refusal(_config(search__batch_size=127, search__train_portion=0.9))
    assert "exceeds the 126 examples of the alphas' half of the search split" in message
    configlib.validate(_config(train__batch_size=1258))
    assert _refusal(_config(train__batch_size=1259)) == (
        "train.batch_size=1259 exceeds the 1258 training examples of digits"
    )
    # tfds datasets: their sizes are known without tfds (nothing is read or downloaded).
    configlib.validate(_config(dataset="cifar10", search__batch_size=25_000))
    assert "exceeds the 25000 examples" in _refusal(
        _config(dataset="cifar10", search__batch_size=25_001)
    )


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"search__partial_channels": 3}, "search.partial_channels=3 does not divide search.C=4"),
        ({"search__lr_min": 0.1}, "search.lr_min=0.1 exceeds search.lr=0.025"),
        ({"train__lr": 0.01, "train__lr_min": 0.02}, "train.lr_min=0.02 exceeds train.lr=0.01"),
        ({"search__lr_offset_epochs": 1}, "exceeds the cosine's length, 15 epochs"),
        ({"search__lr_schedule_epochs": 20, "search__lr_offset_epochs": 6}, "= 21 exceeds"),
        ({"search__alpha_warmup_epochs": 15}, "search.alpha_warmup_epochs=15 leaves no alpha"),
        ({"search__selection": "evolution", "search__evolution_sample_size": 21},
         "search.evolution_sample_size=21 exceeds search.evolution_population=20"),
        # The method's options against its strategy, and swept values against their range:
        # refused here, before config.json is written (they used to pass validation).
        ({"search__single_op": True}, "strategy 'darts' mixes softly"),
        ({"search__selection_rerank": 3}, "search.selection_rerank re-scores"),
        ({"strategy": "random_ws"}, "learns no alphas"),
        ({"sweep__param": "search.lr", "sweep__param_values": "0.1,-1"},
         "sweep.param_values: search.lr=-1.0 is out of range: a number > 0"),
        ({"space": "proxyless", "strategy": "proxylessnas", "order": "second"},
         "proxylessnas mode='two' needs order='first'"),
        # Distillation in the search's weight step: first order, no DARTS-PT fine-tuning.
        ({"search__teacher": "t", "order": "second"}, "with order=second the hypergradient's"),
        ({"search__teacher": "t", "search__selection": "pt"}, "with search.selection=pt"),
        # SGAS: cell spaces, no selection phase, enough epochs for its decisions.
        ({"search__sgas": "cri1"},
         "search.epochs=15 ends before the last: set search.epochs >= 45"),
        ({"search__sgas": "cri1", "space": "proxyless", "search__epochs": 50},
         "does not combine with space 'proxyless'"),
        ({"search__sgas": "cri2", "search__selection": "random", "search__epochs": 50},
         "does not combine with search.selection='random'"),
        ({"search__sgas": "cri2", "search__epochs": 50, "search__sgas_warmup_epochs": 0},
         "with search.sgas_warmup_epochs=0 the first decision has none"),
        ({"search__sgas": "cri1", "search__epochs": 50, "search__alpha_warmup_epochs": 12},
         "comes before the alphas train (search.alpha_warmup_epochs=12)"),
        ({"search__sgas": "cri1", "search__epochs": 50, "search__hessian_every_epochs": 1},
         "does not combine with search.hessian_every_epochs"),
        # dnas explain's op shares: the cell spaces' mixed edges.
        ({"search__explain_every_epochs": 1, "space": "proxyless"},
         "space 'proxyless' has no cells: set it to 0"),
        # The hardware objective: its target, its arguments, a resource it can cost, a file.
        ({"hardware__objective": "mul_log", "hardware__resource": "macs"},
         "needs hardware.target > 0"),
        ({"hardware__objective": "mul_log", "hardware__resource": "macs", "hardware__target": 1.0},
         "log 1 = 0"),
        ({"hardware__objective": "add_linear", "hardware__resource": "macs",
          "hardware__target": 5e6, "hardware__a": 0.3},
         "hardware.a is not an argument of objective 'add_linear' (it takes scale)"),
        ({"hardware__objective": "mul_logpow"},
         "hardware.resource='latency_ms' needs a cost table"),
        ({"hardware__objective": "mul_logpow", "hardware__lut": "measure",
          "hardware__resource": "energy_mj"}, "hardware.lut=measure times latency"),
        ({"hardware__objective": "mul_logpow", "hardware__lut": "/nonexistent.json"},
         "hardware.lut='/nonexistent.json' is not a file"),
        ({"hardware__objective": "mul_logpow", "hardware__resource": "macs",
          "strategy": "random_ws", "search__selection": "random"},
         "strategy 'random_ws' learns none"),
    ],
)  # fmt: skip
def test_combinations_that_make_no_sense(changes, message):
    assert message in _refusal(_config(**changes))


def test_combinations_at_their_boundaries_are_accepted():
    for changes in [
        {"search__partial_channels": 2},
        {"search__lr_min": 0.025},
        {"search__lr_schedule_epochs": 20, "search__lr_offset_epochs": 5},
        {"search__alpha_warmup_epochs": 14},
        {"search__evolution_sample_size": 21},  # no tournament without selection=evolution
        {"search__selection": "evolution", "search__evolution_sample_size": 20},
        {"hardware__objective": "mul_logpow", "hardware__resource": "params", "hardware__b": 1.0},
        {"hardware__objective": "mul_logpow", "hardware__lut": "measure"},
        {"hardware__objective": "add_abs", "hardware__resource": "macs", "hardware__target": 1e-9},
    ]:
        configlib.validate(_config(**changes))


def _config_variants():
    """(path, arg) for every config file, every `:arg` its docstring shows, and the digits and
    smoke variants of every method (`configlib.method_variant`; the methods table runs them)."""
    out = []
    for path in sorted((ROOT / "experiments").glob("*/*.py")):
        if path.parent.name == "studies":  # dnas study files (tests/test_study.py)
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        args = set(re.findall(rf"{re.escape(path.name)}:(\w+)", doc))
        if path.name == "cifar10_search.py":
            args |= {"digits", "smoke", "nb201", "nb201_smoke"}
        out += [(path, None)] + [(path, a) for a in sorted(args)]
    return out


@pytest.mark.parametrize("path,arg", _config_variants(), ids=lambda v: getattr(v, "stem", v))
def test_every_experiment_config_and_its_stages_are_valid(path, arg):
    config = configlib.validate(configlib.load(f"{path}:{arg}" if arg else str(path)))
    if progressive.driver(config) is None:
        return
    c = progressive.with_defaults(config)
    mask = {cell: np.ones(shape) for cell, shape in spaces.get(c.space).alpha_shapes.items()}
    a = c.strategy_args
    if c.strategy == "pdarts":
        stages = [progressive.stage_config(c, i, mask) for i in range(len(a.keep))]
    else:
        stages = [progressive.drnas_stage_config(c, i, mask, None) for i in range(len(a.keep) + 1)]
    for stage in stages:  # what the drivers validate before the first stage runs
        configlib.validate(stage)


# ------------------------------------------------------------------------------------------
# strategy_args from the command line, checked against the strategy's factory.


def test_strategy_args_from_the_command_line():
    # It failed: strategy_args is an empty group, so tau_max was an "unknown config key".
    for order in (["strategy=gdas", "strategy_args.tau_max=5"],
                  ["strategy_args.tau_max=5", "strategy=gdas"]):  # fmt: skip
        config = configlib.validate(configlib.override(configlib.default_config(), order))
        assert config.strategy_args.to_dict() == {"tau_max": 5}
    parsed = configlib.override(
        configlib.default_config(),
        ["strategy=drnas", "strategy_args.progressive=true", "strategy_args.stage_epochs=(2, 2)",
         "strategy_args.reg_type=kl", "strategy_args.reg_scale=none",
         "strategy_args.keep=[4]", "strategy_args.reg_type=l2"],
    )  # fmt: skip
    assert parsed.strategy_args.to_dict() == {
        "progressive": True, "stage_epochs": (2, 2), "reg_type": "l2", "reg_scale": None,
        "keep": [4],
    }  # fmt: skip
    configlib.validate(parsed)
    # Set again with another type (a config file's 10.0 from the command line as 5).
    config = _config(strategy="gdas", strategy_args={"tau_max": 10.0})
    config = configlib.override(config, ["strategy_args.tau_max=5"])
    assert config.strategy_args.tau_max == 5


@pytest.mark.parametrize(
    "assignments,message",
    [
        (["strategy=gdas", "strategy_args.tau=5"],
         "strategy 'gdas' takes no argument tau; valid strategy_args: tau_max, tau_min"),
        (["strategy_args.tau_max=5"],
         "strategy 'darts' takes no argument tau_max; valid strategy_args: fd_eps"),
        (["strategy=random_ws", "search.selection=random", "strategy_args.x=1"],
         "strategy 'random_ws' takes no argument x; valid strategy_args: (none)"),
        (["strategy=gdas", "strategy_args.tau_max=hot"],
         "strategy_args.tau_max='hot' is not valid: a number (the default of strategy 'gdas': "
         "10.0)"),
        (["strategy=sdarts", "strategy_args.pgd_steps=2.5"],
         "strategy_args.pgd_steps=2.5 is not valid: an integer"),
        (["strategy=drnas", "strategy_args.progressive=1"],
         "strategy_args.progressive=1 is not valid: true or false"),
        (["strategy=pdarts", "strategy_args.keep=3"], "strategy_args.keep=3 is not valid: a tuple"),
    ],
)  # fmt: skip
def test_strategy_args_the_factory_does_not_take_are_refused(tmp_path, assignments, message):
    config = configlib.override(configlib.default_config(), assignments)
    assert _refusal(config).startswith(message)
    _refused_before_the_workdir(tmp_path, pipeline.search_genotype, config, message)


# ------------------------------------------------------------------------------------------
# Messages.


def test_the_missing_dataset_hint_names_the_config_option():
    text = data.prepare_instructions(data.DATASETS["cifar10"], "/data")
    assert "--config.dataset=digits" in text and "--dataset digits" not in text


def test_a_none_field_overridden_with_a_bad_word_says_what_it_takes():
    # It said "expects a value of type NoneType".
    for key in ("search.flip", "train.flip"):
        with pytest.raises(configlib.ConfigError) as err:
            configlib.override(configlib.default_config(), [f"{key}=maybe"])
        assert str(err.value) == f"--config.{key} expects true, false or none, got 'maybe'"


# ------------------------------------------------------------------------------------------
# A workdir's config.json as --config.


def _write_json(tmp_path, d, name="w"):
    workdir = tmp_path / name
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(d, indent=2))
    return workdir


def test_a_workdirs_config_json_is_a_config(tmp_path):
    config = configlib.override(
        configlib.default_config(),
        ["seed=3", "search.epochs=2", "strategy=gdas", "strategy_args.tau_max=5",
         "search.flip=false"],
    )  # fmt: skip
    workdir = _write_json(tmp_path, config.to_dict())
    for spec in (workdir / "config.json", workdir):
        loaded = configlib.validate(configlib.load(str(spec)))
        assert loaded.to_dict() == config.to_dict()
    # It takes overrides like any config (a hand-edited 1 for a float stays a float field).
    d = config.to_dict()
    d["search"]["lr"] = 1
    loaded = configlib.load(str(_write_json(tmp_path, d, "edited")))
    assert configlib.override(loaded, ["search.lr=0.5"]).search.lr == 0.5


def test_keys_missing_from_an_older_config_json_take_what_its_run_had(tmp_path):
    d = configlib.default_config().to_dict()
    del d["search"]["lr_offset_epochs"], d["search"]["fd_clip"]
    d["order"] = "finite_difference"
    loaded = configlib.load(str(_write_json(tmp_path, d)))
    assert loaded.search.lr_offset_epochs == 0
    assert loaded.search.fd_clip is True  # finite_difference clipped its virtual step then


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d["search"].update(epoch=3),
         "unknown config key 'search.epoch'; did you mean search.epochs"),
        (lambda d: d.update(extra={"a": 1}), "unknown config key 'extra'"),
        (lambda d: d.update(search=3), "search is a group of fields, got 3"),
    ],
)  # fmt: skip
def test_a_config_json_with_unknown_keys_is_refused(tmp_path, edit, message):
    d = configlib.default_config().to_dict()
    edit(d)
    workdir = _write_json(tmp_path, d)
    with pytest.raises(configlib.ConfigError, match=re.escape(message)):
        configlib.load(str(workdir))


def test_config_json_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(configlib.ConfigError, match="does not exist"):
        configlib.load(str(tmp_path / "empty"))
    (tmp_path / "bad.json").write_text("{seed: 1")
    with pytest.raises(configlib.ConfigError, match="is not readable JSON"):
        configlib.load(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(configlib.ConfigError, match=r"holds \[1, 2\], not a config"):
        configlib.load(str(tmp_path / "list.json"))


# ------------------------------------------------------------------------------------------
# dnas config.


def test_dnas_config_prints_every_field_with_its_doc_and_range(capsys):
    assert cli.main(["config", "--config.search.epochs=3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    fields = [line for line in lines if line and not line.startswith("#")]
    keys = [line.split(" = ")[0] for line in fields]
    # Every field once, in the table's order, the top-level ones first.
    assert keys == sorted(configlib.FIELDS, key=lambda key: "." in key)
    assert "search.epochs = 3  # search epochs (an integer >= 1)" in lines
    assert "search.flip = None  # random horizontal flip; none: the dataset's default" in out
    assert "strategy_args = {}  # the strategy's own keyword arguments" in out
    assert "(darts takes fd_eps=0.01)" in out
    assert [line for line in lines if line.startswith("#")] == [
        "# data",
        "# search",
        "# hardware",
        "# benchmark",
        "# train",
        "# text",
        "# sweep",
    ]
    for key, line in zip(keys, fields, strict=True):
        if key != "strategy_args":
            assert line.endswith(f"({configlib.FIELDS[key].check.words()})"), line


def test_dnas_config_shows_a_config_file_and_strategy_args(capsys, tmp_path):
    path = ROOT / "experiments" / "gdas" / "cifar10_search.py"
    assert cli.main(["config", "--config", str(path), "--config.strategy_args.tau_max=5"]) == 0
    out = capsys.readouterr().out
    assert "dataset = 'cifar10'" in out
    assert "strategy_args.tau_max = 5  # an argument of strategy 'gdas' (default 10.0)" in out
    workdir = _write_json(tmp_path, configlib.load(str(path)).to_dict())
    assert cli.main(["config", "--config", str(workdir)]) == 0
    assert "strategy = 'gdas'" in capsys.readouterr().out


def test_dnas_config_refuses_an_invalid_config_in_one_line(capsys):
    assert cli.main(["config", "--config.search.batch_size=0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (
        "dnas config: error: search.batch_size=0 is out of range: an integer >= 1\n"
    )
