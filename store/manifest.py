"""The run manifest: a typed record of what a run planned, how it was invoked and what it holds.

``<results>/<run_id>/manifest.json`` is written by the driver only (atomically,
`store.runs.RunStore.write_manifest`) and read by resume, `status`, the invariant
and the report, all through `Manifest`. It carries what those readers need and
nothing they would have to recompute: the planned configs (id, tiling, crops,
tokens), which invocation planned which ids, the spec a plain resume uses, the
measurement settings and the tiling profile's numbers, the hosts and the counts.

Versions. ``version`` 2 is this layout. A manifest without ``version`` is the
previous layout (written before this record existed, or by hand): the same keys,
every one optional, and invocations without their planned ids. Both read into
`Manifest`; writing always writes the current version. A newer version than this
code knows is refused with one line.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tilesweep.errors import ResultsError, StorageError

if TYPE_CHECKING:  # the manifest reads without loading pyarrow
    from store.fs import ObjectPath

VERSION = 2
_FIX = "restore it from a copy, or measure into a new --run-id"


@dataclass(kw_only=True, frozen=True, slots=True)
class PlannedEntry:
    """What a run keeps per planned config: enough to count, label and find it without planning again."""

    config_id: str
    tiling: str  # "RxC"
    family: str = ""
    height: int | None = None
    width: int | None = None
    crops: int | None = None
    image_tokens: int | None = None
    sequence_tokens: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(kw_only=True, frozen=True, slots=True)
class Invocation:
    """One `run` or `fill` of the run: its spec, the config ids it planned, where it ran and, once done, what it did.

    ``environment`` is this invocation's own (the driver's argv, host, versions);
    the report credits a run to the invocations that measured configs, not to a
    later one that found nothing left to do.
    """

    command: str
    started_at: str
    spec: dict[str, Any] = field(default_factory=dict)
    planned: tuple[str, ...] | None = None  # None in manifests of the previous layout
    environment: dict[str, Any] = field(default_factory=dict)  # {} in manifests written before it was kept
    finished_at: str | None = None
    measured: int | None = None
    ok: int | None = None
    failed: int | None = None
    retries: int | None = None
    interrupted: bool | None = None
    remaining: int | None = None
    elapsed_s: float | None = None

    def measured_any(self) -> bool:
        """Whether this invocation measured at least one config (a finished no-op resume did not)."""
        return bool(self.measured)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if self.planned is not None:
            out["planned"] = list(self.planned)
        return out


@dataclass(kw_only=True, frozen=True, slots=True)
class Counts:
    """Configs of the run by outcome, from the parts when the last invocation ended."""

    planned: int
    ok: int
    failed: int
    missing: int

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(kw_only=True, frozen=True, slots=True)
class Manifest:
    version: int = VERSION
    run_id: str | None = None
    created_at: str = ""
    updated_at: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # what a plain `run --run-id` resumes with
    measurement: dict[str, Any] = field(default_factory=dict)  # settings that define its configs
    profile: dict[str, Any] = field(default_factory=dict)  # the tiling profile's numbers
    planned: dict[str, PlannedEntry] = field(default_factory=dict)
    invocations: tuple[Invocation, ...] = ()
    hosts: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)  # the latest invocation's that had configs to measure
    counts: Counts | None = None

    @property
    def profile_name(self) -> str | None:
        return self.profile.get("name")

    def last_invocation(self) -> Invocation | None:
        return self.invocations[-1] if self.invocations else None

    def measuring_invocations(self) -> tuple[Invocation, ...]:
        """The invocations that measured at least one config, oldest first."""
        return tuple(i for i in self.invocations if i.measured_any())

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION, "run_id": self.run_id, "created_at": self.created_at, "updated_at": self.updated_at,
            "spec": self.spec, "measurement": self.measurement, "profile": self.profile,
            "planned": {cid: e.to_json() for cid, e in self.planned.items()},
            "invocations": [i.to_json() for i in self.invocations], "hosts": self.hosts,
            "environment": self.environment, "counts": None if self.counts is None else self.counts.to_json(),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest") -> Manifest:
        """A manifest from its parsed JSON, current or previous layout.

        Raises:
            ResultsError: not an object, a newer version, or a field of the wrong shape (one line,
                naming `where` and the field).
        """
        if not isinstance(data, Mapping):
            raise ResultsError(f"{where} holds a JSON {type(data).__name__}, not an object; {_FIX}")
        version = data.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ResultsError(f"{where}: version {version!r} is not a manifest version; {_FIX}")
        if version > VERSION:
            raise ResultsError(f"{where} has manifest version {version}, newer than this tilesweep reads "
                               f"({VERSION}); upgrade tilesweep to read it")
        try:
            return cls(
                version=VERSION,
                run_id=_opt(data, "run_id", str),
                created_at=str(data.get("created_at") or ""),
                updated_at=_opt(data, "updated_at", str),
                spec=_obj(data, "spec"), measurement=_obj(data, "measurement"), profile=_obj(data, "profile"),
                planned={str(cid): _entry(cid, e) for cid, e in _obj(data, "planned").items()},
                invocations=tuple(_invocation(i) for i in _list(data, "invocations")),
                hosts=_obj(data, "hosts"), environment=_obj(data, "environment"),
                counts=_counts(data.get("counts")),
            )
        except (TypeError, ValueError) as exc:
            raise ResultsError(f"{where}: {exc}; {_FIX}") from None

    @classmethod
    def loads(cls, text: str, where: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{where} is not valid JSON ({exc.msg}, line {exc.lineno}); {_FIX}") from None
        return cls.from_json(data, where)


def plan_problems(manifest: Manifest, again: set[str]) -> list[str]:
    """One line for planned configs that no invocation plans, one for configs they plan that `planned` lacks.

    `again` is what the invocations planned: as they recorded it (`store.invariant`),
    or planned again from their specs (`orchestrator.plan.replan_problems`).
    """
    planned = set(manifest.planned)
    problems = []
    if planned - again:
        problems.append(f"manifest.json: {len(planned - again)} planned config(s) that no invocation's spec plans, "
                        f"e.g. {sorted(planned - again)[0]}")
    if again - planned:
        problems.append(f"manifest.json: {len(again - planned)} config(s) the invocations' specs plan are missing "
                        f"from `planned`, e.g. {sorted(again - planned)[0]}")
    return problems


def read(path: Path | ObjectPath) -> Manifest | None:
    """The manifest at `path` (local, or on object storage), or None when there is none (no run, or the
    results path is a file).

    Raises:
        ResultsError: it cannot be read, or is not a manifest.
        StorageError: the object store cannot be asked.
    """
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except StorageError:
        raise
    except OSError as exc:
        raise ResultsError(f"cannot read {path} ({exc.strerror}); fix its permissions") from None
    return Manifest.loads(text, str(path))


def _opt(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{key} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _obj(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{key} is a {type(value).__name__}, not an object")
    return dict(value)


def _list(data: Mapping[str, Any], key: str) -> Sequence[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{key} is a {type(value).__name__}, not a list")
    return value


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} {value!r} is not an integer")
    return value


def _entry(config_id: str, data: Any) -> PlannedEntry:
    if not isinstance(data, Mapping):
        raise TypeError(f"planned config {config_id} is a {type(data).__name__}, not an object")
    return PlannedEntry(
        config_id=str(data.get("config_id") or config_id), tiling=str(data.get("tiling") or ""),
        family=str(data.get("family") or ""), height=_int(data, "height"), width=_int(data, "width"),
        crops=_int(data, "crops"), image_tokens=_int(data, "image_tokens"),
        sequence_tokens=_int(data, "sequence_tokens"),
    )


def _invocation(data: Any) -> Invocation:
    if not isinstance(data, Mapping):
        raise TypeError(f"an invocation is a {type(data).__name__}, not an object")
    planned = data.get("planned")
    if planned is not None and not (isinstance(planned, list) and all(isinstance(c, str) for c in planned)):
        raise TypeError("an invocation's planned is not a list of config ids")
    elapsed = data.get("elapsed_s")
    interrupted = data.get("interrupted")
    return Invocation(
        command=str(data.get("command") or ""), started_at=str(data.get("started_at") or ""),
        spec=_obj(data, "spec"), planned=None if planned is None else tuple(planned),
        environment=_obj(data, "environment"),
        finished_at=_opt(data, "finished_at", str), measured=_int(data, "measured"), ok=_int(data, "ok"),
        failed=_int(data, "failed"), retries=_int(data, "retries"),
        interrupted=interrupted if isinstance(interrupted, bool) else None, remaining=_int(data, "remaining"),
        elapsed_s=float(elapsed) if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) else None,
    )


def _counts(data: Any) -> Counts | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise TypeError(f"counts is a {type(data).__name__}, not an object")
    values = {k: _int(data, k) for k in ("planned", "ok", "failed", "missing")}
    if any(v is None for v in values.values()):
        raise TypeError(f"counts {dict(data)} lack one of planned, ok, failed, missing")
    return Counts(**values)  # type: ignore[arg-type]
