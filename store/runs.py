"""One run's directory: atomic Parquet parts and the manifest. Only the driver writes.

Every file is written under a ``.tmp-`` name in the same directory, flushed to
disk, then renamed over its final name (`os.replace` is atomic within one file
system). A crash or Ctrl-C at any moment therefore leaves only whole files under
their final names, plus perhaps a ``.tmp-*`` file that readers ignore and the
next run removes. On object storage (``--results s3://…``, `store.fs`) there is no
rename: each file is one object, sent whole, so the same holds without temporary
names. A part is never overwritten: each dispatch of a config has its own attempt
number, its name is checked to be free before it is written, one driver at a time
writes a run (`store.lock`), and readers keep one attempt per config (`store.parts.kept`).

A part that cannot be read is skipped by readers (`store.parts.readable`); the
driver, when it plans a run, reads every part whole and moves any it cannot read
aside to ``<name>.corrupt`` (`quarantine_unreadable`), so the bytes stay for
inspection, the warning is not repeated forever and the config is measured again
under a new attempt number. Quarantined names still count for attempt numbering,
so no attempt is reused. Damage inside a part whose footer is intact is found by
the driver (and by `store.invariant`); until the next run moves it aside, a
reader that meets it fails in one line that says so. On object storage moving
aside is a copy, then a delete.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from store import fs
from store import manifest as manifests
from store.fs import Location
from store.manifest import Manifest
from store.parts import (
    COMPACTED,
    MANIFEST,
    PART_NAME,
    QUARANTINE_SUFFIX,
    QUARANTINED_NAME,
    TEMP_PREFIX,
    Outcome,
    compacted_attempts,
    damaged,
    part_name,
    part_problem,
    run_listing,
)
from store.scan import scan
from store.schema import SCHEMA, records_to_table
from tilesweep.errors import ResultsError
from workers.record import STATUS_FAILED, STATUS_OK, Record

log = logging.getLogger(__name__)


def new_run_id(now: datetime | None = None) -> str:
    """A fresh run id: UTC time to the second plus 4 random hex digits, e.g. ``20261126-143012-ab12``."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def list_runs(results: str | Location) -> list[tuple[str, str]]:
    """``(created_at, run_id)`` of every run with a readable manifest under `results`, oldest first."""
    runs = []
    for path in fs.location(results).glob(f"*/{MANIFEST}"):
        try:
            found = manifests.read(path)
        except ResultsError as exc:
            log.warning("ignoring %s", exc)
            continue
        if found is not None:
            runs.append((found.created_at, path.parent.name))
    return sorted(runs)


def latest_run(results: str | Location) -> str | None:
    """The run id whose manifest was created last, or None when `results` holds no run."""
    runs = list_runs(results)
    return runs[-1][1] if runs else None


