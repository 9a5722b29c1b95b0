"""Tests for dnas.literals: the ast-based reader of genotype strings written as a Python call.

Expected positions come from `str.index` on the input (or are counted by hand), never from the
reader's own position arithmetic.
"""

import ast
import re
import time
import warnings
from pathlib import Path

import pytest
from published_genotypes import DXY_GDAS_V1, QUARK0_DARTS_V2

from dnas import literals
from dnas.literals import Node, position_error, read_call

FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
WHAT = "DARTS genotype string"

V2 = QUARK0_DARTS_V2.removeprefix("DARTS_V2 = ")

# The same cells, typed out independently of the strings above.
V2_NORMAL = [
    ["sep_conv_3x3", 0],
    ["sep_conv_3x3", 1],
    ["sep_conv_3x3", 0],
    ["sep_conv_3x3", 1],
    ["sep_conv_3x3", 1],
    ["skip_connect", 0],
    ["skip_connect", 0],
    ["dil_conv_3x3", 2],
]
V2_REDUCE = [
    ["max_pool_3x3", 0],
    ["max_pool_3x3", 1],
    ["skip_connect", 2],
    ["max_pool_3x3", 1],
    ["max_pool_3x3", 0],
    ["skip_connect", 2],
    ["skip_connect", 2],
    ["max_pool_3x3", 1],
]
V2_PLAIN = {
    "normal": V2_NORMAL,
    "normal_concat": [2, 3, 4, 5],
    "reduce": V2_REDUCE,
    "reduce_concat": [2, 3, 4, 5],
}

# Hand-edited the way genotypes.py files are: comments, keywords shuffled, tuples for lists, double
# quotes, trailing commas, a range, odd indentation.
MULTILINE = """
# DARTS (second order), from quark0/darts
DARTS_V2 = Genotype(
    reduce_concat=range(2, 6),  # same as [2, 3, 4, 5]
    normal=(
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ('sep_conv_3x3', 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("skip_connect", 0), ("dil_conv_3x3", 2),
    ),
    normal_concat=[2, 3, 4, 5,],
  reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
          ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1),],
)  # end
"""

# D-X-Y/AutoDL-Projects genotypes.py layout: one tuple of edges per node (GDAS_V1, without the two
# extra fields that the DARTS format does not have).
PER_NODE = DXY_GDAS_V1.replace("  connectN=None, connects=None\n", "")


def _read(text: str) -> dict[str, Node]:
    args, close = read_call(text, "Genotype", FIELDS, WHAT)
    assert text[close] == ")"
    for node in args.values():
        _check_positions(text, node)
    return args


def _plain(node: Node):
    """The Node tree as plain values: lists for sequences, ('range', items) for ranges."""
    if node.kind == "seq":
        return [_plain(item) for item in node.value]
    if node.kind == "range":
        return ("range", node.value)
    return node.value


def _check_positions(text: str, node: Node) -> None:
    """Every node's position is where its source starts."""
    if node.kind == "seq":
        assert text[node.pos] in "[(", (node, text[node.pos :][:20])
        for item in node.value:
            _check_positions(text, item)
    elif node.kind == "str":
        assert text[node.pos] in "'\"" and text.startswith(node.value, node.pos + 1), node
    elif node.kind == "int":
        assert text.startswith(str(node.value), node.pos), node
    else:
        assert node.kind == "range" and text.startswith("range(", node.pos), node


def _error(text: str, *needles: str, pos: int | None = None, func: str = "Genotype") -> str:
    """The one-line ValueError message for `text`, checked for the position and `needles`."""
    with pytest.raises(ValueError) as error:
        read_call(text, func, FIELDS, WHAT)
    message = str(error.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"invalid {WHAT} at position "), message
    assert re.search(r"at position \d+ \(line \d+, column \d+\): ", message), message
    if pos is not None:
        assert f"at position {pos} (" in message, (pos, message)
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def _position(message: str) -> int:
    return int(re.search(r"at position (\d+) ", message).group(1))


