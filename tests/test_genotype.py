"""Tests for dnas.genotype: formats, validation, the registry and the random baseline.

The long string literals below are copied verbatim from the papers' repositories (named beside
each): an independent source for the hand-transcribed flat lists in `genotype.KNOWN`.
"""

import json
import os

import numpy as np
import pytest

from dnas import genotype as genotype_lib
from dnas import spaces
from dnas.genotype import Genotype

DARTS_NAMES = [name for name, g in genotype_lib.KNOWN.items() if g.space == "darts_cnn"]
NB201_NAMES = [name for name, g in genotype_lib.KNOWN.items() if g.space == "nb201"]

# quark0/darts cnn/genotypes.py, the DARTS_V2 line (identical in yuhuixu1993/PC-DARTS and
# chenxin061/pdarts genotypes.py).
QUARK0_DARTS_V2 = "DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"  # noqa: E501
V2 = QUARK0_DARTS_V2.removeprefix("DARTS_V2 = ")

# quark0/darts cnn/genotypes.py at commit 8876e79, where the first-order cell is called DARTS.
QUARK0_DARTS_V1 = "DARTS = Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])"  # noqa: E501

# Other genotypes as their repositories print them (range(2, 6) concat, odd spacing included).
SOURCE_STRINGS = {
    # yuhuixu1993/PC-DARTS genotypes.py
    "pcdarts": "PC_DARTS_cifar = Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=range(2, 6))",  # noqa: E501
    "pcdarts_imagenet": "PC_DARTS_image = Genotype(normal=[('skip_connect', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('dil_conv_5x5', 4)], normal_concat=range(2, 6), reduce=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_5x5', 2), ('max_pool_3x3', 1), ('sep_conv_3x3', 2), ('sep_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 3)], reduce_concat=range(2, 6))",  # noqa: E501
    # chenxin061/pdarts genotypes.py
    "pdarts": "PDARTS = Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0),('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3',0), ('dil_conv_5x5', 4)], normal_concat=range(2, 6), reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2), ('max_pool_3x3', 0), ('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)], reduce_concat=range(2, 6))",  # noqa: E501
    # xiangning-chen/DrNAS DARTS-space/genotypes.py
    "drnas": "DrNAS_cifar10 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2), ('dil_conv_5x5', 3)], normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('dil_conv_5x5', 2), ('sep_conv_5x5', 1), ('sep_conv_5x5', 1), ('dil_conv_5x5', 3), ('skip_connect', 4), ('sep_conv_5x5', 1)], reduce_concat=range(2, 6))",  # noqa: E501
    "drnas_imagenet": "DrNAS_imagenet = Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('dil_conv_3x3', 3), ('skip_connect', 0), ('sep_conv_3x3', 1)], normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 2), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1)], reduce_concat=range(2, 6))",  # noqa: E501
}

# D-X-Y/AutoDL-Projects lib/nas_infer_model/DXYs/genotypes.py: one tuple of edges per node, and two
# extra fields that the DARTS format does not have.
DXY_GDAS_V1 = """
GDAS_V1 = Genotype(
  normal=[
    (('skip_connect', 0), ('skip_connect', 1)),
    (('skip_connect', 0), ('sep_conv_5x5', 2)),
    (('sep_conv_3x3', 3), ('skip_connect', 0)),
    (('sep_conv_5x5', 4), ('sep_conv_3x3', 3))],
  normal_concat=[2, 3, 4, 5],
  reduce=[
    (('sep_conv_5x5', 0), ('sep_conv_3x3', 1)), 
    (('sep_conv_5x5', 2), ('sep_conv_5x5', 1)),
    (('dil_conv_5x5', 2), ('sep_conv_3x3', 1)),
    (('sep_conv_5x5', 0), ('sep_conv_5x5', 1))],
  reduce_concat=[2, 3, 4, 5],
  connectN=None, connects=None
)
"""  # noqa: W291 (the trailing space is in the source)

# Example arch string from D-X-Y/AutoDL-Projects exps/NATS-Bench/test-nats-api.py.
NB201_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"  # noqa: E501


