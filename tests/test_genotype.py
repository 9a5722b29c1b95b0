"""Tests for genotypes: the `Genotype` container, the registry and the text and JSON formats of
`dnas.spaces` (`darts_cnn`, `nb201`), and the random baseline.

The long string literals below are copied verbatim from the papers' repositories (named beside
each): an independent source for the hand-transcribed flat lists in `spaces.KNOWN`. The schema-1
genotype.json texts are the files dnas wrote before spaces were modules, typed out by hand.
"""

import ast
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from published_genotypes import DXY_GDAS_V1, QUARK0_DARTS_V2

from dnas import spaces
from dnas.genotype import Genotype
from dnas.spaces import cells, darts_cnn, darts_rnn, nb201, transformer

KNOWN = spaces.KNOWN
DARTS_NAMES = [name for name, g in KNOWN.items() if g.space == "darts_cnn"]
NB201_NAMES = [name for name, g in KNOWN.items() if g.space == "nb201"]

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

# Example arch string from D-X-Y/AutoDL-Projects exps/NATS-Bench/test-nats-api.py.
NB201_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"  # noqa: E501


# genotype.json of darts_v2 and nb201_resnet exactly as dnas wrote them before spaces were modules
# (schema_version 1: every space had the four DARTS fields; NAS-Bench-201 wrote its output node as
# normal_concat and empty reduce fields). Typed from quark0/darts' DARTS_V2 and the ResNet arch
# string, not from the registry.
V1_DARTS_V2_FILE = """{
  "schema_version": 1,
  "space": "darts_cnn",
  "normal": [
    [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]],
    [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]],
    [["sep_conv_3x3", 1], ["skip_connect", 0]],
    [["skip_connect", 0], ["dil_conv_3x3", 2]]
  ],
  "normal_concat": [2, 3, 4, 5],
  "reduce": [
    [["max_pool_3x3", 0], ["max_pool_3x3", 1]],
    [["skip_connect", 2], ["max_pool_3x3", 1]],
    [["max_pool_3x3", 0], ["skip_connect", 2]],
    [["skip_connect", 2], ["max_pool_3x3", 1]]
  ],
  "reduce_concat": [2, 3, 4, 5]
}
"""
V1_NB201_RESNET_FILE = """{
  "schema_version": 1,
  "space": "nb201",
  "normal": [
    [["nor_conv_3x3", 0]],
    [["none", 0], ["nor_conv_3x3", 1]],
    [["skip_connect", 0], ["none", 1], ["skip_connect", 2]]
  ],
  "normal_concat": [3],
  "reduce": [],
  "reduce_concat": []
}
"""
# The same genotypes as schema_version 2 writes them: the space's fields only, one node per line.
V2_DARTS_V2_FILE = V1_DARTS_V2_FILE.replace('"schema_version": 1', '"schema_version": 2')
V2_NB201_RESNET_FILE = """{
  "schema_version": 2,
  "space": "nb201",
  "normal": [
    [["nor_conv_3x3", 0]],
    [["none", 0], ["nor_conv_3x3", 1]],
    [["skip_connect", 0], ["none", 1], ["skip_connect", 2]]
  ]
}
"""


def _check_one_line_error(error: pytest.ExceptionInfo[Exception], *needles: str) -> str:
    message = str(error.value.args[0]) if error.value.args else str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# --------------------------------------------------------------------------------------------------
# The registry.


def test_registry_has_the_required_genotypes():
    for name in ("darts_v1", "darts_v2", "pcdarts", "pdarts", "gdas_v1", "drnas"):
        assert KNOWN[name].space == "darts_cnn"
    assert NB201_NAMES
    assert all(name == name.lower() for name in KNOWN)
    assert spaces.known() == KNOWN
    for name, g in KNOWN.items():
        assert g.search_space is spaces.get(g.space)
        assert g.search_space.known[name] is g
    chains = {"proxyless_gpu", "proxyless_cpu", "proxyless_mobile", "fbnet_a", "fbnet_b", "fbnet_c"}
    text = set(darts_rnn.KNOWN) | set(transformer.KNOWN)
    assert set(darts_cnn.KNOWN) | set(nb201.KNOWN) | chains | text == set(KNOWN)


def test_unknown_space_lists_the_valid_ones():
    with pytest.raises(KeyError) as error:
        spaces.get("darts")
    _check_one_line_error(
        error, "'darts'", "darts_cnn, darts_rnn, fbnet, nb201, proxyless, transformer"
    )


CELL_KNOWN = [n for n, g in KNOWN.items() if g.search_space.topology is not None]  # of cells
# (the chain spaces' published genotypes are checked in tests/test_chain_spaces.py)


