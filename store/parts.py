"""The bottom of the results store: file names, whether a part can be read, and which attempt readers keep.

Layout::

    <results>/<run_id>/manifest.json
    <results>/<run_id>/part-<config_id>-<attempt>.parquet
    <results>/<run_id>/compacted.parquet          (after `tilesweep compact`, see `store.compact`)
    <results>/<run_id>/driver.lock                (while a driver writes the run, see `store.lock`)

A config that was dispatched more than once has several parts. A compacted run
holds the kept attempt of every config in one file, whose footer records the
highest attempt number compaction saw per config (`compacted_attempts`); a part
whose attempt is at most that number is *superseded* (`superseded`): its rows
are in the compacted file or were not kept, so readers leave it out and
compaction removes it. Parts written later (a resume of failed configs) have
higher attempt numbers and are read beside the compacted file. What readers keep
per config is decided here, once (`kept`): the latest ok attempt, else the latest
failed one. The scan (`store.scan.dedupe`) applies the same rule to rows in polars,
`RunStore.outcomes` reports it per config, and the invariant checks that both agree
with the files.

A part that cannot be read (truncated, or damaged by something outside tilesweep)
is skipped by every reader with one warning (`readable`); only the driver moves it
aside (`store.runs.RunStore.quarantine_unreadable`). Paths are local `Path`s or, for
results on object storage, `store.fs.ObjectPath`s; a storage that cannot be reached
is a `StorageError`, never mistaken for a damaged part.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.types as pat

from store import fs
from store.fs import Location, ObjectPath
from store.schema import SCHEMA
from tilesweep.errors import ResultsError, StorageError
from workers.record import STATUS_OK

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PART_GLOB = "part-*.parquet"
COMPACTED = "compacted.parquet"
# Key of the compacted file's Parquet metadata: JSON {"version", "run_id", "attempts": {config_id: highest}}.
COMPACTED_KEY = b"tilesweep.compacted"
PART_NAME = re.compile(r"^part-(?P<config_id>[0-9a-f]+)-(?P<attempt>\d+)\.parquet$")
TEMP_PREFIX = ".tmp-"
# The run lock of the driver writing the run (`store.lock`); names starting with it are the lock's own.
LOCK = "driver.lock"
QUARANTINE_SUFFIX = ".corrupt"
# A part moved aside as unreadable (`RunStore.quarantine_unreadable`).
QUARANTINED_NAME = re.compile(r"^part-(?P<config_id>[0-9a-f]+)-(?P<attempt>\d+)\.parquet\.corrupt(?:-[0-9a-f]+)?$")
QUARANTINED_COMPACTED = re.compile(r"^compacted\.parquet\.corrupt(?:-[0-9a-f]+)?$")
# Columns without which a part's rows cannot be attributed to a config attempt.
KEY_COLUMNS = ("run_id", "config_id", "attempt", "status")


def part_name(config_id: str, attempt: int) -> str:
    return f"part-{config_id}-{attempt}.parquet"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt of one config, as readers see it."""

    status: str  # ok | failed
    attempt: int


def kept(attempts: Iterable[Outcome]) -> Outcome | None:
    """The attempt readers keep: the latest ok one, else the latest failed one (None: no attempt)."""
    attempts = list(attempts)
    ok = [a for a in attempts if a.status == STATUS_OK]
    return max(ok or attempts, key=lambda a: a.attempt, default=None)


def part_problem(path: Location, *, full: bool = False) -> str | None:
    """Why the Parquet part at `path` cannot be read with `SCHEMA`, or None when it can.

    By default reads the footer only (about a tenth of a full read): it is missing
    from a truncated file and garbled in a damaged or foreign one. A part must hold
    the key columns, and every column it shares with `SCHEMA` must be of the same
    kind (integers may be narrower, as readers upcast them); a column `SCHEMA`
    gained later may be absent. `full` also decodes every page, which finds damage
    inside an intact footer; the driver pays for that once per run, readers do not.

    Raises:
        StorageError: the object store could not be asked (a damaged part is a problem, not an error).
    """
    path = fs.location(path)
    try:
        schema = fs.read_schema(path)
        # What the store writes has exactly SCHEMA: one comparison instead of a loop over columns.
        if schema.equals(SCHEMA, check_metadata=False):
            if full:
                fs.read_table(path)
            return None
        missing = [k for k in KEY_COLUMNS if k not in schema.names]
        if missing:
            return f"no {', '.join(missing)} column(s)"
        for name in schema.names:
            if name in SCHEMA.names and not _same_kind(schema.field(name).type, SCHEMA.field(name).type):
                return f"column {name} is {schema.field(name).type}, not {SCHEMA.field(name).type}"
        if full:
            fs.read_table(path)
    except StorageError:
        raise
    except (OSError, pa.ArrowException) as exc:
        return " ".join(str(exc).split())[:200] or type(exc).__name__
    return None


def _same_kind(found: pa.DataType, wanted: pa.DataType) -> bool:
    if found.equals(wanted):
        return True
    for kind in (pat.is_integer, pat.is_floating, lambda x: pat.is_string(x) or pat.is_large_string(x)):
        if kind(found) and kind(wanted):
            return True
    return pat.is_timestamp(found) and pat.is_timestamp(wanted)


def _as_paths(results: str | Location | Sequence[str | Location]) -> list[Location]:
    if isinstance(results, (str, Path, ObjectPath)):
        return [fs.location(results)]
    paths = [fs.location(p) for p in results]
    if not paths:
        raise ResultsError("no results path given; pass a results root, a run directory or a list of them")
    return paths


