"""One driver per run: the run lock, ``<results>/<run_id>/driver.lock``.

A driver (`tilesweep run`, `fill`, and `compact`, which rewrites the run) takes the
run's lock before it starts Ray or changes a file, and gives it back on every way
out (normal end, error, Ctrl-C, SIGTERM: `RunLock` is a context manager). A second
driver on the same run stops at once, in one line naming the holder (host, pid,
since) and what to do (`RunLocked`, exit 2). Readers (`status`, `query`, `report`)
never lock.

Why refuse rather than let two drivers share a run: both would plan the same
missing configs and measure them twice, and two writers would have to agree on
part names and on one manifest. On a local disk that takes atomic renames; object
storage has none. Refusing is simple and loses nothing: the second command can
run once the first has ended, and then measures only what is still missing.

The lock file is JSON: ``{host, pid, pid_start, command, started, heartbeat, token}``
(no path, no credential). It is created atomically (`store.fs.create_new`: a hard
link locally, a conditional PUT on S3) and rewritten whole every `HEARTBEAT_S` by a
daemon thread of the holder, which refreshes ``heartbeat``.

A holder that died never blocks a resume. A lock is *stale*, and is taken over
with one log line, when
- it was written on this host (same hostname) and its pid is gone, a zombie, or
  now another process (its start time, from ``/proc``, differs: pid reuse);
- it was written on another host and its heartbeat is older than `STALE_S`
  (clocks of the two hosts are assumed within a few seconds of each other);
- it does not parse (nothing tilesweep writes).
So a SIGKILLed driver's lock is taken over by the next driver on its host at
once, and on another host within a minute. A takeover reads the stale lock,
deletes it only if it still holds the same token, then creates its own: two
drivers that take over the same dead holder within one round trip of each other
could both delete and create (one of them then finds the other's token at its
next heartbeat and logs that it lost the lock); nothing in between loses a file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from store import fs
from store.fs import Location
from store.parts import LOCK
from tilesweep.errors import RunLocked, StorageError

log = logging.getLogger(__name__)

# How often the holder refreshes its heartbeat, and how old a heartbeat from another host must be
# before its lock counts as dead.
HEARTBEAT_S = 10.0
STALE_S = 60.0
# Tokens of the locks this process holds now: a lock of this very pid with another token was left by
# an earlier holder in this process (one whose release failed), so it is stale.
_held: set[str] = set()


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """What a lock file says about the driver holding it."""

    host: str
    pid: int
    pid_start: int | None  # the process's start time (clock ticks since boot), against pid reuse
    command: str
    started: str  # ISO time, UTC
    heartbeat: str  # ISO time, UTC, refreshed every HEARTBEAT_S
    token: str

    def dumps(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def loads(cls, data: bytes) -> Holder | None:
        """The holder `data` describes, or None when it is not a lock file tilesweep wrote."""
        try:
            raw = json.loads(data)
            return cls(host=str(raw["host"]), pid=int(raw["pid"]),
                       pid_start=None if raw.get("pid_start") is None else int(raw["pid_start"]),
                       command=str(raw.get("command") or "a driver"), started=str(raw["started"]),
                       heartbeat=str(raw.get("heartbeat") or raw["started"]), token=str(raw["token"]))
        except (ValueError, TypeError, KeyError):
            return None

    def who(self) -> str:
        return f"{self.command} on host {self.host}, pid {self.pid}, since {self.started}"

    def age_s(self, now: datetime | None = None) -> float | None:
        """Seconds since the last heartbeat (None when it does not parse)."""
        try:
            beat = datetime.fromisoformat(self.heartbeat)
        except ValueError:
            return None
        return ((now or datetime.now(timezone.utc)) - beat).total_seconds()


class RunLock:
    """The lock of the run in `run_dir`, held between `acquire` and `release` (or in a ``with`` block).

    Args:
        run_dir: the run's directory (a local path or an `ObjectPath`).
        command: what holds it (``run``, ``fill``, ``compact``), shown to a refused driver.
        heartbeat_s, stale_s: see `HEARTBEAT_S` and `STALE_S` (tests shorten them).
    """

    def __init__(self, run_dir: Location, *, command: str, heartbeat_s: float = HEARTBEAT_S,
                 stale_s: float = STALE_S):
        self.run_dir = run_dir
        self.path = run_dir / LOCK
        self.command = command
        self.heartbeat_s = heartbeat_s
        self.stale_s = stale_s
        self.holder: Holder | None = None  # ours, while held
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writing = threading.Lock()  # a heartbeat write and the release never overlap
        self._created: list[Path] = []

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    # ----- taking it -----
    def acquire(self) -> None:
        """Take the lock, taking over a stale one; start the heartbeat.

        Raises:
            RunLocked: a live driver holds it (one line: who, since when, what to do).
            StorageError, OSError: the lock could not be written.
        """
        now = _now()
        mine = Holder(host=socket.gethostname(), pid=os.getpid(), pid_start=_start_time(os.getpid()),
                      command=self.command, started=now, heartbeat=now, token=secrets.token_hex(8))
        self._created = fs.make_dirs(self.run_dir)
        try:
            for _ in range(5):
                if fs.create_new(self.path, mine.dumps()):
                    self.holder = mine
                    _held.add(mine.token)
                    self._remove_leftovers()
                    self._start_heartbeat()
                    return
                found, data = self._read()
                if data is None:
                    continue  # released between our try and our read: try again
                why = self._stale(found)
                if why is None:
                    assert found is not None
                    raise RunLocked(self._refusal(found))
                log.warning("run %s: taking over the lock of %s: %s", self.run_dir.name,
                            found.who() if found else "an unreadable lock file", why)
                self._remove_if(data)
            raise RunLocked(f"run {self.run_dir.name!r}: its lock {self.path} kept changing hands while this driver "
                            "tried to take it; another driver is starting on it, wait for it to end")
        except BaseException:
            self._remove_created_dirs()
            raise

    def _remove_leftovers(self) -> None:
        """Delete the temporary names (``driver.lock.*``) of a holder killed while it wrote; only the holder may."""
        if isinstance(self.run_dir, Path):  # object storage writes no temporary names
            for entry in fs.entries(self.run_dir):
                if entry.name.startswith(f"{LOCK}."):
                    fs.delete(entry.path)

    def _read(self) -> tuple[Holder | None, bytes | None]:
        try:
            data = fs.read_bytes(self.path)
        except FileNotFoundError:
            return None, None
        return Holder.loads(data), data

    def _stale(self, found: Holder | None) -> str | None:
        """Why the lock of `found` is dead, or None when its holder may be alive."""
        if found is None:
            return "it does not parse"
        if found.host == socket.gethostname():
            if found.pid == os.getpid():
                return None if found.token in _held else "this process holds no such lock any more"
            if not _alive(found.pid):
                return f"its process {found.pid} is gone"
            if found.pid_start is not None and _start_time(found.pid) not in (None, found.pid_start):
                return f"pid {found.pid} is now another process"
            return None
        age = found.age_s()
        if age is None:
            return "its heartbeat does not parse"
        if age > self.stale_s:
            return f"no heartbeat for {age:.0f}s (a driver refreshes it every {self.heartbeat_s:g}s)"
        return None

    def _refusal(self, found: Holder) -> str:
        age = found.age_s()
        beat = f", heartbeat {age:.0f}s ago" if age is not None and found.host != socket.gethostname() else ""
        return (f"run {self.run_dir.name!r} is in use by another driver ({found.who()}{beat}); wait for it to end and run this again, or, if you "
                f"are sure it is dead, delete {self.path} (a dead driver's lock is taken over by itself: at once on "
                f"its own host, after {self.stale_s:g}s without a heartbeat elsewhere)")

    def _remove_if(self, data: bytes) -> None:
        """Delete the lock if it still holds what was judged stale."""
        try:
            again = fs.read_bytes(self.path)
        except FileNotFoundError:
            return
        if again == data:
            fs.delete(self.path)

    # ----- holding it -----
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"run-lock-{self.run_dir.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        warned = False
        while not self._stop.wait(self.heartbeat_s):
            with self._writing:
                if self._stop.is_set() or self.holder is None:
                    return
                try:
                    found, _ = self._read()
                    if found is None or found.token != self.holder.token:
                        log.error("run %s: this driver lost its lock to %s; another driver may write the run now",
                                  self.run_dir.name, "nobody" if found is None else found.who())
                        return
                    self.holder = dataclasses.replace(self.holder, heartbeat=_now())
                    fs.write_bytes(self.path, self.holder.dumps(), temp_prefix=f"{LOCK}.")
                    warned = False
                except (OSError, StorageError) as exc:  # the storage hiccups: try again at the next beat
                    if not warned:
                        log.warning("run %s: cannot refresh its lock (%s); retrying every %gs", self.run_dir.name,
                                    exc.strerror or exc, self.heartbeat_s)
                        warned = True

    # ----- giving it back -----
    def release(self) -> None:
        """Stop the heartbeat and delete the lock (if it is still ours). Never raises for the storage:
        a lock that cannot be deleted is left to be taken over as stale, with one warning."""
        holder = self.holder
        if holder is None:
            return
        self._stop.set()
        with self._writing:
            self.holder = None
            _held.discard(holder.token)
            try:
                found, data = self._read()
                if found is not None and found.token == holder.token:
                    fs.delete(self.path)
                elif data is not None:
                    log.warning("run %s: its lock was taken over meanwhile; left as it is", self.run_dir.name)
            except (OSError, StorageError) as exc:
                log.warning("run %s: cannot remove its lock %s (%s); the next driver on this run takes it over",
                            self.run_dir.name, self.path, exc.strerror or exc)
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        self._remove_created_dirs()

    def _remove_created_dirs(self) -> None:
        """Remove the directories `acquire` created, if nothing else was written in them (bad input found
        after the lock was taken leaves nothing behind)."""
        for directory in reversed(self._created):
            try:
                directory.rmdir()
            except OSError:
                break
        self._created = []


def read_holder(run_dir: Location) -> Holder | None:
    """Who holds the lock of the run in `run_dir` now, as its file says (None: no lock)."""
    try:
        return Holder.loads(fs.read_bytes(run_dir / LOCK))
    except FileNotFoundError:
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return _state(pid) != "Z"  # a zombie has exited


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    return text[text.rfind(")") + 2:].split()


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None off Linux."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None
