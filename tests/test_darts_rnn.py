"""Tests for the DARTS recurrent cell space (`dnas.spaces.darts_rnn`): the discrete network
against an independent numpy transcription of the cell's equations, the supernet under one-hot
weights against the network, parameter counts against the reference's formula, the genotype
schema and text format, the discretisation rule, sampling and the cost model.

Sizes are tiny (ninp 4-6, vocabulary 11, sequences of 3-5 tokens, batch 2). The genotype strings
below are copied verbatim from quark0/darts rnn/genotypes.py: an independent source for the
hand-transcribed `KNOWN`.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import ops, spaces
from dnas.spaces import darts_cnn, darts_rnn

KNOWN = darts_rnn.KNOWN
SPACE = darts_rnn.SPACE
V, N = 11, 6  # vocabulary, ninp = nhid

# quark0/darts rnn/genotypes.py, verbatim.
QUARK0_DARTS_V1 = "DARTS_V1 = Genotype(recurrent=[('relu', 0), ('relu', 1), ('tanh', 2), ('relu', 3), ('relu', 4), ('identity', 1), ('relu', 5), ('relu', 1)], concat=range(1, 9))"  # noqa: E501
QUARK0_DARTS_V2 = "DARTS_V2 = Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2), ('sigmoid', 5), ('tanh', 3), ('relu', 5)], concat=range(1, 9))"  # noqa: E501
QUARK0_ENAS = """ENAS = Genotype(
    recurrent = [
        ('tanh', 0),
        ('tanh', 1),
        ('relu', 1),
        ('tanh', 3),
        ('tanh', 3),
        ('relu', 3),
        ('relu', 4),
        ('relu', 7),
        ('relu', 8),
        ('relu', 8),
        ('relu', 8),
    ],
    concat = [2, 5, 6, 9, 10, 11]
)"""
SOURCE_STRINGS = {
    "darts_rnn_v1": QUARK0_DARTS_V1,
    "darts_rnn_v2": QUARK0_DARTS_V2,
    "enas_rnn": QUARK0_ENAS,
}
RATES = dict(dropout=0.5, dropouth=0.3, dropoutx=0.4, dropouti=0.2, dropoute=0.1)
NO_DROPOUT = dict.fromkeys(RATES, 0.0)


@pytest.fixture
def registered(monkeypatch):
    """darts_rnn in the registry for one test (restored after it, so other test modules see the
    registry they expect)."""
    if spaces.SPACES.get(SPACE.name) is not SPACE:
        monkeypatch.setitem(spaces.SPACES, SPACE.name, SPACE)
    return SPACE


def _one_line(error, *needles) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def _tokens(seed: int, shape=(2, 5)) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), shape, 0, V, jnp.int32)


def _float64(variables):
    return jax.tree.map(lambda p: p.astype(jnp.float64), variables)


# --------------------------------------------------------------------------------------------------
# An independent numpy transcription of the discrete cell (eval mode), from the equations.


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


_NP_ACT = {"tanh": np.tanh, "relu": lambda h: np.maximum(h, 0), "sigmoid": _sigmoid,
           "identity": lambda h: h}  # fmt: skip


def numpy_network(params, genotype, inputs, carry, mask):
    """(logits, carry, hiddens) of the discrete network, one row, one step, one node at a time."""
    E, bias = np.asarray(params["embedding"]), np.asarray(params["decoder_bias"])
    W0, Ws = np.asarray(params["W0"]), np.asarray(params["Ws"])
    inputs, mask = np.asarray(inputs), np.asarray(mask)
    B, L = inputs.shape
    n = E.shape[1]
    h = np.array(carry, np.float64)
    hiddens = np.zeros((B, L, n))
    for b in range(B):
        for t in range(L):
            if mask[b, t]:
                x, h_prev = E[inputs[b, t]], h[b]
                ch = np.concatenate([x, h_prev]) @ W0
                states = [h_prev + _sigmoid(ch[:n]) * (np.tanh(ch[n:]) - h_prev)]
                for i, (op, pred) in enumerate(genotype.recurrent):
                    s = states[pred]
                    ch = s @ Ws[i]
                    states.append(s + _sigmoid(ch[:n]) * (_NP_ACT[op](ch[n:]) - s))
                h[b] = np.mean([states[i] for i in genotype.concat], axis=0)
            hiddens[b, t] = h[b]
    return hiddens @ E.T + bias, h, hiddens


@pytest.mark.parametrize("name", ["darts_rnn_v2", "enas_rnn"])
def test_network_equals_the_numpy_cell(name):
    genotype = KNOWN[name]
    with jax.enable_x64(True):
        net = darts_rnn.build_network(genotype, V, C=N)
        inputs = _tokens(0)
        variables = _float64(net.init(jax.random.key(1), inputs))
        carry = 0.3 * jax.random.normal(jax.random.key(2), (2, N), jnp.float64)
        mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.float32)  # row 1: 3 tokens
        logits, new_carry, hiddens = jax.jit(
            lambda v, x, c, m: net.apply(v, x, carry=c, mask=m, train=False)
        )(variables, inputs, carry, mask)
        want = numpy_network(variables["params"], genotype, inputs, carry, mask)
        for got, expected in zip((logits, new_carry, hiddens), want, strict=True):
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
        # Padding leaves the state at the last real token.
        np.testing.assert_allclose(new_carry[1], hiddens[1, 2], rtol=0, atol=0)


def test_network_shapes_and_init():
    net = darts_rnn.build_network(KNOWN["darts_rnn_v2"], V, C=N)
    inputs = _tokens(0, (2, 3))
    variables = net.init(jax.random.key(0), inputs)
    params = variables["params"]
    assert set(variables) == {"params"}
    assert {k: v.shape for k, v in params.items()} == {
        "embedding": (V, N), "decoder_bias": (V,), "W0": (2 * N, 2 * N), "Ws": (8, N, 2 * N),
    }  # fmt: skip
    for k in ("embedding", "W0", "Ws"):
        assert float(jnp.max(jnp.abs(params[k]))) <= darts_rnn.INIT_RANGE
    assert not np.any(params["decoder_bias"])
    assert net.init_carry(2).shape == (2, N) and not np.any(net.init_carry(2))
    logits, carry, hiddens = net.apply(variables, inputs)  # carry=None: zeros
    assert logits.shape == (2, 3, V) and logits.dtype == jnp.float32
    assert carry.shape == (2, N) and hiddens.shape == (2, 3, N)
    np.testing.assert_array_equal(carry, hiddens[:, -1])
    # A carried-over state changes the outputs; the decoder is tied to the embedding.
    other, _, _ = net.apply(variables, inputs, carry=jnp.ones((2, N)))
    assert not np.allclose(other, logits)
    np.testing.assert_allclose(
        logits, hiddens @ params["embedding"].T + params["decoder_bias"], rtol=1e-6
    )


# --------------------------------------------------------------------------------------------------
# The supernet under one-hot weights is the network.


@pytest.mark.parametrize("name", ["darts_rnn_v2", "darts_rnn_v1"])
def test_one_hot_supernet_equals_the_network(name):
    genotype = KNOWN[name]
    with jax.enable_x64(True):
        net = darts_rnn.build_network(genotype, V, C=N, **RATES)
        supernet = darts_rnn.DartsRNNSupernet(V, N, node_norm=False, **RATES)
        inputs = _tokens(3)
        variables = _float64(net.init(jax.random.key(4), inputs))
        # The parameter trees are the same (8 node matrices): the mapping is the identity.
        w = {"recurrent": jnp.asarray(SPACE.genotype_mix(genotype)["recurrent"], jnp.float64)}
        shapes = jax.eval_shape(supernet.init, jax.random.key(0), inputs, w)
        assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, variables)
        carry = 0.3 * jax.random.normal(jax.random.key(5), (2, N), jnp.float64)
        mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], jnp.float64)
        rngs = {"dropout": jax.random.key(6)}
        for train in (False, True):
            kw = dict(carry=carry, mask=mask, train=train, rngs=rngs)
            got = supernet.apply(variables, inputs, w, **kw)
            want = net.apply(variables, inputs, **kw)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
        # Dropout did something in train mode.
        eval_logits = net.apply(variables, inputs, carry=carry, mask=mask)[0]
        assert not np.allclose(want[0], eval_logits)


def test_node_norm_normalises_nodes():
    x = jax.random.normal(jax.random.key(0), (4, N)) * 3 + 1
    everyone = jnp.ones(4, bool)
    np.testing.assert_allclose(
        darts_rnn.masked_batch_norm(x, everyone),
        ops.batch_normalize(x[:, None, None, :])[:, 0, 0, :], rtol=1e-6, atol=1e-6,
    )  # fmt: skip
    valid = jnp.array([True, True, True, False])
    y = darts_rnn.masked_batch_norm(x, valid)
    np.testing.assert_allclose(jnp.mean(y[:3], 0), 0, atol=1e-5)
    np.testing.assert_allclose(jnp.var(y[:3], 0), 1, atol=1e-3)
    # The supernet with its BatchNorm runs and differs from the one without.
    inputs = _tokens(0, (2, 3))
    w = {"recurrent": jnp.full((36, 5), 0.2)}
    with_norm = darts_rnn.build_supernet(V, C=N)
    without = darts_rnn.DartsRNNSupernet(V, N, node_norm=False)
    variables = with_norm.init(jax.random.key(0), inputs, w, train=False)
    a = with_norm.apply(variables, inputs, w, train=False)
    b = without.apply(variables, inputs, w, train=False)
    assert np.all(np.isfinite(a[0])) and not np.allclose(a[0], b[0])


def test_padding_gives_the_carry_of_the_shorter_batch():
    inputs = _tokens(7)
    padded_mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]], jnp.float32)
    ragged_mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], jnp.float32)
    # The network: every row on its own.
    net = darts_rnn.build_network(KNOWN["enas_rnn"], V, C=N)
    variables = net.init(jax.random.key(0), inputs)
    short = net.apply(variables, inputs[:, :3])[1]
    padded = net.apply(variables, inputs, mask=padded_mask)[1]
    np.testing.assert_allclose(padded, short, rtol=1e-6, atol=1e-7)
    ragged = net.apply(variables, inputs, mask=ragged_mask)[1]
    full = net.apply(variables, inputs)[1]
    np.testing.assert_allclose(ragged, jnp.stack([full[0], short[1]]), rtol=1e-6, atol=1e-7)
    # The supernet with its BatchNorm (statistics over the rows holding a real token).
    w = {"recurrent": jax.nn.softmax(jax.random.normal(jax.random.key(1), (36, 5)), -1)}
    supernet = darts_rnn.build_supernet(V, C=N)
    variables = supernet.init(jax.random.key(0), inputs, w, train=False)
    short = supernet.apply(variables, inputs[:, :3], w, train=False)[1]
    padded = supernet.apply(variables, inputs, w, mask=padded_mask, train=False)[1]
    np.testing.assert_allclose(padded, short, rtol=1e-6, atol=1e-6)
    ragged = supernet.apply(variables, inputs, w, mask=ragged_mask, train=False)[1]
    np.testing.assert_allclose(ragged[1], short[1], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Parameter counts (the reference's `sum(p.nelement() for p in model.parameters())`).


def _count(model, *args) -> int:
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), *args, train=False)
    )
    return sum(math.prod(p.shape) for p in jax.tree.leaves(shapes))


def _formula(vocab: int, n: int, steps: int) -> int:
    # embedding (the tied decoder weight once) + decoder bias + W0 + one matrix per node
    return vocab * n + vocab + (2 * n) * (2 * n) + steps * n * (2 * n)


def test_parameter_counts():
    net = darts_rnn.build_network(KNOWN["darts_rnn_v2"], 10_000)  # C: 850, the paper's
    assert net.ninp == 850
    count = _count(net)
    assert count == _formula(10_000, 850, 8) == 22_960_000
    assert round(count / 1e6) == 23  # "23M" in the paper's PTB table
    supernet = darts_rnn.build_supernet(10_000)  # C: 300, the search's
    assert _count(supernet, {"recurrent": jnp.zeros((36, 5))}) == _formula(10_000, 300, 8)
    assert _formula(10_000, 300, 8) == 4_810_000
    enas = darts_rnn.build_network(KNOWN["enas_rnn"], 10_000)
    assert _count(enas) == _formula(10_000, 850, 11) == 27_295_000


def test_op_costs_sum_to_the_network_node_matrices():
    supernet = darts_rnn.build_supernet(V, C=N)
    costs = SPACE.op_costs(supernet, (5,))["recurrent"]
    assert costs.shape == (1, 36, 5, 3)
    assert not np.any(costs[:, :, SPACE.op_index("none")])
    w = SPACE.genotype_mix(KNOWN["darts_rnn_v2"])["recurrent"]
    params, macs, access = np.einsum("ek,uekr->r", w, costs)
    assert params == 8 * N * 2 * N  # the network's Ws
    assert macs == 8 * (N * 2 * N + N) and access == 8 * (N * 2 * N + 2 * N)
    with pytest.raises(ValueError, match="seq_len"):
        SPACE.op_costs(supernet, (8, 8, 3))


def test_builders_refuse_what_does_not_apply():
    with pytest.raises(ValueError, match="partial_channels"):
        darts_rnn.build_supernet(V, partial_channels=4)
    with pytest.raises(ValueError, match="single_op"):
        darts_rnn.build_supernet(V, single_op=True)
    with pytest.raises(ValueError, match="auxiliary"):
        darts_rnn.build_network(KNOWN["darts_rnn_v2"], V, auxiliary=True)
    with pytest.raises(TypeError, match="unknown options"):
        darts_rnn.build_supernet(V, drop_path=0.2)
    with pytest.raises(ValueError, match="dropouth must be a dropout rate"):
        darts_rnn.build_network(KNOWN["darts_rnn_v2"], V, dropouth=1.0)
    with pytest.raises(ValueError, match="expected a darts_rnn genotype"):
        darts_rnn.build_network(darts_cnn.KNOWN["darts_v2"], V)
    assert darts_rnn.build_network(KNOWN["darts_rnn_v2"], V).dropoute == 0.1
    assert darts_rnn.build_supernet(V, dropout=0.1).dropout == 0.1
    supernet = darts_rnn.build_supernet(V, C=N)
    with pytest.raises(ValueError, match="mixing weights"):
        supernet.init(jax.random.key(0), _tokens(0), {"recurrent": jnp.zeros((14, 8))})


# --------------------------------------------------------------------------------------------------
# The genotype schema, the text format, discretisation, sampling.


def test_source_strings_are_the_known_genotypes():
    for name, text in SOURCE_STRINGS.items():
        assert darts_rnn.looks_like_darts_rnn(text)
        assert darts_rnn.from_string(text) == KNOWN[name]
    assert KNOWN["darts_rnn_v2"].concat == tuple(range(1, 9))
    assert len(KNOWN["enas_rnn"].recurrent) == 11


@pytest.mark.parametrize("name", list(KNOWN))
def test_round_trip(name, registered):
    genotype = KNOWN[name]
    text = genotype.to_string()
    assert darts_rnn.from_string(text) == genotype
    assert spaces.from_json(json.loads(json.dumps(genotype.to_json()))) == genotype
    assert spaces.load(name) == genotype


def test_detection_between_the_darts_formats(registered):
    cnn = darts_cnn.to_string(darts_cnn.KNOWN["darts_v2"])
    assert not darts_rnn.looks_like_darts_rnn(cnn)
    assert not darts_rnn.looks_like_darts_rnn("|none~0|")
    rnn = QUARK0_DARTS_V2
    assert not darts_cnn.DARTS_STRING.detect(rnn)
    assert spaces.parse(rnn) == KNOWN["darts_rnn_v2"]
    assert spaces.parse(cnn) == darts_cnn.KNOWN["darts_v2"]


V2 = QUARK0_DARTS_V2.removeprefix("DARTS_V2 = ")


def _at(pos: int) -> str:
    return f"position {pos} "


BAD_STRINGS = {
    "unknown_op": (V2.replace("'tanh', 2", "'conv', 2"),
                   [_at(V2.index("'tanh'")), "unknown operation 'conv'", "node 5"]),
    "none_op": (V2.replace("'relu', 5)", "'none', 5)"),
                [_at(V2.rindex("'relu'")), "'none' is not allowed", "node 8"]),
    "later_predecessor": (V2.replace("('relu', 1)", "('relu', 2)", 1),
                          [_at(V2.index("('relu', 1)") + 9), "node 2", "0..1"]),
    "missing_concat": ("Genotype(recurrent=[('tanh', 0)])", ["position 32", "missing concat"]),
    "code": ("__import__('os').system('x')", ["position 0", "'Genotype('", "a call"]),
    "code_in_a_field": ("Genotype(recurrent=__import__('os'), concat=[1])",
                        ["position 19", "a call", "__import__"]),
    "concat_beyond_the_nodes": (V2.replace("range(1, 9)", "[1, 9]"),
                                [_at(V2.index("range")), "contains 9"]),
    "unsorted_concat": (V2.replace("range(1, 9)", "[2, 1]"), ["strictly increasing"]),
    "empty_recurrent": ("Genotype(recurrent=[], concat=[1])", ["position 19", "non-empty"]),
    "not_an_edge": ("Genotype(recurrent=[('tanh',)], concat=[1])",
                    ["position 20", "node 1 to be an edge"]),
    "cnn_keyword": ("Genotype(normal=[], concat=[1])", ["position 9", "unknown keyword 'normal'"]),
    "negative": ("Genotype(recurrent=[('tanh', -1)], concat=[1])", ["a signed number"]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_STRINGS))
def test_bad_strings_raise_one_line_value_errors(name):
    text, needles = BAD_STRINGS[name]
    with pytest.raises(ValueError) as error:
        darts_rnn.from_string(text)
    _one_line(error, "invalid DARTS recurrent genotype string at position", *needles)


@pytest.mark.parametrize(
    "fields, needle",
    [
        (dict(recurrent=[("none", 0)], concat=[1]), "'none' is not allowed"),
        (dict(recurrent=[("tanh", 1)], concat=[1]), "node 1: input 1 is not an earlier node"),
        (dict(recurrent=[("tanh", True)], concat=[1]), "must be an integer"),
        (dict(recurrent=[("tanh", 0)], concat=[0]), "contains 0, not a node"),
        (dict(recurrent=[("tanh", 0), ("relu", 1)], concat=[2, 2]), "strictly increasing"),
        (dict(recurrent=[("tanh", 0)]), "missing fields ['concat']"),
        (dict(recurrent=[("tanh", 0)], concat=[1], normal=[]), "unknown fields ['normal']"),
        (dict(recurrent=[[("tanh", 0)]], concat=[1]), "node 1 must be an (op_name, predecessor)"),
        (dict(recurrent=(), concat=[1]), "non-empty"),
    ],
)
def test_invalid_genotypes_raise_one_line_value_errors(fields, needle):
    with pytest.raises(ValueError) as error:
        SPACE.genotype(**fields)
    _one_line(error, needle)


def test_genotypes_are_canonical():
    a = SPACE.genotype(recurrent=[["tanh", np.int64(0)], ("relu", 1)], concat=range(1, 3))
    b = SPACE.genotype(recurrent=(("tanh", 0), ("relu", 1)), concat=[1, 2])
    assert a == b and hash(a) == hash(b) and type(a.recurrent[0][1]) is int
    assert a.to_string() == "Genotype(recurrent=[('tanh', 0), ('relu', 1)], concat=range(1, 3))"


def test_genotype_mix_only_for_the_supernet_cell():
    w = SPACE.genotype_mix(KNOWN["darts_rnn_v2"])["recurrent"]
    assert w.shape == (36, 5) and w.sum() == 8
    # Node 6 takes node 5 with sigmoid: row of edge 5 -> 6.
    assert w[darts_rnn.TOPOLOGY.edge_index(5, 6), SPACE.op_index("sigmoid")] == 1
    for genotype in (KNOWN["enas_rnn"], KNOWN["darts_rnn_v2"].replace(concat=[8])):
        with pytest.raises(ValueError) as error:
            SPACE.genotype_mix(genotype)
        _one_line(error, "has no mixing weights")


def reference_parse(probs: np.ndarray) -> list[tuple[str, int]]:
    """quark0/darts `RNNModelSearch.genotype()._parse`, transcribed."""
    none = darts_rnn.PRIMITIVES.index("none")
    gene, start = [], 0
    for i in range(8):
        end = start + i + 1
        W = probs[start:end]
        j = sorted(range(i + 1), key=lambda x: -max(W[x][k] for k in range(5) if k != none))[0]
        k_best = None
        for k in range(5):
            if k != none and (k_best is None or W[j][k] > W[j][k_best]):
                k_best = k
        gene.append((darts_rnn.PRIMITIVES[k_best], j))
        start = end
    return gene


def test_discretise_is_the_reference_rule():
    rng = np.random.default_rng(0)
    for name in ("darts_rnn_v1", "darts_rnn_v2"):
        w = SPACE.genotype_mix(KNOWN[name])["recurrent"] + 0.01 * rng.random((36, 5))
        assert SPACE.discretise({"recurrent": w}) == KNOWN[name]
        w[:, SPACE.op_index("none")] = 10.0  # `none` is never chosen, even when the largest
        assert SPACE.discretise({"recurrent": w}) == KNOWN[name]
    for _ in range(5):
        probs = np.asarray(jax.nn.softmax(jnp.asarray(rng.normal(size=(36, 5))), -1))
        genotype = SPACE.discretise({"recurrent": probs})
        assert list(genotype.recurrent) == reference_parse(probs)
        assert genotype.concat == tuple(range(1, 9))


def test_random_genotypes_mutation_and_sampling():
    rng = np.random.default_rng(0)
    for _ in range(5):
        genotype = SPACE.random_genotype(rng)
        assert len(genotype.recurrent) == 8 and genotype.concat == tuple(range(1, 9))
        assert all(op in darts_rnn.DISCRETE_OPS for op, _ in genotype.recurrent)
    for name in KNOWN:
        child = SPACE.mutate(KNOWN[name], rng)
        changed = [a != b for a, b in zip(child.recurrent, KNOWN[name].recurrent, strict=True)]
        assert sum(changed) == 1 and child.concat == KNOWN[name].concat
    sample = jax.jit(SPACE.sample_mix)
    alphas = {"recurrent": jnp.zeros((36, 5))}
    for seed in range(3):
        w = np.asarray(sample(jax.random.key(seed), alphas)["recurrent"])
        for rows in SPACE.node_rows:  # one edge per node, one computing op on it
            assert w[list(rows)].sum() == 1
        assert not w[:, SPACE.op_index("none")].any()
        np.testing.assert_array_equal(
            SPACE.genotype_mix(SPACE.discretise({"recurrent": w}))["recurrent"], w
        )


def test_space_fields():
    assert SPACE.modality == "text" and SPACE.topology is None and SPACE.candidates is None
    assert SPACE.alpha_shapes == {"recurrent": (36, 5)}
    assert SPACE.row_labels["recurrent"][:4] == ("0_1", "0_2", "1_2", "0_3")
    assert SPACE.keep_per_node == 1 and SPACE.discrete_ops == darts_rnn.DISCRETE_OPS
    assert not set(KNOWN) & set(darts_cnn.KNOWN)
    assert SPACE.to_string(KNOWN["enas_rnn"]).endswith("concat=[2, 5, 6, 9, 10, 11])")
