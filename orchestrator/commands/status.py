"""`tilesweep status`: per crop count (or token count) and per tiling, what a run has done, failed and still misses.

"Planned" is every config any `run` or `fill` of the run planned (kept in its
manifest); a config is done when an attempt is ok, failed when its latest attempt
failed and none is ok, missing when no part exists.

``--check`` adds the invariant (`store.invariant`, and the planner's view of the
manifest, `orchestrator.plan.replan_problems`): exit 1, one line per problem on
stderr, when the run does not hold exactly one result or failure per planned config
in whole files that its manifest matches; exit 2 stays bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import IO, Any

from orchestrator.commands._results import DEFAULT_RESULTS, add_results_argument
from orchestrator.plan import replan_problems
from store.invariant import InvariantReport, check
from store.runs import RunStore, latest_run, list_runs
from tilesweep.errors import ResultsError, UsageError
from tilesweep.text import table
from tilings import BUDGET, scheme_from_dict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_results_argument(parser)
    parser.add_argument("--run-id", metavar="ID", help="run to report (default: the latest under --results)")
    parser.add_argument("--check", action="store_true",
                        help="also check the run's invariant (one result or failure per config, whole files, "
                             "manifest matching the parts); exit 1 and one line per problem when it fails")


def run_status(results: str, run_id: str | None) -> dict[str, Any]:
    """``{"run_id", "axis", "by_axis": {n: counts}, "by_tiling": {label: counts}, "total": counts}``.

    The axis is the crop count, or for a pixel-budget profile (no crops) the image-token count.

    Raises:
        UsageError: no run under `results`, or no such run id.
    """
    if run_id is None:
        run_id = latest_run(results)
        if run_id is None:
            raise UsageError(f"no run under {results!r}; start one with `tilesweep run` or pass --results DIR")
    store = RunStore(results, run_id)
    manifest = store.read_manifest()
    if manifest is None:
        known = ", ".join(r for _, r in list_runs(results)) or "none"
        raise ResultsError(f"no run {run_id!r} under {results!r}; runs there: {known}; pass one of them to "
                         "--run-id, or leave it out for the latest")
    outcomes = store.outcomes()
    # A pixel-budget scheme has one image per config: its axis is tokens, not crops.
    axis = "image_tokens" if _kind(manifest.profile) == BUDGET else "crops"
    by_axis: dict[int, dict[str, int]] = defaultdict(_zero)
    by_tiling: dict[str, dict[str, Any]] = {}
    total = _zero()
    sizes = defaultdict(set)
    for entry in manifest.planned.values():
        sizes[entry.tiling].add((entry.height, entry.width))
    for cid, entry in manifest.planned.items():
        outcome = outcomes.get(cid)
        state = "missing" if outcome is None else ("done" if outcome.status == "ok" else "failed")
        for counts in (by_axis[getattr(entry, axis)], total):
            counts["planned"] += 1
            counts[state] += 1
        # A target measured at several sizes (LLaVA's unpad family) gets a row per size.
        key = entry.tiling if len(sizes[entry.tiling]) == 1 else f"{entry.tiling}@{entry.height}x{entry.width}"
        row = by_tiling.setdefault(key, {"crops": entry.crops, "family": entry.family,
                                         "image_tokens": entry.image_tokens, **_zero()})
        row["planned"] += 1
        row[state] += 1
    return {"run_id": run_id, "model": manifest.spec.get("model"),
            "profile": manifest.profile_name, "axis": axis, "by_axis": dict(sorted(by_axis.items())),
            "by_tiling": dict(sorted(by_tiling.items(), key=lambda kv: (kv[1][axis], kv[0]))), "total": total}


def _kind(profile: dict[str, Any]) -> str | None:
    try:
        return scheme_from_dict(profile).kind if profile else None
    except UsageError:
        return None


def _zero() -> dict[str, int]:
    return {"planned": 0, "done": 0, "failed": 0, "missing": 0}


def format_status(status: dict[str, Any]) -> str:
    t = status["total"]
    lines = [f"run {status['run_id']} ({status['model']}, profile {status['profile']}): "
             f"{t['done']}/{t['planned']} done, {t['failed']} failed, {t['missing']} missing", ""]
    axis = "crops" if status["axis"] == "crops" else "img_tok"
    lines.append(table([axis, "planned", "done", "failed", "missing"],
                       [[n, c["planned"], c["done"], c["failed"], c["missing"]] for n, c in status["by_axis"].items()]))
    lines.append("")
    lines.append(table(["tiling", "family", "crops", "img_tok", "done", "failed", "missing"],
                       [[k, r["family"], r["crops"], r["image_tokens"], r["done"], r["failed"], r["missing"]]
                        for k, r in status["by_tiling"].items()]))
    return "\n".join(lines)


def full_check(results: str, run_id: str) -> InvariantReport:
    """The store's invariant plus the planner's view of the manifest (no problem reported twice)."""
    report = check(results, run_id)
    manifest = RunStore(results, run_id).read_manifest()
    extra = [p for p in replan_problems(manifest) if p not in report.problems] if manifest is not None else []
    if not extra:
        return report
    return InvariantReport(ok=False, problems=[*report.problems, *extra], counts=report.counts)


def main(args: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    stdout = stdout or sys.stdout
    results = args.results or DEFAULT_RESULTS
    status = run_status(results, args.run_id)
    stdout.write(format_status(status) + "\n")
    if not getattr(args, "check", False):
        return 0
    report = full_check(results, status["run_id"])
    stdout.write("\n" + report.summary() + "\n")
    stdout.flush()
    for problem in report.problems:
        sys.stderr.write(f"tilesweep status: {problem}\n")
    return 0 if report.ok else 1