@pytest.mark.parametrize("name", CELL_KNOWN)
def test_registered_genotypes_fit_their_space(name):
    g = KNOWN[name]
    space = g.search_space
    topology = space.topology
    assert space.genotype(**g.fields()) == g  # validates
    expected_fields = ["normal", "normal_concat", "reduce", "reduce_concat"]
    if g.space == "nb201":
        expected_fields = ["normal"]
    assert list(g.fields()) == expected_fields
    for cell in topology.cell_types:
        nodes = g[cell]
        assert len(nodes) == topology.num_intermediate
        for node, edges in zip(topology.nodes, nodes, strict=True):
            expected = 2 if g.space == "darts_cnn" else node
            assert len(edges) == expected
            for op, src in edges:
                assert op in topology.primitives
                assert 0 <= src < node
                if g.space == "darts_cnn":
                    assert op != "none"
        assert cells.concat(g, topology, cell) == topology.concat


def test_quark0_darts_v2_string_is_the_registry_entry():
    g = spaces.parse(QUARK0_DARTS_V2)
    assert g == KNOWN["darts_v2"]
    # We print exactly what quark0/darts prints.
    assert darts_cnn.to_string(KNOWN["darts_v2"]) == V2
    assert KNOWN["darts_v2"].to_string() == V2


def test_quark0_darts_v1_string_is_the_registry_entry():
    g = darts_cnn.from_string(QUARK0_DARTS_V1)
    assert g == KNOWN["darts_v1"]
    assert darts_cnn.to_string(g) == QUARK0_DARTS_V1.removeprefix("DARTS = ")


@pytest.mark.parametrize("name", list(SOURCE_STRINGS))
def test_source_strings_are_the_registry_entries(name):
    assert spaces.parse(SOURCE_STRINGS[name]) == KNOWN[name]


def test_dxy_per_node_layout_is_the_gdas_entry():
    with pytest.raises(ValueError) as error:
        spaces.parse(DXY_GDAS_V1)
    message = _check_one_line_error(error, "connectN", "position", "reduce_concat")
    assert f"position {DXY_GDAS_V1.index('connectN')} " in message
    extras = "reduce_concat=[2, 3, 4, 5],\n  connectN=None, connects=None"
    without_extras = DXY_GDAS_V1.replace(extras, "reduce_concat=[2, 3, 4, 5]")
    assert without_extras != DXY_GDAS_V1
    assert spaces.parse(without_extras) == KNOWN["gdas_v1"]


def test_nb201_registry_strings():
    assert nb201.to_string(KNOWN["nb201_resnet"]) == (
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    )
    assert KNOWN["nb201_best_cifar100_valid"].to_string() == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )


# --------------------------------------------------------------------------------------------------
# Round trips.


@pytest.mark.parametrize("name", DARTS_NAMES)
def test_darts_round_trips(name, tmp_path):
    g = KNOWN[name]
    data = g.to_json()
    assert data["schema_version"] == 2 and data["space"] == "darts_cnn"
    assert spaces.from_json(json.loads(json.dumps(data))) == g
    text = darts_cnn.to_string(g)
    assert "\n" not in text and text.startswith("Genotype(normal=[(")
    assert darts_cnn.from_string(text) == g
    assert spaces.parse(text) == g
    assert str(g) == g.to_string() == text
    g.save(tmp_path / "g.json")
    assert spaces.load_json(tmp_path / "g.json") == g
    assert spaces.load(str(tmp_path / "g.json")) == g
    assert spaces.load(tmp_path / "g.json") == g
    assert hash(spaces.parse(text)) == hash(g)


@pytest.mark.parametrize("name", NB201_NAMES)
def test_nb201_registry_round_trips(name, tmp_path):
    g = KNOWN[name]
    assert nb201.from_string(nb201.to_string(g)) == g
    data = g.to_json()
    assert data == {"schema_version": 2, "space": "nb201", "normal": data["normal"]}
    assert spaces.from_json(json.loads(json.dumps(data))) == g
    g.save(tmp_path / "g.json")
    assert spaces.load(tmp_path / "g.json") == g
    assert spaces.load_json(str(tmp_path / "g.json")) == g


def test_nb201_string_round_trip():
    g = nb201.from_string(NB201_EXAMPLE)
    assert g.space == "nb201"
    assert g.normal == (
        (("nor_conv_3x3", 0),),
        (("nor_conv_3x3", 0), ("avg_pool_3x3", 1)),
        (("skip_connect", 0), ("nor_conv_3x3", 1), ("skip_connect", 2)),
    )
    # Only the `normal` field: the output node is the topology's, there is no reduction cell.
    assert list(g.fields()) == ["normal"] and g["normal"] == g.normal
    assert cells.concat(g, nb201.TOPOLOGY, "normal") == (3,)
    for missing in ("normal_concat", "reduce", "reduce_concat"):
        with pytest.raises(AttributeError, match=f"no field '{missing}'"):
            getattr(g, missing)
        with pytest.raises(KeyError) as error:
            g[missing]
        _check_one_line_error(error, missing, "fields: normal")
    assert nb201.to_string(g) == NB201_EXAMPLE
    assert str(g) == NB201_EXAMPLE
    assert spaces.parse(f"  {NB201_EXAMPLE}\n") == g
    assert spaces.parse(json.dumps(g.to_json())) == g


