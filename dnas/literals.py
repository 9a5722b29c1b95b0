"""A safe reader of a Python call of literals, the form DARTS-family papers publish genotypes in:

    DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)

`read_call` parses the text with `ast.parse` (which only builds a syntax tree: nothing is compiled
to code or run) and walks the tree accepting only what the format needs: an optional assignment to
one plain name, a call of one plain function name, and as argument values lists and tuples
(interchangeable, nested at most 4 deep), string constants, non-negative integer constants of at
most 4 digits and `range(a)` / `range(a, b)` with such bounds. Anything else (calls, names,
attributes, operators, lambdas, a second statement, ...) is refused with a one-line `ValueError`
naming the character position, what was found there and what was expected.

What the fields mean (which are required, operation names, node numbers) is left to the caller,
who gets every value back as a `Node` carrying its position for their own error messages.
"""

from __future__ import annotations

import ast
import bisect
import io
import re
import tokenize
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

from dnas.genotype import show

# Sequences nest at most 4 deep below the call, one level more than a genotype needs:
# `normal=[` (1) per-node `(` (2) edge `(` (3) `'op', 0)`.
_MAX_DEPTH = 4
_INT_LIMIT = 10_000  # integers have at most 4 digits: node numbers are small
_MAX_RANGE_ITEMS = 100
_SHOW = 30  # longest snippet of the input quoted in a message
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what Python's tokenizer counts as a new line
_LEADING = re.compile(r"(?:[ \t\f\r\n]|#[^\r\n]*)*")  # blank lines, comments, indentation
_SEMICOLON = re.compile(r"(?:[ \t\f]|\\(?:\r\n|\r|\n))*;")
_VALUE = "a list, a tuple, a quoted operation name, a non-negative integer or range(...)"
_INTEGER = "a non-negative integer"

_KINDS: dict[type, str] = {
    ast.Attribute: "an attribute",
    ast.Await: "an await expression",
    ast.BinOp: "an operator expression",
    ast.BoolOp: "an operator expression",
    ast.Call: "a call",
    ast.Compare: "a comparison",
    ast.Dict: "a dict",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.IfExp: "a conditional expression",
    ast.JoinedStr: "an f-string",
    ast.Lambda: "a lambda",
    ast.List: "a list",
    ast.ListComp: "a comprehension",
    ast.Name: "a name",
    ast.NamedExpr: "an assignment expression",
    ast.Set: "a set",
    ast.SetComp: "a comprehension",
    ast.Slice: "a slice",
    ast.Starred: "a starred expression",
    ast.Subscript: "a subscript",
    ast.Tuple: "a tuple",
    ast.UnaryOp: "an operator expression",
    ast.Yield: "a yield expression",
    ast.YieldFrom: "a yield expression",
    # statements
    ast.AnnAssign: "an annotated assignment",
    ast.Assign: "an assignment",
    ast.AugAssign: "an augmented assignment",
    ast.ClassDef: "a class definition",
    ast.Expr: "an expression",
    ast.FunctionDef: "a function definition",
    ast.AsyncFunctionDef: "a function definition",
    ast.Import: "an import statement",
    ast.ImportFrom: "an import statement",
}
_CONSTANT_KINDS: dict[type, str] = {
    bool: "a bool",
    bytes: "a bytes literal",
    complex: "a complex number",
    float: "a float",
    int: "an integer",
    str: "a string",
}


class Node(NamedTuple):
    """One value of the call, with the character offset where it starts in the text.

    `kind` is 'seq' (a list or a tuple: `value` is a list of Nodes), 'str' (`value` is the decoded
    string), 'int' (`value` is a non-negative int below 10_000) or 'range' (`value` is the expanded
    range as a tuple of ints).
    """

    kind: str
    value: Any
    pos: int


