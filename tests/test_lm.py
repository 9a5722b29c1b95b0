"""Language-model training pieces (dnas/lm.py, optim.nt_asgd): NT-ASGD against the reference's
rule, the loss and evaluation against direct computations."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dnas import lm, optim


def reference_switch(losses: list[float], nonmono: int) -> int | None:
    """quark0/darts rnn/train.py: the epoch after which ASGD replaces SGD, written as there."""
    best_val_loss = []
    for epoch, val_loss in enumerate(losses):
        if len(best_val_loss) > nonmono and val_loss > min(best_val_loss[:-nonmono]):
            return epoch
        best_val_loss.append(val_loss)
    return None


@pytest.mark.parametrize("nonmono", [0, 1, 2, 5])
def test_nt_asgd_trigger_matches_the_reference_rule(nonmono):
    rng = np.random.default_rng(nonmono)
    asgd = optim.nt_asgd(optax.sgd(0.1), nonmono)
    observe = jax.jit(asgd.observe)
    for trial in range(20):
        # Decreasing losses with noise: the trigger fires somewhere, or never.
        losses = list(np.cumsum(-rng.uniform(0, 1, 30)) + rng.normal(0, 2.0, 30))
        expected = reference_switch(losses, nonmono) if nonmono else None
        state = asgd.transformation.init({"w": jnp.zeros(3)})
        switched = None
        for epoch, loss in enumerate(losses):
            state = observe(state, loss)
            if switched is None and bool(state.averaging):
                switched = epoch
        if nonmono == 0:  # 0: never averages (the reference's rule would switch at once)
            assert switched is None
        else:
            assert switched == expected, (trial, losses)


def test_nt_asgd_averages_the_iterates_since_the_switch():
    """PyTorch ASGD(t0=0, lambd=0)'s `ax`: the mean of the parameters after each step since the
    switch; evaluation takes it, training goes on from the SGD iterate."""
    inner = optax.sgd(0.5)
    asgd = optim.nt_asgd(inner, nonmono=1)
    params = {"w": jnp.array([1.0, -2.0])}
    state = asgd.transformation.init(params)
    rng = np.random.default_rng(0)
    iterates = []
    for step in range(8):
        if step == 3:  # losses 0.5, 1, 0.7: worse than the best before the last one
            for loss in (0.5, 1.0, 0.7):
                state = asgd.observe(state, loss)
            assert bool(state.averaging)
        grads = {"w": jnp.asarray(rng.normal(size=2), jnp.float32)}
        updates, state = asgd.transformation.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        if step >= 3:
            iterates.append(np.asarray(params["w"]))
    np.testing.assert_allclose(state.average["w"], np.mean(iterates, 0), rtol=1e-6)
    np.testing.assert_allclose(asgd.params(state, params)["w"], np.mean(iterates, 0), rtol=1e-6)
    assert int(state.count) == 5


def test_nt_asgd_before_the_switch_is_the_inner_optimiser():
    asgd = optim.nt_asgd(optax.sgd(0.5), nonmono=5)
    params = {"w": jnp.array([1.0, -2.0])}
    state = asgd.transformation.init(params)
    grads = {"w": jnp.array([0.2, 0.4])}
    updates, state = asgd.transformation.update(grads, state, params)
    np.testing.assert_allclose(updates["w"], [-0.1, -0.2])
    assert asgd.params(state, params) is not None
    np.testing.assert_allclose(asgd.params(state, params)["w"], params["w"])


def test_masked_nll_and_tar_against_direct_sums():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(2, 4, 5)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 5, (2, 4)), jnp.int32)
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], jnp.float32)
    total, n = lm.masked_nll(logits, targets, mask)
    logp = np.asarray(jax.nn.log_softmax(logits))
    expected = -sum(logp[b, t, targets[b, t]] for b in range(2) for t in range(4) if mask[b, t])
    assert float(n) == 5 and math.isclose(float(total), expected, rel_tol=1e-5)
    h = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32)
    pairs = [(b, t) for b in range(2) for t in range(3) if mask[b, t] and mask[b, t + 1]]
    direct = np.mean([np.asarray(h[b, t + 1] - h[b, t]) ** 2 for b, t in pairs])
    assert math.isclose(float(lm.temporal_activation(h, mask)), direct, rel_tol=1e-5)


def test_uniform_model_perplexity_is_the_vocabulary_size():
    """A model whose logits are all equal predicts every token with 1/V: perplexity V, whatever
    the text, through the evaluation's scan and masking."""
    V = 13

    def apply(params, inputs, carry, mask):
        logits = jnp.zeros((*inputs.shape, V)) + params  # constant logits
        return logits, carry + 1, None

    ids = np.random.default_rng(2).integers(0, V, 200)
    segments = lm.eval_segments(ids, 3, 7)
    sums = jax.jit(lm.make_evaluate(apply))(jnp.float32(0.3), segments, jnp.zeros(3))
    assert float(sums["tokens"]) == 3 * (200 // 3 - 1)
    out = lm.summarise(jax.device_get(sums), "char")
    assert math.isclose(out["perplexity"], V, rel_tol=1e-5)
    assert math.isclose(out["bits_per_char"], math.log2(V), rel_tol=1e-5)


def test_nt_asgd_averages_the_iterates_of_scaled_steps():
    """The retraining scales each step's update by its segment's length / bptt; the average is
    of the parameters training actually visits, so the scale applies before averaging."""
    asgd = optim.nt_asgd(optax.sgd(0.5), nonmono=1)
    params = {"w": jnp.array([1.0, -2.0])}
    state = asgd.transformation.init(params)
    for loss in (0.5, 1.0, 0.7):
        state = asgd.observe(state, loss)
    rng = np.random.default_rng(1)
    iterates = []
    for scale in (0.5, 1.5, 0.2):
        grads = {"w": jnp.asarray(rng.normal(size=2), jnp.float32)}
        updates, state = asgd.transformation.update(grads, state, params, scale=scale)
        np.testing.assert_allclose(updates["w"], -0.5 * scale * grads["w"], rtol=1e-6)
        params = optax.apply_updates(params, updates)
        iterates.append(np.asarray(params["w"]))
    np.testing.assert_allclose(state.average["w"], np.mean(iterates, 0), rtol=1e-6)


def test_a_resumed_run_refuses_a_changed_corpus(tmp_path):
    from dnas import text
    from dnas.configlib import ConfigError

    def corpus(words: str):
        d = tmp_path / words.replace(" ", "_")
        d.mkdir(exist_ok=True)
        for name in ("train.txt", "valid.txt", "test.txt"):
            (d / name).write_text(words + "\n")
        return text.load_text_dir(str(d))

    workdir = tmp_path / "run"
    workdir.mkdir()
    lm.check_corpus(str(workdir), corpus("a b c"))
    lm.check_corpus(str(workdir), corpus("a b c"))  # the same text: fine
    with pytest.raises(ConfigError, match="trained on another text"):
        lm.check_corpus(str(workdir), corpus("a b d"))
