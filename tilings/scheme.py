"""What every preprocessor scheme offers: the one vocabulary tilesweep speaks to all of them.

A *scheme* is one image preprocessor's arithmetic, reproduced exactly: which grid
an image becomes, how many images the vision encoder runs on and how many tokens
the image adds to the text, and the inverse (a size that yields a chosen grid).
Each is an instance of a small frozen class whose parameters are the processor's
settings, so a new model family is a setting of an existing kernel, not a new class:

========================  ==============================  =========================
kernel (class)            selection rule                  schemes (presets)
========================  ==============================  =========================
`tilings.Profile`         least up-scaling over canvases  molmo-v1, molmo2
`tilings.PixelBudget`     ``smart_resize`` pixel budget   qwen2-vl, qwen2.5-vl, qwen3-vl
`tilings.ClosestAspect`   closest aspect ratio of a grid  internvl3
`tilings.Pinpoints`       best-fit pinpoint resolutions   llava-onevision
`tilings.TiledCanvas`     least up-scaling, whole tiles   llama4, cohere2-vision
========================  ==============================  =========================

Two kinds. **grid** schemes cut the image into ``rows x cols`` tiles (plus, as the
processor does, a global view or thumbnail); their targets are tile grids.
**budget** schemes resize the whole image to a pixel budget and never crop; their
target is the grid of *merged tokens* (``rows x cols`` tokens, each ``F`` pixels a
side), and the sweep axis is tokens, not crops.

Every scheme, whatever its kind, gives `Geometry` records with the same meaning:
``tiling`` (the grid), ``crops`` (images the encoder runs on, global/thumbnail
included; 1 without crops), ``image_tokens`` (placeholder tokens the model fills
with vision features), ``sequence_tokens`` (every token the image adds to the text,
separators and start/end included) and ``encoder_patches`` (patches the vision
encoder really processes, padding included).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from tilings.types import Geometry, Tiling

GRID = "grid"
BUDGET = "budget"


@runtime_checkable
class Scheme(Protocol):
    """The interface every scheme class implements (see the module docstring).

    Contract (the tests hold every registered scheme to it):

    - ``geometry(h, w)`` reproduces the real transformers processor configured with
      ``processor_kwargs()`` for every positive size (bit for bit: same arithmetic,
      same tie rules); bad sizes raise `UsageError`.
    - ``resolution_for(t)`` returns ``(h, w)`` with ``geometry(h, w).tiling == t`` for
      every target ``is_reachable(t)`` holds for, and raises `UsageError` (naming the
      target, what is reachable and the fix) for any other.
    - ``target_geometry(t) == geometry(*resolution_for(t))``.
    - ``family_tilings(f)`` lists reachable targets only, in a stable order, each once;
      ``points(f)`` the (target, size) pairs measured for it, each size giving its target.
    - ``from_dict(to_dict())`` (`tilings.scheme_from_dict`) gives an equal scheme.

    Processor overrides (optional; `tilings.overrides`): a scheme whose targets need a
    processor setting besides the image size (Idefics3's longest edge) also defines
    ``processor_overrides(t)`` (the setting, on top of ``processor_kwargs()``) and
    ``with_processor_overrides(o)`` (the scheme with it); then the round trip above
    reads ``with_processor_overrides(processor_overrides(t)).geometry(*resolution_for(t))``
    (`tilings.overrides.point_geometry`), and ``geometry`` alone is the processor
    at its own settings.
    """

    name: str

    @property
    def kind(self) -> str:
        """`GRID` or `BUDGET`."""

    @property
    def families(self) -> tuple[str, ...]:
        """Family names `family_tilings` knows, in the order `enumerate_tilings` labels ties."""

    @property
    def default_families(self) -> tuple[str, ...]:
        """The families a sweep takes when none are named."""

    @property
    def max_crops(self) -> int | None:
        """Grid schemes: the most tiles a grid may have (global view not counted); budget: None."""

    def geometry(self, height: int, width: int) -> Geometry:
        """What the processor makes of an image of `height` x `width` pixels."""

    def target_geometry(self, target: Tiling) -> Geometry:
        """The geometry at the target's exact resolution."""

    def resolution_for(self, target: Tiling) -> tuple[int, int]:
        """An image size the processor turns into exactly `target`."""

    def is_reachable(self, target: Tiling) -> bool:
        """Whether some image size gives `target`."""

    def family_tilings(self, family: str) -> list[Tiling]:
        """The targets of one family."""

    def points(self, family: str) -> list[tuple[Tiling, tuple[int, int]]]:
        """The (target, image size) pairs a family measures, in order.

        Usually each target at `resolution_for`; a family may also keep a target and
        vary the size (LLaVA's unpadding: same crops, fewer tokens), so a target can
        appear more than once with different sizes. Every size must give its target.
        """

    def targets(self) -> tuple[Tiling, ...]:
        """Every reachable target of a grid scheme; for a budget scheme, the union of its families."""

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that configure the real transformers image processor to this scheme."""

    def to_dict(self) -> dict[str, Any]:
        """The scheme's numbers as JSON (the run manifest and the config id hash them)."""


def is_scheme(obj: Any) -> bool:
    return isinstance(obj, Scheme)


def constant_compute(scheme: Any) -> str:
    """Why `scheme` is a constant-compute control, or ``""`` for an ordinary scheme.

    A processor that pads every image to one shape (Llama 3.2 Vision pads to its
    maximum tile count) makes the encoder and the LLM do the same work at every
    target: sweeping its targets measures the instrument's stability, not a cost
    curve. Such a scheme class says so with a ``constant_compute`` property (the
    reason, one line); the others need not define it. `tilesweep plan` and the
    report print the reason.
    """
    return str(getattr(scheme, "constant_compute", "") or "")


def scheme_kind_key(data: Mapping[str, Any]) -> str | None:
    """The ``"scheme"`` entry of a `to_dict` (absent for Molmo profiles, whose dict predates schemes)."""
    value = data.get("scheme")
    return value if isinstance(value, str) else None
