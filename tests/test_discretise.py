"""Discretisation of hand-made weights gives the genotype they were made from."""

import numpy as np
import pytest

from dnas import discretise, genotype, spaces

DARTS = spaces.get("darts_cnn")
NB201 = spaces.get("nb201")


def _weights_for(space, geno, rng):
    """Weights that make `geno` the DARTS choice: each chosen edge gets its op at a strength that
    ranks the node's edges in genotype order, and `none` the largest weight of all (it must be
    ignored). Unchosen edges: small random weights."""
    out = {}
    for cell, nodes in geno.cells().items():
        w = rng.uniform(0.0, 0.1, (space.num_edges, space.num_ops))
        w[:, space.op_index("none")] = 0.95
        for dst, edges in zip(space.nodes, nodes, strict=True):
            for rank, (op, src) in enumerate(edges):
                w[space.edge_index(src, dst), space.op_index(op)] = 0.9 - 0.1 * rank
        out[cell] = w
    return out


@pytest.mark.parametrize("name", ["darts_v1", "darts_v2", "pdarts", "pcdarts", "drnas"])
def test_darts_rule_recovers_published_genotypes(name):
    geno = genotype.KNOWN[name]
    weights = _weights_for(DARTS, geno, np.random.default_rng(0))
    assert discretise.discretise(DARTS, weights) == geno


def test_darts_rule_by_hand():
    w = np.zeros((DARTS.num_edges, DARTS.num_ops))
    w[:, DARTS.op_index("none")] = 1.0  # never chosen
    # Node 2: edges (0,2), (1,2) are its only ones.
    w[DARTS.edge_index(0, 2), DARTS.op_index("sep_conv_3x3")] = 0.5
    w[DARTS.edge_index(1, 2), DARTS.op_index("max_pool_3x3")] = 0.6
    # Node 3: the strongest two of three edges; (1,3) loses.
    w[DARTS.edge_index(0, 3), DARTS.op_index("skip_connect")] = 0.3
    w[DARTS.edge_index(1, 3), DARTS.op_index("dil_conv_5x5")] = 0.1
    w[DARTS.edge_index(2, 3), DARTS.op_index("sep_conv_5x5")] = 0.7
    # Nodes 4, 5: ties everywhere at zero: the earliest edges, the first non-none op.
    geno = discretise.discretise(DARTS, {"normal": w, "reduce": w})
    assert geno.normal == (
        (("max_pool_3x3", 1), ("sep_conv_3x3", 0)),
        (("sep_conv_5x5", 2), ("skip_connect", 0)),
        (("max_pool_3x3", 0), ("max_pool_3x3", 1)),
        (("max_pool_3x3", 0), ("max_pool_3x3", 1)),
    )
    assert geno.normal_concat == (2, 3, 4, 5) and geno.reduce == geno.normal


def test_nb201_rule_keeps_every_edge_and_can_pick_none():
    target = genotype.parse(
        "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
    )
    w = np.random.default_rng(0).uniform(0, 0.1, (NB201.num_edges, NB201.num_ops))
    for dst, edges in zip(NB201.nodes, target.normal, strict=True):
        for op, src in edges:
            w[NB201.edge_index(src, dst), NB201.op_index(op)] = 1.0
    assert discretise.discretise(NB201, {"normal": w}) == target


def test_shape_errors_and_parameter_free_count():
    with pytest.raises(ValueError, match=r"must have shape \(6, 5\)"):
        discretise.discretise(NB201, {"normal": np.zeros((14, 8))})
    assert discretise.count_parameter_free(genotype.KNOWN["darts_v2"], "normal") == 2
    assert discretise.count_parameter_free(genotype.KNOWN["darts_v2"], "reduce") == 8
