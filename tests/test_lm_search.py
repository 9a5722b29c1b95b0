"""Language-model search and retraining end to end (dnas/lm.py through search.run, train.run,
pipeline.run and the CLI) on the embedded text at tiny sizes: the text spaces with the shared
strategies, exact resume after kill -9, the results, the refusals."""

from __future__ import annotations

import itertools
import json
import math
import os

import jax
import numpy as np
import pytest

from dnas import cli, configlib, lm, pipeline, search, search_step
from dnas.configlib import ConfigError

RNN = "experiments/darts_rnn/ptb_search.py"
TRANSFORMER = "experiments/transformer/char_search.py"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke(path: str, *overrides: str):
    return configlib.override(configlib.load(os.path.join(ROOT, path) + ":smoke"), overrides)


# A few steps of each method on the recurrent cell: (strategy, order). Random search with
# weight sharing: `test_random_search_with_weight_sharing_on_text`; the finite-difference
# hypergradient differs from `second` only inside bilevel.py (tested on the image spaces), and
# SNAS from GDAS only in the relaxation (soft, not hard, Gumbel samples: test_strategies.py):
# the recurrent cell then mixes every op by weight, as it does under DARTS above.
METHODS = [
    ("darts", "second"),  # first order: the resume, run, sweep and parallel tests
    ("gdas", "first"),
    ("drnas", "first"),
]


@pytest.mark.parametrize(("strategy", "order"), METHODS)
def test_recurrent_cell_searches_with_the_shared_strategies(strategy, order):
    config = smoke(RNN, f"strategy={strategy}", f"order={order}")
    configlib.validate(config)
    su = search_step.setup(config)
    state = search_step.create_state(config, su)
    step = jax.jit(su.step_fn)
    batches = lm.search_batches(su.text, 0)
    alphas0 = jax.device_get(state.alphas)
    for _ in range(3):
        state, out = step(state, *next(batches))
    out = jax.device_get(out)
    assert all(np.isfinite(v).all() for v in out.values()), out
    # Three steps at lr 20 of a model that starts uniform (perplexity = the vocabulary's 103).
    assert 1 < out["train/perplexity"] < 5 * su.text.corpus.vocab_size
    assert not np.allclose(alphas0["recurrent"], jax.device_get(state.alphas)["recurrent"])
    # The carried state is the one after the segment: nonzero after a real segment.
    assert float(np.abs(jax.device_get(state.carry["train"])).sum()) > 0
    genotype = su.strategy.select(su.space, jax.device_get(su.strategy.final_weights(state.alphas)))
    assert genotype.space == "darts_rnn" and len(genotype.recurrent) == 8


def test_transformer_searches_with_gdas_and_a_hardware_objective():
    """GDAS: one sampled op per slot (hard Gumbel), straight-through, with the alphas under
    ProxylessNAS' objective of the cost model's multiply-adds per token; the full DARTS search
    runs in `test_search_methods.py` through the transformer config's smoke variant."""
    config = smoke(TRANSFORMER, "strategy=gdas", "hardware.objective=mul_logpow",
                   "hardware.resource=macs", "hardware.target=1000")  # fmt: skip
    configlib.validate(config)
    su = search_step.setup(config)
    state = search_step.create_state(config, su)
    step = jax.jit(su.step_fn)
    batches = lm.search_batches(su.text, 0)
    for _ in range(2):
        state, out = step(state, *next(batches))
    out = jax.device_get(out)
    assert all(np.isfinite(v).all() for v in out.values()), out
    assert out["val/expected_macs"] > 0, sorted(out)
    weights = jax.device_get(su.strategy.final_weights(state.alphas))
    # Masked columns (the other group's ops) stay at exactly 0.
    for group, mask in su.space.mask.items():
        assert np.all(weights[group][~mask] == 0)
    genotype = su.strategy.select(su.space, weights)
    assert len(genotype.mixer) == len(genotype.ffn) == 4


@pytest.fixture(scope="module")
def rnn_tiny(tmp_path_factory):
    """The recurrent smoke search, checkpointing every 5 steps, as a file (the killed
    subprocess reads it), and its uninterrupted run."""
    root = tmp_path_factory.mktemp("lm")
    path = root / "rnn_tiny.py"
    path.write_text(
        "from dnas import configlib\n\n\ndef get_config(arg=None):\n"
        f"    c = configlib.load({os.path.join(ROOT, RNN) + ':smoke'!r})\n"
        "    c.checkpoint_every_steps, c.progress = 5, False\n"
        "    return c\n"
    )
    config = configlib.load(str(path))
    genotype = search.run(config, str(root / "uninterrupted"))
    return root, path, config, genotype