def _check_one_line_error(error: pytest.ExceptionInfo[ValueError], *needles: str) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# --------------------------------------------------------------------------------------------------
# The registry.


def test_registry_has_the_required_genotypes():
    for name in ("darts_v1", "darts_v2", "pcdarts", "pdarts", "gdas_v1", "drnas"):
        assert genotype_lib.KNOWN[name].space == "darts_cnn"
    assert NB201_NAMES
    assert all(name == name.lower() for name in genotype_lib.KNOWN)


@pytest.mark.parametrize("name", list(genotype_lib.KNOWN))
def test_registered_genotypes_fit_their_space(name):
    g = genotype_lib.KNOWN[name]
    space = spaces.get(g.space)
    g.validate()
    for cell, nodes in g.cells().items():
        assert len(nodes) == space.num_intermediate
        for node, edges in zip(space.nodes, nodes, strict=True):
            expected = 2 if g.space == "darts_cnn" else node
            assert len(edges) == expected
            for op, src in edges:
                assert op in space.primitives
                assert 0 <= src < node
                if g.space == "darts_cnn":
                    assert op != "none"
        assert g.concat(cell) == space.concat


def test_quark0_darts_v2_string_is_the_registry_entry():
    g = genotype_lib.parse(QUARK0_DARTS_V2)
    assert g == genotype_lib.KNOWN["darts_v2"]
    # We print exactly what quark0/darts prints.
    assert genotype_lib.KNOWN["darts_v2"].to_darts_string() == V2


def test_quark0_darts_v1_string_is_the_registry_entry():
    g = genotype_lib.from_darts_string(QUARK0_DARTS_V1)
    assert g == genotype_lib.KNOWN["darts_v1"]
    assert g.to_darts_string() == QUARK0_DARTS_V1.removeprefix("DARTS = ")


@pytest.mark.parametrize("name", list(SOURCE_STRINGS))
def test_source_strings_are_the_registry_entries(name):
    assert genotype_lib.parse(SOURCE_STRINGS[name]) == genotype_lib.KNOWN[name]


def test_dxy_per_node_layout_is_the_gdas_entry():
    with pytest.raises(ValueError) as error:
        genotype_lib.parse(DXY_GDAS_V1)
    _check_one_line_error(error, "connectN", "position", "reduce_concat")
    extras = "reduce_concat=[2, 3, 4, 5],\n  connectN=None, connects=None"
    without_extras = DXY_GDAS_V1.replace(extras, "reduce_concat=[2, 3, 4, 5]")
    assert without_extras != DXY_GDAS_V1
    assert genotype_lib.parse(without_extras) == genotype_lib.KNOWN["gdas_v1"]


def test_nb201_registry_strings():
    assert genotype_lib.KNOWN["nb201_resnet"].to_nb201_string() == (
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    )
    assert genotype_lib.KNOWN["nb201_best_cifar100_valid"].to_nb201_string() == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )


# --------------------------------------------------------------------------------------------------
# Round trips.


@pytest.mark.parametrize("name", DARTS_NAMES)
def test_darts_round_trips(name, tmp_path):
    g = genotype_lib.KNOWN[name]
    assert genotype_lib.from_json(json.loads(json.dumps(g.to_json()))) == g
    assert Genotype.from_dict(g.to_json()) == g
    text = g.to_darts_string()
    assert "\n" not in text and text.startswith("Genotype(normal=[(")
    assert genotype_lib.from_darts_string(text) == g
    assert genotype_lib.parse(text) == g
    assert str(g) == text
    g.save(tmp_path / "g.json")
    assert genotype_lib.load_json(tmp_path / "g.json") == g
    assert genotype_lib.load(str(tmp_path / "g.json")) == g
    assert hash(genotype_lib.parse(text)) == hash(g)


@pytest.mark.parametrize("name", NB201_NAMES)
def test_nb201_registry_round_trips(name, tmp_path):
    g = genotype_lib.KNOWN[name]
    assert genotype_lib.from_nb201_string(g.to_nb201_string()) == g
    assert genotype_lib.from_json(g.to_json()) == g
    g.save(tmp_path / "g.json")
    assert genotype_lib.load(tmp_path / "g.json") == g


