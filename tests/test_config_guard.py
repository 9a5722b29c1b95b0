"""The workdir guard compares what matters: which config changes a resume accepts and which it
refuses (with the reason), on workdirs made by hand (no compilation)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import configlib, spaces, strategies


def _workdir(tmp_path, config, *, checkpoint=True, name="w"):
    """A workdir as a run of `config` leaves it: config.json, metrics, and a completed
    checkpoint step (orbax names it by its number) unless `checkpoint` is False."""
    workdir = tmp_path / name
    (workdir / "checkpoints").mkdir(parents=True)
    if checkpoint:
        (workdir / "checkpoints" / "12").mkdir()
    (workdir / "config.json").write_text(json.dumps(config.to_dict()))
    (workdir / "metrics.jsonl").write_text('{"step": 3, "time": 0.0, "search/loss": 1.0}\n')
    return workdir


def _with(config, *assignments):
    return configlib.override(config, list(assignments))


def test_rerun_after_a_nan_failure_that_saved_no_checkpoint_takes_the_new_config(tmp_path):
    # The NaN error's own advice is a lower learning rate; the workdir has no checkpoint yet.
    config = configlib.default_config()
    workdir = _workdir(tmp_path, config, checkpoint=False)
    (workdir / "checkpoints" / "12.orbax-checkpoint-tmp-1").mkdir()  # an interrupted save
    configlib.prepare_workdir(str(workdir), _with(config, "search.lr=0.001"))
    assert json.loads((workdir / "config.json").read_text())["search"]["lr"] == 0.001
    # The failed attempt's records are kept, apart: two configs' records never mix.
    attempt = workdir / "attempts" / "0"
    assert json.loads((attempt / "config.json").read_text())["search"]["lr"] == 0.025
    assert (attempt / "metrics.jsonl").exists() and not (workdir / "metrics.jsonl").exists()


def test_a_run_stopped_before_its_first_step_takes_a_new_config(tmp_path):
    # Ctrl-C while compiling saves step 0 (the seed's state, and the compile time): the config
    # may still change, and that checkpoint moves aside with the records.
    config = configlib.default_config()
    workdir = _workdir(tmp_path, config, checkpoint=False)
    (workdir / "checkpoints" / "0").mkdir()
    configlib.prepare_workdir(str(workdir), _with(config, "search.C=8"))
    assert not (workdir / "checkpoints").exists()
    assert (workdir / "attempts" / "0" / "checkpoints" / "0").is_dir()


def test_progress_in_a_stage_or_darts_pt_folder_counts_as_a_run_to_resume(tmp_path):
    # P-DARTS and DrNAS checkpoint in stage_<i>/, DARTS-PT in pt/: the top-level config.json
    # guards them too (the hint names it, not a stage's).
    config = configlib.default_config()
    for sub in ("stage_0", "pt"):
        workdir = _workdir(tmp_path, config, checkpoint=False, name=sub)
        (workdir / sub / "checkpoints" / "9").mkdir(parents=True)
        with pytest.raises(configlib.ConfigError, match=r"differs in search\.C;") as err:
            configlib.prepare_workdir(str(workdir), _with(config, "search.C=8"))
        assert f"--config {workdir / 'config.json'}" in str(err.value)


def test_changes_to_progress_logging_cache_and_devices_are_allowed(tmp_path):
    config = configlib.default_config()
    workdir = _workdir(tmp_path, config)
    neutral = ("progress=false", "log_every_steps=7", "checkpoint_every_steps=9",
               "compilation_cache_dir=", "num_devices=1", "data_dir=/elsewhere")  # fmt: skip
    for assignment in neutral:
        configlib.prepare_workdir(str(workdir), _with(config, assignment))
    assert not (workdir / "attempts").exists()


def test_train_fields_on_a_search_workdir_are_allowed_and_search_fields_on_a_train_one(tmp_path):
    config = configlib.default_config()
    search_dir = _workdir(tmp_path, config, name="search")
    configlib.prepare_workdir(str(search_dir), _with(config, "train.epochs=99", "baseline=false"))
    train_dir = _workdir(tmp_path, config, name="train")
    changed = _with(config, "search.alpha_lr=0.5", "strategy=gdas", "order=second")
    configlib.prepare_workdir(str(train_dir), changed, "train")
    with pytest.raises(configlib.ConfigError, match=r"differs in train\.lr"):
        configlib.prepare_workdir(str(train_dir), _with(config, "train.lr=0.5"), "train")


def test_a_change_that_matters_is_refused_naming_the_config_json_to_resume_with(tmp_path):
    config = configlib.default_config()
    workdir = _workdir(tmp_path, config)
    with pytest.raises(configlib.ConfigError) as err:
        configlib.prepare_workdir(str(workdir), _with(config, "seed=1", "search.alpha_lr=0.5"))
    message = str(err.value)
    assert "differs in search.alpha_lr, seed;" in message
    assert f"--config {workdir / 'config.json'}" in message
    assert json.loads((workdir / "config.json").read_text())["seed"] == 0  # nothing written


def test_more_search_epochs_are_refused_while_the_cosine_spans_search_epochs(tmp_path):
    config = configlib.default_config()
    workdir = _workdir(tmp_path, config)
    with pytest.raises(configlib.ConfigError, match=r"cosine learning rate spans search\.epochs"):
        configlib.prepare_workdir(str(workdir), _with(config, "search.epochs=30"))


def test_more_search_epochs_are_allowed_within_a_fixed_schedule(tmp_path):
    config = _with(configlib.default_config(), "search.lr_schedule_epochs=40")
    workdir = _workdir(tmp_path, config)
    configlib.prepare_workdir(str(workdir), _with(config, "search.epochs=40"))
    with pytest.raises(configlib.ConfigError, match=r"beyond search\.lr_schedule_epochs=40"):
        configlib.prepare_workdir(str(workdir), _with(config, "search.epochs=41"))
    with pytest.raises(configlib.ConfigError, match="epochs can only grow"):
        configlib.prepare_workdir(str(workdir), _with(config, "search.epochs=39"))


def test_more_epochs_are_refused_once_something_was_decided_from_the_search_s_end(tmp_path):
    config = _with(configlib.default_config(), "search.lr_schedule_epochs=40")
    more = "search.epochs=20"
    pt = _with(config, "search.selection=pt")
    workdir = _workdir(tmp_path, pt, name="pt")
    (workdir / "pt" / "checkpoints" / "3").mkdir(parents=True)
    with pytest.raises(configlib.ConfigError, match="DARTS-PT's fine-tuning has begun"):
        configlib.prepare_workdir(str(workdir), _with(pt, more))
    stopping = _with(config, "search.early_stop=skip")
    workdir = _workdir(tmp_path, stopping, name="early")
    with pytest.raises(configlib.ConfigError, match="may have ended already"):
        configlib.prepare_workdir(str(workdir), _with(stopping, more))
    staged = _with(config, "strategy=pdarts")
    workdir = _workdir(tmp_path, staged, name="staged")
    (workdir / "stage_0" / "checkpoints" / "5").mkdir(parents=True)
    with pytest.raises(configlib.ConfigError, match="a staged search"):
        configlib.prepare_workdir(str(workdir), _with(staged, more))


def test_more_epochs_are_refused_for_a_strategy_with_a_schedule_over_the_search(tmp_path):
    config = _with(configlib.default_config(), "search.lr_schedule_epochs=40", "strategy=gdas")
    workdir = _workdir(tmp_path, config)
    with pytest.raises(configlib.ConfigError, match="strategy 'gdas' has a schedule"):
        configlib.prepare_workdir(str(workdir), _with(config, "search.epochs=20"))


def test_more_retraining_epochs_are_refused_with_the_reason(tmp_path):
    config = configlib.default_config()
    workdir = _workdir(tmp_path, config)
    with pytest.raises(configlib.ConfigError, match="cosine learning rate and drop-path ramp"):
        configlib.prepare_workdir(str(workdir), _with(config, "train.epochs=60"), "train")


@pytest.mark.parametrize("name", sorted(strategies.STRATEGIES))
def test_strategies_that_claim_no_schedule_over_the_search_compute_the_same_at_any_length(name):
    """`Strategy.reads_epochs` is what lets a search be extended: a strategy that says False
    must give the same mixing weights, regulariser and skip dropout at every step of a 3-epoch
    search whether the search is 3 or 9 epochs long."""
    space = spaces.get("nb201")
    args = {"skip_dropout": 0.3, "dropout_warmup_epochs": 2} if name == "pdarts" else {}
    build = lambda epochs: strategies.build(
        name, strategies.Context(space, steps_per_epoch=2, epochs=epochs, learning_rate=0.1), args
    )
    short, long = build(3), build(9)
    assert short.reads_epochs == long.reads_epochs
    init = short.init_alphas or (lambda space, key, scale: space.init_alphas(key, scale))
    alphas = init(space, jax.random.key(0), 1.0)
    key = jax.random.key(1)

    def outputs(strategy, step):
        # Values and gradients: GDAS' hard samples are one-hot at any temperature; its
        # straight-through gradient is not.
        probe = lambda a: sum(
            jnp.sum(w * jnp.arange(w.size).reshape(w.shape))
            for w in jax.tree.leaves(strategy.mix_weights(a, key, step))
        )
        out = [strategy.mix_weights(alphas, key, step), jax.grad(probe)(alphas)]
        out.append(strategy.regularizer(alphas, step))
        if strategy.skip_dropout is not None:
            out.append(strategy.skip_dropout(step))
        if strategy.weight_mix is not None:
            loss = lambda weights: sum(jnp.sum(w**2) for w in jax.tree.leaves(weights))
            weights = strategy.mix_weights(alphas, key, step)
            out.append(strategy.weight_mix(loss, weights, key, step, alphas=alphas))
        return jax.tree.leaves(out)

    pairs = [zip(outputs(short, t), outputs(long, t), strict=True) for t in range(1, 6)]
    same = all(np.array_equal(a, b) for pair in pairs for a, b in pair)
    assert same == (not short.reads_epochs), (name, short.reads_epochs)


def test_a_strategy_argument_at_its_default_is_no_change(tmp_path):
    config = _with(configlib.default_config(), "strategy=gdas")
    workdir = _workdir(tmp_path, config)
    explicit = _with(config, "strategy_args.tau_max=10.0")  # gdas' default
    configlib.prepare_workdir(str(workdir), explicit)
    configlib.prepare_workdir(str(workdir), config)  # and back: left out again
    with pytest.raises(configlib.ConfigError, match=r"differs in strategy_args\.tau_max"):
        configlib.prepare_workdir(str(workdir), _with(config, "strategy_args.tau_max=5.0"))
