"""Data parallelism on 8 simulated CPU devices: a sharded step computes what the one-device step
computes on the same global batch, the alphas are one replicated array, and a whole search run on
8 devices ends where the one-device run ends.

The 8-device tests need `--xla_force_host_platform_device_count=8` before JAX starts, so
`test_on_8_simulated_devices` runs this file again in a subprocess with that flag; in a session
that already has 8 devices they run directly.
"""

import itertools
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from dnas import configlib, data, loop, parallel, search, search_step, spaces, train

N = 8
multidevice = pytest.mark.skipif(
    jax.device_count() < N, reason="needs 8 devices; test_on_8_simulated_devices runs it"
)
# The 8-device tests in two subprocesses, which the session's workers run side by side. The
# search step and the search run share one group, in this order, so that the run loads the
# one-device and eight-device steps of `_tiny("nb201")` that the first test compiled.
MULTIDEVICE_GROUPS = {
    "search": ["test_sharded_search_step_equals_one_device",
               "test_search_run_on_8_devices_ends_where_1_device_ends",
               "test_batch_that_does_not_split_is_refused"],
    "bf16_train_text": ["test_bfloat16_sharded_search_step_agrees_with_one_device",
                        "test_sharded_train_step_equals_one_device",
                        "test_sharded_text_search_step_equals_one_device"],
}  # fmt: skip


@pytest.mark.parametrize("group", list(MULTIDEVICE_GROUPS))
def test_on_8_simulated_devices(group):
    if jax.device_count() >= N:
        pytest.skip("this session has 8 devices: the tests below run directly")
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N}"
    env = {**os.environ, "XLA_FLAGS": flags.strip()}
    tests = [f"{__file__}::{name}" for name in MULTIDEVICE_GROUPS[group]]
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *tests]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    # All of them ran (none skipped) and passed; the summary may also count warnings.
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(rf"\b{len(tests)} passed\b", summary), proc.stdout[-2000:]
    assert "skipped" not in summary, proc.stdout[-2000:]


def test_every_8_device_test_is_in_a_group():
    tests = {n: f for n, f in globals().items() if n.startswith("test_")}
    marked = {n for n, f in tests.items() if multidevice.mark in getattr(f, "pytestmark", [])}
    assert marked == {n for group in MULTIDEVICE_GROUPS.values() for n in group}


def _tiny(space: str, order: str = "first") -> configlib.ml_collections.ConfigDict:
    config = configlib.default_config()
    config.space, config.order, config.progress = space, order, False
    s, t = config.search, config.train
    s.C, s.layers, s.batch_size, s.epochs = 2, 1, 16, 1
    t.C, t.layers, t.batch_size, t.epochs = 4, 1, 16, 1
    config.checkpoint_every_steps = 5
    return config


def _digits_480() -> data.Splits:
    """The digits with the first 480 training images: 15 search steps of 16 an epoch instead of
    39, as the search run's 8 simulated devices step slowly on 2 cores. The search steps below
    read it too, so that the run's steps (whose learning-rate schedule spans its epoch) are the
    programs they compiled."""
    digits = data.digits_splits()
    return digits._replace(train=digits.train.subset(0, 480))


def _search_steps(config, mesh, steps: int = 2):
    """(state after `steps` steps on `_digits_480`, their metrics, the initial alphas)."""
    su = search_step.setup(config, splits=_digits_480())
    state = parallel.replicate(search_step.create_state(config, su), mesh)
    initial = jax.device_get(state.alphas)
    b = config.search.batch_size
    batches = [
        (
            data.batch_at(su.weights_source, b, i, seed=0),
            data.batch_at(su.alphas_source, b, i, seed=1),
        )
        for i in range(steps)
    ]
    sharded = list(parallel.shard_batches(batches, mesh))
    step, _ = loop.compile_step(su.step_fn, "step", False, state, *sharded[0], mesh=mesh)
    out = []
    for batch in sharded:
        state, m = step(state, *batch)
        out.append(m)
    return state, out, initial


