"""Discrete architectures: the frozen `Genotype`, its three text formats, published genotypes and
the random baseline.

A genotype is what a search hands to retraining: for every cell type, each intermediate node's
incoming edges as (operation, input node) pairs, plus the nodes concatenated into the cell output.
DARTS keeps the 2 strongest non-zero incoming edges of every node (Liu et al., "DARTS:
Differentiable Architecture Search", ICLR 2019, Sec. 2.4); NAS-Bench-201 keeps every edge with its
strongest operation (Dong & Yang, "NAS-Bench-201", ICLR 2020, Sec. 2.1).

Formats, all read without `eval`:
  * JSON (`to_json` / `from_json`, `save` / `load_json`): ours, versioned by `schema_version`.
  * The DARTS string (`to_darts_string` / `from_darts_string`): the repr of quark0/darts'
    `Genotype` namedtuple, the form that DARTS-family papers publish, e.g.
    `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], ...)`.
  * The NAS-Bench-201 arch string (`to_nb201_string` / `from_nb201_string`), e.g.
    `|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|`:
    `op~input` per edge, `+` between nodes.

`parse(text)` detects the format; `load(spec)` also takes a `KNOWN` name or a file path.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import numbers
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from dnas import spaces
from dnas.spaces import SearchSpace

SCHEMA_VERSION = 1

Edge = tuple[str, int]  # (operation name, input node)
Cell = tuple[tuple[Edge, ...], ...]  # per intermediate node, in node order: its incoming edges

_CELL_FIELDS = ("normal", "reduce")
_DARTS_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
_JSON_KEYS = ("schema_version", "space", *_DARTS_FIELDS)


# --------------------------------------------------------------------------------------------------
# Checks shared by the constructor and the string parsers (which add a character position).


def _show(value: Any, limit: int = 40) -> str:
    """`repr(value)` cut to `limit` characters: error messages stay one short line whatever the
    input (`repr` escapes newlines)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _get_space(name: Any) -> SearchSpace:
    if not isinstance(name, str):
        raise ValueError(
            f"genotype space must be a search space name, got {_show(name)}; "
            f"valid spaces: {', '.join(sorted(spaces.SPACES))}"
        )
    try:
        return spaces.get(name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None


def _node_sizes(space: SearchSpace) -> tuple[int, ...]:
    """Incoming edges of each intermediate node of a discrete cell: `edges_per_node`, or, when the
    space keeps every edge (NAS-Bench-201), one from each earlier node, i.e. the node's number."""
    return tuple(space.edges_per_node or node for node in space.nodes)


def _describe_sizes(space: SearchSpace) -> str:
    nodes = space.nodes
    if space.edges_per_node is not None:
        return f"{space.edges_per_node} per node for nodes {nodes[0]}..{nodes[-1]}"
    return f"one from each earlier node for nodes {nodes[0]}..{nodes[-1]}"


def _op_error(space: SearchSpace, op: str) -> str | None:
    if op in space.primitives:
        return None
    return f"unknown operation {_show(op)}; expected one of {', '.join(space.primitives)}"


def _input_error(node: int, src: int) -> str | None:
    if 0 <= src < node:
        return None
    return f"input {src} is not an earlier node; expected an input in 0..{node - 1}"


def _concat_error(space: SearchSpace, concat: tuple[int, ...]) -> str | None:
    nodes = space.nodes
    if space.edges_per_node is None and concat != space.concat:
        # NAS-Bench-201 cells have no concatenation: the last node is the output.
        return f"is {list(concat)}; expected {list(space.concat)}, the cell's output node"
    if not concat:
        return f"is empty; expected intermediate nodes from {nodes[0]}..{nodes[-1]}"
    for node in concat:
        if node not in nodes:
            return (
                f"contains {node}, not an intermediate node; "
                f"expected nodes in {nodes[0]}..{nodes[-1]}"
            )
    if list(concat) != sorted(set(concat)):
        return f"is {list(concat)}; expected strictly increasing node numbers"
    return None


def _as_int(value: Any, where: str) -> int:
    # numpy integers pass (discretisation produces them); bools do not, although `bool` is an int.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"invalid genotype: {where} must be an integer, got {_show(value)}")
    return int(value)


def _looks_like_edge(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)


def _as_edge(value: Any, where: str) -> Edge:
    if not _looks_like_edge(value):
        raise ValueError(
            f"invalid genotype: {where} must be an (op_name, input_node) pair, got {_show(value)}"
        )
    return (value[0], _as_int(value[1], f"{where}[1]"))


def _as_cell(value: Any, name: str) -> Cell:
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"invalid genotype: {name} must be a sequence of nodes' edge tuples, got {_show(value)}"
        )
    nodes = []
    for i, node in enumerate(value):
        where = f"{name}[{i}]"
        if _looks_like_edge(node):
            # The commonest mistake: passing quark0/darts' flat edge list.
            raise ValueError(
                f"invalid genotype: {where} is the edge {_show(tuple(node))}; expected the tuple "
                f"of one node's incoming edges (for a flat edge list use Genotype.from_flat)"
            )
        if not isinstance(node, (list, tuple)):
            raise ValueError(
                f"invalid genotype: {where} must be a sequence of edges, got {_show(node)}"
            )
        nodes.append(tuple(_as_edge(edge, f"{where}[{k}]") for k, edge in enumerate(node)))
    return tuple(nodes)


