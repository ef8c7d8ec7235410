"""The sweep invariant: what a run must hold once it has finished, checked on the files.

A finished run holds exactly one result, or one recorded failure, per planned
config, and nothing else. Precisely, `check` verifies over the files on disk
(every part is read, not only what the deduplicating `store.scan.scan` shows):

1. **One outcome per planned config.** Readers keep one attempt per config
   (`store.parts.kept`: the latest ok one, else the latest failed one). For every
   planned config that attempt exists, and it is either
   - *ok*: all its rows ok, no two with the same ``repeat``, the repeats numbered
     ``0..n-1`` with ``n == repeats`` (``n >= repeats`` when ``min_duration_s`` lets
     a config take more); or
   - *failed* (no ok attempt at all): every row failed, each with a non-empty error.

   Several ok attempts of one config are allowed (a config measured again after
   its actor was thought lost): readers keep exactly one, and that one is checked.
   The scan must return exactly the rows of the kept attempt.
2. **Every part is whole and where it belongs.** Each ``part-<config>-<attempt>.parquet``
   reads with the schema, all its rows carry the run id, config id and attempt its
   name says, one status, and its config is planned.
3. **Nothing half-written or stray.** No ``.tmp-*`` file and no file that is neither
   the manifest nor a part. Parts the driver moved aside as unreadable
   (``*.corrupt``, see `store.runs`) are counted, not problems.
4. **The manifest matches.** It parses and names the run; its planned configs are
   exactly the ids its invocations planned; the last invocation finished (an
   earlier one a killed driver left unfinished was resumed by it); its counts
   equal the counts from the parts.

Everything is read from the manifest and the parts: nothing is planned again here.
Whether the recorded ids are still what the invocations' specs plan is the
planner's question (`orchestrator.plan.replan_problems`, which `tilesweep status
--check` adds). Without a manifest (a `Driver` run directly, as some tests do)
pass `planned`; item 4 is then skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from store.manifest import Manifest, plan_problems
from store.parts import MANIFEST, PART_NAME, QUARANTINED_NAME, TEMP_PREFIX, Outcome, kept, part_problem
from store.runs import RunStore
from store.scan import scan
from tilesweep.errors import ResultsError
from workers.record import STATUS_FAILED, STATUS_OK

# The counts every report has (configs by outcome, then files).
COUNTS = ("planned", "ok", "failed", "missing", "parts", "rows", "quarantined", "temporaries")


@dataclass(frozen=True, slots=True, kw_only=True)
class InvariantReport:
    """What `check` found: `ok` when `problems` is empty; `counts` for messages and tests."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        c = self.counts
        head = "invariant holds" if self.ok else f"invariant violated ({len(self.problems)} problem(s))"
        return (f"{head}: {c.get('planned', 0)} planned, {c.get('ok', 0)} ok, {c.get('failed', 0)} failed, "
                f"{c.get('missing', 0)} missing; {c.get('parts', 0)} part(s), {c.get('quarantined', 0)} quarantined")


@dataclass(slots=True)
class _Part:
    path: Path
    config_id: str
    attempt: int
    status: str | None = None  # None: unreadable or unsound, so not a result
    rows: list[dict[str, Any]] = field(default_factory=list)