def part_files(results: str | Location | Sequence[str | Location]) -> list[Location]:
    """The Parquet files readers read under a results root, a run directory, a file, or a list of them.

    Each may be a local path or a URI (`store.fs.location`).

    Per run directory (listed once): its parts and its compacted file, less the
    parts that compacted file supersedes (`superseded`). Temporary files of an
    in-progress write (``.tmp-*``) are never picked up.

    Raises:
        ResultsError: a path that does not exist, or a file that is not a part.
        StorageError: an object store that cannot be asked.
    """
    files: set[Location] = set()
    for path in _as_paths(results):
        if not path.exists():
            raise ResultsError(
                f"results path {str(path)!r} does not exist; pass a results root "
                "(<results>/<run_id>/part-*.parquet) or one run directory"
            )
        if path.is_file():
            if path.suffix != ".parquet":
                raise ResultsError(f"results path {str(path)!r} is a file but not a .parquet part; pass its directory")
            files.add(path.resolve())
            continue
        # A run directory holds parts directly; a results root holds run directories.
        for directory in (path, *(e.path for e in fs.entries(path) if e.is_dir)):
            listed = run_listing(directory).read
            if isinstance(directory, ObjectPath):  # keys are absolute; each keeps what its listing said
                files.update(listed)
                continue
            where = directory.resolve()  # once per directory: resolving each of 10,000 parts costs seconds
            files.update(where / p.name for p in listed)
    return sorted(files)


@dataclass(frozen=True, slots=True)
class RunListing:
    """One listing of a run directory, sorted into what readers read and what they leave."""

    parts: list[Location]  # live parts: not superseded by the compacted file
    compacted: Location | None  # the compacted file, when there is one
    attempts: dict[str, int]  # its highest attempt per config ({} without one, or when it cannot be read)
    superseded: list[Location]  # parts the compacted file replaces (a compaction stopped before removing them)

    @property
    def read(self) -> list[Location]:
        """The files readers read: the compacted file and the live parts."""
        return [*([self.compacted] if self.compacted is not None else []), *self.parts]


def run_listing(directory: Location) -> RunListing:
    """List `directory` once: live parts, the compacted file and its attempts, superseded parts."""
    parts: list[Location] = []
    compacted = None
    for entry in fs.entries(directory):
        if entry.name == COMPACTED and entry.is_file:
            compacted = entry.path
        elif fnmatch.fnmatchcase(entry.name, PART_GLOB) and entry.is_file:  # what `part_files` always read
            parts.append(entry.path)
    attempts = compacted_attempts(compacted) if compacted is not None else {}
    live, old = [], []
    for path in parts:
        (old if superseded(path.name, attempts) else live).append(path)
    return RunListing(parts=live, compacted=compacted, attempts=attempts, superseded=old)


def superseded(name: str, attempts: dict[str, int]) -> bool:
    """Whether the part named `name` is replaced by a compacted file that records `attempts`."""
    m = PART_NAME.match(name)
    return m is not None and int(m.group("attempt")) <= attempts.get(m.group("config_id"), -1)


def compacted_attempts(path: Location) -> dict[str, int]:
    """``{config_id: highest attempt}`` recorded in a compacted file's footer; {} when it cannot be read.

    An unreadable compacted file supersedes nothing: any part it would have
    replaced is read again, and readers skip the file itself (`readable`).
    """
    try:
        metadata = fs.read_schema(path).metadata or {}
        data = json.loads(metadata[COMPACTED_KEY])
        return {str(cid): int(a) for cid, a in data["attempts"].items()}
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError, AttributeError):
        return {}


# Parts already reported as unreadable in this process, by (path, size, mtime):
# one warning per damaged file, however many times it is scanned.
_reported: set[tuple[Location, int, int]] = set()
# Parts whose footer was found good in this process, by (path, size, mtime). A part is
# never rewritten in place (atomic writes under a new name), so a part with the same
# size and mtime is the same file: `status --check` and a report scan a run several
# times and check each footer once.
_good: set[tuple[Location, int, int]] = set()


def readable(files: Iterable[Location]) -> list[Location]:
    """The parts that can be read; each one that cannot is left out with one warning line.

    A truncated or damaged part would otherwise fail every query over its run.
    Leaving it out makes its config count as not measured, so the next `run`
    of that run measures it again (the driver moves the damaged file aside).
    """
    good = []
    for path in files:
        key = fs.stat_key(path)
        if key in _good:
            good.append(path)
            continue
        problem = part_problem(path)
        if problem is None:
            _good.add(key)
            good.append(path)
            continue
        if key not in _reported:
            _reported.add(key)
            run_dir = path.parent
            log.warning("ignoring unreadable result part %s (%s); its config counts as not measured until "
                        "`tilesweep run --run-id %s --results %s` measures it again",
                        path, problem, run_dir.name, run_dir.parent)
    return good


def damaged(exc: Exception, results: object, run_id: str = "RUN") -> ResultsError:
    """The one-line error for a read that failed inside a part whose footer is intact.

    `readable` cannot see such damage without reading every page (too slow for
    every query); the driver does read them, so its next run is the fix.
    """
    return ResultsError(f"cannot read the results under {str(results)!r}: a part is damaged "
                        f"({' '.join(str(exc).split())[:200]}); `tilesweep run --run-id {run_id} --results ROOT` "
                        "moves damaged parts aside and measures their configs again")
