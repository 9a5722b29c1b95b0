"""The shape of the code base: no import cycle inside dnas (imports inside functions included),
and no code outside dnas/spaces/ that names a search space (the spaces are plugins: the shared
machinery reaches them only through the registry)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from dnas import hardware, spaces, strategies

PACKAGE = Path(__file__).resolve().parents[1] / "dnas"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (they never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped |= {id(n) for n in ast.walk(node)}
    return skipped


def import_graph() -> dict[str, set[str]]:
    """dnas module -> the dnas modules it imports anywhere in its code (module level or inside
    functions), except under `if TYPE_CHECKING:`."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_blocks(tree)
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("dnas")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dnas"):
                for alias in node.names:  # `from dnas import x`: the submodule x if it is one
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if _is_module(sub) else node.module)
        # Importing a.b.c runs the packages a and a.b first (their __init__), so an import of a
        # submodule is also an import of every package above it.
        edges |= {".".join(e.split(".")[:i]) for e in edges for i in range(2, e.count(".") + 1)}
        name = _module_name(path)
        graph[name] = {e for e in edges if e != name and not name.startswith(e + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "dnas.search" in graph and "dnas.spaces.darts_cnn" in graph["dnas.spaces"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_every_module_imports_first():
    """Each module imported first, in a fresh set of dnas modules (a cycle that the import
    order of the test session would hide fails here)."""
    script = (
        "import importlib, sys\n"
        f"for name in {sorted(import_graph())!r}:\n"
        "    for m in [m for m in sys.modules if m == 'dnas' or m.startswith('dnas.')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        value = first.value if isinstance(first, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            out.add(id(value))
    return out


def space_mentions(source: str, names: set[str], exact_ok: set[str] = frozenset()) -> list[str]:
    """Where code (not docstrings or comments) names a space: identifiers and attributes
    (`darts_cnn.SPACE`, `import nb201`) and string constants holding the name as a word; a
    string, identifier or attribute that is exactly a name of `exact_ok` is not counted (a
    method's registry key that is also a space's name)."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    word = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b")
    found = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        if text in exact_ok:
            continue
        if isinstance(node, ast.alias):
            text = node.name
        elif isinstance(node, ast.ImportFrom):
            text = node.module
        if text and word.search(text):
            found.append(f"line {node.lineno}: {text[:60]!r}")
    return found


def test_no_code_outside_the_spaces_names_a_space():
    names = set(spaces.SPACES)
    assert {"darts_cnn", "nb201"} <= names
    # A method named after its paper like a space (FBNet's strategy and loss, `fbnet`) is the
    # method's registry key and function, not a reference to the space: those exact words are
    # left to the method's registry; imports of a space module and any longer name still count.
    methods = set(strategies.STRATEGIES) | set(hardware.OBJECTIVES)
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "spaces":
            continue
        found = space_mentions(path.read_text(), names, exact_ok=names & methods)
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert not offenders, offenders


def test_the_name_finder_finds_names():
    names = {"darts_cnn", "nb201"}
    code = '"""nb201 in a docstring."""\nfrom dnas.spaces import darts_cnn\nx = "nb201"  # nb201\n'
    assert [m.split(":")[0] for m in space_mentions(code, names)] == ["line 2", "line 3"]
    assert space_mentions('y = "nb2010"\nz = "darts"\n', names) == []
    # A method's key that is a space's name too: the exact word is the method's; a longer name
    # and an import of the space module still count.
    code = 'S = {"nb201": nb201}\nx = "the nb201 cell"\nfrom dnas.spaces import nb201\n'
    found = space_mentions(code, names, exact_ok={"nb201"})
    assert [m.split(":")[0] for m in found] == ["line 2", "line 3"]
