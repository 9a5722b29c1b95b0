"""Knowledge distillation (issue 19): the KD term against finite differences and its closed form,
the a = 0 step equal to the plain step, and a teacher identical to the student giving zero KL.
The `dnas train` / `dnas logits` paths with real teachers are in test_cli_commands.py (they
reuse its tiny run's search and retraining as teachers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import data, distill, optim, spaces, train
from dnas.search_step import Augmentation
from dnas.state import TrainState, init_variables

GENOTYPE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"  # noqa: E501
T = 4.0


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kd_gradient_matches_central_differences_and_the_closed_form():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(3, 5)) * 2, rng.normal(size=(3, 5)) * 2
    with jax.enable_x64(True):
        s64, t64 = jnp.asarray(s, jnp.float64), jnp.asarray(t, jnp.float64)
        loss = lambda z: distill.kd_loss(z, t64, T)
        grad = np.asarray(jax.grad(loss)(s64))
        eps, numeric = 1e-6, np.zeros_like(s)
        for i in np.ndindex(s.shape):
            d = np.zeros_like(s)
            d[i] = eps
            numeric[i] = (float(loss(s64 + d)) - float(loss(s64 - d))) / (2 * eps)
        value = float(loss(s64))
        no_teacher_grad = np.asarray(jax.grad(lambda z: distill.kd_loss(s64, z, T))(t64))
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    # d/ds [T^2 KL(p_t || p_s)] = T (p_s - p_t), per example; the batch mean divides by B.
    closed = T * (_softmax(s / T) - _softmax(t / T)) / len(s)
    np.testing.assert_allclose(grad, closed, rtol=1e-9, atol=1e-12)
    # KL by hand, and no gradient into the teacher's logits.
    p_t, p_s = _softmax(t / T), _softmax(s / T)
    by_hand = T * T * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), -1))
    np.testing.assert_allclose(value, by_hand, rtol=1e-12)
    assert value > 0 and not np.any(no_teacher_grad)
    assert float(distill.kd_loss(jnp.asarray(s), jnp.asarray(s), T)) == pytest.approx(0, abs=1e-6)


def test_a_zero_kd_weight_does_not_read_the_teacher():
    from dnas import configlib

    c = configlib.default_config()
    c.train.teacher, c.train.kd_weight = "/nonexistent/teacher", 0.0
    assert train.teacher_from_config(c, data.digits_splits().train) is None
    c.train.kd_weight = 0.5
    with pytest.raises(FileNotFoundError, match=r"neither a workdir nor a \.npz logits file"):
        train.teacher_from_config(c, data.digits_splits().train)


def test_objective_weights_the_two_terms():
    assert float(distill.objective(2.0, 3.0, 0.0)) == 2.0
    assert float(distill.objective(2.0, 3.0, 1.0)) == 3.0
    assert float(distill.objective(2.0, 3.0, 0.9)) == pytest.approx(0.1 * 2 + 0.9 * 3)


# ------------------------------------------------------------------- the retraining step itself


@pytest.fixture(scope="module")
def tiny():
    """(model, info, state, batches): a tiny NAS-Bench-201 network on 8 digits per batch."""
    info = data.get_info("digits")
    genotype = spaces.load(GENOTYPE)
    model = genotype.search_space.network(genotype, info.num_classes, input_shape=info.input_shape,
                                          C=2, layers=1)  # fmt: skip
    x = jnp.zeros((1, *info.input_shape))
    variables = init_variables(model, jax.random.key(0), x)
    tx = optim.sgd(0.05, momentum=0.9, weight_decay=3e-4, grad_clip=5.0)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"],
        batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]),
        rng=jax.random.key(1),
    )  # fmt: skip
    source = data.digits_splits().train
    batches = [data.batch_at(source, 8, step, seed=0) for step in range(2)]
    return model, info, tx, state, batches


def _step(tiny, **kw):
    model, info, tx, _, _ = tiny
    aug = Augmentation(crop_padding=1, flip=False, cutout_length=0)
    step = train.make_train_step(
        model, tx, info, aug, auxiliary_weight=0.4, drop_path_prob=0.0, epochs=1,
        steps_per_epoch=100, learning_rate=lambda step: 0.05, **kw,
    )  # fmt: skip
    return jax.jit(step)


def _teacher_like_the_student(model, kind="trained"):
    """The student's own network as a teacher, in the student's training mode (batch
    statistics; no drop-path at rate 0): at the student's variables its logits are the
    student's, on the same augmented batch."""

    def apply(variables, x):
        (logits, _), _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return logits.astype(jnp.float32)

    return distill.Teacher(kind, "", apply, None, None, {})


