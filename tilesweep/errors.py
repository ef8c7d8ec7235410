"""The project's exception types, all of them, in one place.

The CLI turns `UsageError` (and its subclasses) into one line on stderr and exit
2, `SweepError` into one line and exit 1; anything else is a bug and keeps its
traceback. So code that reports bad input raises `UsageError` (it is a
`ValueError`, so Python callers may catch either), never a bare `ValueError`.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user: the message names the value, what is allowed and the fix."""


class SpecError(UsageError):
    """One or more problems in a sweep spec; `problems` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class ResultsError(UsageError):
    """Results that cannot be read as asked: no such path or run, a damaged part, no rows."""


class RunLocked(ResultsError):
    """Another driver is writing the run (`store.lock`): the message names it (host, pid, since) and what to do."""


class StorageError(OSError):
    """The results' storage could not be used: unreachable, no such bucket, access denied, a request that timed out.

    Raised by `store.fs` for object storage (a local path raises the operating
    system's own `OSError`). ``where`` is the location (a URI, never a credential),
    ``reason`` the client's short reason, also in ``strerror``. The CLI prints it as
    one line with exit 2; mid-sweep the driver turns it into a `SweepError` (exit 1).
    """

    def __init__(self, where: str, reason: str):
        super().__init__(f"{reason} (at {where})")
        self.where = where
        self.reason = reason
        self.strerror = reason


class SweepError(RuntimeError):
    """The sweep cannot go on (no host could start, a part cannot be written); what is written stays valid."""


class GeometryMismatchError(RuntimeError):
    """The processor's crops or image tokens differ from what `tilings` predicts; the config becomes a failed row."""
