"""The bottom of the results store: file names, whether a part can be read, and which attempt readers keep.

Layout::

    <results>/<run_id>/manifest.json
    <results>/<run_id>/part-<config_id>-<attempt>.parquet

A config that was dispatched more than once has several parts. What readers keep
per config is decided here, once (`kept`): the latest ok attempt, else the latest
failed one. The scan (`store.scan.dedupe`) applies the same rule to rows in polars,
`RunStore.outcomes` reports it per config, and the invariant checks that both agree
with the files.

A part that cannot be read (truncated, or damaged by something outside tilesweep)
is skipped by every reader with one warning (`readable`); only the driver moves it
aside (`store.runs.RunStore.quarantine_unreadable`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.types as pat

from store.schema import SCHEMA
from tilesweep.errors import ResultsError
from workers.record import STATUS_OK

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PART_GLOB = "part-*.parquet"
PART_NAME = re.compile(r"^part-(?P<config_id>[0-9a-f]+)-(?P<attempt>\d+)\.parquet$")
TEMP_PREFIX = ".tmp-"
QUARANTINE_SUFFIX = ".corrupt"
# A part moved aside as unreadable (`RunStore.quarantine_unreadable`).
QUARANTINED_NAME = re.compile(r"^part-(?P<config_id>[0-9a-f]+)-(?P<attempt>\d+)\.parquet\.corrupt(?:-[0-9a-f]+)?$")
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


def part_problem(path: str | Path, *, full: bool = False) -> str | None:
    """Why the Parquet part at `path` cannot be read with `SCHEMA`, or None when it can.

    By default reads the footer only (about a tenth of a full read): it is missing
    from a truncated file and garbled in a damaged or foreign one. A part must hold
    the key columns, and every column it shares with `SCHEMA` must be of the same
    kind (integers may be narrower, as readers upcast them); a column `SCHEMA`
    gained later may be absent. `full` also decodes every page, which finds damage
    inside an intact footer; the driver pays for that once per run, readers do not.
    """
    try:
        schema = pq.read_schema(path)
        missing = [k for k in KEY_COLUMNS if k not in schema.names]
        if missing:
            return f"no {', '.join(missing)} column(s)"
        for name in schema.names:
            if name in SCHEMA.names and not _same_kind(schema.field(name).type, SCHEMA.field(name).type):
                return f"column {name} is {schema.field(name).type}, not {SCHEMA.field(name).type}"
        if full:
            pq.read_table(path)
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


def _as_paths(results: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(results, (str, Path)):
        return [Path(results)]
    paths = [Path(p) for p in results]
    if not paths:
        raise ResultsError("no results path given; pass a results root, a run directory or a list of them")
    return paths


def part_files(results: str | Path | Sequence[str | Path]) -> list[Path]:
    """The Parquet parts under a results root, a run directory, a part file, or a list of them.

    Temporary files of an in-progress write (``.tmp-*``) are never picked up.

    Raises:
        ResultsError: a path that does not exist, or a file that is not a part.
    """
    files: set[Path] = set()
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
        for found in (*path.glob(PART_GLOB), *path.glob(f"*/{PART_GLOB}")):
            if not found.name.startswith(TEMP_PREFIX) and found.is_file():
                files.add(found.resolve())
    return sorted(files)


# Parts already reported as unreadable in this process, by (path, size, mtime):
# one warning per damaged file, however many times it is scanned.
_reported: set[tuple[Path, int, int]] = set()


def readable(files: Iterable[Path]) -> list[Path]:
    """The parts that can be read; each one that cannot is left out with one warning line.

    A truncated or damaged part would otherwise fail every query over its run.
    Leaving it out makes its config count as not measured, so the next `run`
    of that run measures it again (the driver moves the damaged file aside).
    """
    good = []
    for path in files:
        problem = part_problem(path)
        if problem is None:
            good.append(path)
            continue
        try:
            stat = path.stat()
            key = (path, stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = (path, -1, -1)
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
