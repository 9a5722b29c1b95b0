"""The transformer space: the supernet under one-hot weights against the discrete network,
causality of every mixer, the mask, the cost model against eval_shape and the computation's own
products, the text format, discretisation and the builders' refusals. Tiny: d_model 8, 2
layers, a vocabulary of 11, sequences of 6, batches of 2; float64 where outputs are compared."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import hardware, spaces, strategies
from dnas.spaces import transformer

D, LAYERS, VOCAB, T, B = 8, 2, 11, 6, 2
SPACE = transformer.SPACE
SMALL = transformer.make_space(LAYERS, name="transformer_test2")  # 2 searched layers


def tokens(seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (B, T), 0, VOCAB, jnp.int32)


def uniform(layers: int = LAYERS) -> dict[str, np.ndarray]:
    """Equal weights over each group's own ops, 0 at the masked columns."""
    out = {}
    for group in transformer.GROUPS:
        m = transformer.group_mask(group).astype(np.float64)
        out[group] = np.tile(m / m.sum(), (layers, 1))
    return out


def as_f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def init_supernet(model, seed: int = 0):
    """float64 parameters of `model` (call inside `jax.enable_x64`)."""
    w = uniform(model.layers)
    init = jax.jit(lambda key: model.init(key, tokens(), w, train=False))  # compiles fast
    return as_f64(init(jax.random.key(seed, impl="unsafe_rbg")))


def subtree(tree, like):
    """The entries of `tree` at the paths of `like` (shapes checked): the network's parameters
    taken from the supernet's."""
    if isinstance(like, dict):
        assert set(like) <= set(tree), (sorted(like), sorted(tree))
        return {k: subtree(tree[k], v) for k, v in like.items()}
    assert tree.shape == like.shape
    return tree


# --------------------------------------------------------------------------------------------------
# The supernet and the network.

# Two-layer genotypes that together choose every op of both groups.
COVERING = [
    (("attn2", "attn4"), ("ffn1", "ffn2")),
    (("attn8", "conv3"), ("ffn4", "ffn_none")),
    (("conv7", "conv15"), ("ffn_none", "ffn4")),
    (("glu", "identity"), ("ffn2", "ffn1")),
    (("identity", "identity"), ("ffn_none", "ffn_none")),
]


def test_one_hot_supernet_is_the_discrete_network():
    rng = np.random.default_rng(0)
    genotypes = [SMALL.genotype(mixer=m, ffn=f) for m, f in COVERING]
    genotypes += [SMALL.random_genotype(rng) for _ in range(2)]
    with jax.enable_x64(True):
        supernet = SMALL.supernet(VOCAB, C=D, layers=LAYERS)
        variables = init_supernet(supernet)
        x = tokens(1)
        super_apply = jax.jit(
            lambda v, w: supernet.apply(v, x, w, carry=(), mask=None, train=False)
        )
        for genotype in genotypes:
            network = SMALL.network(genotype, VOCAB, C=D)
            shapes = jax.eval_shape(lambda k, n=network: n.init(k, x), jax.random.key(0))
            params = subtree(variables["params"], shapes["params"])
            mix = as_f64(SMALL.genotype_mix(genotype))
            logits, carry, hiddens = super_apply(variables, mix)
            # Eager: one compilation per genotype would cost more than it saves.
            expected, _, expected_h = network.apply({"params": params}, x, carry=(), train=False)
            assert logits.dtype == jnp.float64 and logits.shape == (B, T, VOCAB)
            assert hiddens.shape == (B, T, D) and carry == ()
            np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-10, err_msg=str(genotype))
            np.testing.assert_allclose(hiddens, expected_h, rtol=0, atol=1e-10)
        # The decoder is tied to the token embedding: logits = hiddens E^T + bias.
        p = variables["params"]
        tied = hiddens @ p["embed"]["embedding"].T + p["decoder_bias"]
        np.testing.assert_allclose(logits, tied, rtol=0, atol=1e-12)