def test_nb201_edge_order_is_canonical():
    shuffled = "|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+|skip_connect~2|skip_connect~0|nor_conv_3x3~1|"  # noqa: E501
    g = nb201.from_string(shuffled)
    assert g == nb201.from_string(NB201_EXAMPLE)
    assert hash(g) == hash(nb201.from_string(NB201_EXAMPLE))
    assert nb201.to_string(g) == NB201_EXAMPLE
    by_fields = nb201.SPACE.genotype(normal=[list(reversed(node)) for node in g.normal])
    assert by_fields == g and by_fields.normal == g.normal


# --------------------------------------------------------------------------------------------------
# JSON, schema version 2: layout.


@pytest.mark.parametrize(
    ("name", "expected"),
    [("darts_v2", V2_DARTS_V2_FILE), ("nb201_resnet", V2_NB201_RESNET_FILE)],
)
def test_json_layout_is_one_node_per_line(name, expected, tmp_path):
    path = tmp_path / "g.json"
    KNOWN[name].save(path)
    text = path.read_text()
    assert text == expected
    assert json.loads(text)["schema_version"] == 2
    assert spaces.load_json(path) == KNOWN[name]


# --------------------------------------------------------------------------------------------------
# JSON, schema version 1: files written before spaces were modules still load.


@pytest.mark.parametrize(
    ("name", "text"), [("darts_v2", V1_DARTS_V2_FILE), ("nb201_resnet", V1_NB201_RESNET_FILE)]
)
def test_schema_1_files_still_load(name, text, tmp_path):
    data = json.loads(text)
    assert data["schema_version"] == 1
    assert list(data) == [
        "schema_version", "space", "normal", "normal_concat", "reduce", "reduce_concat"
    ]  # fmt: skip
    assert spaces.from_json(data) == KNOWN[name]
    path = tmp_path / "genotype.json"
    path.write_text(text)
    assert spaces.load_json(path) == KNOWN[name]
    assert spaces.load(str(path)) == KNOWN[name]
    assert spaces.parse(text) == KNOWN[name]
    # Saving it again writes schema 2, the space's fields only.
    again = spaces.load_json(path)
    again.save(path)
    assert json.loads(path.read_text()) == KNOWN[name].to_json()
    assert json.loads(path.read_text())["schema_version"] == 2


def _v1_dict(g):
    """The dict the schema-1 `Genotype.to_json` made: four cell fields in every space, edges as
    [op, input] lists; NAS-Bench-201 with its output node [3] as normal_concat and empty reduce."""
    data = {"schema_version": 1, "space": g.space}
    for cell in ("normal", "reduce"):
        if g.space == "nb201" and cell == "reduce":
            data |= {"reduce": [], "reduce_concat": []}
            continue
        data[cell] = [[[op, src] for op, src in node] for node in g[cell]]
        data[f"{cell}_concat"] = [3] if g.space == "nb201" else [2, 3, 4, 5]
    return data


@pytest.mark.parametrize("name", CELL_KNOWN)  # schema 1 was written for cell spaces only
def test_schema_1_dicts_of_every_registry_entry_load(name):
    data = _v1_dict(KNOWN[name])
    assert spaces.from_json(data) == KNOWN[name]
    assert spaces.from_json(json.loads(json.dumps(data))) == KNOWN[name]


def _v1_nb201(**overrides):
    return json.loads(V1_NB201_RESNET_FILE) | overrides


def _v1_darts(drop=(), **overrides):
    data = json.loads(V1_DARTS_V2_FILE) | overrides
    return {k: v for k, v in data.items() if k not in drop}


RESNET_NORMAL = json.loads(V1_NB201_RESNET_FILE)["normal"]
BAD_V1_JSON = {
    "nb201_with_reduce": (
        _v1_nb201(reduce=RESNET_NORMAL),
        ["space 'nb201' has no reduce cell", "reduce=[]"],
    ),
    "nb201_with_reduce_concat": (
        _v1_nb201(reduce_concat=[3]),
        ["space 'nb201' has no reduce cell", "reduce_concat=[]"],
    ),
    "nb201_other_output_node": (_v1_nb201(normal_concat=[2]), ["normal_concat", "expected [3]"]),
    "nb201_concat_not_a_list": (_v1_nb201(normal_concat=3), ["normal_concat", "expected [3]"]),
    "darts_missing_field": (
        _v1_darts(drop=["reduce_concat"]),
        ["missing fields ['reduce_concat']"],
    ),
    "darts_extra_field": (_v1_darts(score=97.2), ["unknown fields ['score']"]),
    "darts_bad_concat": (_v1_darts(normal_concat=[1, 2]), ["normal_concat contains 1"]),
}


