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
   the manifest, a part nor the compacted file. Parts the driver moved aside as
   unreadable (``*.corrupt``, see `store.runs`) are counted, not problems; so is
   the run lock (``driver.lock``, `store.lock`), there while a driver writes the run
   or left by one that was killed, for the next driver to take over.

A compacted run (`store.compact`) holds its kept attempts in ``compacted.parquet``:
it is read whole like a part, its rows carry the run id, each of its config
attempts has one status, it holds one attempt per config and none above the
highest attempt its footer records. Parts that file supersedes (a compaction
stopped before deleting them) are counted, not read and not problems: readers
leave them out. Parts beside it (written after it) are checked as parts.

All files are read in one polars scan; only when that fails is each file read on
its own, to name the damaged ones.
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
from typing import Any

import polars as pl

from store import fs
from store.fs import Location
from store.manifest import Manifest, plan_problems
from store.parts import (
    COMPACTED,
    LOCK,
    MANIFEST,
    PART_NAME,
    QUARANTINED_COMPACTED,
    QUARANTINED_NAME,
    TEMP_PREFIX,
    Outcome,
    kept,
    part_problem,
    run_listing,
)
from store.runs import RunStore
from store.scan import POLARS_SCHEMA, scan
from tilesweep.errors import ResultsError
from workers.record import STATUS_FAILED, STATUS_OK

# The counts every report has (configs by outcome, then files).
COUNTS = ("planned", "ok", "failed", "missing", "parts", "rows", "quarantined", "temporaries", "compacted",
          "superseded")


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
                f"{c.get('missing', 0)} missing; {c.get('parts', 0)} part(s)"
                + (f" and a compacted file ({c.get('superseded', 0)} superseded part(s) left)" if c.get("compacted")
                   else "") + f", {c.get('quarantined', 0)} quarantined")


@dataclass(slots=True)
class _Part:
    """One config attempt in one file (a part, or one config of the compacted file), as read."""

    path: Location
    config_id: str
    attempt: int
    status: str | None = None  # None: unreadable or unsound, so not a result
    rows: int = 0
    numbers: list[int] = field(default_factory=list)  # the repeat numbers, sorted
    repeats: list[Any] = field(default_factory=list)  # the distinct values of the ``repeats`` column
    empty_errors: int = 0  # rows without an error message


def check(results_dir: str | Location, run_id: str, planned: Iterable[Any] | None = None) -> InvariantReport:
    """Check the invariant of run `run_id` under the results root `results_dir` (a local path or a URI).

    Args:
        planned: the configs the run must hold (objects with ``config_id``, or config ids);
            default: the manifest's.

    Returns:
        An `InvariantReport`; `problems` holds one line per violation.
    """
    run_dir = fs.location(results_dir) / run_id
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


def attempts(run_dir: str | Location) -> dict[str, list[int]]:
    """``{config_id: [attempt, ...]}`` of the part files in a run directory (quarantined ones not included)."""
    out: dict[str, list[int]] = defaultdict(list)
    for path in fs.location(run_dir).glob("part-*.parquet"):
        m = PART_NAME.match(path.name)
        if m:
            out[m.group("config_id")].append(int(m.group("attempt")))
    return {cid: sorted(a) for cid, a in sorted(out.items())}


def _manifest(run_dir: Location, run_id: str, problems: list[str]) -> Manifest | None:
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


