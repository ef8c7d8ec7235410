"""The sweep spec: one frozen record of what to measure and where, from YAML and/or flags.

Every field is a `tilesweep.fields.setting`: its type, default, limits, help text,
flag and whether it defines the measurement are declared once, on the field, and
the CLI flags (`add_flags`), the YAML keys, the coercion and the validation all
follow from that declaration. The timing settings are inherited from
`workers.config.Timing`, the same fields `MeasureConfig` has. Adding a setting is
one field here plus its test.

`build_spec(path, overrides)` reads an optional YAML mapping, lays the overrides on
top, coerces each value (``"1x2,2x4"`` → tilings, ``"3,6"`` → crops) and validates
every field. All problems are collected first, so a bad spec file is reported as
one clear line per problem (`SpecError.problems`), not one at a time.

The spec only *describes*: building one touches neither Ray, the network nor a
device. Which of its fields define a measurement (and so its `config_id`) is
`MEASUREMENT_FIELDS`; the others (where results go, how many workers, …) may change
between a run and its resume.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilesweep import fields
from tilesweep.errors import SpecError
from tilesweep.fields import setting
from tilings import FAMILIES, PROFILES
from workers import runtime
from workers.config import ADAPTIVE, Timing

DEFAULT_FAMILIES = ("1xk", "2xk", "kx1")
DTYPES = runtime.DTYPES
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TILING = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
# --help shows the flags in these groups, in this order.
GROUPS = {"model": "the model", "selection": "what to measure", "timing": "how each config is timed",
          "cluster": "where and how it runs"}


def _items(key: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v for v in (p.strip() for p in value.split(",")) if v]
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool) and key in ("crops", "tokens"):
        return [value]
    raise ValueError(f"{key}: must be a list or a comma-separated string, got {value!r}")


def parse_families(key: str, value: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(i).strip() for i in _items(key, value)))


def parse_crops(key: str, value: Any) -> tuple[int, ...]:
    crops = [fields.number(key, i, int) for i in _items(key, value)]
    bad = [c for c in crops if c < 1]
    if bad:
        raise ValueError(f"{key}: crop counts must be >= 1, got {bad[0]}")
    return tuple(sorted(set(crops)))


def parse_tokens(key: str, value: Any) -> tuple[int, ...]:
    tokens = [fields.number(key, i, int) for i in _items(key, value)]
    bad = [t for t in tokens if t < 1]
    if bad:
        raise ValueError(f"{key}: token counts must be >= 1, got {bad[0]}")
    return tuple(sorted(set(tokens)))


def parse_tilings(key: str, value: Any) -> tuple[tuple[int, int], ...]:
    return tuple(dict.fromkeys(_tiling(key, i) for i in _items(key, value)))


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


@dataclass(kw_only=True, frozen=True, slots=True)
class SweepSpec(Timing):
    """Everything a sweep needs. Defaults are the embedded sweep of `tilesweep run`."""

    # --- the model and how it is run ---
    model: str = setting("tiny-molmo2", group="model", measurement=True,
                         help="registered model name, hub id or local path")
    revision: str | None = setting(None, group="model", measurement=True, metavar="REV",
                                   help="hub revision of the model (branch, tag or commit)")
    trust_remote_code: bool = setting(False, group="model", default_text="off unless given",
                                      help="allow a checkpoint's own Python code to run (Molmo v1 needs it)")
    profile: str | None = setting(None, group="model", measurement=True, metavar="NAME",
                                  default_text="the model's own", help="tiling profile")
    dtype: str | None = setting(None, choices=DTYPES, group="model", measurement=True,
                                default_text="the host's for its device", help="model dtype")
    attn_implementation: str | None = setting(None, group="model", measurement=True, metavar="NAME",
                                              flag="--attn-implementation",
                                              default_text="the model's own",
                                              help="attention implementation (sdpa, eager, ...)")
    # --- what to measure ---
    families: tuple[str, ...] = setting((), flag="--family", metavar="LIST", group="selection",
                                        parse=parse_families,
                                        default_text=f"the profile's own: {','.join(DEFAULT_FAMILIES)} for grid "
                                                     "profiles",
                                        help=f"tiling families, comma list of {','.join(FAMILIES)}")
    tilings: tuple[tuple[int, int], ...] = setting((), metavar="LIST", group="selection", parse=parse_tilings,
                                                   help="explicit tilings, e.g. 1x2,2x4 (replaces --family)")
    # Crop counts (global crop included) to cover: the families' tilings giving each
    # count, or every tiling giving it when the families have none (see plan.select).
    crops: tuple[int, ...] = setting((), metavar="LIST", group="selection", parse=parse_crops,
                                     help="crop counts (global crop included), e.g. 3,6,9,12: the families' tilings "
                                          "giving them, or every tiling giving a count the families miss (as "
                                          "`tilesweep plan --crops`)")
    tokens: tuple[int, ...] = setting((), metavar="LIST", group="selection", parse=parse_tokens,
                                      help="image-token counts, e.g. 256,1024: the families' targets giving them, or "
                                           "every target giving a count the families miss (pixel-budget profiles: "
                                           "every token grid of that many tokens)")
    # --- where and how ---
    results: str = setting("results", metavar="DIR", group="cluster",
                           help="results directory, or a URI: s3://BUCKET/PREFIX, or any scheme pyarrow or fsspec knows")
    run_id: str | None = setting(None, metavar="ID", group="cluster", default_text="a new timestamped id",
                                 help="run id; an existing one is resumed")
    workers: int | None = setting(None, minimum=1, metavar="N", group="cluster",
                                  default_text="one per GPU, or 2 CPU actors without GPUs", help="host actors")
    gpus_per_worker: float | None = setting(None, minimum=0, metavar="G", group="cluster",
                                            default_text="1 with GPUs; 0 forces CPU actors",
                                            help="GPUs per actor; below 1 needs --share-gpus")
    share_gpus: bool = setting(False, group="cluster",
                               help="allow --gpus-per-worker below 1: actors then share a GPU and their timings mix")
    address: str | None = setting(None, metavar="ADDRESS", group="cluster", default_text="a local cluster",
                                  help="Ray cluster address (host:port, ray://host:port, auto)")
    max_attempts: int = setting(3, minimum=1, metavar="N", group="cluster",
                                help="dispatches of a config lost to dead/hung actors before it fails")
    config_timeout_s: float = setting(1800.0, minimum=1, flag="--config-timeout", metavar="SECONDS",
                                      group="cluster", help="kill an actor whose config runs longer")
    start_timeout_s: float = setting(900.0, minimum=1, flag="--start-timeout", metavar="SECONDS", group="cluster",
                                     help="replace an actor not started by then (model load included)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tilings as ``"RxC"`` strings) that `build_spec` reads back."""
        out = {f.name: getattr(self, f.name) for f, _ in fields.settings(self)}
        out["families"] = list(self.families)
        out["tilings"] = [f"{r}x{c}" for r, c in self.tilings]
        out["crops"] = list(self.crops)
        out["tokens"] = list(self.tokens)
        return out

    def measurement(self) -> dict[str, Any]:
        """The fields that define what a config measures (a resumed run must keep them).

        The adaptive rule's settings only while it is on (`workers.config.Timing.identity`),
        so the config ids of runs measured before it existed stay the same.
        """
        fixed = {name: getattr(self, name) for name in MEASUREMENT_FIELDS if name not in ADAPTIVE}
        return {**fixed, **self.identity()}

    def tiling_source(self) -> str:
        """How the targets are chosen: ``"explicit"`` (tilings, crops and/or tokens) or ``"families"``."""
        return "explicit" if (self.tilings or self.crops or self.tokens) else "families"


