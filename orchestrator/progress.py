"""Sweep progress: a live `rich` display on a terminal, plain log lines otherwise.

The driver reports events (a worker took a config, a config finished, a worker
died); the display is only a view of them. `make_progress` picks the view: a live
bar with one line per worker when stderr is a terminal, else one `logging` line
per finished config, which reads well in CI logs and `ray job logs`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Protocol

log = logging.getLogger("tilesweep.progress")

STARTING = "starting"  # the activity of an actor that is loading its model


class Progress(Protocol):
    """What the driver reports. Every method is cheap and must not raise."""

    def start(self, total: int, done: int) -> None:
        """`total` configs to measure now; `done` already in the results (for context)."""

    def worker(self, worker: str, activity: str | None) -> None:
        """`worker` is now doing `activity` (e.g. ``"1x4 (attempt 1)"``), or is idle/gone (None)."""

    def finished(self, worker: str, label: str, status: str, seconds: float, attempt: int) -> None:
        """A config ended with a written part (`status` ok or failed)."""

    def retry(self, worker: str, label: str, reason: str) -> None:
        """A config's worker died or timed out; the config goes back to the queue."""

    def close(self) -> None:
        """The sweep ended (or stopped); release the terminal."""


class _Counts:
    def __init__(self) -> None:
        self.total = 0
        self.ok = 0
        self.failed = 0
        self.retries = 0
        self.t0 = time.monotonic()
        self.t_first_dispatch: float | None = None  # actor start-up is not part of the rate

    def dispatched(self) -> None:
        if self.t_first_dispatch is None:
            self.t_first_dispatch = time.monotonic()

    @property
    def finished(self) -> int:
        return self.ok + self.failed

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def eta(self) -> float | None:
        if not self.finished or self.finished >= self.total:
            return None
        busy = time.monotonic() - (self.t_first_dispatch or self.t0)
        return busy / self.finished * (self.total - self.finished)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class LogProgress:
    """One log line per finished config: ``[done/total] 2x4 ok 1.8s on w1 (elapsed, eta)``."""

    def __init__(self) -> None:
        self.counts = _Counts()

    def start(self, total: int, done: int) -> None:
        self.counts = _Counts()
        self.counts.total = total
        log.info("measuring %d config(s)%s", total, f" ({done} already done)" if done else "")

    def worker(self, worker: str, activity: str | None) -> None:
        if activity not in (None, STARTING):
            self.counts.dispatched()
        if activity is not None:
            log.debug("%s: %s", worker, activity)

    def finished(self, worker: str, label: str, status: str, seconds: float, attempt: int) -> None:
        c = self.counts
        if status == "ok":
            c.ok += 1
        else:
            c.failed += 1
        log.info("[%d/%d] %s %s in %.1fs on %s%s (elapsed %s, eta %s)", c.finished, c.total, label, status,
                 seconds, worker, f", attempt {attempt}" if attempt > 1 else "", _clock(c.elapsed()),
                 _clock(c.eta()))

    def retry(self, worker: str, label: str, reason: str) -> None:
        self.counts.retries += 1
        log.warning("%s: %s; requeued %s", worker, reason, label)

    def close(self) -> None:
        c = self.counts
        log.info("sweep ended: %d ok, %d failed, %d retried, of %d, in %s", c.ok, c.failed, c.retries,
                 c.total, _clock(c.elapsed()))


class RichProgress:
    """A live bar (done/total, failed, elapsed, ETA) and one line per worker, on `stream`."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or sys.stderr)
        self.counts = _Counts()
        self.workers: dict[str, str | None] = {}
        self._live = None
        self._handlers: list[tuple[logging.StreamHandler, IO[str]]] = []

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        c = self.counts
        head = Table.grid(padding=(0, 1))
        head.add_row(
            ProgressBar(total=max(c.total, 1), completed=c.finished, width=40),
            Text(f"{c.finished}/{c.total}", style="bold"),
            Text(f"failed {c.failed}", style="red" if c.failed else "dim"),
            Text(f"retried {c.retries}", style="yellow" if c.retries else "dim"),
            Text(f"elapsed {_clock(c.elapsed())}  eta {_clock(c.eta())}"),
        )
        rows = Table.grid(padding=(0, 2))
        for name, activity in sorted(self.workers.items(), key=lambda kv: _worker_key(kv[0])):
            rows.add_row(Text(name, style="cyan"), Text(activity or "idle", style="" if activity else "dim"))
        return Group(head, rows)

    def start(self, total: int, done: int) -> None:
        from rich.live import Live

        self.counts = _Counts()
        self.counts.total = total
        if done:
            self.console.print(f"{done} config(s) already done; measuring {total}")
        # get_renderable is re-evaluated on every refresh, so elapsed/ETA tick on their own.
        original = sys.stderr
        self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=4,
                          transient=False)
        self._live.start()
        # Live redirects sys.stderr so that prints land above the display; log handlers
        # hold the stream they were built with, so point them at the redirect too.
        self._handlers = []
        if sys.stderr is not original:
            for handler in logging.getLogger().handlers:
                if type(handler) is logging.StreamHandler and handler.stream is original:
                    handler.setStream(sys.stderr)
                    self._handlers.append((handler, original))

    def worker(self, worker: str, activity: str | None) -> None:
        if activity not in (None, STARTING):
            self.counts.dispatched()
        self.workers[worker] = activity

    def finished(self, worker: str, label: str, status: str, seconds: float, attempt: int) -> None:
        if status == "ok":
            self.counts.ok += 1
        else:
            self.counts.failed += 1
            self.console.print(f"[red]{label} failed[/red] on {worker} (attempt {attempt})")

    def retry(self, worker: str, label: str, reason: str) -> None:
        self.counts.retries += 1
        self.console.print(f"[yellow]{worker}: {reason}; requeued {label}[/yellow]")

    def close(self) -> None:
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers = []
        if self._live is not None:
            self._live.stop()
            self._live = None


def _worker_key(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 0, name)


def make_progress(stream: IO[str] | None = None) -> Progress:
    """`RichProgress` when `stream` (default stderr) is a terminal, else `LogProgress`."""
    stream = stream or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return RichProgress(stream)
    return LogProgress()
