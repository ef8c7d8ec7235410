"""`tilesweep plan`: the tilings of a sweep with their exact resolutions, crops and tokens.

The same selection rule as a sweep (`orchestrator.plan.select`) and pure `tilings`
arithmetic: it imports neither torch nor ray, starts nothing and writes no file,
so it answers at once and is safe to run anywhere.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterable

from orchestrator.plan import PlanRow, rows, select
from orchestrator.spec import DEFAULT_FAMILIES, parse_crops
from tilesweep.errors import UsageError
from tilesweep.text import table
from tilings import BUDGET, FAMILIES, PROFILES, Scheme, crop_counts, enumerate_tilings, parse_families, resolve_profile
from tilings.scheme import constant_compute

FORMATS = ("table", "csv", "json")
COLUMNS = ("tiling", "rows", "cols", "family", "height", "width", "crops", "image_tokens", "sequence_tokens")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="molmo2", metavar="NAME|JSON",
                        help=f"tiling profile: {', '.join(PROFILES)}, or a preprocessor_config.json path "
                             "(default molmo2)")
    parser.add_argument("--family", metavar="LIST",
                        help=f"comma-separated tiling families from {', '.join(FAMILIES)} (default: the profile's "
                             f"own, {','.join(DEFAULT_FAMILIES)} for grid profiles)")
    parser.add_argument("--crops", metavar="LIST",
                        help="comma-separated crop counts (global crop included): keep the families' tilings with "
                             "these counts and add every tiling of a count the families miss, as `run --crops` does")
    parser.add_argument("--image-tokens", type=int, metavar="N",
                        help="keep only the tilings whose image tokens are nearest to N")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")


def build_plan(profile: Scheme, families: list[str], crops: Iterable[int] = (),
               image_tokens: int | None = None) -> list[PlanRow]:
    """The plan's rows, by crop count, then image tokens, then tiling.

    Raises:
        UsageError: an unreachable crop count or a non-positive `image_tokens`.
    """
    planned = rows(select(profile, families, crops=crops), profile)
    if not planned:
        return []
    if image_tokens is not None:
        if image_tokens < 1:
            raise UsageError(f"--image-tokens must be a positive number of image tokens, got {image_tokens}")
        best = min(abs(r.image_tokens - image_tokens) for r in planned)
        planned = [r for r in planned if abs(r.image_tokens - image_tokens) == best]
    return sorted(planned, key=lambda r: (r.crops, r.image_tokens, r.tiling))


def coverage(profile: Scheme, families: list[str]) -> tuple[list[int], list[int]]:
    """(crop counts the families reach, reachable counts they miss)."""
    reached = {profile.target_geometry(t).crops for t, _ in enumerate_tilings(profile, families)}
    every = crop_counts(profile)
    return [n for n in every if n in reached], [n for n in every if n not in reached]


def _spans(counts: Iterable[int]) -> str:
    """``[2, 3, 4, 7]`` -> ``"2-4,7"``."""
    spans: list[list[int]] = []
    for n in counts:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in spans) or "none"


def coverage_line(profile: Scheme, families: list[str]) -> str:
    if profile.kind == BUDGET:
        tokens = sorted(profile.target_geometry(t).image_tokens for t, _ in enumerate_tilings(profile, families))
        return (f"image tokens covered by {','.join(families)} (profile {profile.name}, a pixel budget without crops): "
                f"{tokens[0]} to {tokens[-1]}")
    covered, unreachable = coverage(profile, families)
    return (f"crop counts covered by {','.join(families)} (profile {profile.name}): {_spans(covered)}; "
            f"not reachable with these families: {_spans(unreachable)}")


def control_line(profile: Scheme) -> str:
    """For a constant-compute control (`tilings.scheme.constant_compute`): one line saying so; else ``""``."""
    note = constant_compute(profile)
    return f"constant-compute control: {note}" if note else ""


def format_table(planned: list[PlanRow]) -> str:
    """The rows as a text table; a ``processor`` column (the overrides each row is processed with) where any has some."""
    header = ["tiling", "family", "resolution", "crops", "image_tokens", "sequence_tokens"]
    body = [[r.label(), r.family, f"{r.height}x{r.width}", r.crops, r.image_tokens, r.sequence_tokens]
            for r in planned]
    right = [False, False, True, True, True, True]
    if any(r.processor_overrides for r in planned):
        header.append("processor")
        for row, r in zip(body, planned):
            row.append(r.processor_overrides or "")
        right.append(False)
    return table(header, body, right=right)


def format_csv(planned: list[PlanRow]) -> str:
    out = io.StringIO()
    overrides = ("processor_overrides",) if any(r.processor_overrides for r in planned) else ()
    writer = csv.DictWriter(out, fieldnames=COLUMNS + overrides, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.as_dict() for r in planned)
    return out.getvalue().rstrip("\n")


def format_json(planned: list[PlanRow], profile: Scheme, families: list[str]) -> str:
    covered, unreachable = coverage(profile, families)
    doc = {"profile": profile.to_dict(), "constant_compute": constant_compute(profile) or None,
           "families": families, "coverage": {"covered": covered, "unreachable": unreachable},
           "rows": [r.as_dict() for r in planned]}
    return json.dumps(doc, indent=2)


def main(args: argparse.Namespace) -> int:
    profile = resolve_profile(args.profile)
    families = parse_families(args.family if args.family is not None else profile.default_families, profile)
    try:
        crops = parse_crops("--crops", args.crops) if args.crops else ()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    planned = build_plan(profile, families, crops, args.image_tokens)
    try:
        if args.format == "json":
            print(format_json(planned, profile, families))
        elif args.format == "csv":
            print(format_csv(planned))
            # stdout stays pure CSV for pipes; the coverage note goes beside it.
            sys.stderr.write(coverage_line(profile, families) + "\n")
            if control_line(profile):
                sys.stderr.write(control_line(profile) + "\n")
        else:
            print(format_table(planned))
            print()
            print(coverage_line(profile, families))
            if control_line(profile):
                print(control_line(profile))
        sys.stdout.flush()
    except BrokenPipeError:
        # `tilesweep plan | head` closed the pipe early: not an error. Point stdout at
        # /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
