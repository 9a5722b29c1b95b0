"""`dnas sweep`: members (seeds x values of one hyper-parameter) searched as one vmapped program
end where separate searches with the same seed and value end."""

import json

import numpy as np
import pytest

from dnas import configlib, search, spaces, sweep


def _tiny():
    config = configlib.default_config()
    config.space, config.progress = "nb201", False
    s = config.search
    s.C, s.layers, s.batch_size, s.epochs = 2, 1, 64, 1
    config.checkpoint_every_steps = 100
    return config


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    config = configlib.override(
        _tiny(), ["sweep.seeds=0-1", "sweep.param=search.alpha_lr", "sweep.param_values=3e-4,0.03"]
    )
    genotypes = sweep.run(config, str(root / "sweep"))
    return root, config, genotypes


def test_members_are_seeds_times_values():
    config = configlib.override(
        _tiny(),
        ["sweep.seeds=0-2,7", "sweep.param=alpha_weight_decay", "sweep.param_values=0,1e-2"],
    )
    name, ms = sweep.members(config)
    assert name == "alpha_weight_decay"
    assert [(m.seed, m.value) for m in ms] == [
        (s, v) for s in (0, 1, 2, 7) for v in (0.0, 1e-2)
    ]  # fmt: skip
    assert sweep.members(_tiny())[1] == [sweep.Member(0)]


@pytest.mark.parametrize(
    "assignments,message",
    [
        (["sweep.seeds=a-b"], "expected integers and ascending ranges"),
        (["sweep.seeds=7-0"], "expected integers and ascending ranges"),  # was: no seed at all
        (["sweep.param=search.epochs", "sweep.param_values=1,2"], "cannot be swept"),
        (["sweep.param=search.lr"], "needs sweep.param_values"),
        (["sweep.param_values=1,2"], "sweep.param is not"),
        (["sweep.param=search.lr", "sweep.param_values=1,x"], "comma-separated numbers"),
    ],
)
def test_bad_sweeps_are_refused(assignments, message):
    with pytest.raises(configlib.ConfigError, match=message):
        sweep.members(configlib.override(_tiny(), assignments))


def test_sweep_equals_separate_searches(swept):
    root, config, genotypes = swept
    name, ms = sweep.members(config)
    assert len(genotypes) == len(ms) == 4
    summary = json.loads((root / "sweep" / "sweep.json").read_text())["members"]
    alphas = {}
    for i, m in enumerate(ms):
        single = sweep.member_config(config, name, m)
        single.sweep.seeds, single.sweep.param, single.sweep.param_values = "", "", ""
        geno = search.run(single, str(root / f"single{i}"))
        assert genotypes[i] == geno
        assert summary[i]["genotype"] == geno.to_string() and summary[i]["seed"] == m.seed
        got = np.load(root / "sweep" / f"m{i}" / "alphas.npz")
        want = np.load(root / f"single{i}" / "alphas.npz")
        for cell in want.files:
            # "Up to float summation order": vmapped convolutions sum in another order, and
            # Adam's sign-like first steps amplify that where a gradient is near zero (on an
            # AVX-512 CPU up to 0.2% of the largest alpha after 9 steps). Another seed or value
            # would differ by about the alphas' own size.
            atol = 1e-2 * float(np.abs(want[cell]).max())
            np.testing.assert_allclose(got[cell], want[cell], rtol=1e-4, atol=atol)
        alphas[i] = want["normal"]
        stored = spaces.load_json(root / "sweep" / f"m{i}" / "genotype.json")
        assert stored == geno
    # The members differ: seeds start apart, and alpha_lr 0.03 moves the alphas 100x further.
    assert not np.allclose(alphas[0], alphas[2])
    step0 = np.abs(alphas[0] - alphas[0].mean()).max()
    step1 = np.abs(alphas[1] - alphas[1].mean()).max()
    assert step1 > 5 * step0


def test_a_swept_gradient_clip_means_what_it_means_alone():
    """Under vmap the clip is an array; 0 must still mean no clipping (not a zero update)."""
    import jax
    import jax.numpy as jnp

    from dnas import optim

    params, grads = {"w": jnp.array([3.0, 4.0])}, {"w": jnp.array([30.0, 40.0])}  # |g| = 50

    def update(clip):
        tx = optim.sgd(0.1, momentum=0.9, weight_decay=0.0, grad_clip=clip)
        return tx.update(grads, tx.init(params), params)[0]["w"]

    clips = (0.0, 1.0, 100.0, -1.0)
    swept = np.asarray(jax.vmap(update)(jnp.array(clips)))
    np.testing.assert_allclose(swept[0], [-3.0, -4.0], rtol=1e-6)  # unclipped: -0.1 g
    np.testing.assert_allclose(swept[1], [-0.06, -0.08], rtol=1e-5)  # norm clipped to 1
    np.testing.assert_allclose(swept[2], [-3.0, -4.0], rtol=1e-6)  # under the clip
    np.testing.assert_allclose(swept[3], [-3.0, -4.0], rtol=1e-6)  # <= 0: off
    for clip, row in zip(clips, swept, strict=True):  # as the same value alone
        np.testing.assert_allclose(update(clip), row, rtol=1e-6)