def test_text_search_resumes_exactly_after_kill(rnn_tiny, search_killed_at_checkpoint):
    """kill -9 after the first checkpoint, then resume: the same alphas bit for bit, which
    depend on every weight step, the carried recurrent states and the data position."""
    root, path, config, expected = rnn_tiny
    workdir = root / "killed"
    saved = search_killed_at_checkpoint(path, workdir, workdir / "checkpoints", timeout=300)
    assert saved and max(saved) < 19
    assert search.run(config, str(workdir)) == expected
    got, want = np.load(workdir / "alphas.npz"), np.load(root / "uninterrupted" / "alphas.npz")
    np.testing.assert_array_equal(got["recurrent"], want["recurrent"])
    records = [json.loads(line) for line in (root / "uninterrupted" / "metrics.jsonl").open()]
    evals = [r for r in records if "eval_val/perplexity" in r]
    assert len(evals) == 1 and 1 < evals[0]["eval_val/perplexity"] < 300


def test_text_run_retrains_and_reports_perplexity(rnn_tiny, capsys):
    root, _, config, _ = rnn_tiny
    summary = pipeline.run(config, str(root / "uninterrupted"))  # the search is done: retrains
    assert set(summary["retrain"]) == {"searched"}
    for name, r in summary["retrain"].items():
        assert 1 < r["test_perplexity"] < 2 * r["vocab_size"], (name, r)
        assert math.isclose(r["test_bits_per_char"], math.log2(r["test_perplexity"]), rel_tol=1e-6)
        assert r["corpus"]["sha256"] and r["corpus"]["max_tokens"] == 600
        assert r["tokens_per_s"] > 0 and r["macs_per_token"] > 0
        with open(root / "uninterrupted" / f"retrain_{name}" / "results.json") as f:
            assert json.load(f) == r
        # params: the reference's count (tied decoder once) at train.C = 8: vocab*8 + vocab +
        # (2*8)^2 + 8 nodes * 8 * 16.
        V = r["vocab_size"]
        assert r["params"] == V * 8 + V + 16 * 16 + 8 * 8 * 16
    assert "test ppl" in pipeline.format_summary(summary)


def test_dnas_info_prints_the_papers_parameter_count(capsys):
    args = ["info", "--space", "darts_rnn", "--genotype", "darts_v2", "--vocab-size", "10000",
            "--size", "850"]  # fmt: skip
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 22_960_000  # DARTS' 23M (Table 3)
    # Per token: the tied decoder (850 x 10000), W0 (1700 x 1700) and 8 node matrices
    # (850 x 1700), plus the elementwise work XLA counts.
    matmuls = 850 * 10_000 + 1700 * 1700 + 8 * 850 * 1700
    assert matmuls <= out["macs_per_token"] < 1.01 * matmuls
    assert cli.main(["info", "--supernet", "darts_rnn", "--vocab-size", "10000"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 4_810_000  # the search model


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["space=darts_rnn", "dataset=digits"], "models text but dataset='digits' is images"),
        (["space=darts_cnn", "dataset=pydoc"], "models images but dataset='pydoc' is text"),
        (["search.selection=pt"], "not supported for language models"),
        (["dataset=text_dir", "data.text_dir="], "set --config.data.text_dir=DIR"),
        (["search.partial_channels=2"], "not supported for language models"),
        (["train.teacher=some/teacher"], "train.teacher='some/teacher' is not supported"),
        (["text.dropout=1.0"], r"text.dropout=1.0 is out of range"),
        (["hardware.lut=measure", "hardware.objective=mul_logpow"], "cost model"),
    ],
)
def test_text_configs_that_make_no_sense_are_refused(overrides, message):
    config = smoke(RNN, *overrides)
    with pytest.raises(ConfigError, match=message):
        configlib.validate(config)


def test_an_option_the_space_does_not_take_is_a_config_error():
    config = smoke(TRANSFORMER, "text.dropouth=0.1")
    with pytest.raises(ConfigError, match=r"text\.dropouth is not an option"):
        search_step.setup(config)


