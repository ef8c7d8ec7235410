"""Checks a sweep passes before it starts Ray or writes a file.

Bad input must cost one line, not a half-started cluster: a model that cannot load,
a Ray address that does not answer and a results directory that cannot be written
are all found here, in the driver, in well under a second, and reported as one
`UsageError` (exit 2). None of these checks leaves anything behind.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path

from orchestrator.cluster import check_reachable, resolve_address
from orchestrator.spec import SweepSpec
from tilesweep.errors import UsageError

log = logging.getLogger(__name__)

# Written and fsynced by the probe: enough that a full disk refuses it.
_PROBE_BYTES = 64 * 1024


def check(spec: SweepSpec, *, default_host: bool = True) -> None:
    """Every pre-start check of `spec` (whose `run_id` is set).

    Args:
        default_host: the sweep runs `workers.ModelHost`, so its model can be
            checked here; a caller's own host class checks its own arguments.

    Raises:
        UsageError: the first problem found, in one line.
    """
    assert spec.run_id is not None, "the run id is chosen before the checks"
    if default_host:
        check_model(spec)
    check_address(spec.address)
    check_results_writable(spec.results, spec.run_id)


def check_model(spec: SweepSpec) -> None:
    """The model resolves without loading it (and remote code is refused without the flag).

    Raises:
        UsageError: see `workers.loading.check_source`.
    """
    from workers.loading import (
        check_source,  # imports torch: only when a model is checked
    )

    check_source(spec.model, trust_remote_code=spec.trust_remote_code, revision=spec.revision, profile=spec.profile)


def check_address(address: str | None) -> None:
    """A given Ray address (or ``RAY_ADDRESS``) answers, checked before anything else happens."""
    target = resolve_address(address)
    if target is not None:
        check_reachable(target)


def check_results_writable(results: str | Path, run_id: str) -> None:
    """The run directory can be created and written, probed without leaving a trace.

    The probe writes and fsyncs a small file in the run directory, or, when that
    does not exist yet, in its deepest existing ancestor (what creating it needs),
    then removes it. It runs as the driver's own user, so permissions, read-only
    file systems and full disks all show up as they would for the first part.

    Raises:
        UsageError: a path component is a file, or the probe cannot be written.
    """
    run_dir = Path(results) / run_id
    probe_at = run_dir
    while not probe_at.exists() and probe_at.parent != probe_at:
        probe_at = probe_at.parent
    if not probe_at.is_dir():
        where = "the results path" if probe_at == Path(results) else f"{str(probe_at)!r}, part of the results path,"
        raise UsageError(f"cannot write results to {str(run_dir)!r}: {where} is a file, not a directory; "
                         "pass --results a directory (it is created if missing)")
    try:
        fd, name = tempfile.mkstemp(prefix=".tmp-probe-", dir=probe_at)
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        fix = ("free some space or pass another --results" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
               else "pass --results a directory you can write to, or fix its permissions")
        raise UsageError(f"cannot write results to {str(run_dir)!r} ({reason} in {str(probe_at)!r}); {fix}") from None
    log.debug("results directory %s is writable (probed in %s)", run_dir, probe_at)
