"""README's recipe "Add a search space", followed inside a test: a chain of three mixed blocks,
defined here and nowhere in the library, searches, discretises, round-trips its genotype through
JSON and its own text format, retrains, and reports parameters and multiply-adds, with no change
to any library file (the registry line is `monkeypatch.setitem(spaces.SPACES, ...)`, which is what
`spaces.register(SPACE)` does for good).

The space: a stem, then `BLOCKS` blocks, each mixing three candidate ops of the library's
primitives; its genotype is one op per block, `{"blocks": ("nor_conv_3x3", ...)}`, its text format
`chain:op-op-op`.
"""

import json

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import configlib, evaluate, ops, pipeline, spaces
from dnas.genotype import Genotype
from dnas.spaces.base import Space, TextFormat

OPS = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3")
BLOCKS = 3
LABELS = tuple(f"b{i}" for i in range(BLOCKS))


class ChainSupernet(nn.Module):
    num_classes: int
    C: int

    @nn.compact
    def __call__(self, x, mix_weights, *, train=True, skip_dropout=None):
        SPACE.check_mix(mix_weights)
        x = ops.StemConv(self.C, track_running_stats=False, name="stem")(x, train)
        w = mix_weights["blocks"].astype(x.dtype)
        for b in range(BLOCKS):
            x = sum(
                w[b, k] * ops.make_op(op, self.C, self.C, 1, affine=False,
                                      track_running_stats=False, name=f"b{b}_{op}")(x, train)
                for k, op in enumerate(OPS)
            )  # fmt: skip
        return ops.Linear(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2)))


class ChainNetwork(nn.Module):
    genotype: Genotype
    num_classes: int
    C: int

    @nn.compact
    def __call__(self, x, *, train=False, drop_path_rate=0.0):
        x = ops.StemConv(self.C, name="stem")(x, train)
        for b, op in enumerate(self.genotype.blocks):
            x = ops.make_op(op, self.C, self.C, 1, name=f"b{b}_{op}")(x, train)
        return ops.Linear(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2))), None


def make_genotype(**fields) -> Genotype:
    if set(fields) != {"blocks"}:
        raise ValueError(f"a chain genotype has exactly the field 'blocks', got {sorted(fields)}")
    blocks = tuple(fields["blocks"])
    if len(blocks) != BLOCKS or any(op not in OPS for op in blocks):
        raise ValueError(f"expected {BLOCKS} ops from {OPS}, got {blocks}")
    return Genotype(SPACE, {"blocks": blocks})


def parse(text: str) -> Genotype:
    return make_genotype(blocks=text.strip().removeprefix("chain:").split("-"))


def op_costs(model, input_shape):
    """Per op: parameters, multiply-adds, memory access (params + input + output)."""
    (h, w, _), C = input_shape, model.C
    table = np.zeros((len(OPS), 3))
    for k, op in enumerate(OPS):
        stats = evaluate.model_stats(ops.make_op(op, C, C, 1), (h, w, C), train=False)
        table[k] = stats["params_total"], stats["macs"], stats["params_total"] + 2 * C * h * w
    return {"blocks": np.broadcast_to(table, (1, BLOCKS, *table.shape)).copy()}


ONE_HOT = np.eye(len(OPS), dtype=np.float32)
CHAIN_FORMAT = TextFormat(
    "chain", parse, lambda g: "chain:" + "-".join(g.blocks),
    detect=lambda text: text.lstrip().startswith("chain:"),
)  # fmt: skip
SPACE = Space(
    name="tiny_chain",
    ops=OPS,
    alpha_shapes={"blocks": (BLOCKS, len(OPS))},
    row_labels={"blocks": LABELS},
    supernet=lambda num_classes, *, C, **unused: ChainSupernet(num_classes, C),
    network=lambda genotype, num_classes, *, C=None, **unused: ChainNetwork(
        genotype, num_classes, C or 8
    ),
    op_costs=op_costs,
    genotype=make_genotype,
    discretise=lambda w: make_genotype(blocks=[OPS[k] for k in np.argmax(w["blocks"], -1)]),
    random_genotype=lambda rng: make_genotype(blocks=[OPS[i] for i in rng.integers(3, size=3)]),
    genotype_mix=lambda g: {"blocks": ONE_HOT[[OPS.index(op) for op in g.blocks]]},
    formats=(CHAIN_FORMAT,),
)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(spaces.SPACES, SPACE.name, SPACE)  # = spaces.register(SPACE)
    return SPACE