@pytest.mark.parametrize("name", list(BAD_V1_JSON))
def test_bad_schema_1_json_raises_one_line_value_errors(name, tmp_path):
    data, needles = BAD_V1_JSON[name]
    assert data["schema_version"] == 1
    with pytest.raises(ValueError) as error:
        spaces.from_json(data)
    _check_one_line_error(error, *needles)
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as error:
        spaces.load_json(path)
    _check_one_line_error(error, str(path), *needles)


# --------------------------------------------------------------------------------------------------
# The DARTS string: accepted layouts.


def _mutate(old: str, new: str) -> str:
    assert old in V2, old
    return V2.replace(old, new, 1)


def test_range_concat():
    g = spaces.parse(V2.replace("[2, 3, 4, 5]", "range(2, 6)"))
    assert g == KNOWN["darts_v2"]
    assert g.normal_concat == (2, 3, 4, 5)
    assert "range" not in darts_cnn.to_string(g)


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
    assert spaces.parse(text) == KNOWN["pcdarts"]


def test_positional_arguments():
    g = KNOWN["darts_v1"]
    normal = str(list(cells.flat(g, "normal")))
    reduce = str(list(cells.flat(g, "reduce")))
    text = f"Genotype({normal}, [2, 3, 4, 5], {reduce}, reduce_concat=range(2, 6))"
    assert darts_cnn.from_string(text) == g


def test_per_node_layout_matches_flat_layout():
    g = KNOWN["drnas"]
    nested = (
        f"Genotype(normal={list(g.normal)}, normal_concat=[2, 3, 4, 5], "
        f"reduce={list(g.reduce)}, reduce_concat=[2, 3, 4, 5])"
    )
    assert darts_cnn.from_string(nested) == g


@pytest.mark.parametrize(
    "spelling",
    [
        "'dil\\x5fconv_3x3'",
        "'dil_conv_\\63x3'",
        "u'dil_conv_3x3'",
        "'dil_' 'conv_3x3'",
        '"""dil_conv_3x3"""',
    ],
)
def test_escaped_and_prefixed_strings_are_read_as_python_reads_them(spelling):
    assert ast.literal_eval(spelling) == "dil_conv_3x3"  # Python's own reading: the reference
    text = _mutate("'dil_conv_3x3'", spelling)
    assert darts_cnn.from_string(text) == KNOWN["darts_v2"]


# --------------------------------------------------------------------------------------------------
# The DARTS string: rejected input.


_MISSING_BRACKET = _mutate("2)], normal_concat", "2), normal_concat")
_FLOAT_INPUT = _mutate("('dil_conv_3x3', 2)", "('dil_conv_3x3', 2.0)")
_NEGATIVE_INPUT = _mutate("('dil_conv_3x3', 2)", "('dil_conv_3x3', -2)")
_UNPARSEABLE = "'(' was never closed"
_MISMATCH = "closing parenthesis ')' does not match opening parenthesis '['"
BAD_DARTS_STRINGS = {
    "code": ("__import__('os').system('x')", ["position 0", "'Genotype('", "a call"]),
    "code_in_value": (
        "Genotype(normal=__import__('os').system('rm -rf /'), normal_concat=[2])",
        ["position 16", "__import__"],
    ),
    "attribute": ("Genotype.__class__", ["position 0", "an attribute", "'Genotype('"]),
    "lambda": ("Genotype(normal=lambda: 0)", ["position 16", "lambda"]),
    "missing_close_paren": (V2[:-1], [f"position {V2.index('(')} ", _UNPARSEABLE]),
    # Python's tokenizer finds the unclosed '[' of normal at the call's closing ')'.
    "missing_bracket": (_MISSING_BRACKET, [f"position {len(_MISSING_BRACKET) - 1} ", _MISMATCH]),
    "mismatched_bracket": (
        _mutate("2)], normal_concat", "2)), normal_concat"),
        [f"position {V2.index('2)], normal_concat') + 2} ", _MISMATCH],
    ),
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
    "float_input": (_FLOAT_INPUT, [f"position {_FLOAT_INPUT.index('2.0')} ", "a float '2.0'"]),
    "negative_input": (
        _NEGATIVE_INPUT,
        [f"position {_NEGATIVE_INPUT.index('-2')} ", "a signed number '-2'"],
    ),
    "unterminated_string": ("Genotype(normal=[('sep_conv_3x3, 0)])", ["position 18", "string"]),
    "control_character_escape": (
        _mutate("'dil_conv_3x3'", "'dil\\nconv_3x3'"),
        [f"position {V2.index(repr('dil_conv_3x3'))} ", "control character '\\n'"],
    ),
    "invalid_escape": (_mutate("'dil_conv_3x3'", "'dil_\\q'"), ["invalid escape sequence"]),
    "bytes_literal": (_mutate("'dil_conv_3x3'", "b'dil_conv_3x3'"), ["a bytes literal"]),
    "trailing_code": (V2 + "; import os", ["';'"]),
    "two_genotypes": (V2 + V2, [f"position {len(V2)} ", "invalid syntax"]),
    "two_lines": (V2 + "\n" + V2, ["line 2, column 1", "end of input after"]),
    "empty": ("", ["position 0", "end of input"]),
    "deep_nesting": ("Genotype(normal=" + "[" * 100_000, ["nested deeper"]),
    "positional_after_keyword": ("Genotype(normal=[], [2, 3])", ["keyword argument"]),
}


