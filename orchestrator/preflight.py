"""Checks a sweep passes before it starts Ray or writes a file.

Bad input must cost one line, not a half-started cluster: a model that cannot load,
a Ray address that does not answer and a results directory (or object store) that
cannot be written are all found here, in the driver, in seconds, and reported as one `UsageError`
(exit 2). None of these checks leaves anything behind, except that a hub model's
``config.json`` lands in the hub cache when the hub answers (the first file its
workers would fetch anyway).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.cluster import check_reachable, resolve_address
from orchestrator.spec import SweepSpec
from store.fs import ObjectPath, check_writable, location
from tilesweep.errors import UsageError

log = logging.getLogger(__name__)

# Written and fsynced by the probe: enough that a full disk refuses it.
_PROBE_BYTES = 64 * 1024
# How long the hub may take to accept a TCP connection before it counts as unreachable.
_HUB_REACH_TIMEOUT_S = 3.0


def check(spec: SweepSpec, *, default_host: bool = True) -> None:
    """Every pre-start check of `spec` (whose `run_id` is set).

    Args:
        default_host: the sweep runs `workers.ModelHost`, so its model can be
            checked here; a caller's own host class checks its own arguments.

    Raises:
        UsageError: the first problem found, in one line.
    """
    assert spec.run_id is not None, "the run id is chosen before the checks"
    check_address(spec.address)  # first: plain sockets, no imports
    if default_host:
        check_model(spec)
    check_results_writable(spec.results, spec.run_id)


def check_model(spec: SweepSpec) -> None:
    """The model resolves on the driver without loading it (remote code is refused without the flag).

    A registered name or a local checkpoint directory is checked by
    `workers.loading.check_source`. A hub id, which that passes on its form alone, is
    resolved here too (`check_hub_model`), so a typo or an offline machine costs one
    line instead of every worker failing to start.

    Raises:
        UsageError: see `workers.loading.check_source` and `check_hub_model`.
    """
    from workers.loading import check_source  # imports torch: only when a model is checked
    from workers.registry import MODELS

    check_source(spec.model, trust_remote_code=spec.trust_remote_code, revision=spec.revision, profile=spec.profile)
    if spec.model not in MODELS and not Path(spec.model).expanduser().exists():
        check_hub_model(spec)


def check_hub_model(spec: SweepSpec) -> None:
    """A hub id's ``config.json`` is at hand, and describes a model the workers can load.

    Offline (``HF_HUB_OFFLINE``, or the hub endpoint does not take a TCP connection in
    a few seconds) only the hub cache is read: `huggingface_hub.try_to_load_from_cache`,
    nothing downloaded. Online only ``config.json`` is fetched. Its directory then goes
    through `check_source` like a local checkpoint (model type, remote code, profile).
    This lives here, not in `workers.loading`, because only the driver should pay for a
    network check before anything starts.

    Raises:
        UsageError: offline and not cached; not on the hub (or private, or gated);
            no such revision; no config.json; or what `check_source` refuses.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub import errors as hub_errors

    from workers.loading import check_source
    from workers.registry import MODELS

    name, revision = spec.model, spec.revision
    at = f"{name!r}" + (f" at revision {revision!r}" if revision else "")
    offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _hub_unreachable(constants.ENDPOINT)
    if offline:
        cached = try_to_load_from_cache(name, "config.json", revision=revision)
        if not isinstance(cached, str):
            raise UsageError(
                f"model {at} is a hub id, the hub cannot be used ({offline}) and its config.json is not in the hub "
                f"cache ({constants.HF_HUB_CACHE}); download it where there is network (`hf download {name}`, then "
                f"copy the cache or set HF_HUB_CACHE), or pass a local checkpoint directory or a registered model "
                f"({', '.join(MODELS)})")
        config = cached
    else:
        try:
            config = _download_config(name, revision, at, MODELS)
        except hub_errors.LocalEntryNotFoundError:
            raise UsageError(f"model {at}: the hub stopped answering and its config.json is not in the hub cache "
                             f"({constants.HF_HUB_CACHE}); retry, or pass a local checkpoint directory") from None
    snapshot = str(Path(config).parent)
    try:
        check_source(snapshot, trust_remote_code=spec.trust_remote_code, profile=spec.profile)
    except UsageError as exc:  # the same refusal, naming the hub id instead of the cache directory
        raise UsageError(str(exc).replace(snapshot, name)) from None


def _download_config(name: str, revision: str | None, at: str, models: Iterable[str]) -> str:
    """Fetch only ``config.json`` of a hub model; its local path.

    Raises:
        UsageError: the hub says the model, the revision or the file does not exist, or refuses it.
        huggingface_hub.errors.LocalEntryNotFoundError: the hub could not be reached after all.
    """
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(name, "config.json", revision=revision, etag_timeout=_HUB_REACH_TIMEOUT_S)
    except hub_errors.GatedRepoError:
        raise UsageError(f"model {at} is gated on the hub; accept its terms on its page and log in "
                         "(`hf auth login` or HF_TOKEN), or pass a local checkpoint directory") from None
    except hub_errors.RepositoryNotFoundError:
        raise UsageError(f"model {at} is not on the hub (or is private: log in with `hf auth login` or set "
                         f"HF_TOKEN); check the id, or pass a local checkpoint directory or a registered model "
                         f"({', '.join(models)})") from None
    except hub_errors.RevisionNotFoundError:
        raise UsageError(f"model {name!r} has no revision {revision!r} on the hub; pass an existing branch, tag "
                         "or commit to --revision, or drop it") from None
    except hub_errors.LocalEntryNotFoundError:  # an EntryNotFoundError too: not "no such file"
        raise
    except hub_errors.EntryNotFoundError:
        raise UsageError(f"model {at} has no config.json on the hub, so it is not a transformers checkpoint; "
                         "pass a model repository that has one") from None
    except (hub_errors.HfHubHTTPError, OSError) as exc:
        raise UsageError(f"cannot read the config.json of model {at} from the hub ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]}); retry, or set HF_HUB_OFFLINE=1 to use the "
                         "hub cache") from None


def _hub_unreachable(endpoint: str) -> str | None:
    """Why the hub at `endpoint` cannot be used now (one TCP connect), or None when it answers.

    Behind a proxy (``HTTPS_PROXY``) a direct connect says nothing, so the hub counts as reachable.
    """
    parts = urlsplit(endpoint)
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=_HUB_REACH_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port}: {exc.strerror or exc}"


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

    Results on object storage (a URI, `store.fs`) are probed there instead: the
    endpoint answers, the bucket exists, credentials are found, and a probe object
    can be written and deleted (`store.fs.check_writable`).

    Raises:
        UsageError: a path component is a file, or the probe cannot be written; for a
            URI also an unknown scheme, a missing bucket, no credentials, an endpoint
            that does not answer within the client's connect timeout.
    """
    root = location(results)
    if isinstance(root, ObjectPath):
        check_writable(root / run_id)
        return
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