def _parts(run_dir: Location, run_id: str, problems: list[str], counts: dict[str, int]) -> list[_Part]:
    """Every part and the compacted file, read whole; stray, temporary, superseded and unreadable files noted."""
    listing = run_listing(run_dir)
    superseded = {p.name for p in listing.superseded}
    files: list[Location] = []
    for entry in fs.entries(run_dir):
        path, name = entry.path, entry.name
        if name == MANIFEST or name.startswith(LOCK):
            continue
        if name.startswith(TEMP_PREFIX):
            counts["temporaries"] += 1
            problems.append(f"{path}: a temporary file was left behind; the next `tilesweep run --run-id {run_id}` "
                            "removes it")
            continue
        if QUARANTINED_NAME.match(name) or QUARANTINED_COMPACTED.match(name):
            counts["quarantined"] += 1
            continue
        if name in superseded:
            counts["superseded"] += 1
            continue
        if not (PART_NAME.match(name) or name == COMPACTED) or not entry.is_file:
            problems.append(f"{path}: not a part or the manifest; move it out of the run directory")
            continue
        counts["compacted" if name == COMPACTED else "parts"] += 1
        files.append(path)
    frame, unreadable = _read(files, run_id, problems)
    counts["rows"] += frame.height
    per_file = {row["file"]: row for row in frame.filter(pl.col("file") != str(run_dir / COMPACTED))
                .group_by("file").agg(*_AGGS, *(pl.col(c).unique().alias(f"{c}s") for c in _NAMED)).iter_rows(named=True)}
    out: list[_Part] = []
    for path in files:
        if path in unreadable:
            continue
        if path.name == COMPACTED:
            out += _compacted(path, frame.filter(pl.col("file") == str(path)), run_id, listing.attempts, problems)
            continue
        m = PART_NAME.match(path.name)
        assert m is not None, path
        row = per_file.get(str(path))
        part = _unit(path, m.group("config_id"), int(m.group("attempt")), row)
        found = _check_part(row, part, run_id)
        problems += [f"{path}: {p}" for p in found]
        if not found:  # only a sound part counts as a result
            part.status = row["statuses"][0]
        out.append(part)
    return out


# What is checked of a config attempt, aggregated in polars (one row per part, or per attempt of the compacted file).
_AGGS = (
    pl.len().alias("rows"),
    pl.col("status").unique().alias("statuses"),
    pl.col("repeat").sort().alias("numbers"),
    pl.col("repeats").unique().alias("repeats"),
    (pl.col("error").fill_null("").str.strip_chars() == "").sum().alias("empty_errors"),
)
# Columns whose values a part's name states.
_NAMED = ("run_id", "config_id", "attempt")
_READ_OPTIONS: dict[str, Any] = dict(
    hive_partitioning=False, missing_columns="insert", extra_columns="ignore", schema=POLARS_SCHEMA,
    cast_options=pl.ScanCastOptions(integer_cast="upcast", float_cast="upcast"), include_file_paths="file")


def _read(files: list[Location], run_id: str, problems: list[str]) -> tuple[pl.DataFrame, set[Location]]:
    """Every row of `files`, all columns decoded, with a ``file`` column, and the files that cannot be read.

    One scan over all files; only when it fails is each file checked on its own
    (footer, then every page), so a damaged file is named and the others still read.
    """
    empty = pl.DataFrame(schema={**POLARS_SCHEMA, "file": pl.String})
    if not files:
        return empty, set()
    try:
        return fs.scan_parquet(files, **_READ_OPTIONS).collect(), set()
    except (pl.exceptions.PolarsError, OSError):
        pass
    frames, unreadable = [], set()
    for path in files:
        reason = part_problem(path, full=True)
        if reason is None:
            try:
                frames.append(fs.scan_parquet([path], **_READ_OPTIONS).collect())
                continue
            except (pl.exceptions.PolarsError, OSError) as exc:
                reason = " ".join(str(exc).split())[:200]
        unreadable.add(path)
        problems.append(f"{path}: unreadable ({reason}); the next `tilesweep run --run-id {run_id}` moves it "
                        "aside and measures its config again")
    return (pl.concat(frames) if frames else empty), unreadable


def _unit(path: Location, config_id: str, attempt: int, row: dict[str, Any] | None) -> _Part:
    if row is None:
        return _Part(path=path, config_id=config_id, attempt=attempt)
    return _Part(path=path, config_id=config_id, attempt=attempt, rows=row["rows"],
                 numbers=sorted(row["numbers"], key=lambda n: (n is None, n or 0)), repeats=row["repeats"],
                 empty_errors=row["empty_errors"])


