"""Compaction: a finished run's parts become one Parquet file, without a moment where a row is lost or counted twice.

A run of 10,000 configs is 10,000 parts; every reader pays a footer per part
(`store.parts.readable`) and polars an open per part, while one file of the same
rows aggregates in hundredths of a second. `compact` rewrites a run whose
invariant holds (`store.invariant.check`) as ``compacted.parquet``:

1. the rows of the kept attempt of every config (`store.parts.kept`, as the scan
   keeps them), read from the run's current files (an earlier compacted file
   and the parts beside it);
2. in the file's footer, the highest attempt number seen per config, discarded
   attempts included (`store.parts.compacted_attempts`);
3. written like every file of the store: temporary name, fsync, rename, fsync of
   the directory (`store.fs.write_table`); on an object store it is one object sent
   whole (a multipart upload for a large file, which also appears only when complete);
4. only then the parts it replaces are deleted.

Why no row is counted twice at any moment: a part whose attempt is at most the
number the compacted file records for its config is *superseded* and left out
by every reader (`store.parts.run_listing`), whether or not step 4 has run. A
crash before step 3 leaves the parts as they were (plus a ``.tmp-`` file that
readers ignore and the next `compact` removes); a crash during step 4 leaves
superseded parts that readers ignore and the next `compact` removes. New parts
(a resume of failed configs) get higher attempt numbers
(`RunStore.attempts_on_disk` reads the footer), so they are never superseded and
are read beside the compacted file; compacting again folds them in.

Only a finished run is compacted: a driver writing into the run at the same time
would race with step 4, and a run whose last invocation did not finish is the
driver's to resume first. Compaction holds the run's lock (`store.lock`) while it
works, so no driver starts on the run meanwhile, and it does not start while one runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from store import fs
from store.fs import Location
from store.invariant import check
from store.lock import RunLock
from store.parts import COMPACTED, COMPACTED_KEY, PART_NAME, TEMP_PREFIX, damaged, run_listing
from store.runs import RunStore, list_runs
from store.scan import scan
from store.schema import SCHEMA
from tilesweep.errors import ResultsError

log = logging.getLogger(__name__)

VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Compaction:
    """What `compact` did to one run."""

    run_id: str
    parts: int  # part files folded into the compacted file (0: nothing new to compact)
    removed: int  # part files deleted (those folded in, and any an earlier compaction left)
    rows: int  # rows in the compacted file
    configs: int  # configs in the compacted file


def compact(results: str | Path | Location, run_id: str) -> Compaction:
    """Rewrite the finished run `run_id` under `results` as one compacted file; see the module docstring.

    Raises:
        ResultsError: no such run, a run that is not finished or does not hold its
            invariant (nothing is written then; the message names the fix).
        RunLocked: a driver is writing the run now (nothing is written).
    """
    store = RunStore(results, run_id)
    manifest = store.read_manifest()
    if manifest is None:
        known = ", ".join(r for _, r in list_runs(results)) or "none"
        raise ResultsError(f"no run {run_id!r} under {str(results)!r} to compact; runs there: {known}")
    with RunLock(store.dir, command="compact"):
        return _compact(store, results, run_id)


def _compact(store: RunStore, results: str | Path | Location, run_id: str) -> Compaction:
    manifest = store.read_manifest()
    assert manifest is not None  # it was there before the lock, and only a lock holder removes a run's files
    last = manifest.last_invocation()
    if last is not None and last.finished_at is None:
        raise ResultsError(f"run {run_id!r} is not finished (its last {last.command} never ended); only a finished "
                           f"run is compacted: `tilesweep run --run-id {run_id} --results {results}` finishes it")
    _remove_own_temporaries(store.dir)
    report = check(results, run_id)
    if not report.ok:
        raise ResultsError(f"run {run_id!r} does not hold its invariant ({len(report.problems)} problem(s), the first: "
                           f"{report.problems[0]}); nothing was compacted: `tilesweep status --check --run-id "
                           f"{run_id}` lists them all")
    listing = run_listing(store.dir)
    if not listing.parts:
        removed = _remove(listing.superseded, store.dir)  # what a compaction that stopped early left
        rows, configs = _counts(listing.compacted)
        return Compaction(run_id=run_id, parts=0, removed=removed, rows=rows, configs=configs)

    try:
        kept = scan(listing.read).sort("config_id", "attempt", "repeat").collect()
    except pl.exceptions.ComputeError as exc:
        raise damaged(exc, store.dir, run_id) from None
    highest = dict(listing.attempts)
    for path in listing.parts:
        m = PART_NAME.match(path.name)
        assert m is not None, path  # the invariant holds: every part is named as the store names it
        cid, attempt = m.group("config_id"), int(m.group("attempt"))
        highest[cid] = max(attempt, highest.get(cid, attempt))
    meta = json.dumps({"version": VERSION, "run_id": run_id, "attempts": dict(sorted(highest.items()))})
    table = _to_schema(kept.to_arrow()).replace_schema_metadata({COMPACTED_KEY: meta.encode()})
    fs.write_table(store.dir / COMPACTED, table, temp_prefix=TEMP_PREFIX)
    # The compacted file is durable (fsynced, renamed, directory fsynced): only now do the parts go.
    removed = _remove([*listing.parts, *listing.superseded], store.dir)
    log.debug("run %s: %d part(s) compacted into %s (%d rows, %d configs)", run_id, len(listing.parts),
             store.dir / COMPACTED, table.num_rows, kept["config_id"].n_unique())
    return Compaction(run_id=run_id, parts=len(listing.parts), removed=removed, rows=table.num_rows,
                      configs=kept["config_id"].n_unique())


def _to_schema(table: pa.Table) -> pa.Table:
    """polars' Arrow (large strings and lists) cast back to `SCHEMA`, so the file reads like a part."""
    return table.select(SCHEMA.names).cast(SCHEMA)


def _counts(path: Location | None) -> tuple[int, int]:
    if path is None:
        return 0, 0
    frame = fs.scan_parquet([path]).select(pl.len(), pl.col("config_id").n_unique()).collect()
    return int(frame.item(0, 0)), int(frame.item(0, 1))


def _remove(paths: list[Location], directory: Location) -> int:
    for path in paths:
        fs.delete(path)
    if paths:
        fs.fsync_dir(directory)
    return len(paths)


def _remove_own_temporaries(directory: Location) -> None:
    """Delete what a compaction killed before its rename left (``.tmp-*-compacted.parquet``); never a driver's."""
    for path in directory.glob(f"{TEMP_PREFIX}*-{COMPACTED}"):
        fs.delete(path)
        log.info("removed %s, left by a compaction that did not finish", path)