@pytest.mark.parametrize("name", list(BAD_DARTS_STRINGS))
def test_bad_darts_strings_raise_one_line_value_errors(name):
    text, needles = BAD_DARTS_STRINGS[name]
    with pytest.raises(ValueError) as error:
        darts_cnn.from_string(text)
    _check_one_line_error(error, "invalid DARTS genotype string at position", *needles)


def test_multiline_error_reports_line_and_column():
    text = V2.replace(", reduce=", ",\n  reduce=").replace("'max_pool_3x3', 1", "'bad_op', 1", 1)
    with pytest.raises(ValueError) as error:
        darts_cnn.from_string(text)
    _check_one_line_error(error, "line 2, column ", "bad_op")


def test_parse_with_a_space_reads_only_that_space_formats():
    with pytest.raises(ValueError) as error:
        spaces.parse(V2, space="nb201")
    message = _check_one_line_error(error, "is not a genotype text", "NAS-Bench-201 arch string")
    assert "DARTS" not in message
    with pytest.raises(ValueError) as error:
        spaces.parse(NB201_EXAMPLE, space="darts_cnn")
    message = _check_one_line_error(error, "is not a genotype text", "DARTS genotype string")
    assert "NAS-Bench-201" not in message
    assert spaces.parse(V2, space="darts_cnn") == KNOWN["darts_v2"]
    assert spaces.parse(NB201_EXAMPLE, space="nb201") == nb201.from_string(NB201_EXAMPLE)
    with pytest.raises(ValueError) as error:
        darts_cnn.from_string(NB201_EXAMPLE)
    _check_one_line_error(error, "DARTS genotype string", "position 0")


def test_string_writers_refuse_another_space_genotype():
    """Each space's writer refuses a genotype of the other space (the old to_darts_string /
    to_nb201_string did) rather than writing a string that reads back as something else."""
    with pytest.raises(ValueError) as error:
        darts_cnn.to_string(KNOWN["nb201_resnet"])
    _check_one_line_error(error, "nb201")
    with pytest.raises(ValueError) as error:
        nb201.to_string(KNOWN["darts_v2"])
    _check_one_line_error(error, "darts_cnn")


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
        nb201.from_string(text)
    _check_one_line_error(error, "position", "NAS-Bench-201", *needles)


# --------------------------------------------------------------------------------------------------
# Building genotypes: through the space, validated, canonical, hashable, immutable.


def test_lists_become_tuples_and_genotypes_hash():
    g = KNOWN["darts_v2"]
    as_lists = darts_cnn.SPACE.genotype(
        normal=[[list(edge) for edge in node] for node in g.normal],
        normal_concat=range(2, 6),
        reduce=[list(node) for node in g.reduce],
        reduce_concat=[np.int64(n) for n in (2, 3, 4, 5)],
    )
    assert isinstance(as_lists, Genotype)
    assert as_lists == g
    assert isinstance(as_lists.normal, tuple) and isinstance(as_lists.normal[0][0], tuple)
    assert type(as_lists.reduce_concat[0]) is int
    assert {as_lists: 1}[g] == 1


def test_genotypes_compare_and_hash_equal_by_value():
    from_text = darts_cnn.from_string(V2)
    from_json = spaces.from_json(json.loads(V2_DARTS_V2_FILE))
    from_flat = darts_cnn.from_flat(
        list(cells.flat(from_text, "normal")), [2, 3, 4, 5],
        list(cells.flat(from_text, "reduce")), [2, 3, 4, 5],
    )  # fmt: skip
    assert from_text == from_json == from_flat == KNOWN["darts_v2"]
    assert from_text is not KNOWN["darts_v2"]
    assert len({from_text, from_json, from_flat, KNOWN["darts_v2"]}) == 1
    assert len({hash(g) for g in (from_text, from_json, from_flat)}) == 1
    assert from_text != KNOWN["darts_v1"]
    assert len(set(KNOWN.values())) == len(KNOWN)  # no two published genotypes are equal
    assert from_text != from_text.to_json() and from_text != V2
    assert KNOWN["nb201_resnet"] != KNOWN["darts_v2"]