def test_nb201_string_round_trip():
    g = genotype_lib.from_nb201_string(NB201_EXAMPLE)
    assert g.space == "nb201"
    assert g.normal == (
        (("nor_conv_3x3", 0),),
        (("nor_conv_3x3", 0), ("avg_pool_3x3", 1)),
        (("skip_connect", 0), ("nor_conv_3x3", 1), ("skip_connect", 2)),
    )
    assert g.normal_concat == (3,)
    assert g.reduce == () and g.reduce_concat == ()
    assert g.to_nb201_string() == NB201_EXAMPLE
    assert str(g) == NB201_EXAMPLE
    assert genotype_lib.parse(f"  {NB201_EXAMPLE}\n") == g
    assert genotype_lib.parse(json.dumps(g.to_json())) == g


def test_nb201_edge_order_is_canonical():
    shuffled = "|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+|skip_connect~2|skip_connect~0|nor_conv_3x3~1|"  # noqa: E501
    g = genotype_lib.from_nb201_string(shuffled)
    assert g == genotype_lib.from_nb201_string(NB201_EXAMPLE)
    assert g.to_nb201_string() == NB201_EXAMPLE


def test_json_layout_is_one_node_per_line(tmp_path):
    path = tmp_path / "g.json"
    genotype_lib.KNOWN["darts_v2"].save(path)
    text = path.read_text()
    assert json.loads(text)["schema_version"] == 1
    assert '    [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]],\n' in text


# --------------------------------------------------------------------------------------------------
# The DARTS string: accepted layouts.


def test_range_concat():
    g = genotype_lib.parse(V2.replace("[2, 3, 4, 5]", "range(2, 6)"))
    assert g == genotype_lib.KNOWN["darts_v2"]
    assert g.normal_concat == (2, 3, 4, 5)
    assert "range" not in g.to_darts_string()


def test_multiline_layout_with_shuffled_keywords_tuples_double_quotes_and_trailing_commas():
    text = """
    Genotype(
        reduce_concat = range(2, 6),
        normal=(
            ("sep_conv_3x3", 1), ("skip_connect", 0),  # node 2
            ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),  # node 3
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1),
            ("avg_pool_3x3", 0), ("dil_conv_3x3", 1,),
        ),
        reduce=[
            ['sep_conv_5x5', 1], ("max_pool_3x3", 0),
            ('sep_conv_5x5', 1), ("sep_conv_5x5", 2),
            ('sep_conv_3x3', 0), ("sep_conv_3x3", 3),
            ('sep_conv_3x3', 1), ("sep_conv_3x3", 2),
        ],
        normal_concat=[2, 3, 4, 5,],
    )
    """
    assert genotype_lib.parse(text) == genotype_lib.KNOWN["pcdarts"]


def test_positional_arguments():
    g = genotype_lib.KNOWN["darts_v1"]
    normal = str(list(g.flat("normal")))
    reduce = str(list(g.flat("reduce")))
    text = f"Genotype({normal}, [2, 3, 4, 5], {reduce}, reduce_concat=range(2, 6))"
    assert genotype_lib.from_darts_string(text) == g


def test_per_node_layout_matches_flat_layout():
    g = genotype_lib.KNOWN["drnas"]
    nested = (
        f"Genotype(normal={list(g.normal)}, normal_concat=[2, 3, 4, 5], "
        f"reduce={list(g.reduce)}, reduce_concat=[2, 3, 4, 5])"
    )
    assert genotype_lib.from_darts_string(nested) == g


# --------------------------------------------------------------------------------------------------
# The DARTS string: rejected input.


def _mutate(old: str, new: str) -> str:
    assert old in V2, old
    return V2.replace(old, new, 1)


