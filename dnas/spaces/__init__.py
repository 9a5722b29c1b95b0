"""Search spaces, one module each, and the registry.

`SPACES` maps a config string (`config.space`, a genotype's `space`) to a `Space`; `get(name)`
raises a KeyError that lists the valid names. A new space is one module that builds a `Space`
(see `darts_cnn.py` and `nb201.py`, the chain spaces `proxyless.py` and `fbnet.py` built on
`chain.py`, or the chain space in tests/test_space_recipe.py) plus one line in `SPACES` below,
or a `register(space)` call from your own code.

Genotypes by name, text or file: `KNOWN` (every space's published genotypes), `parse(text)` (JSON
or any space's text format), `load(spec)` (a name, a file or a text), `from_json` / `load_json`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from dnas import genotype as genotype_lib
from dnas.genotype import Genotype, show
from dnas.spaces import darts_cnn, darts_rnn, fbnet, nb201, proxyless, transformer
from dnas.spaces.base import CellTopology, Space, TextFormat

SPACES: dict[str, Space] = {
    darts_cnn.SPACE.name: darts_cnn.SPACE,
    nb201.SPACE.name: nb201.SPACE,
    proxyless.SPACE.name: proxyless.SPACE,
    fbnet.SPACE.name: fbnet.SPACE,
    darts_rnn.SPACE.name: darts_rnn.SPACE,
    transformer.SPACE.name: transformer.SPACE,
}
DEFAULT = darts_cnn.SPACE.name  # the embedded default config's space


def get(name: str) -> Space:
    """Returns the search space called `name`."""
    try:
        return SPACES[name]
    except (KeyError, TypeError):
        raise KeyError(
            f"unknown search space {show(name)}; valid spaces: {', '.join(sorted(SPACES))}"
        ) from None


def register(space: Space) -> Space:
    """Makes `space` known by its name (configs, the command line, genotype files); a name already
    registered to another space is refused."""
    if not isinstance(space, Space):
        raise TypeError(f"register takes a Space, got {type(space).__name__}")
    if SPACES.get(space.name, space) is not space:
        raise ValueError(
            f"a search space named {space.name!r} is already registered; give yours another name"
        )
    taken = {n for s in SPACES.values() if s.name != space.name for n in s.known}
    clash = sorted(set(space.known) & taken)
    if clash:
        raise ValueError(
            f"published genotype names {clash} are already taken by another space; rename them"
        )
    SPACES[space.name] = space
    return space


def known() -> dict[str, Genotype]:
    """Every registered space's published genotypes by name."""
    return {name: g for space in SPACES.values() for name, g in space.known.items()}


KNOWN = known()  # the built-in spaces' published genotypes; `known()` adds registered spaces'


# --------------------------------------------------------------------------------------------------
# Genotypes from JSON, text, names and files.


def from_json(data: Any) -> Genotype:
    """A genotype from its JSON (`Genotype.to_json()`; schema version 1 or 2)."""
    name, version, fields = genotype_lib.split_json(data)
    try:
        space = get(name)
    except KeyError as err:
        raise ValueError(f"invalid genotype JSON: {err.args[0]}") from None
    if space.upgrade is not None:
        fields = space.upgrade(fields, version)
    return space.genotype(**fields)


def _json_text(text: str, where: str = "") -> Genotype:
    prefix = f"{where}: " if where else ""
    try:
        return from_json(json.loads(text))
    except json.JSONDecodeError as err:
        raise ValueError(f"{prefix}invalid genotype JSON: {err}") from None
    except RecursionError:
        raise ValueError(f"{prefix}invalid genotype JSON: nested too deeply") from None
    except ValueError as err:
        if not prefix:
            raise
        raise ValueError(f"{prefix}{err}") from None


def load_json(path: str | os.PathLike[str]) -> Genotype:
    """Reads a genotype JSON file written by `Genotype.save` (any supported schema version)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        return _json_text(f.read(), path)


def formats(space: str | None = None) -> list[tuple[Space, TextFormat]]:
    """(space, format) of every text format, of one space or of all registered spaces."""
    chosen = [get(space)] if space is not None else list(SPACES.values())
    return [(s, f) for s in chosen for f in s.formats]


def parse(text: str, space: str | None = None) -> Genotype:
    """Parses genotype JSON (starts with `{`) or a text format of a space, detected by the
    formats' `detect` (e.g. a NAS-Bench-201 arch string starts with `|`, a DARTS genotype string
    is a `Genotype(...)` call). `space` restricts the formats to that space's; for JSON it must
    match the `space` the JSON names."""
    if not isinstance(text, str):
        raise ValueError(f"a genotype text must be a str, got {type(text).__name__}")
    candidates = formats(space)
    described = ["genotype JSON", *(f.description or f.name for _, f in candidates)]
    if not text.strip():
        raise ValueError(f"empty genotype text; expected {', '.join(described)}")
    if text.lstrip().startswith("{"):
        genotype = _json_text(text)
        if space is not None and genotype.space != space:
            raise ValueError(f"genotype JSON is for space {genotype.space!r}; expected {space!r}")
        return genotype
    for _, fmt in candidates:
        if fmt.detect(text):
            return fmt.parse(text)
    raise ValueError(f"{show(text)} is not a genotype text; expected {', '.join(described)}")


def in_space(space: Space, name: str) -> Genotype | None:
    """A published genotype of `space` named `name`, or named so once the words of the space's
    name are left out of both (`darts_v2` in darts_rnn is `darts_rnn_v2`); None if none is."""
    if name in space.known:
        return space.known[name]
    own = set(space.name.split("_"))
    short = lambda n: [w for w in n.split("_") if w not in own]
    matches = [g for k, g in space.known.items() if short(k) == short(name)]
    return matches[0] if len(matches) == 1 else None


def load(spec: str | os.PathLike[str], space: str | None = None) -> Genotype:
    """Returns the genotype named by `spec`: a published name (`known()`, any case), the path of a
    file holding genotype JSON or a genotype text, or a genotype text itself (see `parse`).
    `space` looks names up in that space first (see `in_space`) and refuses a genotype of
    another space."""
    if space is not None:
        chosen = get(space)
        if isinstance(spec, str):
            found = in_space(chosen, spec.strip().lower())
            if found is not None:
                return found
        genotype = load(spec)
        if genotype.space != chosen.name:
            raise ValueError(
                f"{show(str(spec))} is a {genotype.space} genotype, not a {chosen.name} one; "
                f"published {chosen.name} genotypes: {', '.join(chosen.known) or 'none'}"
            )
        return genotype
    if isinstance(spec, os.PathLike):
        return _load_file(os.fspath(spec))
    if not isinstance(spec, str):
        raise ValueError(f"a genotype spec must be a str or a path, got {type(spec).__name__}")
    names = known()
    name = spec.strip().lower()
    if name in names:
        return names[name]
    if os.path.isfile(spec):
        return _load_file(spec)
    text = spec.lstrip()
    if text.startswith("{") or any(f.detect(spec) for _, f in formats()):
        return parse(spec)
    raise ValueError(
        f"unknown genotype {show(spec)}: not a registered name, an existing file or a genotype "
        f"text; registered names: {', '.join(names)}"
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


__all__ = [
    "DEFAULT",
    "KNOWN",
    "SPACES",
    "CellTopology",
    "Space",
    "TextFormat",
    "from_json",
    "get",
    "in_space",
    "known",
    "load",
    "load_json",
    "parse",
    "register",
]