def position_error(text: str, pos: int, message: str, what: str) -> ValueError:
    """Returns `ValueError('invalid {what} at position {pos} (line {line}, column {column}):
    {message}')`, with `pos` a 0-based character offset into `text` (clamped to it) and line and
    column 1-based. Lines break at '\\n', '\\r\\n' and '\\r', as Python counts them."""
    pos = max(0, min(pos, len(text)))
    before = text[:pos]
    line = before.count("\n") + before.count("\r") - before.count("\r\n") + 1
    column = pos - (max(before.rfind("\n"), before.rfind("\r")) + 1) + 1
    return ValueError(f"invalid {what} at position {pos} (line {line}, column {column}): {message}")


def read_call(
    text: str, func: str, fields: Sequence[str], what: str
) -> tuple[dict[str, Node], int]:
    """Parses `[NAME =] func(arg, ..., key=value, ...)` and returns the arguments by field name
    (positional ones in `fields` order, then keywords) and the character position of the closing
    parenthesis.

    Values are lists or tuples of values, string constants, non-negative integer constants (below
    10_000) and `range(a)` / `range(a, b)` with such bounds; whitespace, newlines, `#` comments,
    either quotes, string escapes (not decoding to control characters) and trailing commas are
    fine. Any other input raises one `ValueError` made by `position_error(text, ..., what)`: one
    line naming the position, what was found and what was expected there. Whether the required
    fields are present and what the values mean is for the caller to check.
    """
    if not isinstance(text, str):
        raise ValueError(f"a {what} must be a str, got {type(text).__name__}")
    fields = tuple(fields)
    reader = _Reader(text, func, fields, what)
    return reader.read()