MEASUREMENT_FIELDS = fields.measurement_fields(SweepSpec)
SELECTION = ("families", "tilings", "crops", "tokens")


def build_spec(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
               *, base: SweepSpec | None = None) -> SweepSpec:
    """`base` (default: the embedded spec) ← YAML file at `path` ← `overrides` (None values ignored).

    Keys may be field names or flag names (``family`` for ``families``; dashes read as underscores).

    Raises:
        SpecError: every unknown key, wrong type and out-of-range value, one line each.
    """
    values: dict[str, Any] = {}
    where = "spec"
    if path is not None:
        where = str(path)
        values.update(read_spec_file(path))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    spec, problems = fields.build(SweepSpec, values, base=base or SweepSpec(), where=where)
    if spec is not None:
        problems = [f"{where}: {p}" for p in check(spec)]
    if problems:
        raise SpecError(problems)
    return spec


def check(spec: SweepSpec) -> list[str]:
    """Cross-field and vocabulary checks (one line per problem; empty when valid)."""
    problems = []
    for fam in spec.families:
        if fam not in FAMILIES:
            problems.append(f"families: unknown family {fam!r}; allowed: {', '.join(FAMILIES)}")
    if spec.profile is not None and spec.profile not in PROFILES:
        problems.append(f"profile: unknown profile {spec.profile!r}; allowed: {', '.join(PROFILES)} "
                        "(or leave it out to use the model's own)")
    if spec.run_id is not None and not _RUN_ID.match(spec.run_id):
        problems.append(f"run_id: {spec.run_id!r} must be letters, digits, '.', '_' or '-' "
                        "(no '/', at most 128 characters)")
    if spec.gpus_per_worker is not None and 0 < spec.gpus_per_worker < 1 and not spec.share_gpus:
        problems.append(f"gpus_per_worker: {spec.gpus_per_worker:g} puts several actors on one GPU, where each "
                        "times the others' work too; use 1 (or 0 for CPU actors), or pass --share-gpus to accept "
                        "mixed timings")
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
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--spec`` and one flag per setting, grouped; every default is None ("not given")."""
    parser.add_argument("--spec", metavar="FILE.yaml",
                        help="a YAML sweep spec (keys: the setting or flag names); flags given here override it")
    fields.add_flags(parser, SweepSpec, groups=GROUPS)


def flag_of(name: str) -> str:
    """The flag of the setting `name`, e.g. ``--family`` for ``families``."""
    field = next(f for f, _ in fields.settings(SweepSpec) if f.name == name)
    return fields.flag_of(field) or name


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gave."""
    return fields.given(args, SweepSpec)