def test_a_batch_the_text_cannot_fill_names_its_field():
    """600 characters cannot make 400 rows: the error names the field to change."""
    config = smoke(RNN, "search.batch_size=400")
    with pytest.raises(ConfigError, match=r"search.batch_size \(training text\)=400"):
        search_step.setup(config)


def test_text_sweep_members_match_their_own_searches():
    """`dnas sweep` vmaps the text search over seeds, each member's segments drawn with its own
    seed: member 1's steps are a plain search's with seed 1 (compared over a few steps: at lr 20
    the recurrent search amplifies float rounding, so whole runs part after a dozen steps); the
    sweep writes every member's genotype and alphas."""
    from dnas import sweep

    config = smoke(RNN, "sweep.seeds=0-1", "progress=false")
    su = search_step.setup(config)
    name, ms = sweep.members(config)
    states = sweep._stack([search_step.create_state(sweep.member_config(config, name, m), su)
                           for m in ms])  # fmt: skip
    alone = smoke(RNN, "seed=1")
    su1 = search_step.setup(alone)
    state1 = search_step.create_state(alone, su1)
    step = jax.jit(sweep.make_sweep_step(config, su, name, [0.0, 0.0]))
    step1 = jax.jit(su1.step_fn)
    stacked = lm.stacked_search_batches(su.text, [0, 1], 0)
    for batch1 in itertools.islice(lm.search_batches(su1.text, 0), 3):
        states, out = step(states, *next(stacked))
        state1, out1 = step1(state1, *batch1)
        for key in ("train/loss", "val/loss", "grad_norm/weights"):
            np.testing.assert_allclose(out[f"m1/{key}"], out1[key], rtol=1e-5)
    # To 1e-3 of the largest alpha: an alpha whose gradient is near zero moves by rounding (on an
    # AVX-512 CPU one entry of 180 by 2e-4 of the largest); another seed's differ entirely.
    want = np.asarray(state1.alphas["recurrent"])
    np.testing.assert_allclose(states.alphas["recurrent"][1], want, rtol=1e-4,
                               atol=1e-3 * float(np.abs(want).max()))  # fmt: skip


def test_random_search_with_weight_sharing_on_text(tmp_path):
    """random_ws trains the supernet on random paths; selection=random then ranks sampled cells
    by the shared-weight validation loss, re-scoring the best on the whole validation text."""
    config = smoke(RNN, "strategy=random_ws", "search.selection=random", "progress=false",
                   "search.selection_archs=6", "search.selection_batches=2",
                   "search.selection_rerank=2")  # fmt: skip
    genotype = pipeline.search_genotype(config, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "selection.jsonl").open()]
    assert len(records) == 6 and all(1 < r["val_perplexity"] < 1000 for r in records)
    rescored = [json.loads(line) for line in (tmp_path / "selection_rerank.jsonl").open()]
    assert len(rescored) == 2
    best = min(rescored, key=lambda r: r["val_perplexity"])
    assert best["genotype"] == genotype.to_string()


def test_figures_of_the_recurrent_cell_and_the_transformer_layers(tmp_path):
    """`dnas plot` / the search's cell diagrams: the recurrent cell's edges are the genotype's
    (op, predecessor) pairs and its output averages the concat nodes; a transformer's layers
    are its mixer and feed-forward choices in order."""
    from dnas import spaces, viz

    enas = spaces.load("enas_rnn")
    diagram = enas.search_space.diagrams(enas)["recurrent"]
    labelled = [(src, dst, op) for src, dst, op in diagram.edges if op]
    assert labelled == [(str(p), str(i), op) for i, (op, p) in enumerate(enas.recurrent, 1)]
    assert sorted(int(s) for s, d, _ in diagram.edges if d == "h_t") == list(enas.concat)
    vanilla = spaces.load("transformer_vanilla")
    layers = vanilla.search_space.diagrams(vanilla)["layers"]
    chosen = [name for name, kind in layers.nodes if kind == "node"]
    assert chosen == [f"{i}: {op}" for i in range(4) for op in ("attn4", "ffn4")]
    for genotype, name in ((enas, "recurrent"), (vanilla, "layers")):
        (path,) = viz.save_cells(genotype, str(tmp_path))
        assert path.endswith(f"cell_{name}.svg") and os.path.getsize(path) > 1000