class RunStore:
    """One run's directory (local, or a prefix on object storage): writes parts and the manifest, reads back
    what is done."""

    def __init__(self, results: str | Path | Location, run_id: str):
        self.results = fs.location(results)
        self.run_id = run_id
        self.dir = self.results / run_id

    # ----- manifest -----
    @property
    def manifest_path(self) -> Location:
        return self.dir / MANIFEST

    def read_manifest(self) -> Manifest | None:
        """The manifest, or None when the run does not exist yet.

        Raises:
            ResultsError: the manifest exists but cannot be read as one.
        """
        return manifests.read(self.manifest_path)

    def write_manifest(self, manifest: Manifest) -> None:
        """Write the manifest whole (it replaces the previous one as a whole)."""
        fs.make_dirs(self.dir)
        fs.write_bytes(self.manifest_path, manifest.dumps().encode(), temp_prefix=TEMP_PREFIX)

    # ----- parts -----
    def part_path(self, config_id: str, attempt: int) -> Location:
        return self.dir / part_name(config_id, attempt)

    def write_part(self, records: Iterable[Record]) -> Location:
        """Write one attempt of one config (all its rows) as one Parquet file, atomically.

        Raises:
            ValueError: the records are empty, mix configs or attempts, belong to
                another run, or do not fit `SCHEMA` (the caller's bug, or a host's).
            FileExistsError: that attempt was already written (attempts are never reused).
            OSError: the write failed (`StorageError` on object storage).
        """
        records = list(records)
        if not records:
            raise ValueError("write_part got no records; a config's part holds at least one row")
        keys = {(r.run_id, r.config_id, r.attempt) for r in records}
        if len(keys) != 1:
            raise ValueError(f"one part holds one config attempt, got {sorted(keys)}")
        run_id, config_id, attempt = keys.pop()
        if run_id != self.run_id:
            raise ValueError(f"records of run {run_id!r} written to run {self.run_id!r}")
        if not PART_NAME.match(part_name(config_id, attempt)):
            raise ValueError(f"config_id {config_id!r} must be hex digits and attempt {attempt!r} >= 0")
        bad = sorted({r.status for r in records} - {STATUS_OK, STATUS_FAILED})
        if bad:
            raise ValueError(f"record status {bad[0]!r} is not one of {STATUS_OK!r}, {STATUS_FAILED!r}")
        table = records_to_table(records)
        if not table.schema.equals(SCHEMA):
            raise ValueError(f"part schema differs from SCHEMA: {table.schema} vs {SCHEMA}")
        path = self.part_path(config_id, attempt)
        if path.exists():
            raise FileExistsError(f"{path} exists; every attempt gets a new number, this is a driver bug")
        fs.make_dirs(self.dir)
        fs.write_table(path, table, temp_prefix=TEMP_PREFIX)
        return path

    def attempts_on_disk(self) -> dict[str, int]:
        """Highest attempt number written so far per config id.

        From the part names (quarantined ones included) and, in a compacted run,
        the highest attempts its compacted file records (discarded attempts too),
        so no attempt number is ever used twice and a new part is never superseded.
        """
        highest: dict[str, int] = {}
        listed = fs.entries(self.dir)
        compacted = next((e.path for e in listed if e.name == COMPACTED and e.is_file), None)
        if compacted is not None:
            highest.update(compacted_attempts(compacted))
        for entry in listed:
            m = PART_NAME.match(entry.name) or QUARANTINED_NAME.match(entry.name)
            if m:
                cid, attempt = m.group("config_id"), int(m.group("attempt"))
                highest[cid] = max(attempt, highest.get(cid, 0))
        return highest

    def outcomes(self) -> dict[str, Outcome]:
        """Per config id: the attempt readers keep (`store.parts.kept`) and its status.

        Raises:
            ResultsError: a part is damaged inside an intact footer.
        """
        if not self.dir.is_dir():
            return {}
        try:
            frame = (scan(self.dir).select("config_id", "attempt", "status")
                     .unique(subset=["config_id"]).collect())
        except pl.exceptions.ComputeError as exc:
            raise damaged(exc, self.dir, self.run_id) from None
        return {cid: Outcome(status=status, attempt=attempt) for cid, attempt, status in frame.iter_rows()}

    def done(self) -> set[str]:
        """Config ids with an ok result."""
        return {cid for cid, o in self.outcomes().items() if o.status == STATUS_OK}

    def remove_temporaries(self) -> int:
        """Delete ``.tmp-*`` files a killed driver left behind; returns how many."""
        if not self.dir.is_dir():
            return 0
        removed = 0
        for path in self.dir.glob(f"{TEMP_PREFIX}*"):
            fs.delete(path)
            removed += 1
        if removed:
            log.info("removed %d unfinished temporary file(s) in %s", removed, self.dir)
        return removed

    def quarantine_unreadable(self) -> list[Location]:
        """Move parts that cannot be read aside to ``<name>.corrupt``; returns the new paths.

        Only the driver calls this (at plan time): readers skip such parts but never rename.
        A storage that cannot be asked raises `StorageError`; nothing is moved for it.
        """
        moved: list[Location] = []
        if not self.dir.is_dir():
            return moved
        # Superseded parts are not read (a compaction removes them), so they are not checked.
        for path in run_listing(self.dir).read:
            problem = part_problem(path, full=True)
            if problem is None:
                continue
            target = path.with_name(path.name + QUARANTINE_SUFFIX)
            if target.exists():
                target = path.with_name(f"{path.name}{QUARANTINE_SUFFIX}-{secrets.token_hex(4)}")
            fs.move(path, target)
            log.warning("moved unreadable part %s aside to %s (%s); its config is measured again",
                        path, target.name, problem)
            moved.append(target)
        if moved:
            fs.fsync_dir(self.dir)
        return moved