def _assert_replicated(tree, mesh):
    for leaf in jax.tree.leaves(tree):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == mesh.size
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        for s in shards[1:]:
            np.testing.assert_array_equal(s, shards[0])  # bit-identical on every device


@multidevice
def test_sharded_search_step_equals_one_device():
    # NAS-Bench-201's cell: the sharding is the step's, whatever the space, and the DARTS
    # space's supernet compiles several times longer (twice here: one device and eight).
    config = _tiny("nb201")
    one, m_one, initial = _search_steps(config, parallel.make_mesh(1))
    mesh = parallel.make_mesh(N)
    eight, m_eight, _ = _search_steps(config, mesh)
    _assert_replicated(eight.alphas, mesh)
    _assert_replicated(eight.params, mesh)
    close = dict(rtol=2e-4, atol=2e-6)
    for a, b in zip(jax.tree.leaves(one.alphas), jax.tree.leaves(eight.alphas), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **close)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **close)
    for k in ("train/loss", "val/loss", "grad_norm/alphas"):
        got = [float(m[k]) for m in m_eight]
        np.testing.assert_allclose(got, [float(m[k]) for m in m_one], rtol=1e-4)
    # The steps did move the alphas (the comparison above is not between two initial states):
    # Adam moves each alpha by about alpha_lr a step, far beyond the comparison's tolerance.
    alpha_lr = config.search.alpha_lr
    for cell in initial:
        moved = np.abs(np.asarray(eight.alphas[cell]) - initial[cell])
        assert np.median(moved) > alpha_lr / 2, cell


@multidevice
def test_bfloat16_sharded_search_step_agrees_with_one_device():
    """precision=bfloat16 with data parallelism: the alphas' updates of two steps on 8 devices
    point where one device's do, and the losses agree to bfloat16's precision."""
    config = _tiny("nb201")
    config.precision = "bfloat16"  # with remat: test_precision.py (one device)
    one, m_one, initial = _search_steps(config, parallel.make_mesh(1))
    mesh = parallel.make_mesh(N)
    eight, m_eight, _ = _search_steps(config, mesh)
    _assert_replicated(eight.alphas, mesh)
    assert {x.dtype.name for x in jax.tree.leaves((eight.params, eight.alphas))} == {"float32"}
    for k in ("train/loss", "val/loss"):
        got = [float(m[k]) for m in m_eight]
        np.testing.assert_allclose(got, [float(m[k]) for m in m_one], rtol=1e-2, err_msg=k)
    first = float(m_eight[0]["grad_norm/alphas"]), float(m_one[0]["grad_norm/alphas"])
    np.testing.assert_allclose(*first, rtol=2e-2)  # the same state: only rounding differs
    # Adam's first steps move each alpha by about alpha_lr times the sign of its gradient, so
    # entries whose gradient is near zero move either way: 0.96 here (float32: 1 to 1e-4).
    u1 = np.concatenate([np.ravel(np.asarray(one.alphas[g]) - initial[g]) for g in initial])
    u8 = np.concatenate([np.ravel(np.asarray(eight.alphas[g]) - initial[g]) for g in initial])
    assert u1 @ u8 / (np.linalg.norm(u1) * np.linalg.norm(u8)) > 0.9


@multidevice
def test_sharded_train_step_equals_one_device():
    # NAS-Bench-201's network: the sharding is the training loop's, whatever the space.
    config = _tiny("nb201")
    # Every edge a convolution, so that every parameter array has a gradient.
    geno = spaces.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+"
                        "|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|")  # fmt: skip
    results = []
    for n in (1, N):
        mesh = parallel.make_mesh(n)
        su = train.setup(config, geno)
        state = train.create_state(config, su)
        initial = jax.device_get(state.params)
        state = parallel.replicate(state, mesh)
        batch = parallel.shard_batch(data.batch_at(su.splits.train, 16, 0, seed=2), mesh)
        step, _ = loop.compile_step(su.step_fn, "step", False, state, batch, mesh=mesh)
        state, m = step(state, batch)
        state, m = step(state, batch)
        results.append((jax.device_get(state.params), jax.device_get(state.batch_stats), m))
    (p1, s1, m1), (p8, s8, m8) = results
    for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p8, s8)), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(float(m8["train/loss"]), float(m1["train/loss"]), rtol=1e-4)
    # The steps did move the parameters, every array, most entries beyond the tolerance above.
    pairs = list(zip(jax.tree.leaves(initial), jax.tree.leaves(p8), strict=True))
    assert all((a != b).any() for a, b in pairs)
    beyond = np.concatenate([np.ravel(np.abs(b - a) > 2e-6 + 2e-4 * np.abs(a)) for a, b in pairs])
    assert beyond.mean() > 0.5


