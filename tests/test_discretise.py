"""Discretisation of hand-made weights gives the genotype they were made from."""

import numpy as np
import pytest

from dnas import ops, spaces
from dnas.spaces import cells, nb201

DARTS = spaces.get("darts_cnn")
NB201 = spaces.get("nb201")


def _weights_for(space, geno, rng):
    """Weights that make `geno` the DARTS choice: each chosen edge gets its op at a strength that
    ranks the node's edges in genotype order, and `none` the largest weight of all (it must be
    ignored). Unchosen edges: small random weights."""
    topology = space.topology
    out = {}
    for cell in topology.cell_types:
        w = rng.uniform(0.0, 0.1, (topology.num_edges, topology.num_ops))
        w[:, space.op_index("none")] = 0.95
        for dst, edges in zip(topology.nodes, geno[cell], strict=True):
            for rank, (op, src) in enumerate(edges):
                w[topology.edge_index(src, dst), space.op_index(op)] = 0.9 - 0.1 * rank
        out[cell] = w
    return out


def test_alpha_groups_are_the_cells():
    assert DARTS.alpha_shapes == {"normal": (14, 8), "reduce": (14, 8)}
    assert NB201.alpha_shapes == {"normal": (6, 5)}


@pytest.mark.parametrize("name", ["darts_v1", "darts_v2", "pdarts", "pcdarts", "drnas"])
def test_darts_rule_recovers_published_genotypes(name):
    geno = spaces.KNOWN[name]
    weights = _weights_for(DARTS, geno, np.random.default_rng(0))
    assert DARTS.discretise(weights) == geno


def test_darts_rule_by_hand():
    topology = DARTS.topology
    w = np.zeros((topology.num_edges, topology.num_ops))
    w[:, DARTS.op_index("none")] = 1.0  # never chosen
    # Node 2: edges (0,2), (1,2) are its only ones.
    w[topology.edge_index(0, 2), DARTS.op_index("sep_conv_3x3")] = 0.5
    w[topology.edge_index(1, 2), DARTS.op_index("max_pool_3x3")] = 0.6
    # Node 3: the strongest two of three edges; (1,3) loses.
    w[topology.edge_index(0, 3), DARTS.op_index("skip_connect")] = 0.3
    w[topology.edge_index(1, 3), DARTS.op_index("dil_conv_5x5")] = 0.1
    w[topology.edge_index(2, 3), DARTS.op_index("sep_conv_5x5")] = 0.7
    # Nodes 4, 5: ties everywhere at zero: the earliest edges, the first non-none op.
    expected = (
        (("max_pool_3x3", 1), ("sep_conv_3x3", 0)),
        (("sep_conv_5x5", 2), ("skip_connect", 0)),
        (("max_pool_3x3", 0), ("max_pool_3x3", 1)),
        (("max_pool_3x3", 0), ("max_pool_3x3", 1)),
    )
    geno = DARTS.discretise({"normal": w, "reduce": w})
    assert geno.normal == expected
    assert geno.normal_concat == (2, 3, 4, 5) and geno.reduce == geno.normal
    assert geno.reduce_concat == (2, 3, 4, 5)
    # The per-cell rule, on its own.
    assert cells.discretise_cell(topology, w) == expected


def test_nb201_rule_keeps_every_edge_and_can_pick_none():
    target = nb201.from_string(
        "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
    )
    topology = NB201.topology
    w = np.random.default_rng(0).uniform(0, 0.1, (topology.num_edges, topology.num_ops))
    for dst, edges in zip(topology.nodes, target.normal, strict=True):
        for op, src in edges:
            w[topology.edge_index(src, dst), NB201.op_index(op)] = 1.0
    geno = NB201.discretise({"normal": w})
    assert geno == target
    assert list(geno.fields()) == ["normal"]
    assert cells.discretise_cell(topology, w) == target.normal


def test_shape_errors_and_parameter_free_count():
    with pytest.raises(ValueError, match=r"must have shape \(6, 5\)"):
        NB201.discretise({"normal": np.zeros((14, 8))})
    with pytest.raises(ValueError, match=r"must have shape \(14, 8\)"):
        cells.discretise_cell(DARTS.topology, np.zeros((6, 5)))
    assert ops.PARAMETER_FREE == ("skip_connect", "max_pool_3x3", "avg_pool_3x3")
    used = DARTS.ops_used(spaces.KNOWN["darts_v2"])
    # DARTS_V2 (quark0/darts): 2 skip_connect in the normal cell; 5 max_pool_3x3 and 3
    # skip_connect in the reduction cell.
    assert sum(op in ops.PARAMETER_FREE for op in used["normal"]) == 2
    assert sum(op in ops.PARAMETER_FREE for op in used["reduce"]) == 8
    assert len(used["normal"]) == len(used["reduce"]) == 8
