"""The chain spaces (ProxylessNAS, FBNet): published sizes, the supernet against the discrete
network and against itself (active paths), `zero` blocks, the mask, text/JSON, candidates.

The full spaces (21/22 rows of 6-8 MBConvs) take over a minute to compile a supernet gradient on
2 CPU cores, so the supernet checks run on a small chain of the same machinery (`TINY`: the
ProxylessNAS and FBNet op factories over a stage of 2 blocks and one of 1); the full spaces are
checked abstractly (`jax.eval_shape`) and through their genotypes, candidates and costs.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import evaluate, spaces, state
from dnas.spaces import chain, fbnet, proxyless

CHAIN_SPACES = ("proxyless", "fbnet")

# (params, multiply-adds) at 224x224x3, 1000 classes.
PUBLISHED = {
    # The authors' training logs (mit-han-lab/proxylessnas logs/imagenet_*_log.txt): exact.
    "proxyless_gpu": (7_119_848, 465_260_160),  # 7.12M, 465.3M
    "proxyless_cpu": (4_361_648, 439_243_864),  # 4.36M, 439.2M
    "proxyless_mobile": (4_080_512, 320_427_584),  # 4.08M, 320.4M
    # FBNet paper, Table 3: A 4.3M / 249M (matches).
    "fbnet_a": (4_321_464, 249_921_848),
    # B: 4.5M / 295M in the paper. mobile-vision's released fbnet_b (head 1984) has 4.86M /
    # 306M; with the paper's 1504 head it would be 4.21M / 297.5M: the released and the
    # published FBNet-B differ (third-party copies list yet another stage 4).
    "fbnet_b": (4_863_288, 306_210_888),
    # C: 5.5M / 375M in the paper; mobile-vision's fbnet_c (head 1984) gives 5.57M / 385.0M;
    # the paper's multiply-adds match a 1504 head (376.2M), its parameters the 1984 head.
    "fbnet_c": (5_572_200, 384_960_160),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_networks_have_the_published_size(name):
    genotype = spaces.KNOWN[name]
    model = genotype.search_space.network(genotype, 1000, input_shape=(224, 224, 3))
    stats = evaluate.model_stats(model, (224, 224, 3))
    assert (stats["params"], stats["macs"]) == PUBLISHED[name]


# --------------------------------------------------------------------------------------------------
# A small chain of the same machinery, for the supernet checks.

TINY = {
    "proxyless": chain.ChainSpec(
        "tiny_proxyless", proxyless.OPS, (chain.Stage(8, 2, 2), chain.Stage(16, 1, 2)),
        (8, 8, 8, 16, 32), proxyless.make_op, "relu6", 1e-3, first_block=(3, 1),
        shortcut_only=("zero",),
    ),
    "fbnet": chain.ChainSpec(
        "tiny_fbnet", fbnet.OPS, (chain.Stage(8, 2, 1), chain.Stage(16, 1, 2)),
        (8, 8, 16, 32), fbnet.make_op, "relu",
    ),
}  # fmt: skip
TINY_SPACES = {name: chain.chain_space(spec) for name, spec in TINY.items()}


def _x(shape=(4, 8, 8, 3), seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def _merged(into, values):
    """`into` with the leaves that `values` has (the supernet has no candidate-op BN affines)."""
    if not isinstance(into, dict):
        return values
    return {k: _merged(v, values[k]) if k in values else v for k, v in into.items()}


@pytest.mark.parametrize("name", CHAIN_SPACES)
def test_one_hot_supernet_equals_the_discrete_network(name):
    space = TINY_SPACES[name]
    supernet = space.supernet(10, C=None)
    x = _x()
    w = {"blocks": jnp.ones(space.alpha_shapes["blocks"]) / space.num_ops}
    params = state.init_variables(supernet, jax.random.key(1), x, w)["params"]
    rng = np.random.default_rng(0)
    for _ in range(1):
        genotype = space.random_genotype(rng)
        net = space.network(genotype, 10, input_shape=x.shape[1:])
        variables = state.init_variables(net, jax.random.key(2), x)  # compiled: eager is slow
        net_params = _merged(variables["params"], params)
        for r, op in enumerate(genotype.blocks):  # the chosen op's parameters, and no others
            assert set(net_params[f"b{r}"]) <= {op}
        mix = {k: jnp.asarray(v) for k, v in space.genotype_mix(genotype).items()}
        want = jax.jit(lambda p, m: supernet.apply({"params": p}, x, m, train=True))(params, mix)
        apply = jax.jit(
            lambda v, net=net: net.apply(v, x, train=True, mutable=["batch_stats"])[0][0]
        )
        got = apply({**variables, "params": net_params})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        one_op = supernet.clone(single_op=True)
        single = jax.jit(lambda p, m, one_op=one_op: one_op.apply({"params": p}, x, m, train=True))(
            params, mix
        )
        np.testing.assert_allclose(single, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CHAIN_SPACES)
def test_active_paths_equal_the_full_mixture_and_its_gradients(name):
    space = TINY_SPACES[name]
    rows, K = space.alpha_shapes["blocks"]
    supernet = space.supernet(10, C=None)
    x = _x()
    rng = np.random.default_rng(1)
    active = np.stack([rng.choice(np.flatnonzero(space.mask["blocks"][r]), 2, replace=False)
                       for r in range(rows)]).astype(np.int32)  # fmt: skip
    w = np.zeros((rows, K), np.float32)
    w[np.arange(rows)[:, None], active] = rng.uniform(0.2, 0.8, (rows, 2))
    w = jnp.asarray(w)
    params = state.init_variables(supernet, jax.random.key(1), x, {"blocks": w})["params"]

    def loss(net, params, w, active):
        mix = {"blocks": w} | ({} if active is None else {"active/blocks": active})
        return jnp.sum(net.apply({"params": params}, x, mix, train=True) ** 2)

    grad = jax.value_and_grad(loss, (1, 2))
    switched = supernet.clone(pad_paths=False)
    # One compilation: the full mixture, the paths padded (the default) and switched.
    (full, (gp_full, g_full)), (paths, (gp_paths, g_paths)), (switch, (gp_switch, g_switch)) = (
        jax.jit(lambda p, w, a: [grad(supernet, p, w, None), grad(supernet, p, w, a),
                                 grad(switched, p, w, a)])(params, w, jnp.asarray(active))
    )  # fmt: skip
    at = (np.arange(rows)[:, None], active)
    for value, g_w, g_params in ((paths, g_paths, gp_paths), (switch, g_switch, gp_switch)):
        np.testing.assert_allclose(value, full, rtol=1e-5)
        np.testing.assert_allclose(g_w[at], g_full[at], rtol=1e-4, atol=1e-6)
        # Every parameter's gradient (0 for the ops no path takes), up to float32 rounding of
        # sums over the batch and pixels (~1e-5 of the largest entry; a kernel feeding a
        # BatchNorm has a gradient of 0 up to rounding, ~1e-8).
        for a, b in zip(jax.tree.leaves(g_params), jax.tree.leaves(gp_full), strict=True):
            atol = max(1e-5 * float(np.abs(b).max()), 1e-6)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)
    # A padded path is one MBConv (3 convs) and the ops that are no plain MBConv (FBNet's _g2
    # ops, 3 convs each); a switched path has every op. (One path: the printed jaxpr shows the
    # branches two switches share once.)
    block = chain.MixedBlock(TINY[name], 8, 8, 1, True, parent=None)
    x8, w_K, path = jnp.ones((2, 8, 8, 8)), jnp.ones(K) / K, jnp.array([0])
    v = jax.eval_shape(lambda k: block.init(k, x8, w_K, path, True), jax.random.key(0))

    def convs(**pad):
        jaxpr = jax.make_jaxpr(lambda v: block.clone(**pad).apply(v, x8, w_K, path, True))(v)
        return str(jaxpr).count("conv_general_dilated")

    assert convs(pad_paths=False) == {"proxyless": 6 * 3, "fbnet": 8 * 3}[name]
    assert convs(pad_paths=True) == {"proxyless": 3, "fbnet": 3 + 2 * 3}[name]


@pytest.mark.parametrize("name", CHAIN_SPACES)
def test_the_folded_mixture_equals_one_module_per_op_and_so_do_its_gradients(name):
    """fold=True (a row's MBConvs as one expansion conv, depthwise convs per op or per kernel
    size, a batched projection per expansion ratio) against fold=False (one MBConv module per
    op), with the same parameters: the layout is the same, one subtree per op."""
    spec = TINY[name]
    # A row with stride 2 and a change of width (FBNet's skip is then a conv).
    block = chain.MixedBlock(spec, 8, 16, 2, False, fold=False, parent=None)
    x = _x((4, 8, 8, 8))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(2), (len(spec.ops),)))
    w = w * jnp.asarray(spec.mask[0])  # the first row of a stage: no `zero`
    rng = np.random.default_rng(0)  # parameters drawn on the host: no init to compile
    shapes = jax.eval_shape(lambda k: block.init(k, x, w, None, True), jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.asarray(rng.uniform(-0.5, 0.5, s.shape), s.dtype), shapes)

    def loss(fold, params, w, x):
        y = block.clone(**fold).apply(params, x, w, None, True)
        return jnp.sum(jnp.sin(y)), y

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * float(np.abs(b).max()))

    folds = ({"fold": False}, {"fold": True}, {"fold": True, "fold_depthwise": True})
    grads = [jax.value_and_grad(functools.partial(loss, f), (0, 1, 2), has_aux=True) for f in folds]
    # One compilation of the three (unfolded, folded, folded by kernel size).
    results = jax.jit(lambda p, w, x: [grad(p, w, x) for grad in grads])(params, w, x)
    ((_, want), want_grads), *folded = results
    for (_, got), got_grads in folded:
        close(got, want)
        # float32 rounding: sums of many terms (a mixing weight's or a kernel's gradient sums over
        # the batch and the pixels) differ by up to ~1e-5 of the largest entry (2.5e-5 on an
        # AVX-512 CPU), not of each one.
        for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
            close(a, b)
    # The supernet folds by default, in the same parameter layout as unfolded.
    space = TINY_SPACES[name]
    folded = space.supernet(10, C=None)
    mix = {"blocks": jnp.ones(space.alpha_shapes["blocks"])}
    shapes = [jax.eval_shape(m.init, jax.random.key(1), x[..., :3], mix)["params"]
              for m in (folded, folded.clone(fold=False))]  # fmt: skip
    assert folded.fold and jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
    # What folds: the plain MBConvs (FBNet's _g2 ops and skip conv stay modules); fewer ops.
    modules = {op: spec.make_op(op, 8, 8, 1, True, False, False) for op in spec.ops}
    expected = {"proxyless": proxyless.OPS[:-1], "fbnet": ("k3_e1", "k3_e3", "k3_e6", "k5_e1",
                                                            "k5_e3", "k5_e6")}[name]  # fmt: skip
    assert set(chain.foldable(modules)) == set(expected)

    def convs(**fold):
        block = chain.MixedBlock(spec, 8, 8, 1, True, **fold, parent=None)
        x8, w_K = jnp.ones((2, 8, 8, 8)), jnp.ones(len(space.ops)) / len(space.ops)
        v = jax.eval_shape(lambda k: block.init(k, x8, w_K, None, True), jax.random.key(0))
        jaxpr = jax.make_jaxpr(lambda v: block.apply(v, x8, w_K, None, True))(v)
        return str(jaxpr).count("conv_general_dilated")

    # proxyless: 6 MBConvs, 3 convs each; folded 1 expansion + 6 depthwise (or one per kernel
    # size, 3) + 0 (the projections are matmuls). fbnet: 6 + 2 _g2 ops, folded 1 + 6 (or 2).
    assert convs(fold=False) == {"proxyless": 18, "fbnet": 8 * 3}[name]
    assert convs(fold=True) == {"proxyless": 7, "fbnet": 7 + 2 * 3}[name]
    assert convs(fold=True, fold_depthwise=True) == {"proxyless": 4, "fbnet": 3 + 2 * 3}[name]


def test_zero_blocks_have_no_parameters_compute_nothing_and_pass_the_input_on():
    spec = proxyless.SPEC
    row = next(r for r in range(spec.num_rows) if spec.shortcuts[r])
    block = chain.Block(spec, 24, 24, 1, True, "zero", parent=None)
    stats = evaluate.model_stats(block, (8, 8, 24), train=False)
    assert stats["params_total"] == 0 and stats["macs"] == 0
    x = _x((2, 8, 8, 24))
    np.testing.assert_array_equal(block.apply({}, x, False), x)
    # In a network: the zero rows hold no parameters.
    genotype = spaces.KNOWN["proxyless_gpu"]
    net = proxyless.SPACE.network(genotype, 10, input_shape=(32, 32, 3))
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    for r, op in enumerate(genotype.blocks):
        assert (f"b{r}" in shapes) == (op != "zero"), (r, op)
    assert row == 1


# --------------------------------------------------------------------------------------------------
# The mask, genotypes, formats.


def test_the_mask_allows_zero_only_where_a_block_has_a_shortcut():
    mask = proxyless.SPACE.mask["blocks"]
    zero = proxyless.SPACE.op_index("zero")
    first_rows = [0, 4, 8, 12, 16, 20]
    assert not mask[first_rows, zero].any() and mask.sum() == 21 * 6 + 15
    assert fbnet.SPACE.mask["blocks"].all()  # FBNet's skip is a candidate of every layer
    # Discretise: `zero` of largest weight everywhere, taken only where allowed.
    w = np.zeros(mask.shape)
    w[:, zero] = 1.0
    w[:, 1] = 0.5
    found = proxyless.SPACE.discretise({"blocks": w})
    assert [r for r, op in enumerate(found.blocks) if op != "zero"] == first_rows
    assert {found.blocks[r] for r in first_rows} == {"mb3_e6"}
    rng = np.random.default_rng(0)
    seen = np.zeros(mask.shape, bool)
    for _ in range(300):
        g = proxyless.SPACE.random_genotype(rng)
        seen |= proxyless.SPACE.genotype_mix(g)["blocks"] > 0
        g = proxyless.SPACE.mutate(g, rng)
        assert all(op != "zero" for op in np.array(g.blocks)[first_rows])
    np.testing.assert_array_equal(seen, mask)  # every allowed choice, nothing else
    sample = jax.jit(proxyless.SPACE.sample_mix)
    alphas = {"blocks": jnp.zeros(mask.shape)}
    for k in range(20):
        assert np.all(mask[np.asarray(sample(jax.random.key(k), alphas)["blocks"]) > 0])
    blocks = list(spaces.KNOWN["proxyless_mobile"].blocks)
    blocks[4] = "zero"
    with pytest.raises(ValueError, match=r"blocks\[4\]: 'zero' is not allowed in row b4 "
                                         r"\(stage 2, block 1\)"):  # fmt: skip
        proxyless.SPACE.genotype(blocks=blocks)


@pytest.mark.parametrize("name", ["proxyless_gpu", "proxyless_mobile", "fbnet_a", "fbnet_c"])
def test_text_and_json_round_trip(name):
    genotype = spaces.KNOWN[name]
    text = genotype.to_string()
    assert spaces.parse(text) == genotype == spaces.load(text) == spaces.load(name.upper())
    assert spaces.from_json(json.loads(json.dumps(genotype.to_json()))) == genotype
    space = genotype.search_space
    random = space.random_genotype(np.random.default_rng(3))
    assert "[" not in random.to_string() and "widths" not in random.to_json()
    assert spaces.parse(random.to_string()) == random


def test_parse_errors_name_what_and_where():
    ops_ = "-".join(["mb3_e3"] * 21)
    for text, needle in [
        ("proxyless:" + ops_[:-7], "found 20 ops; expected 21"),
        ("proxyless:" + ops_.replace("mb3_e3", "mb9_e3", 1), "position 10.*unknown operation"),
        ("proxyless:zero" + ops_[6:], "position 10.*'zero' is not allowed in row b0"),
        ("proxyless[32,16]:" + ops_, "widths must be 9 widths"),
        ("proxyless[32,x,24]:" + ops_, "position 13.*expected a width"),
        ("fbnet[8,16,24,32,64,112,184,352,1504]:" + "-".join(["skip"] * 22), "identity shortcut"),
    ]:
        with pytest.raises(ValueError, match=needle) as err:
            spaces.parse(text)
        assert "\n" not in str(err.value)
    assert not any(f.detect("Genotype(normal=[])") or f.detect("|nor_conv_3x3~0|")
                   for _, f in spaces.formats("fbnet") + spaces.formats("proxyless"))  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Candidates and costs.


@pytest.mark.parametrize("name", CHAIN_SPACES)
def test_candidates_cover_every_row_and_add_up_to_the_network(name):
    space = spaces.get(name)
    shape = (32, 32, 3)
    supernet = space.supernet(10, C=8)
    cands = space.candidates(supernet, shape)
    mask = space.mask["blocks"].copy()
    mask[:, list(space.ops).index("zero") if "zero" in space.ops else []] = False
    assert sorted((c.row, space.op_index(c.op)) for c in cands) == sorted(
        map(tuple, np.argwhere(mask))
    )
    costs = space.op_costs(supernet, shape)["blocks"]
    assert costs.shape == (1, *space.alpha_shapes["blocks"], 3)

    def stats(genotype):
        return evaluate.model_stats(space.network(genotype, 10, input_shape=shape, C=8), shape)

    # The fixed parts: a network whose blocks compute as little as possible, minus its blocks.
    cheapest = space.genotype(blocks=[space.ops[int(np.argmin(np.where(space.mask["blocks"][r],
                                                                       costs[0, r, :, 1], np.inf)))]
                                      for r in range(costs.shape[1])])  # fmt: skip
    rows = np.arange(costs.shape[1])
    fixed = (
        stats(cheapest)["macs"]
        - costs[0, rows, [space.op_index(o) for o in cheapest.blocks], 1].sum()
    )
    assert fixed > 0
    for seed in range(2):
        genotype = space.random_genotype(np.random.default_rng(seed))
        chosen = costs[0, rows, [space.op_index(op) for op in genotype.blocks]]
        s = stats(genotype)
        assert s["macs"] == fixed + chosen[:, 1].sum()
        # One candidate's block is exactly the discrete network's block.
        cand = next(c for c in cands if c.row == 5 and c.op == genotype.blocks[5])
        assert (
            evaluate.model_stats(cand.module, cand.input_shape, train=False)["macs"] == chosen[5, 1]
        )


def test_strides_follow_the_resolution_and_widths_follow_C():
    spec = proxyless.SPEC
    assert chain.strides(spec, (224, 224))[0] == 2 and sum(
        s == 2 for s in chain.strides(spec, (224, 224))[1]) == 4  # fmt: skip
    stem, rows = chain.strides(spec, (32, 32))
    assert stem == 1 and rows[0] == 1 and sum(s == 2 for s in rows) == 3
    stem, rows = chain.strides(spec, (8, 8))
    assert stem == 1 and sum(s == 2 for s in rows) == 1
    assert chain.widths(spec, None, 8) == (8, 4, 6, 16, 24, 24, 48, 80, 1280)
    assert chain.widths(spec, None, 64)[-1] == 2560 and chain.widths(spec) == spec.widths
    # A net's logits do not depend on the resolution's strides in shape.
    genotype = spaces.KNOWN["fbnet_a"]
    for shape in ((8, 8, 1), (32, 32, 3)):
        net = fbnet.SPACE.network(genotype, 10, input_shape=shape, C=8)
        x = jnp.zeros((2, *shape))
        out = jax.eval_shape(lambda x, net=net: net.init_with_output(jax.random.key(0), x)[0][0], x)
        assert out.shape == (2, 10)