def check(results_dir: str | Path, run_id: str, planned: Iterable[Any] | None = None) -> InvariantReport:
    """Check the invariant of run `run_id` under the results root `results_dir`.

    Args:
        planned: the configs the run must hold (objects with ``config_id``, or config ids);
            default: the manifest's.

    Returns:
        An `InvariantReport`; `problems` holds one line per violation.
    """
    run_dir = Path(results_dir) / run_id
    problems: list[str] = []
    counts: dict[str, int] = defaultdict(int, {k: 0 for k in COUNTS})
    if not run_dir.is_dir():
        return InvariantReport(ok=False, problems=[f"no run directory {run_dir}"], counts=dict(counts))
    manifest = _manifest(run_dir, run_id, problems)
    labels: dict[str, str] = {}
    if planned is not None:
        items = list(planned)
        wanted = [getattr(p, "config_id", p) for p in items]
        labels = {p.config_id: p.label() for p in items if hasattr(p, "label")}
    elif manifest is not None:
        wanted = list(manifest.planned)
        labels = {cid: entry.tiling for cid, entry in manifest.planned.items()}
        problems += _recorded_plan(manifest)
    else:
        wanted = []
        problems.append(f"{run_dir}: no readable {MANIFEST} and no planned configs given; cannot tell what was planned")
    planned_ids = set(wanted)
    counts["planned"] = len(planned_ids)

    parts = _parts(run_dir, run_id, problems, counts)
    by_config: dict[str, list[_Part]] = defaultdict(list)
    for part in parts:
        if part.status is not None:
            by_config[part.config_id].append(part)
    for cid in sorted(set(by_config) - planned_ids):
        problems.append(f"config {cid}: {len(by_config[cid])} part(s) but it is not planned in this run")

    measurement = manifest.measurement if manifest is not None else {}
    kept_parts = _kept(by_config)
    for cid in sorted(planned_ids):
        name = f"config {cid}" + (f" ({labels[cid]})" if labels.get(cid) else "")
        part = kept_parts.get(cid)
        if part is None:
            counts["missing"] += 1
            problems.append(f"{name}: no result (neither ok nor failed); run the same `tilesweep run --run-id "
                            f"{run_id}` again to measure it")
            continue
        counts[part.status] += 1
        problems += [f"{name}: {p}" for p in _check_kept(part, measurement)]
    problems += _check_scan(run_dir, kept_parts)
    if manifest is not None:
        problems += _check_counts(manifest, counts)
    return InvariantReport(ok=not problems, problems=problems, counts=dict(counts))


def attempts(run_dir: str | Path) -> dict[str, list[int]]:
    """``{config_id: [attempt, ...]}`` of the part files in a run directory (quarantined ones not included)."""
    out: dict[str, list[int]] = defaultdict(list)
    for path in Path(run_dir).glob("part-*.parquet"):
        m = PART_NAME.match(path.name)
        if m:
            out[m.group("config_id")].append(int(m.group("attempt")))
    return {cid: sorted(a) for cid, a in sorted(out.items())}


def _manifest(run_dir: Path, run_id: str, problems: list[str]) -> Manifest | None:
    try:
        manifest = RunStore(run_dir.parent, run_id).read_manifest()
    except ResultsError as exc:
        problems.append(str(exc))
        return None
    if manifest is None:
        return None
    if manifest.run_id != run_id:
        problems.append(f"{run_dir / MANIFEST}: names run {manifest.run_id!r}, not {run_id!r}")
    last = manifest.last_invocation()
    # A killed driver leaves its invocation unfinished; a later one that finished resumed it.
    if last is not None and last.finished_at is None:
        problems.append(f"{run_dir / MANIFEST}: the last invocation ({last.command}, started "
                        f"{last.started_at}) never finished; run `tilesweep run --run-id {run_id}` again")
    return manifest


def _recorded_plan(manifest: Manifest) -> list[str]:
    """The planned configs are exactly the ids the invocations recorded as planned."""
    recorded = [inv.planned for inv in manifest.invocations]
    if not recorded or any(ids is None for ids in recorded):
        return []  # a manifest of the previous layout: its `planned` is all there is
    return plan_problems(manifest, {cid for ids in recorded for cid in ids or ()})


def _parts(run_dir: Path, run_id: str, problems: list[str], counts: dict[str, int]) -> list[_Part]:
    """Every part in the run directory, read whole; stray, temporary and unreadable files noted."""
    parts = []
    for path in sorted(run_dir.iterdir()):
        name = path.name
        if name == MANIFEST:
            continue
        if name.startswith(TEMP_PREFIX):
            counts["temporaries"] += 1
            problems.append(f"{path}: a temporary file was left behind; the next `tilesweep run --run-id {run_id}` "
                            "removes it")
            continue
        if QUARANTINED_NAME.match(name):
            counts["quarantined"] += 1
            continue
        m = PART_NAME.match(name)
        if m is None or not path.is_file():
            problems.append(f"{path}: not a part or the manifest; move it out of the run directory")
            continue
        counts["parts"] += 1
        part = _Part(path=path, config_id=m.group("config_id"), attempt=int(m.group("attempt")))
        parts.append(part)
        reason = part_problem(path)
        if reason is None:
            try:
                part.rows = pq.read_table(path).to_pylist()
            except (OSError, pa.ArrowException) as exc:
                reason = " ".join(str(exc).split())[:200]
        if reason is not None:
            problems.append(f"{path}: unreadable ({reason}); the next `tilesweep run --run-id {run_id}` moves it "
                            "aside and measures its config again")
            continue
        counts["rows"] += len(part.rows)
        found = _check_part(part, run_id)
        problems += [f"{path}: {p}" for p in found]
        if not found:  # only a sound part counts as a result
            part.status = part.rows[0]["status"]
    return parts


