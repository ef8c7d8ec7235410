"""`tilesweep plan`: the tilings of a sweep with their exact resolutions, crops and tokens.

Pure `tilings` arithmetic: it imports neither torch nor ray, starts nothing and
writes no file, so it answers instantly and is safe to run anywhere.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tilings import (
    FAMILIES,
    PROFILES,
    Profile,
    Tiling,
    crop_range,
    enumerate_tilings,
    get_profile,
    parse_families,
    resolution_for,
    tiling_geometry,
)

HELP = "print the tilings, exact resolutions, crops and tokens of a sweep"
DEFAULT_FAMILIES = "1xk,2xk,kx1"
FORMATS = ("table", "csv", "json")
COLUMNS = ("tiling", "rows", "cols", "family", "height", "width", "crops", "image_tokens", "sequence_tokens")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="molmo2", metavar="NAME|JSON",
                        help=f"tiling profile: {', '.join(PROFILES)}, or a preprocessor_config.json path "
                             "(default molmo2)")
    parser.add_argument("--family", default=DEFAULT_FAMILIES, metavar="LIST",
                        help=f"comma-separated tiling families from {', '.join(FAMILIES)} (default {DEFAULT_FAMILIES})")
    parser.add_argument("--crops", metavar="LIST",
                        help="comma-separated crop counts (global crop included): keep the families' tilings with "
                             "these counts and add every tiling of a count the families miss")
    parser.add_argument("--tokens", type=int, metavar="N", help="keep only the tilings nearest to N image tokens")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")


@dataclasses.dataclass(kw_only=True, frozen=True, slots=True)
class PlanRow:
    """One tiling of the plan with what the preprocessor will make of it."""

    tiling: Tiling
    family: str
    height: int
    width: int
    crops: int
    image_tokens: int
    sequence_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {"tiling": str(self.tiling), "rows": self.tiling.rows, "cols": self.tiling.cols,
                "family": self.family, "height": self.height, "width": self.width, "crops": self.crops,
                "image_tokens": self.image_tokens, "sequence_tokens": self.sequence_tokens}


def resolve_profile(value: str) -> Profile:
    """A preset by name, or a profile read from a preprocessor config JSON file."""
    if value in PROFILES:
        return PROFILES[value]
    if value.endswith(".json") or Path(value).is_file():
        return Profile.from_preprocessor_config(value)
    return get_profile(value)  # raises the ValueError that lists the presets


def parse_crops(text: str, profile: Profile) -> list[int]:
    """Crop counts from ``"3,6,9"``, each checked against the profile's reachable range."""
    reach = crop_range(profile)
    counts: list[int] = []
    for item in text.split(","):
        try:
            n = int(item.strip())
        except ValueError:
            raise ValueError(f"--crops expects comma-separated integers such as 3,6,9, got {item.strip()!r}") from None
        if n not in reach:
            raise ValueError(f"--crops {n} is unreachable with profile {profile.name!r}; crop counts (global crop "
                             f"included) run from {reach.start} to {reach.stop - 1}")
        if n not in counts:
            counts.append(n)
    return counts


def build_plan(profile: Profile, families: list[str], crops: list[int] | None = None,
               tokens: int | None = None) -> list[PlanRow]:
    """The plan's rows, by crop count, then image tokens, then tiling."""
    pairs = enumerate_tilings(profile, families)
    if crops is not None:
        wanted = set(crops)
        pairs = [(t, f) for t, f in pairs if t.crops in wanted]
        missing = wanted - {t.crops for t, _ in pairs}
        # A count the families miss gets every tiling giving it, labelled with the
        # first family holding it, as everywhere else in tilesweep.
        pairs += [(t, f) for t, f in enumerate_tilings(profile, FAMILIES) if t.crops in missing]
    rows = [_row(t, f, profile) for t, f in pairs]
    if tokens is not None:
        if tokens < 1:
            raise ValueError(f"--tokens must be a positive number of image tokens, got {tokens}")
        best = min(abs(r.image_tokens - tokens) for r in rows)
        rows = [r for r in rows if abs(r.image_tokens - tokens) == best]
    return sorted(rows, key=lambda r: (r.crops, r.image_tokens, r.tiling))


def _row(tiling: Tiling, family: str, profile: Profile) -> PlanRow:
    height, width = resolution_for(tiling, profile)
    geo = tiling_geometry(tiling, profile)
    return PlanRow(tiling=tiling, family=family, height=height, width=width, crops=geo.crops,
                   image_tokens=geo.image_tokens, sequence_tokens=geo.sequence_tokens)


def coverage(profile: Profile, families: list[str]) -> tuple[list[int], list[int]]:
    """(crop counts the families reach, counts of 2..max_crops+1 they cannot reach)."""
    reached = {t.crops for t, _ in enumerate_tilings(profile, families)}
    covered = [n for n in crop_range(profile) if n in reached]
    return covered, [n for n in crop_range(profile) if n not in reached]


def _spans(counts: Iterable[int]) -> str:
    """``[2, 3, 4, 7]`` -> ``"2-4,7"``."""
    spans: list[list[int]] = []
    for n in counts:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in spans) or "none"


def coverage_line(profile: Profile, families: list[str]) -> str:
    covered, unreachable = coverage(profile, families)
    return (f"crop counts covered by {','.join(families)} (profile {profile.name}): {_spans(covered)}; "
            f"not reachable with these families: {_spans(unreachable)}")


def format_table(rows: list[PlanRow]) -> str:
    header = ["tiling", "family", "resolution", "crops", "image_tokens", "sequence_tokens"]
    body = [[str(r.tiling), r.family, f"{r.height}x{r.width}", str(r.crops), str(r.image_tokens),
             str(r.sequence_tokens)] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    left = {0, 1}  # text columns left-aligned, numbers right-aligned

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), *(line(b) for b in body)])


def format_csv(rows: list[PlanRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.as_dict() for r in rows)
    return out.getvalue().rstrip("\n")


def format_json(rows: list[PlanRow], profile: Profile, families: list[str]) -> str:
    covered, unreachable = coverage(profile, families)
    doc = {"profile": {**dataclasses.asdict(profile), "overlap_margins": list(profile.overlap_margins),
                       "pooling": list(profile.pooling)},
           "families": families, "coverage": {"covered": covered, "unreachable": unreachable},
           "rows": [r.as_dict() for r in rows]}
    return json.dumps(doc, indent=2)


def main(args: argparse.Namespace) -> int:
    profile = resolve_profile(args.profile)
    families = parse_families(args.family)
    crops = parse_crops(args.crops, profile) if args.crops else None
    rows = build_plan(profile, families, crops, args.tokens)
    try:
        if args.format == "json":
            print(format_json(rows, profile, families))
        elif args.format == "csv":
            print(format_csv(rows))
            # stdout stays pure CSV for pipes; the coverage note goes beside it.
            sys.stderr.write(coverage_line(profile, families) + "\n")
        else:
            print(format_table(rows))
            print()
            print(coverage_line(profile, families))
        sys.stdout.flush()
    except BrokenPipeError:
        # `tilesweep plan | head` closed the pipe early: not an error. Point stdout at
        # /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
