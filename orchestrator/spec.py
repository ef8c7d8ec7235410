"""The sweep spec: one frozen record of what to measure and where, from YAML and/or flags.

`build_spec(path, overrides)` reads an optional YAML mapping, lays the CLI overrides
on top, coerces each value (``"1x2,2x4"`` → tilings, ``"3,6"`` → crops) and
validates every field. All problems are collected first, so a bad spec file is
reported as one clear line per problem (`SpecError.problems`), not one at a time.

The spec only *describes*: building one touches neither Ray, the network nor a
device. Which of its fields define a measurement (and so its `config_id`) is
`MEASUREMENT_FIELDS`; the others (where results go, how many workers, …) may change
between a run and its resume.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError

DEFAULT_FAMILIES = ("1xk", "2xk", "kx1")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TILING = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(kw_only=True, frozen=True, slots=True)
class SweepSpec:
    """Everything a sweep needs. Defaults are the embedded sweep of `tilesweep run`."""

    # --- the model and how it is run ---
    model: str = "tiny-molmo2"
    revision: str | None = None
    trust_remote_code: bool = False
    profile: str | None = None  # None: the model's own tiling profile
    dtype: str | None = None  # None: the host's default for its device
    attn_implementation: str | None = None
    # --- what to measure ---
    families: tuple[str, ...] = DEFAULT_FAMILIES
    tilings: tuple[tuple[int, int], ...] = ()  # explicit tilings (then `families` only filter `crops`)
    # Crop counts (global crop included) to cover: the families' tilings giving each
    # count, or every tiling giving it when the families have none (see plan.select_tilings).
    crops: tuple[int, ...] = ()
    warmup: int = 1
    repeats: int = 3
    min_duration_s: float = 0.0
    decode_tokens: int = 0
    block_spans: bool = False
    seed: int = 0
    # --- where and how ---
    results: str = "results"
    run_id: str | None = None  # None: a new timestamped id
    workers: int | None = None  # None: one per GPU, or 2 CPU actors without GPUs
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else CPU actors
    address: str | None = None  # None: a local Ray cluster (or RAY_ADDRESS when set)
    max_attempts: int = 3
    config_timeout_s: float = 1800.0
    start_timeout_s: float = 900.0  # model load included; a hung start is replaced

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tilings as ``"RxC"`` strings) that `build_spec` reads back."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["families"] = list(self.families)
        out["tilings"] = [f"{r}x{c}" for r, c in self.tilings]
        out["crops"] = list(self.crops)
        return out

    def measurement(self) -> dict[str, Any]:
        """The fields that define what a config measures (a resumed run must keep them)."""
        return {name: getattr(self, name) for name in MEASUREMENT_FIELDS}

    def tiling_source(self) -> str:
        """How the tilings are chosen: ``"explicit"`` (tilings and/or crops) or ``"families"``."""
        return "explicit" if (self.tilings or self.crops) else "families"


MEASUREMENT_FIELDS = (
    "model", "revision", "profile", "dtype", "attn_implementation",
    "warmup", "repeats", "min_duration_s", "decode_tokens", "block_spans", "seed",
)

# name -> (kind, minimum) ; kind in {"str", "bool", "int", "float", "families", "tilings", "crops"}
_FIELDS: dict[str, tuple[str, float | None]] = {
    "model": ("str", None), "revision": ("str?", None), "trust_remote_code": ("bool", None),
    "profile": ("str?", None), "dtype": ("str?", None), "attn_implementation": ("str?", None),
    "families": ("families", None), "tilings": ("tilings", None), "crops": ("crops", None),
    "warmup": ("int", 0), "repeats": ("int", 1), "min_duration_s": ("float", 0),
    "decode_tokens": ("int", 0), "block_spans": ("bool", None), "seed": ("int", 0),
    "results": ("str", None), "run_id": ("str?", None), "workers": ("int?", 1),
    "gpus_per_worker": ("float?", 0), "address": ("str?", None), "max_attempts": ("int", 1),
    "config_timeout_s": ("float", 1), "start_timeout_s": ("float", 1),
}
assert set(_FIELDS) == {f.name for f in dataclasses.fields(SweepSpec)}
_DTYPES = ("float32", "float16", "bfloat16")


class SpecError(UsageError):
    """One or more problems in a spec; `problems` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def build_spec(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
               *, base: SweepSpec | None = None) -> SweepSpec:
    """`base` (default: the embedded spec) ← YAML file at `path` ← `overrides` (None values ignored).

    Raises:
        SpecError: every unknown key, wrong type and out-of-range value, one line each.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    where = "spec"
    if path is not None:
        where = str(path)
        values.update(read_spec_file(path))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    coerced: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _FIELDS:
            problems.append(f"{where}: unknown key {key!r}; allowed keys: {', '.join(_FIELDS)}")
            continue
        try:
            coerced[key] = _coerce(key, value)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    spec = None
    if not problems:
        spec = dataclasses.replace(base or SweepSpec(), **coerced)
        problems.extend(f"{where}: {p}" for p in check(spec))
    if problems:
        raise SpecError(problems)
    assert spec is not None
    return spec


def check(spec: SweepSpec) -> list[str]:
    """Cross-field and vocabulary checks (one line per problem; empty when valid)."""
    from tilings import FAMILIES, PROFILES

    problems = []
    for fam in spec.families:
        if fam not in FAMILIES:
            problems.append(f"families: unknown family {fam!r}; allowed: {', '.join(FAMILIES)}")
    if not spec.families and spec.tiling_source() == "families":
        problems.append("families: empty and no tilings or crops given; name at least one of "
                        f"{', '.join(FAMILIES)}, or pass --tilings/--crops")
    if spec.profile is not None and spec.profile not in PROFILES:
        problems.append(f"profile: unknown profile {spec.profile!r}; allowed: {', '.join(PROFILES)} "
                        "(or leave it out to use the model's own)")
    if spec.dtype is not None and spec.dtype not in _DTYPES:
        problems.append(f"dtype: {spec.dtype!r} is not one of {', '.join(_DTYPES)}")
    if spec.run_id is not None and not _RUN_ID.match(spec.run_id):
        problems.append(f"run_id: {spec.run_id!r} must be letters, digits, '.', '_' or '-' "
                        "(no '/', at most 128 characters)")
    if not spec.results.strip():
        problems.append("results: empty; give a directory, e.g. results")
    return problems


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML spec file (keys with ``-`` read as ``_``), not yet coerced."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec file ({exc.strerror}); check the path"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: not valid YAML: {' '.join(str(exc).split())}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError([f"{path}: the spec must be a YAML mapping of keys to values, "
                         f"got a {type(data).__name__}"])
    # YAML keys may use dashes like the flags do.
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _coerce(key: str, value: Any) -> Any:
    kind, minimum = _FIELDS[key]
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        if optional:
            return None
        raise ValueError(f"{key}: must be set (a {kind})")
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"{key}: must be a string, got {value!r} ({type(value).__name__})")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{key}: must be true or false, got {value!r}")
        return value
    if kind in ("int", "float"):
        number = _number(key, value, kind)
        if minimum is not None and number < minimum:
            raise ValueError(f"{key}: must be >= {minimum:g}, got {number!r}")
        return number
    items = _items(key, value)
    if kind == "families":
        return tuple(dict.fromkeys(str(i).strip() for i in items))
    if kind == "crops":
        crops = [_number(key, i, "int") for i in items]
        bad = [c for c in crops if c < 1]
        if bad:
            raise ValueError(f"{key}: crop counts must be >= 1, got {bad[0]}")
        return tuple(sorted(set(crops)))
    assert kind == "tilings", kind
    return tuple(dict.fromkeys(_tiling(key, i) for i in items))


def _number(key: str, value: Any, kind: str) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"{key}: must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value) if kind == "int" else float(value)
        except ValueError:
            raise ValueError(f"{key}: must be {'an integer' if kind == 'int' else 'a number'}, "
                             f"got {value!r}") from None
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"{key}: must be an integer, got {value!r} ({type(value).__name__})")
        return value
    if not isinstance(value, (int, float)):
        raise ValueError(f"{key}: must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _items(key: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v for v in (p.strip() for p in value.split(",")) if v]
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool) and key == "crops":
        return [value]
    raise ValueError(f"{key}: must be a list or a comma-separated string, got {value!r}")


def _tiling(key: str, item: Any) -> tuple[int, int]:
    if isinstance(item, str):
        m = _TILING.match(item)
        if m:
            rows, cols = int(m.group(1)), int(m.group(2))
            if rows >= 1 and cols >= 1:
                return rows, cols
    elif isinstance(item, (list, tuple)) and len(item) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in item):
        return int(item[0]), int(item[1])
    raise ValueError(f"{key}: {item!r} is not a tiling; write ROWSxCOLS with both >= 1, e.g. 1x2,2x4")