def _check_part(part: _Part, run_id: str) -> list[str]:
    """A part's rows agree with its name and hold one known status."""
    if not part.rows:
        return ["no rows; a part holds at least one"]
    out = []
    for column, want in (("run_id", run_id), ("config_id", part.config_id), ("attempt", part.attempt)):
        found = sorted({str(r.get(column)) for r in part.rows})
        if found != [str(want)]:
            out.append(f"{column} {', '.join(found)} in the rows, {want} in the name")
    statuses = {r.get("status") for r in part.rows}
    if len(statuses) != 1 or not statuses <= {STATUS_OK, STATUS_FAILED}:
        out.append(f"status {sorted(map(str, statuses))}; a part holds only ok or only failed rows")
    return out


def _kept(by_config: dict[str, list[_Part]]) -> dict[str, _Part]:
    """Per config, the part of the attempt readers keep (`store.parts.kept`)."""
    out = {}
    for cid, parts in by_config.items():
        by_attempt = {p.attempt: p for p in parts}
        chosen = kept(Outcome(status=p.status or "", attempt=p.attempt) for p in parts)
        if chosen is not None:
            out[cid] = by_attempt[chosen.attempt]
    return out


def _check_kept(part: _Part, measurement: dict[str, Any]) -> list[str]:
    where = f"attempt {part.attempt}"
    if part.status == STATUS_FAILED:
        empty = sum(1 for r in part.rows if not str(r.get("error") or "").strip())
        return [f"{where} failed with {empty} row(s) lacking an error message"] if empty else []
    out = []
    repeats_col = {r.get("repeats") for r in part.rows}
    repeats = measurement.get("repeats", repeats_col.pop() if len(repeats_col) == 1 else None)
    numbers = sorted(r.get("repeat") for r in part.rows)
    if len(set(numbers)) != len(numbers):
        out.append(f"{where} has duplicate repeat numbers {numbers}")
    elif numbers != list(range(len(numbers))):
        out.append(f"{where} has repeats {numbers}, not 0..{len(numbers) - 1}")
    more_allowed = (measurement.get("min_duration_s") or 0) > 0
    if repeats is not None and (len(numbers) < repeats or (len(numbers) > repeats and not more_allowed)):
        out.append(f"{where} has {len(numbers)} row(s), expected {repeats} repeats")
    return out


def _check_scan(run_dir: Path, kept_parts: dict[str, _Part]) -> list[str]:
    """What readers see (`store.scan.scan`) is exactly the kept attempt of each config."""
    seen = (scan(run_dir).group_by("config_id")
            .agg(pl.col("attempt").unique().alias("attempts"), pl.len().alias("rows")).collect())
    out = []
    got = {row["config_id"]: (sorted(row["attempts"]), row["rows"]) for row in seen.iter_rows(named=True)}
    for cid, part in kept_parts.items():
        want = ([part.attempt], len(part.rows))
        if got.get(cid) != want:
            out.append(f"config {cid}: readers see attempts/rows {got.get(cid)}, the files say {want}")
    for cid in sorted(set(got) - set(kept_parts)):
        out.append(f"config {cid}: readers see rows {got[cid]} with no whole part behind them")
    return out


def _check_counts(manifest: Manifest, counts: dict[str, int]) -> list[str]:
    computed = {k: counts.get(k, 0) for k in ("planned", "ok", "failed", "missing")}
    if manifest.counts is None:
        return [f"{MANIFEST}: no counts (no invocation finished); run the same command again"]
    recorded = manifest.counts.to_json()
    if recorded != computed:
        return [f"{MANIFEST}: counts {recorded} differ from the parts {computed}"]
    return []