class _Reader:
    """Parses `text` once and converts ast's (line, UTF-8 byte column) positions to offsets."""

    def __init__(self, text: str, func: str, fields: tuple[str, ...], what: str):
        self.text = text
        self.func = func
        self.fields = fields
        self.what = what
        self.literal_call = f"a literal '{func}(...)' call"
        # Leading blank lines, comments and indentation are dropped before parsing (Python refuses
        # an indented first statement; pasted genotypes often are indented). The line breaks stay,
        # so ast's line numbers are the text's; the first code line starts at `self.start`.
        self.start = _LEADING.match(text).end()
        self.line_starts = [0] + [m.end() for m in _LINE_BREAK.finditer(text)]
        self.first_line = bisect.bisect_right(self.line_starts, self.start)  # 1-based
        self.line_starts[self.first_line - 1] = self.start
        self.parsed = "".join(_LINE_BREAK.findall(text, 0, self.start)) + text[self.start :]
        self.byte_starts: dict[int, list[int] | None] = {}  # per line: None if ASCII

    # Positions ------------------------------------------------------------------------------------

    def offset(self, lineno: int, byte_col: int) -> int:
        """The character offset of ast's (1-based line, UTF-8 byte column) in `text`."""
        if lineno > len(self.line_starts):
            return len(self.text)
        start = self.line_starts[lineno - 1]
        if lineno not in self.byte_starts:  # once per line: linear even for one very long line
            end = self.line_starts[lineno] if lineno < len(self.line_starts) else len(self.text)
            line = self.text[start:end]
            starts = None
            if not line.isascii():  # the byte offset at which each character starts
                starts = [0]
                for char in line:
                    code = ord(char)
                    size = 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
                    starts.append(starts[-1] + size)
            self.byte_starts[lineno] = starts
        starts = self.byte_starts[lineno]
        column = byte_col if starts is None else bisect.bisect_left(starts, byte_col)
        return min(start + column, len(self.text))

    def pos(self, node: ast.AST) -> int:
        return self.offset(node.lineno, node.col_offset)

    def end(self, node: ast.AST) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)

    def error(self, pos: int, message: str) -> ValueError:
        return position_error(self.text, pos, message, self.what)

    def describe(self, node: ast.AST) -> str:
        """What `node` is, for a message: a kind and its source, e.g. "a call '__import__(...'"."""
        if isinstance(node, ast.Constant):
            kind = _CONSTANT_KINDS.get(type(node.value), "a constant")
        elif (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub | ast.UAdd)
            and isinstance(node.operand, ast.Constant)
        ):
            kind = "a signed number"
        elif isinstance(node, ast.keyword):
            kind = "an unpacked argument" if node.arg is None else "a keyword argument"
        else:
            kind = _KINDS.get(type(node), f"a {type(node).__name__} node")
        return f"{kind} {show(self.text[self.pos(node) : self.end(node)], _SHOW)}"

    def unexpected(self, node: ast.AST, expected: str) -> ValueError:
        return self.error(self.pos(node), f"expected {expected}, found {self.describe(node)}")

    # The grammar ----------------------------------------------------------------------------------

    def read(self) -> tuple[dict[str, Node], int]:
        call_text = f"'{self.func}('"
        statements = self.parse()
        if not statements:
            raise self.error(len(self.text), f"expected {call_text}, found end of input")
        statement = statements[0]
        if isinstance(statement, ast.Assign):
            target = statement.targets[0]
            if not isinstance(target, ast.Name):
                raise self.unexpected(target, f"a plain name before '=' or {call_text}")
            if len(statement.targets) > 1:
                raise self.unexpected(statement.targets[1], f"{call_text} after '='")
        elif not isinstance(statement, ast.Expr):
            raise self.unexpected(statement, f"{call_text} or 'NAME = {self.func}('")
        call = statement.value
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == self.func
        ):
            raise self.unexpected(call, call_text)
        args = self.arguments(call)
        close = self.end(call) - 1
        after = f"end of input after '{self.func}(...)'"
        semicolon = _SEMICOLON.match(self.text, self.end(statement))
        if semicolon:
            raise self.error(semicolon.end() - 1, f"expected {after}, found ';'")
        if len(statements) > 1:
            raise self.unexpected(statements[1], after)
        return args, close

    def parse(self) -> list[ast.stmt]:
        """`ast.parse`, with each way it can fail turned into a one-line positioned ValueError."""
        nul = self.text.find("\0")
        if nul >= 0:  # Python refuses NUL characters without saying where
            raise self.error(nul, f"found a NUL character; expected {self.literal_call}")
        try:
            self.text.encode("utf-8")
        except UnicodeEncodeError as err:  # lone surrogates
            raise self.error(
                err.start,
                f"found the unencodable character {self.text[err.start]!r}; "
                f"expected {self.literal_call}",
            ) from None
        try:
            with warnings.catch_warnings():
                # Deterministic whatever the caller's filters: e.g. an invalid escape sequence
                # (a DeprecationWarning) becomes a SyntaxError rather than a printed warning.
                warnings.simplefilter("error")
                return ast.parse(self.parsed, mode="exec").body
        except SyntaxError as err:
            # One line, without advice that is not for our users ("use sys.set_int_max_...").
            message = " ".join(str(err.msg).split()).split("; ")[0]
            if len(message) > 120:
                message = message[:117] + "..."
            if err.lineno is None or not err.offset:  # e.g. an integer literal of 5000 digits
                pos = _first_foreign_token(self.text, self.func)
            elif err.lineno > len(self.line_starts):
                pos = len(self.text)
            else:  # SyntaxError.offset counts characters, from 1
                pos = self.line_starts[err.lineno - 1] + max((err.offset or 1) - 1, 0)
            if message == "too many nested parentheses":  # the tokenizer stops at 200 levels
                message = f"nested deeper than a genotype ({message}); expected edge tuples"
            else:
                message = f"{message} (Python syntax error); expected {self.literal_call}"
            raise self.error(pos, message) from None
        except (RecursionError, MemoryError) as err:
            # CPython's parser gives up on deeply nested expressions (`-` * 100_000 + '1', ...)
            # without a position: point at the first token a literal call cannot contain.
            raise self.error(
                _first_foreign_token(self.text, self.func),
                f"too deeply nested for Python's parser ({type(err).__name__}); "
                f"expected {self.literal_call}",
            ) from None

    def arguments(self, call: ast.Call) -> dict[str, Node]:
        fields = self.fields
        args: dict[str, Node] = {}
        for arg in call.args:
            if len(args) == len(fields):
                raise self.error(
                    self.pos(arg),
                    f"too many positional arguments; expected at most {len(fields)} "
                    f"({', '.join(fields)}) then keywords, found {self.describe(arg)}",
                )
            args[fields[len(args)]] = self.value(arg, 1)
        for keyword in call.keywords:
            pos = self.pos(keyword)
            if keyword.arg is None:
                raise self.unexpected(keyword, "a keyword argument")
            if keyword.arg not in fields:
                raise self.error(
                    pos, f"unknown keyword {keyword.arg!r}; expected one of {', '.join(fields)}"
                )
            if keyword.arg in args:
                raise self.error(pos, f"{keyword.arg!r} given twice; expected it once")
            args[keyword.arg] = self.value(keyword.value, 1)
        return args

    def value(self, node: ast.expr, depth: int) -> Node:
        pos = self.pos(node)
        if isinstance(node, ast.List | ast.Tuple):
            if depth > _MAX_DEPTH:  # before recursing: the walk's depth stays bounded
                raise self.error(pos, "nested deeper than a genotype; expected edge tuples")
            return Node("seq", [self.value(item, depth + 1) for item in node.elts], pos)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            bad = next((char for char in node.value if not char.isprintable()), None)
            if bad is not None:
                raise self.error(
                    pos,
                    f"string {show(node.value, _SHOW)} contains the control character {bad!r}; "
                    "expected an operation name on one line",
                )
            return Node("str", node.value, pos)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Node("int", self.integer(node), pos)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "range"
        ):
            return Node("range", self.range(node), pos)
        raise self.unexpected(node, _VALUE)

    def integer(self, node: ast.expr) -> int:
        if not (isinstance(node, ast.Constant) and type(node.value) is int):
            raise self.unexpected(node, _INTEGER)  # bools, floats, negatives (UnaryOp), names...
        if node.value >= _INT_LIMIT:
            shown = show(self.text[self.pos(node) : self.end(node)], _SHOW)
            raise self.error(
                self.pos(node), f"integer {shown} is too large; expected a node number"
            )
        return node.value

    def range(self, node: ast.Call) -> tuple[int, ...]:
        usage = "range(stop) or range(start, stop) with integer bounds"
        if node.keywords:
            raise self.unexpected(node.keywords[0], usage)
        if not 1 <= len(node.args) <= 2:
            raise self.error(
                self.pos(node), f"range(...) with {len(node.args)} arguments; expected {usage}"
            )
        items = range(*(self.integer(arg) for arg in node.args))
        if len(items) > _MAX_RANGE_ITEMS:
            shown = show(self.text[self.pos(node) : self.end(node)], _SHOW)
            raise self.error(
                self.pos(node),
                f"{shown} has {len(items)} items: too large; expected at most "
                f"{_MAX_RANGE_ITEMS} node numbers",
            )
        return tuple(items)


def _first_foreign_token(text: str, func: str) -> int:
    """The offset of the first token that a literal call cannot contain (an operator, a name not
    followed by '=' other than `func` and 'range', a number of more than 4 characters), or 0: a
    position for parser failures that have none. Python's tokenizer is iterative and linear, so
    this is safe on any input."""
    line_starts: list[int] = []
    lines = io.StringIO(text)
    read = 0

    def readline() -> str:
        nonlocal read
        line = lines.readline()
        line_starts.append(read)
        read += len(line)
        return line

    pending = None  # a name, fine if '=' follows (`X = ...`, `key=...`)
    try:
        for token in tokenize.generate_tokens(readline):
            pos = line_starts[token.start[0] - 1] + token.start[1]
            if pending is not None:
                if token.string != "=":
                    return pending
                pending = None
            elif token.type == tokenize.NAME and token.string not in (func, "range"):
                pending = pos
            elif (
                token.type == tokenize.ERRORTOKEN
                or (token.type == tokenize.NUMBER and len(token.string) > 4)
                or (
                    token.type == tokenize.OP and token.string not in ("(", ")", "[", "]", ",", "=")
                )
            ):
                return pos
    except (SyntaxError, tokenize.TokenError):
        pass
    return pending or 0