# --------------------------------------------------------------------------------------------------
# Accepted input.


def test_quark0_darts_v2():
    args, close = read_call(QUARK0_DARTS_V2, "Genotype", FIELDS, WHAT)
    assert list(args) == list(FIELDS)
    assert {name: _plain(node) for name, node in args.items()} == V2_PLAIN
    assert close == len(QUARK0_DARTS_V2) - 1
    assert args["normal"].pos == QUARK0_DARTS_V2.index("[('sep_conv_3x3', 0)")
    assert args["reduce"].pos == QUARK0_DARTS_V2.index("reduce=") + len("reduce=")
    assert args["reduce_concat"].pos == QUARK0_DARTS_V2.rindex("[2, 3, 4, 5]")
    last = args["reduce"].value[-1]
    assert last == Node(
        "seq",
        [
            Node("str", "max_pool_3x3", QUARK0_DARTS_V2.rindex("'max_pool_3x3'")),
            Node("int", 1, QUARK0_DARTS_V2.rindex("1)")),
        ],
        QUARK0_DARTS_V2.rindex("('max_pool_3x3', 1)"),
    )
    _read(QUARK0_DARTS_V2)
    assert {name: _plain(node) for name, node in _read(V2).items()} == V2_PLAIN


def test_range_concat():
    text = V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=range(2, 6)")
    args = _read(text)
    assert args["reduce_concat"] == Node("range", (2, 3, 4, 5), text.index("range(2, 6)"))
    args = _read("Genotype(normal_concat=range(4), reduce_concat=range(3, 3))")
    assert _plain(args["normal_concat"]) == ("range", (0, 1, 2, 3))
    assert _plain(args["reduce_concat"]) == ("range", ())


def test_multiline_with_comments_shuffled_keywords_tuples_and_trailing_commas():
    args, close = read_call(MULTILINE, "Genotype", FIELDS, WHAT)
    assert list(args) == ["reduce_concat", "normal", "normal_concat", "reduce"]  # source order
    plain = {name: _plain(node) for name, node in args.items()}
    assert plain == {**V2_PLAIN, "reduce_concat": ("range", (2, 3, 4, 5))}
    assert close == MULTILINE.index(")  # end")
    assert args["normal"].pos == MULTILINE.index("(\n        (")
    assert args["normal"].value[3].value[0].pos == MULTILINE.index("'sep_conv_3x3'")
    for node in args.values():
        _check_positions(MULTILINE, node)


def test_positional_arguments_in_field_order_then_keywords():
    text = f"Genotype({V2_NORMAL}, [2, 3, 4, 5], {V2_REDUCE}, reduce_concat=range(2, 6))"
    args = _read(text)
    assert list(args) == list(FIELDS)
    assert _plain(args["reduce"]) == V2_REDUCE
    assert args["normal_concat"].pos == text.index("[2, 3")
    args = _read(f"Genotype({V2_NORMAL}, [2], {V2_REDUCE}, [3])")
    assert [_plain(args[name]) for name in FIELDS] == [V2_NORMAL, [2], V2_REDUCE, [3]]


def test_per_node_nested_layout():
    args = _read(PER_NODE)
    normal = _plain(args["normal"])
    assert len(normal) == 4 and all(len(node) == 2 for node in normal)
    assert normal[1] == [["skip_connect", 0], ["sep_conv_5x5", 2]]
    assert _plain(args["reduce"])[3][1] == ["sep_conv_5x5", 1]
    assert args["normal"].value[2].value[0].pos == PER_NODE.index("('sep_conv_3x3', 3)")


def test_four_levels_of_sequences_are_accepted():
    args = _read("Genotype(normal=[[[['a', 0]]]], reduce=((((),),),))")
    assert _plain(args["normal"]) == [[[["a", 0]]]]
    assert _plain(args["reduce"]) == [[[[]]]]