def _run(step, state, batches, *teacher_vars):
    metrics = []
    for batch in batches:
        state, m = step(state, *teacher_vars, batch)
        metrics.append(jax.device_get(m))
    return state, metrics


def test_a_zero_kd_weight_is_exactly_the_plain_step(tiny):
    model, _, _, state, batches = tiny
    teacher = _teacher_like_the_student(model)
    other = init_variables(model, jax.random.key(7), jnp.zeros((1, 8, 8, 1)))  # another network
    plain, _ = _run(_step(tiny), state, batches)
    zero, metrics = _run(
        _step(tiny, teacher=teacher, kd_weight=0.0, kd_temperature=T), state, batches, other
    )
    assert metrics[0]["train/kd"] > 0  # the teacher was there, and disagreed
    plain, zero = (s.replace(rng=jax.random.key_data(s.rng)) for s in (plain, zero))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(zero), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_teacher_identical_to_the_student_gives_zero_kl(tiny):
    model, _, _, state, batches = tiny
    teacher = _teacher_like_the_student(model)
    step = _step(tiny, teacher=teacher, kd_weight=0.9, kd_temperature=T)
    same = {"params": state.params, "batch_stats": state.batch_stats}
    _, metrics = _run(step, state, batches[:1], same)
    assert metrics[0]["train/kd"] == pytest.approx(0, abs=1e-6)
    # The total is then (1 - a) CE: the KD term's weight moved off the labels.
    assert metrics[0]["train/loss"] == pytest.approx(0.1 * metrics[0]["train/ce"], rel=1e-5)
    other = init_variables(model, jax.random.key(7), jnp.zeros((1, 8, 8, 1)))
    _, metrics = _run(step, state, batches[:1], other)
    assert metrics[0]["train/kd"] > 1e-3


def test_logits_in_the_batch_are_the_teacher_of_a_logits_file(tiny):
    """A logits file's teacher reads `teacher_logits` of the batch (`distill.WithLogits`):
    the student's own logits there give zero KL too."""
    model, info, _, state, batches = tiny
    source = data.digits_splits().train
    logits = np.zeros((len(source), info.num_classes), np.float32)
    wrapped = distill.WithLogits(source, logits)
    batch = data.batch_at(wrapped, 8, 0, seed=0)
    assert set(batch) == {"image", "label", "teacher_logits"}
    np.testing.assert_array_equal(batch["image"], batches[0]["image"])
    teacher = distill.Teacher("logits", "", None, None, logits, {})
    step = _step(tiny, teacher=teacher, kd_weight=0.5, kd_temperature=T)
    _, metrics = _run(step, state, [batch])
    # Uniform teacher logits: KL(uniform || p_s) at T, by hand from the student's logits.
    aug = jax.random.split(jax.random.fold_in(state.rng, 0))[0]
    x = data.preprocess(aug, jnp.asarray(batch["image"]), info, train=True, crop_padding=1,
                        flip=False, cutout_length=0)  # fmt: skip
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    (s, _), _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    log_p = np.log(_softmax(np.asarray(s, np.float64) / T))
    k = info.num_classes
    by_hand = T * T * np.mean(np.sum(-np.log(k) / k - log_p / k, -1))
    assert metrics[0]["train/kd"] == pytest.approx(by_hand, rel=1e-4)
