"""Processor overrides: settings a target needs on top of a scheme's own processor configuration.

Most schemes reach every target with the processor configured once
(`Scheme.processor_kwargs`), and only the image size changes. Some cannot:
Idefics3's processor resizes every image so that its longest edge is
``size.longest_edge`` before cutting tiles, so the long side always has the same
number of tiles, and another grid needs another ``longest_edge``. Such a scheme
offers two more methods (optional in `tilings.scheme.Scheme`):

- ``processor_overrides(target)``: the processor keyword arguments the target
  needs on top of ``processor_kwargs()`` (e.g. ``{"size": {"longest_edge": 728}}``);
- ``with_processor_overrides(overrides)``: the scheme as the processor configured
  with them, whose ``geometry`` is what the processor then makes of an image.

A planned config carries its target's overrides, the worker passes them to the
processor at call time, and the results and the config id keep them (as
`overrides_text`). For every other scheme they are empty: no column value, and a
config id computed exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tilesweep.errors import UsageError
from tilings.scheme import Scheme
from tilings.types import Geometry, Tiling


def processor_overrides(scheme: Scheme, target: Tiling) -> dict[str, Any]:
    """What the processor needs, on top of ``scheme.processor_kwargs()``, to give `target` ({} for most schemes).

    Raises:
        UsageError: an unreachable target (from the scheme's own check).
    """
    method = getattr(scheme, "processor_overrides", None)
    return dict(method(Tiling(*target))) if method is not None else {}


def configured(scheme: Scheme, overrides: Mapping[str, Any] | None) -> Scheme:
    """`scheme` as its processor configured with `overrides` on top of ``processor_kwargs()`` (none: itself).

    Raises:
        UsageError: overrides for a scheme that takes none, or ones it does not know.
    """
    if not overrides:
        return scheme
    method = getattr(scheme, "with_processor_overrides", None)
    if method is None:
        raise UsageError(
            f"profile {scheme.name!r} takes no processor overrides, got {dict(overrides)!r}; drop them "
            "(only schemes whose targets need a processor setting, such as idefics3's longest edge, take them)"
        )
    return method(overrides)


def point_geometry(scheme: Scheme, target: Tiling, height: int, width: int) -> Geometry:
    """What the processor, configured with `target`'s overrides, makes of a `height` x `width` image.

    For a scheme without overrides this is ``scheme.geometry(height, width)``; the
    planner, the worker and the analysis use it wherever a planned point is meant.
    """
    return configured(scheme, processor_overrides(scheme, target)).geometry(height, width)


def overrides_text(overrides: Mapping[str, Any] | None) -> str | None:
    """Canonical JSON of `overrides` (sorted keys, no spaces), as results store them; None when there are none."""
    if not overrides:
        return None
    return json.dumps(dict(overrides), sort_keys=True, separators=(",", ":"))


def parse_overrides(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The overrides of a results column or a config (JSON text, a mapping, or None/"" for none).

    Raises:
        UsageError: text that is not a JSON object.
    """
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise UsageError(f"processor overrides must be a JSON object, got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(f"processor overrides must be a JSON object, got {text!r}")
    return value