def test_indented_and_parenthesized_calls():
    for text in [
        "    " + QUARK0_DARTS_V2,
        "\n\n  # from the paper's repository\n\t" + V2 + "  # trailing comment\n\n",
        f"DARTS_V2 = ({V2})",
        f"({V2})",
    ]:
        args, close = read_call(text, "Genotype", FIELDS, WHAT)
        assert {name: _plain(node) for name, node in args.items()} == V2_PLAIN
        assert close == text.index(V2) + len(V2) - 1
        assert args["reduce"].pos == text.index("reduce=") + len("reduce=")


def test_string_escapes_and_integer_forms_are_decoded():
    text = r"Genotype(normal=[('sep\x5fconv_3x3', 0x2), ('skip_' 'connect', 1_0)])"
    args, _ = read_call(text, "Genotype", FIELDS, WHAT)
    assert _plain(args["normal"]) == [["sep_conv_3x3", 2], ["skip_connect", 10]]
    assert args["normal"].value[0].value[0].pos == text.index("'sep")
    assert args["normal"].value[0].value[1].pos == text.index("0x2")
    assert _plain(_read("Genotype(normal=[('a', 9999)])")["normal"]) == [["a", 9999]]


def test_other_calls_and_fields():
    text = "cell = Cell('x', b=[1, ('y', 2)])  # not a genotype"
    args, close = read_call(text, "Cell", ["a", "b"], "cell")
    assert {name: _plain(node) for name, node in args.items()} == {"a": "x", "b": [1, ["y", 2]]}
    assert close == text.index(")  #")
    with pytest.raises(ValueError, match=r"^invalid cell at position 7 \(line 1, column 8\): "):
        read_call("cell = Genotype()", "Cell", ["a"], "cell")
    _error("Genotype()", "expected 'Cell('", "a call 'Genotype()'", pos=0, func="Cell")


def test_nothing_is_executed(tmp_path):
    marker = tmp_path / "ran"
    for text in [
        f"__import__('pathlib').Path({str(marker)!r}).touch()",
        f"Genotype(normal=__import__('pathlib').Path({str(marker)!r}).touch())",
        f"Genotype(normal=[])\n__import__('pathlib').Path({str(marker)!r}).touch()",
    ]:
        _error(text, "found")
    assert not marker.exists()


