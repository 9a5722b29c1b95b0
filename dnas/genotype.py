"""The discrete architecture a search hands to retraining: the `Genotype` container and its
versioned JSON.

A genotype is its space's data: named fields whose meaning the space defines (a cell space: the
incoming edges of every node of each cell type, `normal` and `reduce`; a chain space: one choice
per block). The space validates and canonicalises the fields when it builds a genotype
(`space.genotype(**fields)`, `dnas.spaces`), so a `Genotype` always fits its space; lists become
tuples, so genotypes compare, hash and key dicts of results.

JSON (`to_json`, `save`; read with `dnas.spaces.from_json` / `load_json`):
`{"schema_version": 2, "space": NAME, FIELD: VALUE, ...}`, one node per line. Version 1 (dnas
before spaces were modules; cell fields only) still loads: the space upgrades it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dnas import workdir as workdir_lib

if TYPE_CHECKING:
    from dnas.spaces.base import Space

SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
RESERVED = ("schema_version", "space")


def show(value: Any, limit: int = 40) -> str:
    """`repr(value)` cut to `limit` characters: error messages stay one short line whatever the
    input (`repr` escapes newlines)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _listed(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_listed(v) for v in value]
    return value


class Genotype:
    """A genotype of `search_space` with its `fields` (already validated by the space).

    Fields read as attributes or items: `g.normal`, `g["normal"]`. Build genotypes through the
    space, `space.genotype(**fields)`, which validates them.
    """

    __slots__ = ("_fields", "_space")

    def __init__(self, search_space: Space, fields: Mapping[str, Any]):
        clash = [k for k in fields if k in RESERVED]
        if clash:
            raise ValueError(f"genotype fields may not be named {clash} (reserved); rename them")
        object.__setattr__(self, "_space", search_space)
        object.__setattr__(self, "_fields", tuple((k, _frozen(v)) for k, v in fields.items()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Genotype is immutable; build a new one with space.genotype()")

    @property
    def space(self) -> str:
        """The search space's registry name."""
        return self._space.name

    @property
    def search_space(self) -> Space:
        return self._space

    def fields(self) -> dict[str, Any]:
        """The space's fields, in the space's order."""
        return dict(self._fields)

    def __getitem__(self, key: str) -> Any:
        for k, v in self._fields:
            if k == key:
                return v
        raise KeyError(
            f"a {self.space} genotype has no field {key!r}; fields: "
            f"{', '.join(k for k, _ in self._fields)}"
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(err.args[0]) from None

    def replace(self, **fields: Any) -> Genotype:
        """A genotype with some fields changed, validated by the space."""
        return self._space.genotype(**(self.fields() | fields))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Genotype):
            return NotImplemented
        return (self.space, self._fields) == (other.space, other._fields)

    def __hash__(self) -> int:
        return hash((self.space, self._fields))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._fields)
        return f"Genotype(space={self.space!r}, {inner})"

    def __copy__(self) -> Genotype:  # immutable: a copy is the genotype itself
        return self

    def __deepcopy__(self, memo: dict) -> Genotype:
        return self

    def __reduce__(self):
        raise TypeError(
            "a Genotype is not pickled (its space holds functions); pass genotype.to_json() and "
            "read it back with dnas.spaces.from_json"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: `schema_version`, `space` and the fields as lists."""
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "space": self.space}
        return data | {k: _listed(v) for k, v in self._fields}

    def to_compact_json(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    def to_string(self) -> str:
        """The space's native text form (e.g. the DARTS genotype string)."""
        return self._space.to_string(self)

    __str__ = to_string

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes `to_json()` to `path` atomically: a crash mid-write leaves the previous file,
        never half a genotype."""
        workdir_lib.atomic_write_text(path, dumps(self.to_json()))


def dumps(data: Mapping[str, Any]) -> str:
    """JSON with one node per line: readable and diffable, unlike one line or `indent=2`."""
    lines = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            nodes = ",\n".join(f"    {json.dumps(node)}" for node in value)
            text = f"[\n{nodes}\n  ]"
        else:
            text = json.dumps(value)
        lines.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def split_json(data: Any) -> tuple[str, int, dict[str, Any]]:
    """(space name, schema version, fields) of genotype JSON; a one-line ValueError for anything
    that is not a supported genotype envelope (the space checks the fields)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"genotype JSON must be an object, got {type(data).__name__}")
    version = data.get("schema_version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"unsupported genotype schema_version {show(version)}; expected one of "
            f"{list(SUPPORTED_VERSIONS)}"
        )
    space = data.get("space")
    if not isinstance(space, str):
        raise ValueError(
            f"invalid genotype JSON: 'space' must name a search space, got {show(space)}"
        )
    fields = {k: v for k, v in data.items() if k not in RESERVED}
    return space, version, fields