def test_parameter_names_are_shared_and_free_ops_have_none():
    genotype = SMALL.genotype(mixer=("conv7", "identity"), ffn=("ffn_none", "ffn2"))
    x = tokens()
    network = SMALL.network(genotype, VOCAB, C=D)
    params = jax.eval_shape(lambda k: network.init(k, x), jax.random.key(0))["params"]
    top = ["decoder_bias", "embed", "final_norm", "layer_0", "layer_1", "pos_embed"]
    assert sorted(params) == top
    assert sorted(params["layer_0"]) == ["mixer", "mixer_norm"]  # ffn_none: no norm, no ffn
    assert sorted(params["layer_0"]["mixer"]["conv7"]) == ["depthwise", "project"]
    assert sorted(params["layer_1"]) == ["ffn", "ffn_norm"]
    supernet = SMALL.supernet(VOCAB, C=D, layers=LAYERS)
    init = lambda k: supernet.init(k, x, uniform(), train=False)
    full = jax.eval_shape(init, jax.random.key(0))["params"]
    assert sorted(full["layer_0"]["mixer"]) == sorted(
        op for op in transformer.MIXER_OPS if op != "identity"
    )
    assert sorted(full["layer_0"]["ffn"]) == ["ffn1", "ffn2", "ffn4"]


def test_every_mixer_is_causal():
    """Changing token t leaves the logits of positions < t unchanged (and changes position t),
    under uniform weights and under each mixer alone."""
    with jax.enable_x64(True):
        supernet = transformer.build_supernet(VOCAB, C=D, layers=LAYERS)
        variables = init_supernet(supernet, seed=3)
        apply = jax.jit(lambda x, w: supernet.apply(variables, x, w, train=False)[0])
        x = tokens(2)
        t = 3
        changed = x.at[:, t].set((x[:, t] + 1) % VOCAB)
        settings = {"uniform": uniform()}
        for op in transformer.MIXER_OPS:
            w = uniform()
            w["mixer"] = np.zeros_like(w["mixer"])
            w["mixer"][:, transformer.OPS.index(op)] = 1.0
            settings[op] = w
        for name, w in settings.items():
            before, after = apply(x, as_f64(w)), apply(changed, as_f64(w))
            np.testing.assert_allclose(before[:, :t], after[:, :t], atol=1e-12, err_msg=name)
            assert np.abs(before[:, t] - after[:, t]).max() > 1e-6, name


def test_dropout_only_in_training_and_carry_passes_through():
    genotype = transformer.SPACE.genotype(mixer=("attn4",), ffn=("ffn1",))
    network = transformer.build_network(genotype, VOCAB, C=D, dropout=0.5)
    x = tokens()
    variables = network.init(jax.random.key(0), x)
    carry = network.init_carry(B)
    assert carry == ()

    def run(key, train, carry=carry):
        return network.apply(
            variables, x, carry=carry, mask=jnp.ones((B, T)), train=train, rngs={"dropout": key}
        )

    a, b = run(jax.random.key(1), True)[0], run(jax.random.key(2), True)[0]
    assert not np.allclose(a, b)
    eval_a, eval_b = run(jax.random.key(1), False)[0], run(jax.random.key(2), False)[0]
    np.testing.assert_array_equal(eval_a, eval_b)
    marker = {"state": jnp.ones(3)}
    assert run(jax.random.key(1), False, marker)[1] is marker


def test_remat_computes_the_same_gradients():
    x, w = tokens(), uniform(1)
    plain = transformer.build_supernet(VOCAB, C=D, layers=1)
    remat = transformer.build_supernet(VOCAB, C=D, layers=1, remat=True)
    variables = plain.init(jax.random.key(0), x, w, train=False)

    def grad(model):
        def loss(p):
            rngs = {"dropout": jax.random.key(1)}
            return jnp.mean(model.apply({"params": p}, x, w, train=True, rngs=rngs)[0] ** 2)

        return jax.jit(jax.grad(loss))(variables["params"])

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        grad(plain),
        grad(remat),
    )