def test_the_chain_space_searches_retrains_and_reports(registered, tmp_path):
    c = configlib.default_config()
    c.space = SPACE.name
    c.search.C, c.search.epochs, c.search.batch_size = 4, 2, 32
    c.search.alpha_lr = 0.05  # alphas must move in two epochs
    c.train.C, c.train.epochs, c.train.batch_size = 4, 1, 32
    c.progress = False
    summary = pipeline.run(c, str(tmp_path))

    # Searched: the alphas moved, and the genotype is their argmax (the space's rule).
    alphas = np.load(tmp_path / "alphas.npz")["blocks"]
    assert alphas.shape == (BLOCKS, len(OPS)) and np.abs(alphas).max() > 0.01
    found = spaces.load_json(tmp_path / "genotype.json")
    assert found.blocks == tuple(OPS[k] for k in np.argmax(alphas, -1))
    assert summary["genotype"] == found.to_json()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    logged = {json.loads(line).get("genotype") for line in lines}
    assert found.to_string() in logged
    # JSON and the space's text format round-trip; the registry reads both.
    assert found.to_json()["schema_version"] == 2 and found.to_json()["space"] == SPACE.name
    assert spaces.from_json(json.loads(json.dumps(found.to_json()))) == found
    assert spaces.parse(found.to_string()) == found == spaces.load(found.to_string())

    # Retrained, and counted by hand (C=4 on 8x8x1 digits, 10 classes): stem 3x3 conv 36 +
    # BN 8; nor_conv_3x3 144 + 8; nor_conv_1x1 16 + 8; skip 0; classifier 40 + 10.
    params = {"skip_connect": 0, "nor_conv_1x1": 24, "nor_conv_3x3": 152}
    macs = {"skip_connect": 0, "nor_conv_1x1": 64 * 16, "nor_conv_3x3": 64 * 144}
    for name, geno in (("searched", found), ("random", None)):
        r = summary["retrain"][name]
        geno = geno or spaces.parse(r["genotype"])
        assert r["params"] == 44 + 50 + sum(params[op] for op in geno.blocks)
        assert r["macs"] == 64 * 36 + 40 + sum(macs[op] for op in geno.blocks)
        assert 0.0 <= r["test_accuracy"] <= 1.0


def test_the_chain_space_costs_and_refusals(registered):
    costs = SPACE.op_costs(ChainSupernet(10, 4), (8, 8, 4))["blocks"]
    assert costs.shape == (1, BLOCKS, len(OPS), 3)
    np.testing.assert_array_equal(costs[0, 0, :, 1], [0, 64 * 16, 64 * 144])
    with pytest.raises(ValueError, match="expected 3 ops"):
        spaces.parse("chain:skip_connect-nor_conv_1x1")
    with pytest.raises(ValueError, match="not a genotype text"):
        spaces.parse("chain-less text", SPACE.name)


def test_what_the_chain_space_lacks_is_refused_before_the_search(registered, tmp_path):
    """Methods that need what this space does not provide fail before compiling anything, saying
    what is missing and what to do instead; text with brackets is not taken for DARTS'."""
    c = configlib.default_config()
    c.space, c.progress = SPACE.name, False
    for key, value, needle in [
        ("strategy", "random_ws", "has no sample_mix"),
        ("strategy", "pc_darts", "has no nodes"),
        ("search.selection", "evolution", "set --config.search.selection=random"),
    ]:
        config = configlib.override(c, [f"{key}={value}"])
        if key == "strategy" and value == "random_ws":
            config = configlib.override(config, ["search.selection=random"])
        workdir = tmp_path / value
        with pytest.raises(ValueError, match=needle):
            pipeline.search_genotype(config, str(workdir))
        assert not (workdir / "checkpoints").exists()
    with pytest.raises(ValueError, match="not a genotype text"):
        spaces.parse("chain(skip_connect)")
