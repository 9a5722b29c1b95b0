"""Search spaces: primitives, cell topology, alpha shapes and discretisation rule.

`SPACES` maps a config string to a `SearchSpace`; `get(name)` raises a `KeyError` that lists the
valid names.
"""

from dnas.spaces.base import SearchSpace
from dnas.spaces.darts_cnn import DARTS_CNN
from dnas.spaces.nb201 import NB201

SPACES: dict[str, SearchSpace] = {space.name: space for space in (DARTS_CNN, NB201)}


def get(name: str) -> SearchSpace:
    """Returns the search space called `name`."""
    try:
        return SPACES[name]
    except KeyError:
        raise KeyError(
            f"unknown search space {name!r}; valid spaces: {', '.join(sorted(SPACES))}"
        ) from None


__all__ = ["SPACES", "SearchSpace", "get"]