@multidevice
def test_search_run_on_8_devices_ends_where_1_device_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "load", lambda *args, **kwargs: _digits_480())
    alphas = {}
    for n in (1, N):
        config = _tiny("nb201")  # the steps of the first test: loaded from the cache
        config.num_devices = n
        config.checkpoint_every_steps = 1000  # one checkpoint, the epoch's end
        geno = search.run(config, str(tmp_path / f"dev{n}"))
        alphas[n] = np.load(tmp_path / f"dev{n}" / "alphas.npz")
        assert spaces.load_json(tmp_path / f"dev{n}" / "genotype.json") == geno
    # Adam divides by the gradient's running RMS, so where a gradient is at float-noise level
    # the update's sign is noise: compare to a fraction of one step (alpha_lr = 3e-4).
    np.testing.assert_allclose(alphas[N]["normal"], alphas[1]["normal"], rtol=0, atol=3e-5)
    records = (tmp_path / f"dev{N}" / "metrics.jsonl").read_text().splitlines()
    assert any("epoch" in json.loads(r) for r in records)


@multidevice
def test_batch_that_does_not_split_is_refused(tmp_path):
    config = _tiny("nb201")
    config.search.batch_size = 12
    with pytest.raises(ValueError, match="does not split over 8 devices"):
        search.run(config, str(tmp_path / "w"))


@multidevice
def test_sharded_text_search_step_equals_one_device():
    """The recurrent cell's search (darts_rnn on the embedded text): segments split over the
    devices by rows, the node BatchNorms' statistics over the whole batch, the carried states
    replicated; two steps end where one device's do."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = configlib.load(os.path.join(root, "experiments/darts_rnn/ptb_search.py") + ":smoke")
    config.search.batch_size = 8
    from dnas import lm

    results = []
    for n in (1, N):
        mesh = parallel.make_mesh(n)
        su = search_step.setup(config)
        state = parallel.replicate(search_step.create_state(config, su), mesh)
        initial = jax.device_get(state.alphas)
        batches = list(parallel.shard_batches(itertools.islice(lm.search_batches(su.text, 0), 2),
                                              mesh))  # fmt: skip
        step, _ = loop.compile_step(su.step_fn, "step", False, state, *batches[0], mesh=mesh)
        for batch in batches:
            state, m = step(state, *batch)
        if n == N:
            _assert_replicated(state.alphas, mesh)
        results.append((jax.device_get(state.alphas), jax.device_get(state.carry), m))
    (a1, c1, m1), (a8, c8, m8) = results
    # Adam moves each alpha by about alpha_lr (3e-3) a step whatever its gradient's size, so
    # two roundings of a near-zero gradient part by more than a relative tolerance allows: one
    # of 180 alphas was 4e-6 apart on one CPU. The tolerance is 1% of one step, and the steps
    # moved most alphas by half a step or more.
    alpha_lr = config.search.alpha_lr
    np.testing.assert_allclose(a8["recurrent"], a1["recurrent"], rtol=1e-4, atol=1e-2 * alpha_lr)
    assert np.median(np.abs(a8["recurrent"] - initial["recurrent"])) > alpha_lr / 2
    for x, y in zip(jax.tree.leaves(c1), jax.tree.leaves(c8), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    for k in ("train/loss", "val/loss"):
        np.testing.assert_allclose(float(m8[k]), float(m1[k]), rtol=1e-4)