def _check_part(row: dict[str, Any] | None, part: _Part, run_id: str) -> list[str]:
    """A part's rows agree with its name and hold one known status."""
    if row is None:
        return ["no rows; a part holds at least one"]
    out = []
    for column, want in (("run_id", run_id), ("config_id", part.config_id), ("attempt", part.attempt)):
        found = sorted({str(v) for v in row[f"{column}s"]})
        if found != [str(want)]:
            out.append(f"{column} {', '.join(found)} in the rows, {want} in the name")
    statuses = set(row["statuses"])
    if len(statuses) != 1 or not statuses <= {STATUS_OK, STATUS_FAILED}:
        out.append(f"status {sorted(map(str, statuses))}; a part holds only ok or only failed rows")
    return out


def _compacted(path: Location, rows: pl.DataFrame, run_id: str, highest: dict[str, int],
               problems: list[str]) -> list[_Part]:
    """The config attempts of the compacted file, each checked like a part; problems named by the file."""
    runs = sorted({str(v) for v in rows["run_id"].unique().to_list()})
    if runs != [run_id]:
        problems.append(f"{path}: run_id {', '.join(runs)} in the rows, {run_id} in the directory")
    out = []
    seen: dict[str, int] = {}
    for row in rows.group_by("config_id", "attempt").agg(*_AGGS).sort("config_id", "attempt").iter_rows(named=True):
        cid, attempt = row["config_id"], row["attempt"]
        if cid is None or attempt is None:
            problems.append(f"{path}: {row['rows']} row(s) without a config id or attempt")
            continue
        part = _unit(path, cid, attempt, row)
        where = f"{path}: config {cid} attempt {attempt}"
        statuses = set(row["statuses"])
        if len(statuses) != 1 or not statuses <= {STATUS_OK, STATUS_FAILED}:
            problems.append(f"{where}: status {sorted(map(str, statuses))}; an attempt holds only ok or only failed "
                            "rows")
        elif attempt > highest.get(cid, -1):
            problems.append(f"{where}: above the highest attempt the file records ({highest.get(cid)}); it is not "
                            "what `tilesweep compact` writes, move it out of the run directory")
        elif cid in seen:
            problems.append(f"{path}: config {cid} has attempts {seen[cid]} and {attempt}; a compacted file holds one "
                            "per config")
        else:
            part.status = statuses.pop()
        seen[cid] = attempt
        out.append(part)
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
        empty = part.empty_errors
        return [f"{where} failed with {empty} row(s) lacking an error message"] if empty else []
    out = []
    repeats = measurement.get("repeats", part.repeats[0] if len(part.repeats) == 1 else None)
    numbers = part.numbers
    if len(set(numbers)) != len(numbers):
        out.append(f"{where} has duplicate repeat numbers {numbers}")
    elif numbers != list(range(len(numbers))):
        out.append(f"{where} has repeats {numbers}, not 0..{len(numbers) - 1}")
    more_allowed = (measurement.get("min_duration_s") or 0) > 0
    if repeats is not None and (len(numbers) < repeats or (len(numbers) > repeats and not more_allowed)):
        out.append(f"{where} has {len(numbers)} row(s), expected {repeats} repeats")
    return out


def _check_scan(run_dir: Location, kept_parts: dict[str, _Part]) -> list[str]:
    """What readers see (`store.scan.scan`) is exactly the kept attempt of each config."""
    seen = (scan(run_dir).group_by("config_id")
            .agg(pl.col("attempt").unique().alias("attempts"), pl.len().alias("rows")).collect())
    out = []
    got = {row["config_id"]: (sorted(row["attempts"]), row["rows"]) for row in seen.iter_rows(named=True)}
    for cid, part in kept_parts.items():
        want = ([part.attempt], part.rows)
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