def test_builders_refuse_what_they_cannot_build():
    g = SMALL.genotype(mixer=("attn4", "glu"), ffn=("ffn1", "ffn1"))
    cases = [
        (lambda: transformer.build_supernet(VOCAB, C=12), "multiple of 8"),
        (lambda: transformer.build_supernet(VOCAB, C=D, partial_channels=2), "partial_channels=1"),
        (lambda: transformer.build_supernet(VOCAB, C=D, single_op=True), "single_op"),
        (lambda: transformer.build_supernet(VOCAB, C=D, dropout=1.0), "dropout must be"),
        (lambda: SPACE.supernet(VOCAB, C=D, layers=2), "searches 4 layers"),
        (lambda: SPACE.network(g, VOCAB, C=D, layers=3), "has 2 layers"),
        (lambda: SPACE.network(g, VOCAB, C=D, auxiliary=True), "no auxiliary head"),
        (lambda: SPACE.network(g, VOCAB, C=20), "multiple of 8"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message):
            build()
    with pytest.raises(TypeError, match="dropouth"):  # lm.build reports it as a ConfigError
        SPACE.supernet(VOCAB, C=D, layers=4, dropouth=0.1)
    network = SPACE.network(g, VOCAB, C=D, max_len=4)
    with pytest.raises(ValueError, match="exceed the transformer's max_len=4"):
        network.init(jax.random.key(0), tokens())
    supernet = SMALL.supernet(VOCAB, C=D)
    with pytest.raises(ValueError, match="must be"):
        supernet.init(jax.random.key(0), tokens(), uniform(3), train=False)


# --------------------------------------------------------------------------------------------------
# The mask, sampling and discretisation.


def test_the_mask_gives_each_group_its_own_ops():
    n_mixer, n_ffn = len(transformer.MIXER_OPS), len(transformer.FFN_OPS)
    assert SPACE.ops == transformer.MIXER_OPS + transformer.FFN_OPS and SPACE.num_ops == 12
    assert dict(SPACE.alpha_shapes) == {"mixer": (4, 12), "ffn": (4, 12)}
    assert SPACE.modality == "text" and set(SPACE.discrete_ops) == set(SPACE.ops)
    mixer, ffn = SPACE.mask["mixer"], SPACE.mask["ffn"]
    assert mixer.shape == ffn.shape == (4, 12) and mixer.dtype == ffn.dtype == bool
    assert mixer[:, :n_mixer].all() and not mixer[:, n_mixer:].any()
    assert ffn[:, n_mixer:].all() and not ffn[:, :n_mixer].any() and ffn.sum() == 4 * n_ffn
    # A strategy built for the space mixes the masked columns with weight exactly 0.
    alphas = SPACE.init_alphas(jax.random.key(0), scale=1.0)
    for name in ("darts", "gdas"):
        strategy = strategies.build(name, strategies.Context(space=SPACE))
        w = strategy.mix_weights(alphas, jax.random.key(1), jnp.asarray(0))
        for group, allowed in SPACE.mask.items():
            assert np.all(np.asarray(w[group])[~allowed] == 0.0), (name, group)
            np.testing.assert_allclose(np.asarray(w[group]).sum(-1), 1.0, rtol=1e-6)
    sample = jax.jit(SPACE.sample_mix)
    seen = {g: np.zeros((4, 12), bool) for g in SPACE.mask}
    for k in range(40):
        w = sample(jax.random.key(k), alphas)
        for group, allowed in SPACE.mask.items():
            chosen = np.asarray(w[group]) > 0
            assert (chosen.sum(-1) == 1).all() and not chosen[~allowed].any()
            seen[group] |= chosen
    assert all((seen[g] == SPACE.mask[g]).all() for g in seen)  # every allowed op, nothing else


def test_random_genotypes_and_mutations_stay_in_their_groups():
    rng = np.random.default_rng(1)
    seen = {g: set() for g in transformer.GROUPS}
    for _ in range(60):
        g = SPACE.random_genotype(rng)
        assert len(g.mixer) == len(g.ffn) == 4
        m = SPACE.mutate(g, rng)
        changed = [(grp, i) for grp in g.fields() for i in range(4) if g[grp][i] != m[grp][i]]
        assert len(changed) == 1
        for group in transformer.GROUPS:
            seen[group] |= set(g[group])
    assert seen == {g: set(ops) for g, ops in transformer.GROUPS.items()}


def test_discretise_takes_each_rows_best_op_of_its_group():
    col = transformer.OPS.index
    mixer = np.zeros((3, 12))
    mixer[0, [col("ffn4"), col("conv7"), col("attn2")]] = [0.9, 0.5, 0.1]  # ffn4 is masked
    mixer[1, col("identity")] = 0.3
    mixer[2, [col("attn8"), col("glu")]] = 0.4  # a tie: the earlier op
    ffn = np.zeros((3, 12))
    ffn[0, [col("attn4"), col("ffn_none")]] = [1.0, 0.2]  # attn4 is masked
    ffn[1, col("ffn2")] = 0.6
    ffn[2, :] = 0.1  # all equal: the first ffn op
    g = SPACE.discretise({"mixer": mixer, "ffn": ffn})
    assert g.mixer == ("conv7", "identity", "attn8")
    assert g.ffn == ("ffn_none", "ffn2", "ffn1")
    for group, w in SPACE.genotype_mix(g).items():
        np.testing.assert_array_equal(w.argmax(-1), [col(op) for op in g[group]])
    assert SPACE.discretise(SPACE.genotype_mix(g)) == g
    with pytest.raises(ValueError, match="as many mixer as ffn rows"):
        SPACE.discretise({"mixer": mixer, "ffn": ffn[:2]})


# --------------------------------------------------------------------------------------------------
# The cost model and the candidates.


def _macs_computed(fn, *args) -> int:
    """Multiply-adds of the matrix products and convolutions in fn's jaxpr (per call)."""

    def walk(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if name == "dot_general":
                (contract, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
            elif name == "conv_general_dilated":
                rhs = eqn.invars[1].aval.shape
                out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
                total += math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) // out_features
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        total += walk(inner)
        return total

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def hand_macs(op: str, d: int, t: int) -> int:
    """Multiply-adds per token: dense layers d_in x d_out, attention's QK^T and AV over all t
    keys, the depthwise convolution k per channel."""
    heads = {"attn2": 2, "attn4": 4, "attn8": 8}
    kernels = {"conv3": 3, "conv7": 7, "conv15": 15}
    expansions = {"ffn1": 1, "ffn2": 2, "ffn4": 4}
    if op in heads:
        return 4 * d * d + 2 * t * d
    if op in kernels:
        return kernels[op] * d + d * d
    if op == "glu":
        return 2 * d * d + d * d
    if op in expansions:
        return 2 * expansions[op] * d * d
    return 0


def test_op_costs_against_eval_shape_and_the_computed_products():
    supernet = SMALL.supernet(VOCAB, C=D)
    costs = SMALL.op_costs(supernet, (T,))
    assert set(costs) == {"mixer", "ffn"}
    assert costs["mixer"].shape == costs["ffn"].shape == (1, LAYERS, 12, 3)
    x = jnp.zeros((1, T, D))
    for group, allowed in SMALL.mask.items():
        assert not costs[group][0][~allowed].any()  # the other group's columns
        for k, op in enumerate(transformer.OPS):
            if not allowed[0, k]:
                continue
            params, macs, access = costs[group][0, 0, k]
            assert (costs[group][0, :, k] == costs[group][0, 0, k]).all()  # every layer alike
            module = transformer.make_op(op, parent=None)
            if module is None:
                assert (params, macs, access) == (0, 0, 0), op
                continue
            shapes = jax.eval_shape(lambda k, m=module: m.init(k, x, False), jax.random.key(0))
            counted = sum(math.prod(a.shape) for a in jax.tree.leaves(shapes))
            assert params == counted, op
            assert macs == hand_macs(op, D, T), op
            variables = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
            computed = _macs_computed(lambda v, m=module: m.apply(v, x, False), variables)
            assert macs * T == computed, op
            assert access == pytest.approx(params / T + 2 * D), op
    # Hand parameter counts of the attention and the conv, for the record.
    assert costs["mixer"][0, 0, transformer.OPS.index("attn4"), 0] == 4 * D * D + 4 * D
    assert costs["mixer"][0, 0, transformer.OPS.index("conv15"), 0] == 15 * D + D + D * D + D
    # The table of `hardware.cost_model`: a genotype's one-hot weights pick its ops' costs.
    table = hardware.cost_model(SMALL, supernet, (T,))
    g = SMALL.genotype(mixer=("attn8", "identity"), ffn=("ffn4", "ffn1"))
    cost = hardware.expected_cost(SMALL.genotype_mix(g), table)
    expected_macs = hand_macs("attn8", D, T) + hand_macs("ffn4", D, T) + hand_macs("ffn1", D, T)
    assert float(cost[table.index("macs")]) == pytest.approx(expected_macs)
    with pytest.raises(ValueError, match="seq_len"):
        SMALL.op_costs(supernet, (T, D))


def test_candidates_are_the_ops_that_compute():
    supernet = SMALL.supernet(VOCAB, C=D)
    found = SMALL.candidates(supernet, (T,))
    computing = [op for op in transformer.OPS if op not in ("identity", "ffn_none")]
    assert len(found) == LAYERS * len(computing)
    assert {(c.group, c.position, c.row) for c in found} == {
        (g, 0, r) for g in ("mixer", "ffn") for r in range(LAYERS)
    }
    for c in found:
        assert c.input_shape == (T, D) and c.op in transformer.GROUPS[c.group]
    x = jnp.ones((B, *found[0].input_shape))
    for c in {c.op: c for c in found}.values():  # each op once, as `dnas lut` applies it
        variables = c.module.init(jax.random.key(0), x, False)
        assert c.module.apply(variables, x, False).shape == (B, T, D)


# --------------------------------------------------------------------------------------------------
# Genotypes and the text format.


def test_text_round_trip_and_json(monkeypatch):
    rng = np.random.default_rng(2)
    text = "attn4+ffn4 | conv7+ffn2 | identity+ffn_none"
    g = transformer.from_string(text)
    assert g.space == "transformer" and g.mixer == ("attn4", "conv7", "identity")
    assert g.ffn == ("ffn4", "ffn2", "ffn_none") and g.to_string() == text
    assert transformer.from_string("  attn4 +ffn4|conv7+  ffn2 |identity + ffn_none\n") == g
    for _ in range(10):
        g = SPACE.random_genotype(rng)
        assert transformer.from_string(g.to_string()) == g
    monkeypatch.setitem(spaces.SPACES, SPACE.name, SPACE)
    assert spaces.parse(text) == transformer.from_string(text)
    assert spaces.from_json(g.to_json()) == g
    assert SPACE.known["transformer_vanilla"].to_string() == " | ".join(["attn4+ffn4"] * 4)


def test_detect_claims_no_other_format():
    fmt = SPACE.formats[0]
    ours = ["attn4+ffn4", " glu + ffn1 | identity+ffn_none", "attn3+ffn4"]
    theirs = [
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
        "Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=[2], reduce=[], reduce_concat=[2])",
        "proxyless:mb3_e3-zero",
        '{"schema_version": 2, "space": "transformer"}',
    ]
    assert all(fmt.detect(t) for t in ours)
    assert not any(fmt.detect(t) for t in theirs)
    for _, other in spaces.formats():
        if other is not fmt:
            assert not any(other.detect(t) for t in ours), other.name


@pytest.mark.parametrize(
    "text, pos, message",
    [
        ("attn3+ffn4", 0, "unknown mixer 'attn3'"),
        ("ffn4+ffn4", 0, "'ffn4' is a feed-forward op, not a mixer"),
        ("attn4+glu", 6, "'glu' is a mixer, not a feed-forward op"),
        ("attn4+ffn4 | conv7+ffn9", 19, "layer 1: unknown feed-forward op 'ffn9'"),
        ("attn4,ffn4", 5, "expected '+' between mixer and ffn, found ','"),
        ("attn4 ffn4", 6, "expected '+' between mixer and ffn, found 'f'"),
        ("attn4+ffn4, conv3+ffn1", 10, "expected '|' before the next layer or the end, found ','"),
        ("attn4+ffn4+ffn2", 10, "found '+'"),
        ("attn4+ffn4 || conv3+ffn1", 12, "layer 1: expected a mixer (attn2, ... found '|'"),
        ("attn4+ffn4 |", 12, "layer 1: expected a mixer (attn2, ... found the end"),
        ("attn4+", 6, "expected a feed-forward op (ffn1, ... found the end"),
        ("   ", 0, "layer 0: expected a mixer ... found the end"),
    ],
)
def test_malformed_strings_name_the_position(text, pos, message):
    """`message`: fragments of the error (in order) separated by ' ... '."""
    prefix = f"^invalid transformer genotype string at position {pos} "
    with pytest.raises(ValueError, match=prefix) as info:
        transformer.from_string(text)
    error = str(info.value)
    assert "\n" not in error
    at = 0
    for fragment in message.split(" ... "):
        assert error.find(fragment, at) >= 0, (fragment, error)
        at = error.find(fragment, at) + len(fragment)


def test_genotype_validation():
    cases = [
        ({"mixer": ("attn4",), "ffn": ("ffn4", "ffn1")}, "1 mixers but 2 feed-forward ops"),
        ({"mixer": (), "ffn": ()}, "non-empty list"),
        ({"mixer": ("attn4",), "ffn": ("glu",)}, r"ffn\[0\]: 'glu' is a mixer"),
        ({"mixer": ("attn4",)}, "missing field 'ffn'"),
        ({"mixer": ("attn4",), "ffn": ("ffn1",), "widths": (8,)}, "unknown fields"),
        ({"mixer": (4,), "ffn": ("ffn1",)}, "expected a mixer name"),
    ]
    for fields, message in cases:
        with pytest.raises(ValueError, match=message):
            SPACE.genotype(**fields)
    g = SPACE.genotype(mixer=["glu"], ffn=["ffn2"])  # any depth; lists become tuples
    assert g.mixer == ("glu",) and SPACE.genotype_mix(g)["mixer"].shape == (1, 12)
