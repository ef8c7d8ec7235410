"""SIGTERM and SIGHUP stop a sweep the way Ctrl-C does.

Clusters stop drivers with SIGTERM (``ray job stop``, spot preemption, Kubernetes)
and a closed terminal sends SIGHUP. Inside `stopping_on_signals` both raise
`Stopped`, a `KeyboardInterrupt`, so one path handles all three: the driver stops
between events, every finished config is already saved (parts are atomic), the
actors are killed, the manifest records the interruption, and the CLI prints the
resume command and exits with 128 + the signal's number (130 Ctrl-C, 143 SIGTERM,
129 SIGHUP), the shell's convention.

The handlers must be (re)installed after ``ray.init``, which sets its own SIGTERM
handler (``sys.exit``) in the driver; `reinstall` does that. After the first
signal, further SIGTERM/SIGHUP are ignored so that the clean-up finishes (a
second Ctrl-C still interrupts it, as in any Python program).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


class Stopped(KeyboardInterrupt):
    """The sweep was stopped by `signum` (SIGINT for Ctrl-C, SIGTERM or SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


# The signal the handler saw last in this block: a `Stopped` raised inside Ray's C++ code
# (in `ray.wait`) comes back as a plain KeyboardInterrupt, so the number is kept here too.
_received: int | None = None


def _signum(exc: BaseException | None) -> int:
    if isinstance(exc, Stopped):
        return exc.signum
    return _received if _received is not None else int(signal.SIGINT)


def exit_code(exc: BaseException | None) -> int:
    """128 + the signal's number: 143 for SIGTERM, 129 for SIGHUP, 130 for Ctrl-C."""
    return 128 + _signum(exc)


def signal_name(exc: BaseException | None) -> str:
    """``SIGTERM``, ``SIGHUP`` or ``Ctrl-C``: what stopped the sweep that raised `exc`."""
    signum = _signum(exc)
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _handler(signum: int, frame: Any) -> None:
    global _received
    _received = int(signum)
    for s in SIGNALS:  # the first signal starts the clean-up; later ones must not cut it short
        signal.signal(s, signal.SIG_IGN)
    raise Stopped(signum)


def reinstall() -> None:
    """Put the handlers back (after something, like ``ray.init``, replaced them); no-op off the main thread."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _handler)


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Stopped` in the block; the previous handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    global _received
    _received = None
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    reinstall()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