def test_genotypes_are_immutable():
    g = KNOWN["darts_v2"]
    before = g.to_json()
    with pytest.raises(AttributeError):
        g.space = "nb201"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        g.normal = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        g.score = 97.2  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        g.normal[0] = ()  # type: ignore[index]
    fields = g.fields()
    fields["normal"] = ()
    assert g.to_json() == before
    changed = g.replace(normal_concat=[2, 3])
    assert changed.normal_concat == (2, 3) and changed.normal == g.normal
    assert g.normal_concat == (2, 3, 4, 5) and g.to_json() == before
    with pytest.raises(ValueError) as error:
        g.replace(normal_concat=[1])
    _check_one_line_error(error, "normal_concat contains 1")


@pytest.mark.parametrize("name", ["darts_v2", "nb201_resnet"])
def test_pickling_a_genotype_raises_a_type_error_naming_to_json(name):
    g = KNOWN[name]
    with pytest.raises(TypeError) as error:
        pickle.dumps(g)
    _check_one_line_error(error, "to_json", "from_json")
    # The way it points to: JSON, read back by the registry.
    assert spaces.from_json(json.loads(json.dumps(g.to_json()))) == g


def test_from_flat_matches_nested():
    g = KNOWN["pdarts"]
    flat = darts_cnn.from_flat(
        list(cells.flat(g, "normal")), [2, 3, 4, 5], list(cells.flat(g, "reduce")), [2, 3, 4, 5]
    )
    assert flat == g
    nb = nb201.from_string(NB201_EXAMPLE)
    grouped = cells.group_flat(nb201.TOPOLOGY, list(cells.flat(nb, "normal")), "normal")
    assert nb201.SPACE.genotype(normal=grouped) == nb


def _darts_fields(**overrides):
    g = KNOWN["darts_v2"]
    return (darts_cnn.SPACE, g.fields() | overrides)


V2_NORMAL = KNOWN["darts_v2"].normal
RESNET = KNOWN["nb201_resnet"].normal
BAD_CONSTRUCTIONS = {
    "flat_list": (_darts_fields(normal=cells.flat(KNOWN["darts_v2"], "normal")), ["from_flat"]),
    "three_nodes": (_darts_fields(normal=V2_NORMAL[:3]), ["3 nodes", "expected 4"]),
    "three_edges": (
        _darts_fields(normal=(*V2_NORMAL[:3], (*V2_NORMAL[3], ("skip_connect", 1)))),
        ["node 5 has 3 incoming edges", "expected 2"],
    ),
    "unknown_op": (
        _darts_fields(normal=(*V2_NORMAL[:3], (("conv_7x1_1x7", 0), ("skip_connect", 1)))),
        ["conv_7x1_1x7", "sep_conv_3x3"],
    ),
    "later_input": (
        _darts_fields(normal=((("skip_connect", 0), ("skip_connect", 2)), *V2_NORMAL[1:])),
        ["normal node 2", "input 2", "0..1"],
    ),
    "bool_input": (
        _darts_fields(normal=((("skip_connect", 0), ("skip_connect", True)), *V2_NORMAL[1:])),
        ["integer"],
    ),
    "empty_concat": (_darts_fields(reduce_concat=()), ["reduce_concat is empty"]),
    "input_concat": (_darts_fields(normal_concat=(1, 2)), ["contains 1"]),
    "unsorted_concat": (_darts_fields(normal_concat=(3, 2)), ["strictly increasing"]),
    "missing_reduce": (_darts_fields(reduce=(), reduce_concat=()), ["reduce has 0 nodes"]),
    "missing_field": (
        (darts_cnn.SPACE, {"normal": V2_NORMAL, "normal_concat": (2, 3, 4, 5)}),
        [
            "invalid darts_cnn genotype: missing fields ['reduce', 'reduce_concat']",
            "expected exactly ['normal', 'normal_concat', 'reduce', 'reduce_concat']",
        ],
    ),
    "unknown_field": (
        _darts_fields(space="nb201"),
        ["invalid darts_cnn genotype: unknown fields ['space']"],
    ),
    "nb201_with_reduce": (
        (nb201.SPACE, {"normal": RESNET, "reduce": RESNET}),
        ["invalid nb201 genotype: unknown fields ['reduce']", "expected exactly ['normal']"],
    ),
    "nb201_with_concat": (
        (nb201.SPACE, {"normal": RESNET, "normal_concat": (3,)}),
        ["invalid nb201 genotype: unknown fields ['normal_concat']"],
    ),
    "nb201_missing_normal": ((nb201.SPACE, {}), ["missing fields ['normal']"]),
    "nb201_repeated_input": (
        (
            nb201.SPACE,
            {
                "normal": (
                    (("none", 0),),
                    (("none", 0), ("none", 0)),
                    (("none", 0), ("none", 1), ("none", 2)),
                )
            },
        ),
        ["node 2 has inputs [0, 0]", "exactly once"],
    ),
    "nb201_darts_op": (
        (nb201.SPACE, {"normal": ((("sep_conv_3x3", 0),), *RESNET[1:])}),
        ["sep_conv_3x3", "nor_conv_3x3"],
    ),
}