BAD_DARTS_STRINGS = {
    "code": ("__import__('os').system('x')", ["position 0", "'Genotype('"]),
    "code_in_value": (
        "Genotype(normal=__import__('os').system('rm -rf /'), normal_concat=[2])",
        ["position 16", "__import__"],
    ),
    "attribute": ("Genotype.__class__", ["position 8", "'.'"]),
    "lambda": ("Genotype(normal=lambda: 0)", ["position 16", "lambda"]),
    "missing_close_paren": (V2[:-1], ["end of input", "')'"]),
    "missing_bracket": (
        _mutate("2)], normal_concat", "2), normal_concat"),
        ["normal_concat", "']' or ')' closing"],
    ),
    "mismatched_bracket": (_mutate("2)], normal_concat", "2)), normal_concat"), ["']'"]),
    "unknown_key": (_mutate("reduce_concat=", "reduce_cat="), ["reduce_cat", "reduce_concat"]),
    "duplicate_key": (_mutate("normal_concat=[2, 3, 4, 5]", "normal=[]"), ["given twice"]),
    "missing_key": (_mutate(", reduce_concat=[2, 3, 4, 5]", ""), ["missing reduce_concat"]),
    "edge_arity": (_mutate("('dil_conv_3x3', 2)", "('dil_conv_3x3', 2, 1)"), ["edge"]),
    "edge_types": (_mutate("('dil_conv_3x3', 2)", "(2, 'dil_conv_3x3')"), ["edge"]),
    "unknown_op": (
        _mutate("'dil_conv_3x3'", "'sep_conv_7x7'"),
        ["sep_conv_7x7", "normal node 5", "dil_conv_5x5"],
    ),
    "seven_edges": (_mutate(", ('dil_conv_3x3', 2)", ""), ["7 edges", "expected 8"]),
    "input_not_earlier": (
        _mutate("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"),
        ["input 5", "0..4"],
    ),
    "bad_concat": (_mutate("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 9]"), ["9"]),
    "concat_huge_range": (
        _mutate("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 999999999)"),
        ["too large"],
    ),
    "float_input": (_mutate("('dil_conv_3x3', 2)", "('dil_conv_3x3', 2.0)"), ["'.'"]),
    "negative_input": (_mutate("('dil_conv_3x3', 2)", "('dil_conv_3x3', -2)"), ["'-'"]),
    "unterminated_string": ("Genotype(normal=[('sep_conv_3x3, 0)])", ["position 18", "string"]),
    "escaped_string": (_mutate("'dil_conv_3x3'", "'dil\\x5fconv_3x3'"), ["string"]),
    "trailing_code": (V2 + "; import os", ["';'"]),
    "two_genotypes": (V2 + V2, ["end of input after"]),
    "empty": ("", ["position 0", "end of input"]),
    "deep_nesting": ("Genotype(normal=" + "[" * 100_000, ["nested deeper"]),
    "positional_after_keyword": ("Genotype(normal=[], [2, 3])", ["keyword argument"]),
}


@pytest.mark.parametrize("name", list(BAD_DARTS_STRINGS))
def test_bad_darts_strings_raise_one_line_value_errors(name):
    text, needles = BAD_DARTS_STRINGS[name]
    with pytest.raises(ValueError) as error:
        genotype_lib.from_darts_string(text)
    _check_one_line_error(error, "position", *needles)


def test_multiline_error_reports_line_and_column():
    text = V2.replace(", reduce=", ",\n  reduce=").replace("'max_pool_3x3', 1", "'bad_op', 1", 1)
    with pytest.raises(ValueError) as error:
        genotype_lib.from_darts_string(text)
    _check_one_line_error(error, "line 2, column ", "bad_op")


def test_darts_string_needs_a_darts_like_space():
    with pytest.raises(ValueError) as error:
        genotype_lib.from_darts_string(V2, space="nb201")
    _check_one_line_error(error, "nb201", "from_nb201_string")
    with pytest.raises(ValueError) as error:
        genotype_lib.from_nb201_string(NB201_EXAMPLE).to_darts_string()
    _check_one_line_error(error, "to_nb201_string")


# --------------------------------------------------------------------------------------------------
# The NAS-Bench-201 string: rejected input.

