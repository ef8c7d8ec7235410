"""Families of tile grids shared by the grid schemes: one row of k tiles, two rows, one column, or all.

A grid scheme lists its reachable grids (`candidates`, in its own processor's order);
the families are views of that list, so they never name a grid the scheme cannot
reach.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tilesweep.errors import UsageError
from tilings.types import Tiling

GRID_FAMILIES: tuple[str, ...] = ("1xk", "2xk", "kx1", "all")
DEFAULT_GRID_FAMILIES: tuple[str, ...] = ("1xk", "2xk", "kx1")

_MEMBERS: dict[str, Callable[[int], list[Tiling]]] = {
    "1xk": lambda m: [Tiling(1, k) for k in range(1, m + 1)],
    "2xk": lambda m: [Tiling(2, k) for k in range(1, m // 2 + 1)],
    "kx1": lambda m: [Tiling(k, 1) for k in range(1, m + 1)],
}


def grid_family(family: str, candidates: Sequence[Tiling], max_side: int, scheme: str,
                known: Sequence[str] = GRID_FAMILIES) -> list[Tiling]:
    """The grids of `family` that are among `candidates` (``all``: every candidate, in their order).

    Args:
        max_side: the longest row or column worth enumerating (e.g. ``max_crops``).

    Raises:
        UsageError: a family this scheme does not know.
    """
    if family == "all":
        return list(candidates)
    if family not in _MEMBERS or family not in known:
        raise UsageError(f"unknown tiling family {family!r}; known families: {', '.join(known)} ({scheme})")
    reachable = set(candidates)
    return [t for t in _MEMBERS[family](max_side) if t in reachable]