@pytest.mark.parametrize("name", list(BAD_CONSTRUCTIONS))
def test_invalid_genotypes_raise_one_line_value_errors(name):
    (space, fields), needles = BAD_CONSTRUCTIONS[name]
    with pytest.raises(ValueError) as error:
        space.genotype(**fields)
    _check_one_line_error(error, *needles)


# --------------------------------------------------------------------------------------------------
# JSON: rejected input.


def _v2_json(**overrides):
    return json.loads(V2_DARTS_V2_FILE) | overrides


def _without(data, key):
    return {k: v for k, v in data.items() if k != key}


BAD_JSON = {
    "future_version": (_v2_json(schema_version=3), ["schema_version 3", "expected one of [1, 2]"]),
    "version_0": (_v2_json(schema_version=0), ["schema_version 0", "expected one of [1, 2]"]),
    "string_version": (_v2_json(schema_version="2"), ["schema_version '2'"]),
    "bool_version": (_v2_json(schema_version=True), ["schema_version True"]),
    "float_version": (_v2_json(schema_version=2.0), ["schema_version 2.0"]),
    "no_version": (_without(_v2_json(), "schema_version"), ["schema_version None"]),
    "extra_key": (_v2_json(score=97.2), ["unknown fields ['score']"]),
    "missing_key": (
        _without(_v2_json(), "reduce_concat"),
        ["missing fields ['reduce_concat']"],
    ),
    "nb201_with_v1_fields": (
        json.loads(V2_NB201_RESNET_FILE)
        | {"normal_concat": [3], "reduce": [], "reduce_concat": []},
        ["invalid nb201 genotype: unknown fields ['normal_concat', 'reduce', 'reduce_concat']"],
    ),
    "no_space": (_without(_v2_json(), "space"), ["'space' must name a search space"]),
    "unknown_space": (_v2_json(space="darts"), ["unknown search space 'darts'", "darts_cnn"]),
    "not_an_object": ([1, 2], ["object"]),
    "edge_as_string": (_v2_json(normal=["sep_conv_3x3"] * 4), ["normal[0]"]),
    "op_as_int": (_v2_json(normal=[[[0, 0], [1, 1]]] * 4), ["normal[0][0]", "pair"]),
}


@pytest.mark.parametrize("name", list(BAD_JSON))
def test_bad_json_raises_one_line_value_errors(name):
    data, needles = BAD_JSON[name]
    with pytest.raises(ValueError) as error:
        spaces.from_json(data)
    _check_one_line_error(error, *needles)


def test_bad_json_text_and_files(tmp_path):
    with pytest.raises(ValueError) as error:
        spaces.parse('{"schema_version": 2,')
    _check_one_line_error(error, "invalid genotype JSON")
    with pytest.raises(ValueError) as error:
        spaces.parse(V2_DARTS_V2_FILE, space="nb201")
    _check_one_line_error(error, "darts_cnn", "nb201")
    path = tmp_path / "broken.json"
    path.write_text("[1, 2")
    with pytest.raises(ValueError) as error:
        spaces.load_json(path)
    _check_one_line_error(error, str(path), "invalid genotype JSON")
    path.write_text(json.dumps(_v2_json(schema_version=3)))
    with pytest.raises(ValueError) as error:
        spaces.load_json(path)
    _check_one_line_error(error, str(path), "schema_version 3")


# --------------------------------------------------------------------------------------------------
# Saving and loading.


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "genotype.json"
    KNOWN["darts_v1"].save(path)
    KNOWN["darts_v2"].save(str(path))  # overwrite
    assert os.listdir(tmp_path) == ["genotype.json"]
    assert spaces.load_json(path) == KNOWN["darts_v2"]


def test_failed_save_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "genotype.json"
    KNOWN["darts_v1"].save(path)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        KNOWN["darts_v2"].save(path)
    assert os.listdir(tmp_path) == ["genotype.json"]
    assert spaces.load_json(path) == KNOWN["darts_v1"]