def _as_concat(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple, range)):
        raise ValueError(
            f"invalid genotype: {name} must be a sequence of node numbers, got {_show(value)}"
        )
    return tuple(_as_int(node, f"{name}[{i}]") for i, node in enumerate(value))


# --------------------------------------------------------------------------------------------------
# The genotype.


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A discrete cell architecture, validated against its search space on construction.

    Nodes are numbered as in the space (`dnas.spaces`): DARTS has inputs 0 and 1 (c_{k-2}, c_{k-1})
    and intermediate nodes 2..5; NAS-Bench-201 has input 0 and nodes 1..3, node 3 being the output.
    Lists are turned into tuples, so a genotype is hashable and can key a dict of results.

    Attributes:
      space: search space name (`darts_cnn`, `nb201`).
      normal: for each intermediate node, in order, its incoming edges as (op_name, input_node).
        NAS-Bench-201 edges are put in input order, the order of its arch strings.
      normal_concat: the nodes concatenated into the cell output.
      reduce: the same for the reduction cell; `()` in spaces without one.
      reduce_concat: `()` in spaces without a reduction cell.
    """

    space: str
    normal: Cell
    normal_concat: tuple[int, ...]
    reduce: Cell = ()
    reduce_concat: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for cell in _CELL_FIELDS:
            object.__setattr__(self, cell, _as_cell(getattr(self, cell), cell))
            concat = f"{cell}_concat"
            object.__setattr__(self, concat, _as_concat(getattr(self, concat), concat))
        self.validate()
        if self.search_space.edges_per_node is None:
            # One canonical edge order, so equal cells compare and hash equal.
            for cell in _CELL_FIELDS:
                nodes = getattr(self, cell)
                ordered = tuple(tuple(sorted(edges, key=lambda e: e[1])) for edges in nodes)
                object.__setattr__(self, cell, ordered)

    @property
    def search_space(self) -> SearchSpace:
        return _get_space(self.space)

    def validate(self) -> None:
        """Raises a one-line `ValueError` unless every cell fits the space: valid op names, inputs
        from earlier nodes, the space's number of nodes and of edges per node (NAS-Bench-201: one
        from each earlier node), valid concat nodes, and no cell the space lacks."""
        space = _get_space(self.space)
        unsupported = set(space.cell_types) - set(_CELL_FIELDS)
        if unsupported:
            raise ValueError(
                f"space {space.name!r} has cell types {sorted(unsupported)} that a Genotype cannot "
                f"hold; expected cell types among {list(_CELL_FIELDS)}"
            )
        for cell in _CELL_FIELDS:
            edges, concat = getattr(self, cell), getattr(self, f"{cell}_concat")
            if cell in space.cell_types:
                _check_cell(space, cell, edges, concat)
            elif edges or concat:
                raise ValueError(
                    f"invalid genotype: space {space.name!r} has no {cell} cell; "
                    f"expected {cell}=() and {cell}_concat=()"
                )

    def cells(self) -> dict[str, Cell]:
        """The space's cell types mapped to their edges, e.g. {'normal': ..., 'reduce': ...}."""
        return {cell: getattr(self, cell) for cell in self.search_space.cell_types}

    def concat(self, cell: str) -> tuple[int, ...]:
        """The nodes concatenated into the output of `cell` ('normal' or 'reduce')."""
        if cell not in self.search_space.cell_types:
            raise ValueError(
                f"space {self.space!r} has no {cell!r} cell; "
                f"expected one of {', '.join(self.search_space.cell_types)}"
            )
        return getattr(self, f"{cell}_concat")

    def flat(self, cell: str) -> tuple[Edge, ...]:
        """The edges of `cell` as one flat tuple in node order (quark0/darts' layout)."""
        return tuple(edge for node in self.cells()[cell] for edge in node)

    @classmethod
    def from_flat(
        cls,
        space: str,
        normal: Sequence[Edge],
        normal_concat: Sequence[int],
        reduce: Sequence[Edge] = (),
        reduce_concat: Sequence[int] = (),
    ) -> Genotype:
        """Builds a genotype from flat edge lists as quark0/darts stores them: node 2's edges, then
        node 3's, ... (`edges_per_node` each; NAS-Bench-201: 1, 2, 3)."""
        search_space = _get_space(space)
        return cls(
            space=space,
            normal=_group(search_space, normal, "normal"),
            normal_concat=normal_concat,
            reduce=_group(search_space, reduce, "reduce") if reduce else (),
            reduce_concat=reduce_concat,
        )

    @classmethod
    def from_cells(cls, space: SearchSpace, cells: Mapping[str, Sequence]) -> Genotype:
        """A genotype of `space` from its cells (cell type -> nodes' edges), with the space's
        concat nodes."""
        return cls(
            space=space.name,
            normal=cells["normal"],
            normal_concat=space.concat,
            reduce=cells.get("reduce", ()),
            reduce_concat=space.concat if "reduce" in cells else (),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genotype:
        """Same as `from_json`."""
        return from_json(data)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: `schema_version`, `space` and the four cell fields as lists."""
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "space": self.space}
        for cell in _CELL_FIELDS:
            data[cell] = [[[op, src] for op, src in node] for node in getattr(self, cell)]
            data[f"{cell}_concat"] = list(getattr(self, f"{cell}_concat"))
        return data

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes `to_json()` to `path` atomically (temporary file in the same directory, then
        `os.replace`): a crash mid-write leaves the previous file, never half a genotype."""
        path = os.fspath(path)
        directory, name = os.path.split(os.path.abspath(path))
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        # os.open with 0o666 honours the umask; tempfile.mkstemp would leave the file owner-only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_dumps(self.to_json()))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def to_darts_string(self) -> str:
        """The one-line form quark0/darts prints (namedtuple repr), concat written as a list."""
        if self.search_space.cell_types != _CELL_FIELDS:
            raise ValueError(
                f"the DARTS genotype string needs normal and reduce cells; space {self.space!r} "
                f"has {', '.join(self.search_space.cell_types)} (use to_nb201_string)"
            )
        parts = []
        for cell in _CELL_FIELDS:
            edges = ", ".join(f"({op!r}, {src})" for op, src in self.flat(cell))
            parts.append(f"{cell}=[{edges}]")
            parts.append(f"{cell}_concat={list(getattr(self, f'{cell}_concat'))}")
        return f"Genotype({', '.join(parts)})"

    def to_nb201_string(self) -> str:
        """The NAS-Bench-201 arch string, e.g. `|nor_conv_3x3~0|+|none~0|skip_connect~1|+...`, the
        key of the benchmark's `query_index_by_arch`."""
        space = self.search_space
        if space.cell_types != ("normal",) or space.edges_per_node is not None:
            raise ValueError(
                f"the NAS-Bench-201 arch string needs one cell keeping every edge; space "
                f"{self.space!r} is not like that (use to_darts_string)"
            )
        return "+".join("|" + "".join(f"{op}~{src}|" for op, src in node) for node in self.normal)

    def to_string(self) -> str:
        """The space's native string: the NAS-Bench-201 arch string or the DARTS string."""
        if self.search_space.edges_per_node is None:
            return self.to_nb201_string()
        return self.to_darts_string()

    __str__ = to_string


def _check_cell(space: SearchSpace, cell: str, edges: Cell, concat: tuple[int, ...]) -> None:
    nodes = space.nodes
    if len(edges) != space.num_intermediate:
        raise ValueError(
            f"invalid genotype: {cell} has {len(edges)} nodes; expected {space.num_intermediate} "
            f"(intermediate nodes {nodes[0]}..{nodes[-1]} of space {space.name!r})"
        )
    for node, node_edges, size in zip(nodes, edges, _node_sizes(space), strict=True):
        where = f"invalid genotype: {cell} node {node}"
        if len(node_edges) != size:
            raise ValueError(
                f"{where} has {len(node_edges)} incoming edges; expected {size} "
                f"({_describe_sizes(space)})"
            )
        for op, src in node_edges:
            error = _op_error(space, op) or _input_error(node, src)
            if error:
                raise ValueError(f"{where}: {error}")
        inputs = sorted(src for _, src in node_edges)
        if space.edges_per_node is None and inputs != list(range(node)):
            raise ValueError(
                f"{where} has inputs {inputs}; expected each of 0..{node - 1} exactly once"
            )
    error = _concat_error(space, concat)
    if error:
        raise ValueError(f"invalid genotype: {cell}_concat {error}")


def _group(space: SearchSpace, flat: Sequence[Edge], name: str) -> Cell:
    """Splits a flat edge list into nodes of `_node_sizes(space)` edges."""
    if not isinstance(flat, (list, tuple)):
        raise ValueError(f"invalid genotype: {name} must be a list of edges, got {_show(flat)}")
    sizes = _node_sizes(space)
    if len(flat) != sum(sizes):
        raise ValueError(
            f"invalid genotype: {name} has {len(flat)} edges; expected {sum(sizes)} "
            f"({_describe_sizes(space)})"
        )
    starts = list(itertools.accumulate(sizes, initial=0))
    return tuple(tuple(flat[a:b]) for a, b in itertools.pairwise(starts))


# --------------------------------------------------------------------------------------------------
# JSON.


def from_json(data: Mapping[str, Any]) -> Genotype:
    """Reads `Genotype.to_json()` output; rejects other schema versions, missing and extra keys."""
    if not isinstance(data, Mapping):
        raise ValueError(f"genotype JSON must be an object, got {type(data).__name__}")
    # The version first: another version may legitimately have other keys.
    version = data.get("schema_version")
    if "schema_version" in data and (
        isinstance(version, bool) or not isinstance(version, int) or version != SCHEMA_VERSION
    ):
        raise ValueError(
            f"unsupported genotype schema_version {_show(version)}; expected {SCHEMA_VERSION}"
        )
    missing = [key for key in _JSON_KEYS if key not in data]
    extra = sorted(str(key) for key in data if key not in _JSON_KEYS)
    problems = [f"missing keys {missing}"] if missing else []
    problems += [f"unknown keys {extra}"] if extra else []
    if problems:
        raise ValueError(
            f"invalid genotype JSON: {'; '.join(problems)}; expected exactly {list(_JSON_KEYS)}"
        )
    return Genotype(**{key: data[key] for key in _JSON_KEYS[1:]})


def _dumps(data: dict[str, Any]) -> str:
    """JSON with one node per line: readable and diffable, unlike one line or `indent=2`."""
    lines = []
    for key, value in data.items():
        if key in _CELL_FIELDS and value:
            nodes = ",\n".join(f"    {json.dumps(node)}" for node in value)
            text = f"[\n{nodes}\n  ]"
        else:
            text = json.dumps(value)
        lines.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def load_json(path: str | os.PathLike[str]) -> Genotype:
    """Reads a genotype JSON file written by `Genotype.save`."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return from_json(json.loads(text))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid genotype JSON: {err}") from None
    except RecursionError:
        raise ValueError(f"{path}: invalid genotype JSON: nested too deeply") from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


# --------------------------------------------------------------------------------------------------
# The DARTS genotype string: a tokenizer and a recursive-descent parser for the small literal
# language the namedtuple repr (and hand-edited genotypes.py files) use. Never eval: the strings are
# pasted from papers' repositories and logs (see STYLE.md, rule 8).

_TOKEN_RE = re.compile(
    r"""
    (?P<skip>\s+|\#[^\n]*)                  # whitespace, newlines, comments
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<int>[0-9]+)
  | (?P<str>'[^'\\\n]*'|"[^"\\\n]*")        # no escapes: operation names never need them
  | (?P<punct>[()\[\],=])
    """,
    re.VERBOSE,
)
# Genotype( [ node [ edge ( ... ) ] ] ): one level more than a genotype needs, then stop, so a
# hostile "[[[[..." fails cleanly instead of exhausting the recursion limit.
_MAX_DEPTH = 4
_MAX_INT_DIGITS = 4  # node numbers are small; keeps range(0, 10**9) out


class _Token(NamedTuple):
    kind: str  # 'name', 'int', 'str', 'punct' or 'end'
    text: str
    pos: int


class _Value(NamedTuple):
    kind: str  # 'seq', 'str', 'int' or 'range'
    value: Any  # list[_Value], str, int, or tuple[int, ...] for a range
    pos: int


def _position_error(text: str, pos: int, message: str, what: str) -> ValueError:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return ValueError(f"invalid {what} at position {pos} (line {line}, column {column}): {message}")


_DARTS = "DARTS genotype string"


def _tokenize(text: str) -> Iterator[_Token]:
    """Yields tokens lazily, so the parser reports the first error in reading order."""
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            char = text[pos]
            if char in "'\"":
                message = (
                    "unterminated or escaped string; expected a quoted operation name on one line"
                )
            else:
                message = f"unexpected character {char!r}"
            raise _position_error(text, pos, message, _DARTS)
        if match.lastgroup != "skip":
            yield _Token(match.lastgroup, match.group(), pos)
        pos = match.end()
    yield _Token("end", "", len(text))


class _DartsParser:
    """Grammar (`[...]` and `(...)` interchangeable for sequences, trailing commas allowed):

    text   := [NAME '='] 'Genotype' '(' args ')'
    args   := value {',' value} {',' NAME '=' value}    positional in field order, then keywords
    value  := seq | STRING | INT | 'range' '(' INT [',' INT] ')'
    seq    := '[' [value {',' value}] ']'
    """

    def __init__(self, text: str):
        self.text = text
        self.stream = _tokenize(text)
        self.tokens: list[_Token] = []  # read so far
        self.i = 0

    def peek(self, ahead: int = 0) -> _Token:
        while len(self.tokens) <= self.i + ahead:
            token = next(self.stream, None)
            if token is None:  # past the end: the end token repeats
                return self.tokens[-1]
            self.tokens.append(token)
        return self.tokens[self.i + ahead]

    def next(self) -> _Token:
        token = self.peek()
        self.i += 1
        return token

    def error(self, token: _Token, expected: str) -> ValueError:
        found = "end of input" if token.kind == "end" else _show(token.text, 30)
        return _position_error(self.text, token.pos, f"expected {expected}, found {found}", _DARTS)

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token.kind in ("punct", "name") and token.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str, expected: str) -> _Token:
        token = self.peek()
        if not self.accept(text):
            raise self.error(token, expected)
        return token

    def genotype(self) -> tuple[dict[str, _Value], int]:
        """Returns the arguments by field name and the position of the closing parenthesis."""
        if self.peek().kind == "name" and self.peek(1).text == "=":
            self.i += 2  # `DARTS_V2 = Genotype(...)`, as pasted from a genotypes.py file
        self.expect("Genotype", "'Genotype('")
        self.expect("(", "'(' after 'Genotype'")
        args: dict[str, _Value] = {}
        positional = True
        while not self.accept(")"):
            token = self.peek()
            if token.kind == "name" and self.peek(1).text == "=":
                positional = False
                if token.text not in _DARTS_FIELDS:
                    raise _position_error(
                        self.text,
                        token.pos,
                        f"unknown keyword {token.text!r}; expected one of "
                        f"{', '.join(_DARTS_FIELDS)}",
                        _DARTS,
                    )
                if token.text in args:
                    raise _position_error(
                        self.text,
                        token.pos,
                        f"{token.text!r} given twice; expected it once",
                        _DARTS,
                    )
                self.i += 2
                args[token.text] = self.value(1)
            elif not positional:
                raise self.error(token, "a keyword argument after keyword arguments")
            elif len(args) == len(_DARTS_FIELDS):
                raise self.error(token, f"')' after {len(_DARTS_FIELDS)} arguments")
            else:
                args[_DARTS_FIELDS[len(args)]] = self.value(1)
            if self.peek().text != ")":
                self.expect(",", "',' or ')'")
        close = self.tokens[self.i - 1].pos
        if self.peek().kind != "end":
            raise self.error(self.peek(), "end of input after 'Genotype(...)'")
        return args, close

    def value(self, depth: int) -> _Value:
        token = self.next()
        if depth > _MAX_DEPTH:
            raise _position_error(
                self.text, token.pos, "nested deeper than a genotype; expected edge tuples", _DARTS
            )
        if token.kind == "punct" and token.text in "([":
            close = ")" if token.text == "(" else "]"
            items = []
            while not self.accept(close):
                items.append(self.value(depth + 1))
                if self.peek().text != close:
                    self.expect(",", f"',' or {close!r}")
            return _Value("seq", items, token.pos)
        if token.kind == "str":
            return _Value("str", token.text[1:-1], token.pos)
        if token.kind == "int":
            return _Value("int", self.integer(token), token.pos)
        if token.kind == "name" and token.text == "range":
            self.expect("(", "'(' after 'range'")
            bounds = [self.integer(self.next())]
            if self.accept(",") and self.peek().text != ")":
                bounds.append(self.integer(self.next()))
                self.accept(",")
            self.expect(")", "')' closing range(...)")
            return _Value("range", tuple(range(*bounds)), token.pos)
        if depth > 1 and token.kind == "name" and self.peek().text == "=":
            raise _position_error(
                self.text,
                token.pos,
                f"found keyword {token.text!r} inside a list; expected ']' or ')' closing it first",
                _DARTS,
            )
        raise self.error(
            token, "a list, a tuple, a quoted operation name, an integer or range(...)"
        )

    def integer(self, token: _Token) -> int:
        if token.kind != "int":
            raise self.error(token, "a non-negative integer")
        if len(token.text) > _MAX_INT_DIGITS:
            raise _position_error(
                self.text,
                token.pos,
                f"integer {token.text[:10]}... is too large; expected a node number",
                _DARTS,
            )
        return int(token.text)


def from_darts_string(text: str, space: str = "darts_cnn") -> Genotype:
    """Parses a DARTS genotype string as printed by quark0/darts and published by its successors.

    Accepts `normal_concat=range(2, 6)` or a list, tuples or lists, single or double quotes,
    trailing commas, any whitespace and newlines, `#` comments, keywords in any order (after any
    positional arguments in field order), an optional `NAME = ` prefix, and cells given either as
    the flat edge list (2 edges per node, in node order) or as one tuple of edges per node.
    Any other input raises a one-line `ValueError` naming the character position and what was
    expected there.
    """
    if not isinstance(text, str):
        raise ValueError(f"a DARTS genotype string must be a str, got {type(text).__name__}")
    search_space = _get_space(space)
    if search_space.cell_types != _CELL_FIELDS:
        raise ValueError(
            f"the DARTS genotype string describes normal and reduce cells; space {space!r} has "
            f"{', '.join(search_space.cell_types)} (use from_nb201_string)"
        )
    parser = _DartsParser(text)
    args, close = parser.genotype()
    missing = [field for field in _DARTS_FIELDS if field not in args]
    if missing:
        raise _position_error(
            text,
            close,
            f"missing {', '.join(missing)}; expected all of {', '.join(_DARTS_FIELDS)}",
            _DARTS,
        )
    fields = {}
    for cell in _CELL_FIELDS:
        fields[cell] = _cell_from_value(text, search_space, args[cell], cell)
        concat = f"{cell}_concat"
        fields[concat] = _concat_from_value(text, search_space, args[concat], concat)
    return Genotype(space=space, **fields)


def _cell_from_value(text: str, space: SearchSpace, value: _Value, name: str) -> Cell:
    def fail(pos: int, message: str) -> ValueError:
        return _position_error(text, pos, message, _DARTS)

    if value.kind != "seq":
        raise fail(value.pos, f"expected {name} to be a list of ('op_name', input) edges")
    items = value.value
    sizes = _node_sizes(space)
    nested = bool(items) and items[0].kind == "seq" and any(v.kind == "seq" for v in items[0].value)
    if nested:  # one tuple of edges per node (D-X-Y's genotypes.py layout)
        if len(items) != space.num_intermediate:
            raise fail(
                value.pos,
                f"{name} has {len(items)} nodes; expected {space.num_intermediate} "
                f"(nodes {space.nodes[0]}..{space.nodes[-1]})",
            )
        groups = []
        for node, group, size in zip(space.nodes, items, sizes, strict=True):
            if group.kind != "seq" or len(group.value) != size:
                raise fail(
                    group.pos, f"expected node {node} of {name} to be a tuple of {size} edges"
                )
            groups.append(group.value)
    else:  # quark0/darts' flat list: `edges_per_node` edges per node, in node order
        if len(items) != sum(sizes):
            raise fail(
                value.pos,
                f"{name} has {len(items)} edges; expected {sum(sizes)} ({_describe_sizes(space)})",
            )
        starts = list(itertools.accumulate(sizes, initial=0))
        groups = [items[a:b] for a, b in itertools.pairwise(starts)]
    cell = []
    for node, group in zip(space.nodes, groups, strict=True):
        edges = []
        for edge in group:
            parts = edge.value if edge.kind == "seq" else ()
            if len(parts) != 2 or parts[0].kind != "str" or parts[1].kind != "int":
                raise fail(edge.pos, "expected an edge ('op_name', input_node)")
            op, src = parts
            error = _op_error(space, op.value)
            if error:
                raise fail(op.pos, f"{name} node {node}: {error}")
            error = _input_error(node, src.value)
            if error:
                raise fail(src.pos, f"{name} node {node}: {error}")
            edges.append((op.value, src.value))
        cell.append(tuple(edges))
    return tuple(cell)


def _concat_from_value(text: str, space: SearchSpace, value: _Value, name: str) -> tuple[int, ...]:
    if value.kind == "range":
        concat = value.value
    elif value.kind == "seq" and all(item.kind == "int" for item in value.value):
        concat = tuple(item.value for item in value.value)
    else:
        raise _position_error(
            text, value.pos, f"expected {name} to be a list of node numbers or range(...)", _DARTS
        )
    error = _concat_error(space, concat)
    if error:
        raise _position_error(text, value.pos, f"{name} {error}", _DARTS)
    return concat


# --------------------------------------------------------------------------------------------------
# The NAS-Bench-201 arch string.

_NB201 = "NAS-Bench-201 arch string"
_NB201_EDGE_RE = re.compile(r"([A-Za-z0-9_]+)~([0-9]{1,4})\|")


def from_nb201_string(text: str, space: str = "nb201") -> Genotype:
    """Parses a NAS-Bench-201 arch string (Dong & Yang 2020; `CellStructure.str2structure` format):
    nodes separated by `+`, each `|op~input|op~input|`, node j listing one edge from each of
    0..j-1. Surrounding whitespace is ignored; anything else malformed raises a one-line
    `ValueError` with the character position."""
    if not isinstance(text, str):
        raise ValueError(f"a NAS-Bench-201 arch string must be a str, got {type(text).__name__}")
    search_space = _get_space(space)
    if search_space.cell_types != ("normal",) or search_space.edges_per_node is not None:
        raise ValueError(
            f"the NAS-Bench-201 arch string describes one cell keeping every edge; space {space!r} "
            f"is not like that (use from_darts_string)"
        )

    def fail(pos: int, message: str) -> ValueError:
        return _position_error(text, pos, message, _NB201)

    pos = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    nodes: list[tuple[int, list[tuple[str, int, int, int]]]] = []  # (start, [(op, src, pos, pos)])
    while True:
        if pos >= end or text[pos] != "|":
            raise fail(pos, "expected '|' opening a node")
        nodes.append((pos, []))
        pos += 1
        while True:
            match = _NB201_EDGE_RE.match(text, pos, end)
            if match is None:
                raise fail(pos, "expected an edge 'op_name~input|'")
            nodes[-1][1].append((match[1], int(match[2]), match.start(1), match.start(2)))
            pos = match.end()
            if pos == end or text[pos] == "+":
                break
        if pos == end:
            break
        pos += 1  # the '+'
    if len(nodes) != search_space.num_intermediate:
        # Point at the first extra node, or at the end when nodes are missing.
        extra = len(nodes) > search_space.num_intermediate
        raise fail(
            nodes[search_space.num_intermediate][0] if extra else end,
            f"found {len(nodes)} nodes; expected {search_space.num_intermediate} separated by '+'",
        )
    cell = []
    for node, (start, edges) in zip(search_space.nodes, nodes, strict=True):
        seen: set[int] = set()
        for op, src, op_pos, src_pos in edges:
            error = _op_error(search_space, op)
            if error:
                raise fail(op_pos, f"node {node}: {error}")
            error = _input_error(node, src)
            if error:
                raise fail(src_pos, f"node {node}: {error}")
            if src in seen:
                raise fail(src_pos, f"node {node}: input {src} repeated; expected each input once")
            seen.add(src)
        if len(edges) != node:
            raise fail(
                start,
                f"node {node} has {len(edges)} edges; expected {node}, one from each of "
                f"0..{node - 1}",
            )
        cell.append(tuple((op, src) for op, src, _, _ in edges))
    return Genotype(space=space, normal=tuple(cell), normal_concat=search_space.concat)


# --------------------------------------------------------------------------------------------------
# Any format, names, files.


def parse(text: str, space: str | None = None) -> Genotype:
    """Parses genotype JSON (starts with `{`), a NAS-Bench-201 arch string (starts with `|`) or a
    DARTS genotype string (anything else).

    `space` selects the space a string is read in (default: `darts_cnn` for DARTS strings, `nb201`
    for arch strings); for JSON it must match the `space` the JSON names.
    """
    if not isinstance(text, str):
        raise ValueError(f"a genotype text must be a str, got {type(text).__name__}")
    stripped = text.lstrip()
    if not stripped:
        raise ValueError(
            "empty genotype text; expected genotype JSON, a NAS-Bench-201 arch string or a DARTS "
            "genotype string"
        )
    if stripped.startswith("{"):
        try:
            genotype = from_json(json.loads(text))
        except json.JSONDecodeError as err:
            raise ValueError(f"invalid genotype JSON: {err}") from None
        except RecursionError:
            raise ValueError("invalid genotype JSON: nested too deeply") from None
        if space is not None and genotype.space != space:
            raise ValueError(f"genotype JSON is for space {genotype.space!r}; expected {space!r}")
        return genotype
    if stripped.startswith("|"):
        return from_nb201_string(text, space or "nb201")
    return from_darts_string(text, space or "darts_cnn")


def load(spec: str | os.PathLike[str]) -> Genotype:
    """Returns the genotype named by `spec`: a `KNOWN` name (any case), the path of a file holding
    genotype JSON or a genotype string, or a genotype string itself (see `parse`)."""
    if isinstance(spec, os.PathLike):
        return _load_file(os.fspath(spec))
    if not isinstance(spec, str):
        raise ValueError(f"a genotype spec must be a str or a path, got {type(spec).__name__}")
    name = spec.strip().lower()
    if name in KNOWN:
        return KNOWN[name]
    if os.path.isfile(spec):
        return _load_file(spec)
    if spec.lstrip().startswith(("{", "|")) or "(" in spec:
        return parse(spec)
    raise ValueError(
        f"unknown genotype {_show(spec)}: not a registered name, an existing file or a genotype "
        f"string; registered names: {', '.join(KNOWN)}"
    )


def _load_file(path: str) -> Genotype:
    if path.endswith(".json"):
        return load_json(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return parse(text)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


# --------------------------------------------------------------------------------------------------
# The random baseline.


def random_genotype(space: str | SearchSpace, rng: np.random.Generator) -> Genotype:
    """Samples a genotype uniformly: the random-architecture baseline of the DARTS paper (Liu et al.
    2019, Table 1) and of NAS-Bench-201 (Dong & Yang 2020, Sec. 5).

    Spaces that keep `edges_per_node` edges (DARTS): every node draws that many distinct inputs
    uniformly and, for each, an operation uniformly among the non-`none` primitives, since a
    discrete DARTS cell never keeps a zero edge. Spaces that keep every edge (NAS-Bench-201): each
    edge draws an operation uniformly among all primitives, `none` included, as the benchmark's
    15,625 cells do.
    """
    search_space = space if isinstance(space, SearchSpace) else _get_space(space)
    k = search_space.edges_per_node
    ops = (
        search_space.primitives
        if k is None
        else tuple(op for op in search_space.primitives if op != "none")
    )
    cells: dict[str, Cell] = {}
    for cell in search_space.cell_types:
        nodes = []
        for node in search_space.nodes:
            inputs = range(node) if k is None else sorted(rng.choice(node, k, replace=False))
            nodes.append(tuple((ops[rng.integers(len(ops))], int(src)) for src in inputs))
        cells[cell] = tuple(nodes)
    has_reduce = "reduce" in cells
    return Genotype(
        space=search_space.name,
        normal=cells["normal"],
        normal_concat=search_space.concat,
        reduce=cells["reduce"] if has_reduce else (),
        reduce_concat=search_space.concat if has_reduce else (),
    )


# --------------------------------------------------------------------------------------------------
# Published genotypes. Each was read from the repository and file named above it; the flat edge
# lists are in the order of the source (node 2's two edges, node 3's, ...), concat nodes 2..5
# (written `[2, 3, 4, 5]` or `range(2, 6)` there). NASNet and AmoebaNet, also in quark0/darts'
# genotypes.py, are left out: they use sep_conv_7x7 and conv_7x1_1x7 and 5-node cells, outside the
# DARTS space.


def _darts(normal: list[Edge], reduce: list[Edge]) -> Genotype:
    return Genotype.from_flat("darts_cnn", normal, (2, 3, 4, 5), reduce, (2, 3, 4, 5))


# fmt: off  (one line per four edges, as in the sources, is easier to check against them)
KNOWN: dict[str, Genotype] = {
    # DARTS (Liu et al., ICLR 2019), first-order search. quark0/darts cnn/genotypes.py (there
    # `DARTS`, at commit 8876e79); the same `DARTS_V1` line is in yuhuixu1993/PC-DARTS and
    # chenxin061/pdarts genotypes.py, which copy quark0/darts' file.
    "darts_v1": _darts(
        normal=[
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 2),
        ],
        reduce=[
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("avg_pool_3x3", 0),
        ],
    ),
    # DARTS (Liu et al., ICLR 2019), second-order search: the paper's 2.76% CIFAR-10 cell.
    # `DARTS_V2` of quark0/darts cnn/genotypes.py as copied verbatim into yuhuixu1993/PC-DARTS and
    # chenxin061/pdarts genotypes.py; D-X-Y/AutoDL-Projects lib/nas_infer_model/DXYs/genotypes.py
    # holds the same cell grouped per node.
    "darts_v2": _darts(
        normal=[
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("skip_connect", 0),
            ("dil_conv_3x3", 2),
        ],
        reduce=[
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
        ],
    ),
    # PC-DARTS (Xu et al., ICLR 2020), searched on CIFAR-10: yuhuixu1993/PC-DARTS genotypes.py,
    # `PC_DARTS_cifar` (aliased `PCDARTS` there).
    "pcdarts": _darts(
        normal=[
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 0),
            ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 1),
            ("avg_pool_3x3", 0),
            ("dil_conv_3x3", 1),
        ],
        reduce=[
            ("sep_conv_5x5", 1),
            ("max_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
        ],
    ),
    # PC-DARTS searched directly on ImageNet: yuhuixu1993/PC-DARTS genotypes.py, `PC_DARTS_image`.
    "pcdarts_imagenet": _darts(
        normal=[
            ("skip_connect", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 0),
            ("skip_connect", 1),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
            ("dil_conv_5x5", 4),
        ],
        reduce=[
            ("sep_conv_3x3", 0),
            ("skip_connect", 1),
            ("dil_conv_5x5", 2),
            ("max_pool_3x3", 1),
            ("sep_conv_3x3", 2),
            ("sep_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 3),
        ],
    ),
    # P-DARTS (Chen et al., ICCV 2019), CIFAR-10: chenxin061/pdarts genotypes.py, `PDARTS`.
    "pdarts": _darts(
        normal=[
            ("skip_connect", 0),
            ("dil_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 0),
            ("dil_conv_5x5", 4),
        ],
        reduce=[
            ("avg_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_3x3", 0),
            ("dil_conv_5x5", 2),
            ("max_pool_3x3", 0),
            ("dil_conv_3x3", 1),
            ("dil_conv_3x3", 1),
            ("dil_conv_5x5", 3),
        ],
    ),
    # GDAS (Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019):
    # D-X-Y/AutoDL-Projects lib/nas_infer_model/DXYs/genotypes.py, `GDAS_V1` (grouped per node
    # there, flattened here).
    "gdas_v1": _darts(
        normal=[
            ("skip_connect", 0),
            ("skip_connect", 1),
            ("skip_connect", 0),
            ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 3),
            ("skip_connect", 0),
            ("sep_conv_5x5", 4),
            ("sep_conv_3x3", 3),
        ],
        reduce=[
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_5x5", 2),
            ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 2),
            ("sep_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_5x5", 1),
        ],
    ),
    # DrNAS (Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021), CIFAR-10:
    # xiangning-chen/DrNAS DARTS-space/genotypes.py, `DrNAS_cifar10` (the default `--arch` of
    # DARTS-space/train.py; an older top-level genotypes.py has a different `DrNAS_cifar`).
    "drnas": _darts(
        normal=[
            ("sep_conv_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
            ("dil_conv_5x5", 3),
        ],
        reduce=[
            ("max_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 2),
            ("sep_conv_5x5", 1),
            ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 3),
            ("skip_connect", 4),
            ("sep_conv_5x5", 1),
        ],
    ),
    # DrNAS searched on ImageNet: xiangning-chen/DrNAS DARTS-space/genotypes.py, `DrNAS_imagenet`.
    "drnas_imagenet": _darts(
        normal=[
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("dil_conv_3x3", 3),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
        ],
        reduce=[
            ("max_pool_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 2),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 2),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
        ],
    ),
    # NAS-Bench-201's ResNet cell (Dong & Yang 2020, the hand-designed reference in the space):
    # D-X-Y/AutoDL-Projects exps/experimental/visualize-nas-bench-x.py, `resnet`.
    "nb201_resnet": from_nb201_string(
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    ),
    # Arch index 9930: D-X-Y/AutoDL-Projects exps/NATS-Bench/main-sss.py says "this genotype is the
    # architecture with the highest accuracy on CIFAR-100 validation set"; NATS-Bench fixes its
    # size-search-space topology to it.
    "nb201_best_cifar100_valid": from_nb201_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    ),
}
# fmt: on
