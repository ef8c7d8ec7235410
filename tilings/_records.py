"""What the scheme classes share besides geometry: reachability from their own check, the JSON
round trip, the grid families, and reading a checkpoint's preprocessor config.

Mixins with no state (``__slots__ = ()``), so every scheme stays a frozen, slotted
dataclass of its processor's numbers; a kernel is still one class and a model family
still a setting of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tilesweep.errors import UsageError
from tilings._config import flat_config
from tilings.grids import DEFAULT_GRID_FAMILIES, GRID_FAMILIES
from tilings.scheme import GRID
from tilings.types import Tiling


class SchemeRecord:
    """`is_reachable` from the class's `check_target`; `to_dict`/`from_dict` with a ``"scheme"`` key."""

    __slots__ = ()
    SCHEME = ""

    def check_target(self, target: Any) -> Tiling:  # pragma: no cover - every scheme defines its own
        raise NotImplementedError

    def is_reachable(self, target: Tiling) -> bool:
        try:
            self.check_target(target)
        except UsageError:
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.SCHEME, **{f.name: _json(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """The scheme whose `to_dict` is `data`.

        Raises:
            UsageError: another scheme's dict, or keys this class does not have.
        """
        fields = dict(data)
        scheme = fields.pop("scheme", cls.SCHEME)
        if scheme != cls.SCHEME:
            raise UsageError(f"scheme {scheme!r} is not {cls.SCHEME!r}; read it with tilings.scheme_from_dict")
        check_field_names(cls, fields)
        return cls(**fields)


class GridFamilies:
    """The grid kind and its families: 1xk, 2xk, kx1, all (the first three by default)."""

    __slots__ = ()

    @property
    def kind(self) -> str:
        return GRID

    @property
    def families(self) -> tuple[str, ...]:
        return GRID_FAMILIES

    @property
    def default_families(self) -> tuple[str, ...]:
        return DEFAULT_GRID_FAMILIES


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


def check_field_names(cls: type, names: Mapping[str, Any], what: str = "key") -> None:
    """Raise `UsageError` naming the keys of `names` that are not fields of `cls`."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise UsageError(f"unknown {cls.__name__} {what}(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def read_preprocessor_config(config: Mapping[str, Any] | str | Path, processor: str, hint: str) -> dict[str, Any]:
    """`tilings._config.flat_config`, refused when it is another image processor's config.

    Raises:
        UsageError: an unreadable file, not an object, or an ``image_processor_type`` that is not `processor`.
    """
    flat = flat_config(config)
    kind = flat.get("image_processor_type")
    if kind is not None and not str(kind).startswith(processor):
        raise UsageError(f"preprocessor config is for {kind!r}, not {processor}; pass {hint}")
    return flat