def test_the_module_never_evaluates_or_compiles_code():
    tree = ast.parse(Path(literals.__file__).read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not {"eval", "exec", "compile", "__import__", "getattr"} & names
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr not in {"eval", "exec", "literal_eval"}, ast.unparse(node)
            if node.attr == "compile":
                assert ast.unparse(node) == "re.compile"


# --------------------------------------------------------------------------------------------------
# Positions.


def test_position_error_format():
    error = position_error("ab\ncdé\nf", 5, "expected x, found 'é'", "thing")
    assert isinstance(error, ValueError)
    assert str(error) == ("invalid thing at position 5 (line 2, column 3): expected x, found 'é'")
    assert "position 0 (line 1, column 1)" in str(position_error("", 0, "m", "thing"))
    assert "position 3 (line 2, column 1)" in str(position_error("ab\n", 99, "m", "thing"))
    assert "position 4 (line 3, column 1)" in str(position_error("a\r\n\rb", 4, "m", "thing"))


def test_multiline_error_reports_line_and_column():
    text = 'Genotype(\n  normal=[("é", 0)],\n  reduce=[("x", y)],\n)'
    # 'y' is on line 3 after `  reduce=[("x", `: 16 characters, so column 17.
    _error(text, "line 3, column 17", "a name 'y'", pos=text.index("y)"))
    syntax = text.replace("y)", "?)")
    _error(syntax, "line 3, column 17", "Python syntax error", pos=syntax.index("?"))


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\r"])
def test_line_breaks(line_break):
    text = line_break.join(["Genotype(", "  normal=[('a', 0)],", "  reduce=lambda: 0)"])
    _error(text, "line 3, column 10", "a lambda", pos=text.index("lambda"))


@pytest.mark.parametrize("prefix", ["é", "ééé", "日本", "🙂", "é🙂日"])
def test_non_ascii_before_the_error(prefix):
    # UTF-8 takes 2, 3 or 4 bytes for these; ast's columns count bytes, positions count characters.
    text = f"Genotype(normal=[('{prefix}', 0), ('x', bad)], reduce=[('{prefix}', 1.5)])"
    _error(text, "a name 'bad'", f"column {text.index('bad') + 1})", pos=text.index("bad"))
    fixed = text.replace("bad", "1")
    _error(fixed, "a float '1.5'", pos=fixed.index("1.5"))
    syntax = text.replace("bad", "?")
    _error(syntax, "Python syntax error", pos=syntax.index("?"))
    accepted = f"Genotype(normal=[('{prefix}', 0), ('{prefix}', 1)])"
    assert _read(accepted)["normal"].value[1].value[1].pos == accepted.index("1)")


def test_non_ascii_and_indentation_on_the_first_code_line():
    text = "# Genotype für DARTS\n    X = Genotype(normal=[('ü', y)])"
    _error(text, "line 2, column 32", "a name 'y'", pos=text.index("y)"))
    syntax = text.replace("y)", "?)")
    _error(syntax, "line 2, column 32", "Python syntax error", pos=syntax.index("?"))


# --------------------------------------------------------------------------------------------------
# Rejected input: one line each, naming the position and what was found or expected there.


def _replace(old: str, new: str) -> str:
    assert old in V2, old
    return V2.replace(old, new, 1)


def _case(text: str, at: str | int | None, *needles: str, nth: int = 0) -> tuple:
    """(text, expected position, needles); `at` is a substring whose `nth` occurrence is where
    the error is, or the position itself (None: not checked here)."""
    if at is None or isinstance(at, int):
        return text, at, needles
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(at, pos + 1)
    return text, pos, needles


ONLY_COMMENTS = "  # nothing here\n\n"
_VALUE = "expected a list, a tuple, a quoted operation name, a non-negative integer or range(...)"
_INTEGER = "expected a non-negative integer"

BAD = {
    # Python syntax errors, with what ast said.
    "unterminated_string": _case(
        "Genotype(normal=[('sep_conv_3x3, 0)])",
        "'sep",
        "unterminated string",
        "Python syntax error",
    ),
    "missing_close_paren": _case(V2[:-1], "(", "'(' was never closed", "Python syntax error"),
    "missing_comma": _case(
        "Genotype(normal_concat=[2, 3 4])", "3 4", "forgot a comma", "Python syntax error"
    ),
    "mismatched_bracket": _case(
        _replace("2)], normal_concat", "2)), normal_concat"),
        "), normal_concat",
        "does not match",
    ),
    # CPython places this one at the end of the arguments: see test_positional_after_keyword.
    "positional_after_keyword": _case(
        "Genotype(normal=[], [2, 3])", None, "positional argument follows keyword argument"
    ),
    "two_calls_in_a_row": _case(V2 + V2, len(V2), "invalid syntax", "Python syntax error"),
    "byte_order_mark": _case("\ufeff" + V2, 0, "U+FEFF", "Python syntax error"),
    "nul_character": _case("Genotype(normal=[('a',\0 0)])", "\0", "NUL character"),
    "lone_surrogate": _case("Genotype(normal=[('\ud800', 0)])", "\ud800", "unencodable"),
    # Not one call of `Genotype`.
    "empty": _case("", 0, "expected 'Genotype(', found end of input"),
    "only_comments": _case(ONLY_COMMENTS, len(ONLY_COMMENTS), "found end of input"),
    "code": _case(
        "__import__('os').system('x')", 0, "expected 'Genotype('", "a call", "__import__"
    ),
    "attribute": _case("Genotype.__class__", 0, "expected 'Genotype('", "an attribute"),
    "bare_name": _case("Genotype", 0, "expected 'Genotype('", "a name 'Genotype'"),
    "other_function": _case("Genome(normal=[])", 0, "expected 'Genotype('", "'Genome(normal=[])'"),
    "method_call": _case("x.Genotype(normal=[])", 0, "expected 'Genotype('", "a call"),
    "string": _case(repr(V2), 0, "expected 'Genotype('", "a string"),
    "import": _case("import os", 0, "an import statement", "'import os'"),
    "annotated_assignment": _case(
        "X: Genotype = " + V2, 0, "expected 'Genotype(' or 'NAME = Genotype('", "annotated"
    ),
    "chained_assignment": _case(
        "A = B = " + V2, "B", "expected 'Genotype(' after '='", "a name 'B'"
    ),
    "attribute_target": _case("a.b = " + V2, 0, "a plain name before '='", "an attribute 'a.b'"),
    "tuple_target": _case("a, b = " + V2, 0, "a plain name before '='", "a tuple"),
    "augmented_assignment": _case("X += " + V2, 0, "an augmented assignment"),
    # More than one statement.
    "trailing_code": _case(V2 + "; import os", ";", "expected end of input after 'Genotype(...)'"),
    "trailing_semicolon": _case(QUARK0_DARTS_V2 + " ;", ";", "found ';'"),
    "two_statements": _case(
        QUARK0_DARTS_V2 + "\n" + V2,
        len(QUARK0_DARTS_V2) + 1,
        "expected end of input after 'Genotype(...)'",
        "an expression",
    ),
    "statement_after": _case(
        V2 + "\nimport os  # then code", "import", "end of input after", "an import statement"
    ),
    "tuple_called": _case(
        "Genotype(normal=[('a', 0) ('b', 1)])", "('a'", "a call \"('a', 0) ('b', 1)\""
    ),
    # Code inside the values.
    "code_in_value": _case(
        "Genotype(normal=__import__('os').system('rm -rf /'), normal_concat=[2])",
        16,
        _VALUE,
        "a call",
        "__import__",
    ),
    "call_in_list": _case(_replace("('dil_conv_3x3', 2)", "print(2)"), "print", "a call"),
    "attribute_in_value": _case("Genotype(normal=os.environ)", 16, "an attribute 'os.environ'"),
    "lambda": _case("Genotype(normal=lambda: 0)", 16, _VALUE, "a lambda 'lambda: 0'"),
    "name_in_edge": _case(_replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', x)"), "x)", "a name"),
    "operator": _case("Genotype(normal_concat=[2 + 3])", "2 +", "an operator expression"),
    "comparison": _case("Genotype(normal_concat=[2 < 3])", "2 <", "a comparison"),
    "subscript": _case("Genotype(normal=[()][0])", "[()]", "a subscript"),
    "dict": _case("Genotype(normal={'a': 0})", "{", "a dict"),
    "set": _case("Genotype(normal_concat={2, 3})", "{", "a set"),
    "comprehension": _case("Genotype(normal_concat=[i for i in x])", "[", "a comprehension"),
    "f_string": _case("Genotype(normal=[(f'{x}', 0)])", "f'", "an f-string"),
    "bytes": _case("Genotype(normal=[(b'sep', 0)])", "b'", "a bytes literal"),
    "none": _case("Genotype(normal=None)", 16, "a constant 'None'"),
    "ellipsis": _case("Genotype(normal=[...])", "...", "a constant"),
    "starred": _case("Genotype(*normal)", "*", "a starred expression '*normal'"),
    "starred_in_list": _case("Genotype(normal=[*x])", "*", "a starred expression"),
    "unpacked_keywords": _case("Genotype(**fields)", "**", "an unpacked argument '**fields'"),
    "walrus": _case("Genotype(normal=(x := []))", "x :=", "an assignment expression"),
    "conditional": _case("Genotype(normal=[] if 1 else [])", "[]", "a conditional expression"),
    # Arguments.
    "unknown_keyword": _case(
        _replace("reduce_concat=", "reduce_cat="),
        "reduce_cat",
        "unknown keyword 'reduce_cat'",
        "expected one of normal, normal_concat, reduce, reduce_concat",
    ),
    "keyword_given_twice": _case(
        _replace("normal_concat=[2, 3, 4, 5]", "normal=[]"),
        "normal=[]",
        "'normal' given twice; expected it once",
    ),
    "positional_and_keyword": _case(
        "Genotype([], [2], normal=[])", "normal", "'normal' given twice"
    ),
    "too_many_positional": _case(
        "Genotype([], [], [], [], [5])",
        "[5]",
        "too many positional arguments",
        "at most 4 (normal, normal_concat, reduce, reduce_concat)",
    ),
    # Numbers.
    "float": _case(_replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 2.0)"), "2.0", "a float"),
    "negative": _case(
        _replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', -2)"), "-2", _VALUE, "a signed number"
    ),
    "bool": _case(_replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', True)"), "True", "a bool"),
    "complex": _case("Genotype(normal_concat=[2j])", "2j", "a complex number"),
    "five_digits": _case(
        "Genotype(normal=[('a', 12345)])",
        "12345",
        "integer '12345' is too large; expected a node number",
    ),
    "ten_thousand": _case("Genotype(normal_concat=[2, 10000])", "10000", "too large"),
    "huge_hex": _case("Genotype(normal_concat=[0x" + "f" * 60 + "])", "0x", "too large"),
    "huge_literal": _case(
        "Genotype(normal_concat=[" + "7" * 5000 + "])", "7", "Python syntax error"
    ),
    # Ranges.
    "range_bound_too_large": _case(
        _replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 999999999)"),
        "999999999",
        "too large",
    ),
    "range_too_long": _case(
        "Genotype(normal_concat=range(0, 5000))",
        "range",
        "'range(0, 5000)' has 5000 items: too large",
    ),
    "range_step": _case(
        "Genotype(normal_concat=range(2, 6, 1))", "range", "with 3 arguments", "range(start, stop)"
    ),
    "range_empty": _case("Genotype(normal_concat=range())", "range", "with 0 arguments"),
    "range_keyword": _case(
        "Genotype(normal_concat=range(stop=6))", "stop", "a keyword argument 'stop=6'"
    ),
    "range_negative": _case("Genotype(normal_concat=range(-1, 6))", "-1", _INTEGER),
    "range_float": _case("Genotype(normal_concat=range(2.0))", "2.0", _INTEGER, "a float"),
    "range_bool": _case("Genotype(normal_concat=range(True))", "True", _INTEGER, "a bool"),
    "range_name": _case("Genotype(normal_concat=range(n))", "n)", _INTEGER, "a name 'n'"),
    "range_starred": _case("Genotype(normal_concat=range(*x))", "*", _INTEGER, "a starred"),
    # Nesting.
    "nested_five_lists": _case(
        "Genotype(normal=[[[[[0]]]]])", "[", "nested deeper than a genotype", nth=4
    ),
    "nested_five_tuples": _case(
        "Genotype(reduce=(((((),),),),))", "(", "nested deeper than a genotype", nth=5
    ),
    "nested_in_range_free_list": _case(
        "Genotype(normal_concat=[[[[[range(2)]]]]])", "[", "nested deeper", nth=4
    ),
    # Strings: operation names are identifiers, on one line.
    "escaped_newline": _case(
        "Genotype(normal=[('sep\\nconv', 0)])", "'sep", "control character '\\n'"
    ),
    "triple_quoted_newline": _case(
        "Genotype(normal=[('''sep\nconv''', 0)])", "'''", "control character '\\n'"
    ),
    "escaped_tab": _case("Genotype(normal=[('sep\\t', 0)])", "'sep", "control character '\\t'"),
    "escaped_nul": _case("Genotype(normal=[('sep\\x00', 0)])", "'sep", "control character"),
    "escaped_bell_on_line_2": _case(
        "Genotype(\n normal=[('\\a', 0)])", "'\\a'", "(line 2, column 11)", "control character"
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_rejected_input(name):
    text, pos, needles = BAD[name]
    _error(text, "position", *needles, pos=pos)


def test_positional_after_keyword():
    text = "Genotype(normal=[], [2, 3])"
    message = _error(text, "positional argument follows keyword argument")
    assert text.index("[2") <= _position(message) <= len(text)


@pytest.mark.parametrize("action", ["ignore", "default", "error"])
def test_invalid_escape_sequence_is_a_syntax_error(action):
    # CPython only warns about an invalid escape; the reader makes it an error whatever the
    # caller's warning filters, so `\d` is never silently read as a backslash and a 'd'.
    text = "Genotype(normal=[('sep\\dconv', 0)])"
    with warnings.catch_warnings():
        warnings.simplefilter(action)
        message = _error(text, "invalid escape sequence", "Python syntax error")
    assert text.index("'sep") <= _position(message) <= text.index("\\d")


PATHOLOGICAL = {
    "open_brackets": "Genotype(normal=" + "[" * 100_000,
    "open_parens": "X = Genotype(" + "(" * 100_000,
    "balanced_brackets": "Genotype(normal=" + "[" * 150 + "]" * 150 + ")",
    "minus_signs": "Genotype(normal=" + "-" * 100_000 + "1)",
    "nots": "Genotype(normal=" + "not " * 100_000 + "1)",
    "sums": "Genotype(normal=" + "+0" * 300_000 + ")",
    "attributes": "Genotype(normal=a" + ".a" * 100_000 + ")",
    "calls": "Genotype(normal=a" + "()" * 100_000 + ")",
    "lambdas": "Genotype(normal=" + "lambda:" * 100_000 + "0)",
    "long_list": "Genotype(normal=[" + "0, " * 300_000 + "x])",
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_input_fails_cleanly_and_fast(name):
    text = PATHOLOGICAL[name]
    start = time.perf_counter()
    message = _error(text, "position")
    # A parse linear in the input takes 1-2 s here (6 s on a loaded machine); a quadratic one
    # (re-scanning the text per element) would take many minutes.
    assert time.perf_counter() - start < 30
    assert len(message) < 300
    assert text.index("(") < _position(message) <= len(text)
    if "Python's parser" in message:  # RecursionError or MemoryError: no position from CPython
        assert _position(message) == 16  # the first '-', 'not', '+', 'a' or 'lambda'


def test_unclosed_brackets_are_nested_too_deeply():
    text = PATHOLOGICAL["open_brackets"]
    message = _error(text, "nested deeper than a genotype")
    assert text.index("[") < _position(message) < text.index("[") + 300  # CPython stops at 200


def test_long_list_error_points_at_its_end():
    text = PATHOLOGICAL["long_list"]
    _error(text, "a name 'x'", pos=text.index("x"))


@pytest.mark.parametrize("failure", [RecursionError, MemoryError])
def test_parser_failures_without_a_position(monkeypatch, failure):
    def parse(*args, **kwargs):
        raise failure()

    monkeypatch.setattr(literals.ast, "parse", parse)
    text = "DARTS = Genotype(normal=[('a', 0)], reduce=[('b', 1)], reduce_concat=-x)"
    _error(text, "too deeply nested for Python's parser", failure.__name__, pos=text.index("-x"))
    _error("Genotype(normal=[])", "Python's parser", pos=0)  # nothing foreign: the start


def test_not_a_string():
    with pytest.raises(ValueError, match="must be a str, got bytes"):
        read_call(V2.encode(), "Genotype", FIELDS, WHAT)
