"""The search step's set-up: DARTS' finite-difference hypergradient takes its virtual step as the
reference does (`architect._compute_unrolled_model`: momentum and weight decay, no gradient
clipping) unless `search.fd_clip`, checked against the reference's formulas by hand in float64."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import configlib, data, search_step


def _loss(params, alphas, batch, key, step):
    """0.5 ||w - y exp(a)||^2: the train and validation losses differ by their target y."""
    del key, step
    target = batch["y"] * jnp.exp(alphas["normal"])
    loss = 0.5 * jnp.sum(jnp.square(params["w"] - target))
    return loss, {"loss": loss}


def _reference(w, a, y_train, y_val, buf, *, xi, momentum, wd, eps, clip=None):
    """quark0/darts Architect._backward_step_unrolled with the virtual step of
    _compute_unrolled_model (optionally with the gradient clipped first), by hand."""
    e = np.exp(a)
    g = w - y_train * e
    if clip is not None:
        g = g * min(1.0, clip / np.linalg.norm(g))
    w1 = w - xi * (momentum * buf + g + wd * w)
    g_w1 = w1 - y_val * e
    direct = -(w1 - y_val * e) * y_val * e
    r = eps / np.linalg.norm(g_w1)
    d_alpha_train = lambda v: -(v - y_train * e) * y_train * e
    return direct - xi * (d_alpha_train(w + r * g_w1) - d_alpha_train(w - r * g_w1)) / (2 * r)


@pytest.mark.parametrize("fd_clip", [False, True])
def test_finite_difference_virtual_step_is_the_references(fd_clip):
    config = configlib.default_config()
    config.order, config.search.fd_clip = "finite_difference", fd_clip
    s = config.search
    with jax.enable_x64(True):
        strategy, weight_tx, *_ = search_step.make_step_parts(
            config, None, data.get_info("digits"), steps_per_epoch=10
        )
        w = np.array([0.3, -0.2, 0.5])
        a = np.array([0.1, 0.2, -0.3])
        g0 = np.array([0.5, -0.25, 0.1])  # an earlier step's gradient: the momentum buffer
        params, alphas = {"w": jnp.asarray(w)}, {"normal": jnp.asarray(a)}
        _, opt_state = weight_tx.update({"w": jnp.asarray(g0)}, weight_tx.init(params), params)
        y_train, y_val = np.array([40.0, 30.0, 20.0]), np.array([1.0, -1.0, 0.5])
        assert np.linalg.norm(w - y_train * np.exp(a)) > s.grad_clip  # the clip would bite
        got, _ = strategy.alpha_grad(
            _loss, params, alphas, opt_state, {"y": jnp.asarray(y_train)},
            {"y": jnp.asarray(y_val)}, jax.random.key(0), jnp.asarray(0),
        )  # fmt: skip
        got = np.asarray(got["normal"])
    kw = dict(xi=s.lr, momentum=s.momentum, wd=s.weight_decay, eps=0.01)
    buf = g0 + s.weight_decay * w  # SGD's trace after one update (|g0| < clip)
    unclipped = _reference(w, a, y_train, y_val, buf, **kw)
    clipped = _reference(w, a, y_train, y_val, buf, clip=s.grad_clip, **kw)
    assert np.linalg.norm(unclipped - clipped) > 0.05 * np.linalg.norm(unclipped)
    np.testing.assert_allclose(got, clipped if fd_clip else unclipped, rtol=1e-7, atol=1e-6)


def test_resuming_a_finite_difference_run_of_before_fd_clip_is_refused(tmp_path):
    """A workdir written before `search.fd_clip` existed ran a clipped finite-difference virtual
    step: resuming it with the new default (unclipped) would mix two experiments; a first-order
    run of then resumes as it is, and so does the old behaviour asked for explicitly."""
    for order, fd_clip, refused in [
        ("finite_difference", False, True),
        ("finite_difference", True, False),
        ("first", False, False),
    ]:
        workdir = tmp_path / f"{order}-{fd_clip}"
        (workdir / "checkpoints" / "1").mkdir(parents=True)  # a completed step: a run to resume
        old = configlib.default_config()
        old.order = order
        del old.search["fd_clip"]  # what dnas wrote before the field existed
        (workdir / "config.json").write_text(json.dumps(old.to_dict()))
        config = configlib.default_config()
        config.order, config.search.fd_clip = order, fd_clip
        if refused:
            with pytest.raises(configlib.ConfigError, match=r"differs in search\.fd_clip"):
                configlib.prepare_workdir(str(workdir), config)
        else:
            assert configlib.prepare_workdir(str(workdir), config) == str(workdir)