BAD_NB201_STRINGS = {
    "empty": ("", ["position 0", "'|'"]),
    "two_nodes": ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", ["found 2 nodes"]),
    "four_nodes": (NB201_EXAMPLE + "+|none~0|", ["found 4 nodes", "position 96"]),
    "missing_edge": (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|",
        ["node 3 has 2 edges", "expected 3"],
    ),
    "unknown_op": (NB201_EXAMPLE.replace("avg_pool_3x3", "sep_conv_3x3"), ["sep_conv_3x3"]),
    "input_not_earlier": (NB201_EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~2"), ["0..1"]),
    "repeated_input": (NB201_EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~0"), ["repeated"]),
    "no_closing_bar": (NB201_EXAMPLE[:-1], ["'op_name~input|'"]),
    "trailing_plus": (NB201_EXAMPLE + "+", ["'|'"]),
    "code": ("|__import__('os')~0|+|x~0|x~1|+|x~0|x~1|x~2|", ["position 1"]),
    "inner_space": (NB201_EXAMPLE.replace("|avg", "| avg"), ["position 33"]),
    "darts_string": (V2, ["position 0"]),
}


@pytest.mark.parametrize("name", list(BAD_NB201_STRINGS))
def test_bad_nb201_strings_raise_one_line_value_errors(name):
    text, needles = BAD_NB201_STRINGS[name]
    with pytest.raises(ValueError) as error:
        genotype_lib.from_nb201_string(text)
    _check_one_line_error(error, "position", "NAS-Bench-201", *needles)


# --------------------------------------------------------------------------------------------------
# The constructor.


def test_lists_become_tuples_and_genotypes_hash():
    g = genotype_lib.KNOWN["darts_v2"]
    as_lists = Genotype(
        space="darts_cnn",
        normal=[[list(edge) for edge in node] for node in g.normal],
        normal_concat=range(2, 6),
        reduce=[list(node) for node in g.reduce],
        reduce_concat=[np.int64(n) for n in (2, 3, 4, 5)],
    )
    assert as_lists == g
    assert isinstance(as_lists.normal, tuple) and isinstance(as_lists.normal[0][0], tuple)
    assert type(as_lists.reduce_concat[0]) is int
    assert {as_lists: 1}[g] == 1
    with pytest.raises(AttributeError):
        g.space = "nb201"  # type: ignore[misc]


def test_from_flat_matches_nested():
    g = genotype_lib.KNOWN["pdarts"]
    flat = Genotype.from_flat(
        "darts_cnn", list(g.flat("normal")), [2, 3, 4, 5], list(g.flat("reduce")), [2, 3, 4, 5]
    )
    assert flat == g
    nb = genotype_lib.from_nb201_string(NB201_EXAMPLE)
    assert Genotype.from_flat("nb201", list(nb.flat("normal")), [3]) == nb


def _darts_kwargs(**overrides):
    g = genotype_lib.KNOWN["darts_v2"]
    kwargs = dict(
        space="darts_cnn",
        normal=g.normal,
        normal_concat=g.normal_concat,
        reduce=g.reduce,
        reduce_concat=g.reduce_concat,
    )
    return kwargs | overrides


V2_NORMAL = genotype_lib.KNOWN["darts_v2"].normal
BAD_CONSTRUCTIONS = {
    "unknown_space": (_darts_kwargs(space="darts"), ["darts_cnn, nb201"]),
    "flat_list": (
        _darts_kwargs(normal=genotype_lib.KNOWN["darts_v2"].flat("normal")),
        ["from_flat"],
    ),
    "three_nodes": (_darts_kwargs(normal=V2_NORMAL[:3]), ["3 nodes", "expected 4"]),
    "three_edges": (
        _darts_kwargs(normal=(*V2_NORMAL[:3], (*V2_NORMAL[3], ("skip_connect", 1)))),
        ["node 5 has 3 incoming edges", "expected 2"],
    ),
    "unknown_op": (
        _darts_kwargs(normal=(*V2_NORMAL[:3], (("conv_7x1_1x7", 0), ("skip_connect", 1)))),
        ["conv_7x1_1x7", "sep_conv_3x3"],
    ),
    "later_input": (
        _darts_kwargs(normal=((("skip_connect", 0), ("skip_connect", 2)), *V2_NORMAL[1:])),
        ["normal node 2", "input 2", "0..1"],
    ),
    "bool_input": (
        _darts_kwargs(normal=((("skip_connect", 0), ("skip_connect", True)), *V2_NORMAL[1:])),
        ["integer"],
    ),
    "empty_concat": (_darts_kwargs(reduce_concat=()), ["reduce_concat is empty"]),
    "input_concat": (_darts_kwargs(normal_concat=(1, 2)), ["contains 1"]),
    "unsorted_concat": (_darts_kwargs(normal_concat=(3, 2)), ["strictly increasing"]),
    "missing_reduce": (_darts_kwargs(reduce=(), reduce_concat=()), ["reduce has 0 nodes"]),
    "nb201_with_reduce": (
        dict(
            space="nb201",
            normal=genotype_lib.KNOWN["nb201_resnet"].normal,
            normal_concat=(3,),
            reduce=genotype_lib.KNOWN["nb201_resnet"].normal,
            reduce_concat=(3,),
        ),
        ["no reduce cell"],
    ),
    "nb201_repeated_input": (
        dict(
            space="nb201",
            normal=(
                (("none", 0),),
                (("none", 0), ("none", 0)),
                (("none", 0), ("none", 1), ("none", 2)),
            ),
            normal_concat=(3,),
        ),
        ["node 2 has inputs [0, 0]", "exactly once"],
    ),
    "nb201_concat": (
        dict(space="nb201", normal=genotype_lib.KNOWN["nb201_resnet"].normal, normal_concat=(2,)),
        ["expected [3]"],
    ),
}


@pytest.mark.parametrize("name", list(BAD_CONSTRUCTIONS))
def test_invalid_genotypes_raise_one_line_value_errors(name):
    kwargs, needles = BAD_CONSTRUCTIONS[name]
    with pytest.raises(ValueError) as error:
        Genotype(**kwargs)
    _check_one_line_error(error, *needles)


# --------------------------------------------------------------------------------------------------
# JSON: rejected input.


def _v2_json(**overrides):
    return genotype_lib.KNOWN["darts_v2"].to_json() | overrides


BAD_JSON = {
    "future_version": (_v2_json(schema_version=2), ["schema_version 2", "expected 1"]),
    "string_version": (_v2_json(schema_version="1"), ["schema_version '1'"]),
    "bool_version": (_v2_json(schema_version=True), ["schema_version True"]),
    "extra_key": (_v2_json(score=97.2), ["unknown keys ['score']"]),
    "missing_key": (
        {k: v for k, v in _v2_json().items() if k != "reduce_concat"},
        ["missing keys ['reduce_concat']"],
    ),
    "no_version": (
        {k: v for k, v in _v2_json().items() if k != "schema_version"},
        ["missing keys ['schema_version']"],
    ),
    "not_an_object": ([1, 2], ["object"]),
    "edge_as_string": (_v2_json(normal=["sep_conv_3x3"] * 4), ["normal[0]"]),
    "op_as_int": (_v2_json(normal=[[[0, 0], [1, 1]]] * 4), ["normal[0][0]", "pair"]),
}


@pytest.mark.parametrize("name", list(BAD_JSON))
def test_bad_json_raises_one_line_value_errors(name):
    data, needles = BAD_JSON[name]
    with pytest.raises(ValueError) as error:
        genotype_lib.from_json(data)
    _check_one_line_error(error, *needles)


def test_bad_json_text_and_files(tmp_path):
    with pytest.raises(ValueError) as error:
        genotype_lib.parse('{"schema_version": 1,')
    _check_one_line_error(error, "invalid genotype JSON")
    with pytest.raises(ValueError) as error:
        genotype_lib.parse(json.dumps(genotype_lib.KNOWN["darts_v2"].to_json()), space="nb201")
    _check_one_line_error(error, "darts_cnn", "nb201")
    path = tmp_path / "broken.json"
    path.write_text("[1, 2")
    with pytest.raises(ValueError) as error:
        genotype_lib.load_json(path)
    _check_one_line_error(error, str(path), "invalid genotype JSON")


# --------------------------------------------------------------------------------------------------
# Saving and loading.


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "genotype.json"
    genotype_lib.KNOWN["darts_v1"].save(path)
    genotype_lib.KNOWN["darts_v2"].save(str(path))  # overwrite
    assert os.listdir(tmp_path) == ["genotype.json"]
    assert genotype_lib.load_json(path) == genotype_lib.KNOWN["darts_v2"]


def test_failed_save_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "genotype.json"
    genotype_lib.KNOWN["darts_v1"].save(path)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        genotype_lib.KNOWN["darts_v2"].save(path)
    assert os.listdir(tmp_path) == ["genotype.json"]
    assert genotype_lib.load_json(path) == genotype_lib.KNOWN["darts_v1"]


def test_load_names_files_and_strings(tmp_path):
    assert genotype_lib.load("DARTS_V2") is genotype_lib.KNOWN["darts_v2"]
    assert genotype_lib.load(" PCDarts ") is genotype_lib.KNOWN["pcdarts"]
    assert genotype_lib.load(QUARK0_DARTS_V2) == genotype_lib.KNOWN["darts_v2"]
    assert genotype_lib.load(NB201_EXAMPLE) == genotype_lib.from_nb201_string(NB201_EXAMPLE)
    text_file = tmp_path / "genotype.txt"
    text_file.write_text(SOURCE_STRINGS["pdarts"] + "\n")
    assert genotype_lib.load(str(text_file)) == genotype_lib.KNOWN["pdarts"]
    nb201_file = tmp_path / "arch.txt"
    nb201_file.write_text(NB201_EXAMPLE + "\n")
    assert genotype_lib.load(nb201_file).space == "nb201"
    bad_file = tmp_path / "bad.txt"
    bad_file.write_text("Genotype(normal=oops)")
    with pytest.raises(ValueError) as error:
        genotype_lib.load(str(bad_file))
    _check_one_line_error(error, str(bad_file), "position 16")


def test_unknown_name_lists_registered_names():
    with pytest.raises(ValueError) as error:
        genotype_lib.load("darts_v3")
    message = _check_one_line_error(error, "darts_v3")
    for name in genotype_lib.KNOWN:
        assert name in message


def test_parse_detects_the_format():
    darts = genotype_lib.KNOWN["darts_v2"]
    nb201 = genotype_lib.KNOWN["nb201_resnet"]
    assert genotype_lib.parse(V2) == darts
    assert genotype_lib.parse(nb201.to_nb201_string()) == nb201
    assert genotype_lib.parse(json.dumps(darts.to_json(), indent=4)) == darts
    assert genotype_lib.parse(json.dumps(nb201.to_json())) == nb201
    with pytest.raises(ValueError) as error:
        genotype_lib.parse("   ")
    _check_one_line_error(error, "empty")


# --------------------------------------------------------------------------------------------------
# The random baseline.


def test_random_darts_genotypes_are_valid():
    space = spaces.get("darts_cnn")
    seen = set()
    for seed in range(200):
        g = genotype_lib.random_genotype("darts_cnn", np.random.default_rng(seed))
        seen.add(g)
        for nodes in g.cells().values():
            for node, edges in zip(space.nodes, nodes, strict=True):
                inputs = [src for _, src in edges]
                assert len(inputs) == 2 and len(set(inputs)) == 2
                assert all(0 <= src < node for src in inputs)
                assert all(op != "none" for op, _ in edges)
        assert g.concat("normal") == g.concat("reduce") == (2, 3, 4, 5)
        assert genotype_lib.from_darts_string(g.to_darts_string()) == g
    assert len(seen) == 200


def test_random_nb201_genotypes_are_valid_and_use_every_op():
    space = spaces.get("nb201")
    ops = set()
    for seed in range(200):
        g = genotype_lib.random_genotype(space, np.random.default_rng(seed))
        assert g.space == "nb201" and g.reduce == ()
        assert genotype_lib.from_nb201_string(g.to_nb201_string()) == g
        ops.update(op for op, _ in g.flat("normal"))
    assert ops == set(space.primitives)


def test_random_genotype_is_reproducible():
    first = genotype_lib.random_genotype("darts_cnn", np.random.default_rng(7))
    again = genotype_lib.random_genotype("darts_cnn", np.random.default_rng(7))
    other = genotype_lib.random_genotype("darts_cnn", np.random.default_rng(8))
    assert first == again != other