def test_load_names_files_and_strings(tmp_path):
    assert spaces.load("DARTS_V2") is KNOWN["darts_v2"]
    assert spaces.load(" PCDarts ") is KNOWN["pcdarts"]
    assert spaces.load("nb201_resnet") is KNOWN["nb201_resnet"]
    assert spaces.load(QUARK0_DARTS_V2) == KNOWN["darts_v2"]
    assert spaces.load(NB201_EXAMPLE) == nb201.from_string(NB201_EXAMPLE)
    assert spaces.load(V2_NB201_RESNET_FILE) == KNOWN["nb201_resnet"]
    assert spaces.load(V1_DARTS_V2_FILE) == KNOWN["darts_v2"]
    text_file = tmp_path / "genotype.txt"
    text_file.write_text(SOURCE_STRINGS["pdarts"] + "\n")
    assert spaces.load(str(text_file)) == KNOWN["pdarts"]
    nb201_file = tmp_path / "arch.txt"
    nb201_file.write_text(NB201_EXAMPLE + "\n")
    assert spaces.load(nb201_file) == nb201.from_string(NB201_EXAMPLE)
    json_file = tmp_path / "genotype.json"
    json_file.write_text(V1_NB201_RESNET_FILE)
    assert spaces.load(Path(json_file)) == KNOWN["nb201_resnet"]
    assert spaces.load(str(json_file)) == KNOWN["nb201_resnet"]
    bad_file = tmp_path / "bad.txt"
    bad_file.write_text("Genotype(normal=oops)")
    with pytest.raises(ValueError) as error:
        spaces.load(str(bad_file))
    _check_one_line_error(error, str(bad_file), "position 16", "a name 'oops'")


def test_unknown_name_lists_registered_names():
    with pytest.raises(ValueError) as error:
        spaces.load("darts_v3")
    message = _check_one_line_error(error, "darts_v3")
    for name in KNOWN:
        assert name in message


def test_parse_detects_the_format():
    darts = KNOWN["darts_v2"]
    resnet = KNOWN["nb201_resnet"]
    assert spaces.parse(V2) == darts  # DARTS genotype string
    assert spaces.parse(QUARK0_DARTS_V2) == darts  # with its `NAME = `
    assert spaces.parse(
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    ) == resnet  # fmt: skip
    assert spaces.parse(V2_DARTS_V2_FILE) == darts  # JSON, schema 2
    assert spaces.parse(V1_DARTS_V2_FILE) == darts  # JSON, schema 1
    assert spaces.parse(json.dumps(json.loads(V2_DARTS_V2_FILE), indent=4)) == darts
    assert spaces.parse(V2_NB201_RESNET_FILE) == resnet
    assert spaces.parse(V1_NB201_RESNET_FILE) == resnet
    assert spaces.parse("\n  " + V2_NB201_RESNET_FILE) == resnet
    with pytest.raises(ValueError) as error:
        spaces.parse("   ")
    _check_one_line_error(error, "empty")
    with pytest.raises(ValueError) as error:
        spaces.parse("darts_v2")  # a name is for `load`, not a text
    _check_one_line_error(
        error, "not a genotype text", "genotype JSON", "DARTS genotype string", "NAS-Bench-201"
    )


# --------------------------------------------------------------------------------------------------
# The random baseline.


def test_random_darts_genotypes_are_valid():
    space = darts_cnn.SPACE
    topology = darts_cnn.TOPOLOGY
    seen = set()
    for seed in range(200):
        g = space.random_genotype(np.random.default_rng(seed))
        assert g.space == "darts_cnn" and space.genotype(**g.fields()) == g
        seen.add(g)
        for cell in ("normal", "reduce"):
            for node, edges in zip(topology.nodes, g[cell], strict=True):
                inputs = [src for _, src in edges]
                assert len(inputs) == 2 and len(set(inputs)) == 2
                assert all(0 <= src < node for src in inputs)
                assert all(op in darts_cnn.PRIMITIVES and op != "none" for op, _ in edges)
        assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
        assert darts_cnn.from_string(darts_cnn.to_string(g)) == g
    assert len(seen) == 200


def test_random_nb201_genotypes_are_valid_and_use_every_op():
    space = spaces.get("nb201")
    ops = set()
    for seed in range(200):
        g = space.random_genotype(np.random.default_rng(seed))
        assert g.space == "nb201" and list(g.fields()) == ["normal"]
        assert space.genotype(**g.fields()) == g
        assert nb201.from_string(nb201.to_string(g)) == g
        ops.update(op for op, _ in cells.flat(g, "normal"))
    assert ops == set(nb201.PRIMITIVES) == {
        "none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"
    }  # fmt: skip


@pytest.mark.parametrize("name", ["darts_cnn", "nb201"])
def test_random_genotype_is_reproducible(name):
    space = spaces.get(name)
    first = space.random_genotype(np.random.default_rng(7))
    again = space.random_genotype(np.random.default_rng(7))
    other = space.random_genotype(np.random.default_rng(8))
    assert first == again != other
