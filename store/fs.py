"""Where results live: a local directory, or a prefix on object storage, behind one small layer.

A results location is a `pathlib.Path` (a local directory: the store keeps using
the operating system as it always did, temporary name, fsync, rename) or an
`ObjectPath`: a key on a `pyarrow.fs` filesystem, for ``--results`` given as a URI
(``s3://bucket/prefix``, ``gs://…``, or any scheme `pyarrow.fs.FileSystem.from_uri`
or fsspec resolves). `location` tells them apart; everything else in the store
calls the functions here (`entries`, `read_bytes`, `write_bytes`, `create_new`,
`move`, `delete`, `scan_parquet`, …) and never asks which one it has.

Object storage has no rename, so a file there is written whole or not at all: the
bytes are built in memory and sent as one object (one PUT; a multipart upload
above the client's part size, which also appears only when complete). Nothing is
ever written to a temporary name first, and the store never writes a part to a
name that exists (`store.runs.RunStore.write_part`). Moving aside is a copy and a
delete. Exclusive creation (the run lock, `store.lock`) is a conditional PUT
(``If-None-Match: *``) on S3, through boto3 because pyarrow has no conditional
write; on other object stores it is a write followed by a read-back (a small race
window, documented in `create_new`). Deletes on S3 go through boto3 too: pyarrow's
delete leaves an empty "directory" object behind, which would be a written trace.

Credentials never pass through here: pyarrow's S3 client, boto3 and polars each
read the usual environment variables and files (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/credentials``, instance
roles). A URI that carries a secret (``s3://KEY:SECRET@bucket``, or
``?secret_key=``) is refused without echoing it. The endpoint comes from
``AWS_ENDPOINT_URL`` or the URI's ``?endpoint_override=``.

Failures of the storage itself (unreachable, no such bucket, access denied, a
request that stalls past its timeout) raise `StorageError` with a short reason;
a file whose bytes arrived but do not parse is damage, reported as it is for a
local file.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tilesweep.errors import StorageError, UsageError

log = logging.getLogger(__name__)

# "scheme://", the scheme at least two characters (a Windows drive letter is a path).
_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://")
# The URI query options an s3:// location takes (pyarrow's names); every one is optional.
S3_OPTIONS = ("endpoint_override", "region", "scheme", "connect_timeout", "request_timeout", "anonymous")
# Query keys and URI parts that would carry a credential: refused, never echoed.
_SECRET_OPTIONS = ("access_key", "secret_key", "session_token", "role_arn", "external_id")
# Timeouts of every S3 client here (seconds): a connect that does not succeed within this
# fails (an unreachable endpoint costs about this, not minutes); a request during which
# no byte moves for `request_timeout` fails and is retried up to `_S3_ATTEMPTS` times.
S3_CONNECT_TIMEOUT_S = 2.0
S3_REQUEST_TIMEOUT_S = 20.0
_S3_ATTEMPTS = 3
# Schemes polars reads natively (with `storage_options`); others are read through pyarrow.
_POLARS_NATIVE = ("s3", "s3a", "gs", "gcs")


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a directory listing."""

    name: str
    path: Path | ObjectPath
    is_file: bool
    is_dir: bool


class Backend:
    """One object store location's clients: the pyarrow filesystem (made on first use), polars' options, boto3.

    `root_uri` is the URI as given without its query; `root_key` the key pyarrow
    gives it. A key below the root is shown as ``root_uri`` plus the rest.
    """

    def __init__(self, scheme: str, root_uri: str, root_key: str, make_fs: Callable[[], pafs.FileSystem], *,
                 storage_options: dict[str, str] | None = None, s3: dict[str, Any] | None = None):
        self.scheme = scheme
        self.root_uri = root_uri
        self.root_key = root_key
        self._make_fs = make_fs
        self._fs: pafs.FileSystem | None = None
        self.storage_options = storage_options
        self.s3 = s3  # endpoint, region and timeouts of an s3:// location (None for other schemes)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def fs(self) -> pafs.FileSystem:
        with self._lock:
            if self._fs is None:
                self._fs = _call(self._make_fs, self.root_uri)
            return self._fs

    @property
    def polars_native(self) -> bool:
        return self.scheme in _POLARS_NATIVE

    def uri(self, key: str) -> str:
        if key == self.root_key or key.startswith(self.root_key.rstrip("/") + "/"):
            return self.root_uri.rstrip("/") + key[len(self.root_key.rstrip("/")):]
        return f"{self.scheme}://{key.lstrip('/')}"

    def client(self) -> Any:
        """A boto3 S3 client with this location's endpoint, region and timeouts (S3 only).

        Raises:
            UsageError: boto3 is not installed.
        """
        assert self.s3 is not None
        with self._lock:
            if self._client is None:
                boto3, config = _boto3()
                self._client = boto3.client(
                    "s3", endpoint_url=self.s3["endpoint"], region_name=self.s3["region"],
                    config=config(connect_timeout=self.s3["connect_timeout"], read_timeout=self.s3["request_timeout"],
                                  retries={"max_attempts": _S3_ATTEMPTS, "mode": "standard"},
                                  **({"signature_version": _unsigned()} if self.s3["anonymous"] else {})))
            return self._client


class ObjectPath:
    """A key on an object store (or any `pyarrow.fs` filesystem), with the part of `pathlib.Path` the store uses.

    ``str()`` is its URI (``s3://bucket/prefix/run/part-….parquet``), which is also
    what polars names the file it read. A path that came from a listing remembers
    what the listing said (file or directory, size, time), as `os.DirEntry` does.
    """

    __slots__ = ("backend", "key", "_info")

    def __init__(self, backend: Backend, key: str, info: pafs.FileInfo | None = None):
        self.backend = backend
        self.key = key.rstrip("/") or key
        self._info = info

    def __str__(self) -> str:
        return self.backend.uri(self.key)

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.backend is self.backend and other.key == self.key

    def __hash__(self) -> int:
        return hash((id(self.backend), self.key))

    def __lt__(self, other: ObjectPath) -> bool:
        return str(self) < str(other)

    def __truediv__(self, name: str) -> ObjectPath:
        return ObjectPath(self.backend, f"{self.key}/{name}")

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.backend, self.key.rsplit("/", 1)[0]) if "/" in self.key else self

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def resolve(self) -> ObjectPath:
        return self

    def info(self, *, fresh: bool = False) -> pafs.FileInfo:
        if fresh or self._info is None:
            self._info = _call(lambda: self.backend.fs.get_file_info(self.key), str(self))
        return self._info

    def exists(self) -> bool:
        return self.info(fresh=True).type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def iterdir(self) -> list[ObjectPath]:
        selector = pafs.FileSelector(self.key, allow_not_found=True)
        infos = _call(lambda: self.backend.fs.get_file_info(selector), str(self))
        return [ObjectPath(self.backend, i.path, i) for i in infos]

    def glob(self, pattern: str) -> list[ObjectPath]:
        """``NAME-PATTERN`` (this directory) or ``*/NAME`` (one level down), the two forms the store uses."""
        if pattern.startswith("*/"):
            name = pattern[2:]
            found = []
            for d in self.iterdir():
                if d.is_dir():
                    found += [p for p in d.iterdir() if fnmatch.fnmatchcase(p.name, name) and p.is_file()]
            return found
        return [p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)]

    def read_bytes(self) -> bytes:
        def read() -> bytes:
            with self.backend.fs.open_input_stream(self.key) as f:
                return f.read()

        return _call(read, str(self))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing: an object store has no directories, a key's prefix exists once an object is under it."""


Location = Path | ObjectPath


def is_uri(results: object) -> bool:
    return isinstance(results, str) and _URI.match(results) is not None


def location(results: str | os.PathLike[str] | ObjectPath) -> Location:
    """The results location `results` names: a `Path` for a local path, an `ObjectPath` for a URI.

    A ``file://`` URI is a local path. Parsing touches no network: the clients
    connect on first use.

    Raises:
        UsageError: an unknown scheme, a URI without a bucket, a URI that carries
            credentials, an unknown or malformed query option, a client package missing.
    """
    if isinstance(results, (Path, ObjectPath)):
        return results
    if not isinstance(results, str):
        return Path(results)
    m = _URI.match(results)
    if m is None:
        return Path(results)
    scheme = m.group("scheme").lower()
    if scheme == "file":
        return Path(urlsplit(results).path)
    key = _cache_key(results)
    with _backends_lock:
        backend = _backends.get(key)
        if backend is None:
            backend = _backends[key] = _backend(results, scheme)
    return ObjectPath(backend, backend.root_key)


# One backend per location and environment, so every path of one results root shares its clients.
_backends: dict[tuple[str, ...], Backend] = {}
_backends_lock = threading.Lock()


def _cache_key(uri: str) -> tuple[str, ...]:
    # The AWS variables decide the S3 clients' credentials and endpoint: a change makes new clients.
    return (uri, *sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("AWS_")))


def _backend(uri: str, scheme: str) -> Backend:
    parts = urlsplit(uri)
    shown = _redacted(uri)
    if "@" in parts.netloc and scheme in ("s3", "s3a", "gs", "gcs"):
        raise UsageError(f"results URI {shown!r} carries credentials; take them out of the URI and give them as the "
                         "storage client expects (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                         "~/.aws/credentials)")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    secret = [k for k in query if k in _SECRET_OPTIONS]
    if secret:
        raise UsageError(f"results URI {shown!r} carries credentials ({', '.join(secret)}); take them out of the URI "
                         "and give them as the storage client expects (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                         "AWS_PROFILE, ~/.aws/credentials)")
    if scheme in ("s3", "s3a"):
        return _s3_backend(uri, parts, query, shown)
    root_uri = uri.split("?", 1)[0]
    try:
        fs, root_key = pafs.FileSystem.from_uri(uri)
        return Backend(scheme, root_uri, root_key, lambda: fs)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass  # not a scheme pyarrow knows: try fsspec
    except OSError as exc:  # pyarrow knows it but cannot open it (a library missing, a bad host)
        raise UsageError(f"cannot open results URI {shown!r} ({_reason(exc)}); check the URI, or use a local "
                         "directory") from None
    try:
        import fsspec
        from fsspec.core import url_to_fs

        fsspec_fs, root_key = url_to_fs(uri)
    except ImportError as exc:
        raise UsageError(f"results URI {shown!r} needs the package {exc.name!r}, which is not installed; "
                         f"pip install it, or use a local directory") from None
    except (ValueError, KeyError) as exc:
        known = ", ".join(sorted({"s3", "gs", "hdfs", "abfs", *fsspec.available_protocols()} - {"file", "local"})[:12])
        raise UsageError(f"results URI {shown!r}: unknown scheme {scheme!r} ({_reason(exc)}); use a local directory, "
                         f"s3://BUCKET/PREFIX, or a scheme pyarrow or fsspec knows ({known}, …)") from None
    return Backend(scheme, root_uri, root_key, lambda: pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs)))


def _s3_backend(uri: str, parts: Any, query: dict[str, str], shown: str) -> Backend:
    unknown = sorted(set(query) - set(S3_OPTIONS))
    if unknown:
        raise UsageError(f"results URI {shown!r}: unknown option {unknown[0]!r}; an s3:// URI takes "
                         f"{', '.join(S3_OPTIONS)} (e.g. s3://BUCKET/PREFIX?endpoint_override=HOST:PORT)")
    bucket = parts.netloc
    if not bucket:
        raise UsageError(f"results URI {shown!r} names no bucket; write s3://BUCKET/PREFIX")
    timeouts = {}
    for name, default in (("connect_timeout", S3_CONNECT_TIMEOUT_S), ("request_timeout", S3_REQUEST_TIMEOUT_S)):
        try:
            timeouts[name] = float(query.get(name, default))
            if not timeouts[name] > 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"results URI {shown!r}: {name} {query[name]!r} is not a positive number of seconds; "
                             f"e.g. {name}={default:g}") from None
    endpoint = query.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL_S3") or \
        os.environ.get("AWS_ENDPOINT_URL") or None
    if endpoint and "://" not in endpoint:
        endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
    region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    anonymous = query.get("anonymous", "").lower() in ("1", "true", "yes")
    s3 = {"bucket": bucket, "endpoint": endpoint, "region": region, "anonymous": anonymous, **timeouts}

    def make() -> pafs.FileSystem:
        where = region
        if where is None and endpoint is None:
            where = pafs.resolve_s3_region(bucket)  # as pyarrow's own from_uri does for AWS itself
            s3["region"] = where
        return pafs.S3FileSystem(
            region=where, endpoint_override=endpoint, anonymous=anonymous,
            connect_timeout=timeouts["connect_timeout"], request_timeout=timeouts["request_timeout"],
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=_S3_ATTEMPTS),
            # Open on first write, so an object smaller than one upload part is one PUT.
            allow_delayed_open=True, background_writes=False)

    options = {"connect_timeout": f"{timeouts['connect_timeout']:g}s"}
    if endpoint:
        options["aws_endpoint_url"] = endpoint
    if region:
        options["aws_region"] = region
    if anonymous:
        options["aws_skip_signature"] = "true"
    key = f"{bucket}/{parts.path.strip('/')}".rstrip("/")
    root_uri = f"s3://{key}"
    return Backend("s3", root_uri, key, make, storage_options=options, s3=s3)


def _redacted(uri: str) -> str:
    """`uri` with any userinfo and query values that could be secrets replaced by ``***``."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    netloc = ("***@" if "@" in parts.netloc else "") + netloc
    query = "&".join(f"{k}={'***' if k in _SECRET_OPTIONS else v}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def display(results: object) -> str:
    """How a results location is named in messages (a URI's secrets, if any, replaced)."""
    return _redacted(results) if is_uri(results) else str(results)


# ----- errors -----
def _reason(exc: BaseException) -> str:
    """A short, one-line reason from a storage client's exception (no request ids, no stack)."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\s*\(Request ID: [^)]*\)", "", text)
    text = re.sub(r"\bDetails: ", "", text)
    # pyarrow's S3 errors: "When <doing> key 'k' in bucket 'b': AWS Error <CODE> during <Op> operation: <why>";
    # the location is named beside the reason already.
    aws = re.search(r"AWS Error (\w+) during (\w+) operation: (.*)", text)
    if aws:
        text = f"{aws.group(1)} during {aws.group(2)}: {aws.group(3)}"
    # boto3's: "An error occurred (<Code>) when calling the <Op> operation[ (reached max retries: n)]: <why>".
    boto = re.search(r"An error occurred \((\w+)\) when calling the (\w+) operation(?: \([^)]*\))?: (.*)", text)
    if boto:
        text = f"{boto.group(1)} during {boto.group(2)}: {boto.group(3)}"
    return text[:200] or type(exc).__name__


def _call(fn: Callable[[], Any], where: str) -> Any:
    """`fn()`, with a failure of the storage raised as `StorageError` naming `where`."""
    try:
        return fn()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(where, _reason(exc)) from None


# ----- the operations the store uses -----
def entries(directory: Location) -> list[Entry]:
    """The names in `directory`, sorted ([] when it does not exist)."""
    if isinstance(directory, ObjectPath):
        return sorted((Entry(p.name, p, p.is_file(), p.is_dir()) for p in directory.iterdir()), key=lambda e: e.name)
    try:
        found = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [Entry(e.name, Path(e.path), e.is_file(), e.is_dir()) for e in found]


def stat_key(path: Location) -> tuple[Location, int, int]:
    """``(path, size, mtime_ns)``: a file is never rewritten in place, so equal keys are the same file."""
    try:
        if isinstance(path, ObjectPath):
            info = path.info()
            mtime = info.mtime_ns if info.mtime_ns is not None else -1
            return (path, info.size if info.size is not None else -1, mtime)
        stat = path.stat()
        return (path, stat.st_size, stat.st_mtime_ns)
    except OSError:
        return (path, -1, -1)


def read_bytes(path: Location) -> bytes:
    return path.read_bytes()


def read_schema(path: Location) -> pa.Schema:
    """The Parquet schema of `path`. Remote: the object is fetched first, so a storage failure is a
    `StorageError` and only bytes that do not parse are an `OSError`/`ArrowException` (damage)."""
    if isinstance(path, ObjectPath):
        return pq.read_schema(pa.BufferReader(path.read_bytes()))
    return pq.read_schema(path)


def read_table(path: Location) -> pa.Table:
    """The whole Parquet file at `path` (every page decoded); failures as in `read_schema`."""
    if isinstance(path, ObjectPath):
        return pq.read_table(pa.BufferReader(path.read_bytes()))
    return pq.read_table(path)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_table(path: Location, table: pa.Table, *, temp_prefix: str) -> None:
    """Write `table` as Parquet at `path`, whole (see `write_bytes`)."""
    if isinstance(path, ObjectPath):
        write_bytes(path, parquet_bytes(table), temp_prefix=temp_prefix)
    else:
        _atomic_local(path, lambda tmp: pq.write_table(table, tmp), temp_prefix)


def write_bytes(path: Location, data: bytes, *, temp_prefix: str) -> None:
    """Write `data` at `path` so that no reader ever sees part of it.

    Local: a temporary name (``<temp_prefix><pid>-<random>-<name>``) in the same
    directory, fsync, rename over `path`, fsync of the directory. Object storage:
    one object, sent whole (it replaces an object of that name as a whole).

    Raises:
        OSError: local; StorageError: object storage.
    """
    if isinstance(path, ObjectPath):
        def put() -> None:
            with path.backend.fs.open_output_stream(path.key) as out:
                out.write(data)

        _call(put, str(path))
    else:
        _atomic_local(path, lambda tmp: tmp.write_bytes(data), temp_prefix)


def _atomic_local(path: Path, write: Callable[[Path], object], temp_prefix: str) -> None:
    tmp = path.with_name(f"{temp_prefix}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    try:
        write(tmp)
        # The data must be on disk before the rename makes it visible.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def create_new(path: Location, data: bytes) -> bool:
    """Create `path` holding `data` only if no file of that name exists; True when this call created it.

    Local: a hard link from a private name, atomic, and the file is whole the moment it
    appears (``O_CREAT | O_EXCL`` where links are not supported). S3: a conditional PUT (``If-None-Match: *``),
    atomic on the server. Another object store: exists? then write, then read back
    and compare; two writers that both find the name free within one round trip
    may both write it, and only the later one reads its own bytes back (the earlier
    one returns False once it sees them; between its write and that read it
    believes it holds the name).

    Raises:
        OSError: local; StorageError: object storage.
    """
    if isinstance(path, Path):
        return _create_new_local(path, data)
    if path.backend.s3 is not None:
        client = path.backend.client()
        bucket, _, key = path.key.partition("/")

        def put() -> bool:
            try:
                client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except client.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("PreconditionFailed", "ConditionalRequestConflict") or \
                        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                    return False
                raise

        return _call_boto(put, str(path))
    if path.exists():
        return False
    write_bytes(path, data, temp_prefix="")
    return path.read_bytes() == data


def _create_new_local(path: Path, data: bytes) -> bool:
    # The bytes go to a private name first and are hard-linked to `path` (atomic, and it fails
    # when `path` exists), so nobody ever reads `path` half-written. Where hard links are not
    # supported, O_CREAT | O_EXCL and then the write.
    tmp = path.with_name(f"{path.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except (FileExistsError, FileNotFoundError):  # taken; or our private name was cleared by whoever took it
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def delete(path: Location) -> None:
    """Remove `path`; a name that is already gone is no error."""
    if isinstance(path, Path):
        path.unlink(missing_ok=True)
        return
    if path.backend.s3 is not None:
        client = path.backend.client()
        bucket, _, key = path.key.partition("/")
        _call_boto(lambda: client.delete_object(Bucket=bucket, Key=key), str(path))
        return
    try:
        _call(lambda: path.backend.fs.delete_file(path.key), str(path))
    except FileNotFoundError:
        pass


def move(source: Location, target: Location) -> None:
    """Rename `source` to `target` (local: atomic `os.replace`; object storage: a copy, then a delete)."""
    if isinstance(source, Path):
        os.replace(source, target)
        return
    assert isinstance(target, ObjectPath)
    _call(lambda: source.backend.fs.copy_file(source.key, target.key), str(source))
    delete(source)


def make_dirs(directory: Location) -> list[Path]:
    """Create `directory` and its missing parents (local only); returns those this call created, deepest last."""
    if isinstance(directory, ObjectPath):
        return []
    missing = []
    at = directory
    while not at.exists() and at.parent != at:
        missing.append(at)
        at = at.parent
    directory.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def fsync_dir(directory: Location) -> None:
    # Makes a rename itself durable; not every platform can open a directory. Object stores have none.
    if isinstance(directory, ObjectPath):
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def scan_parquet(files: Sequence[Location], **options: Any) -> Any:
    """One lazy polars frame over the Parquet `files` (all local or all on one store), `options` as
    `polars.scan_parquet` takes them.

    Local and the object stores polars reads itself (S3, GCS) are one `scan_parquet`
    over the paths or URIs (with the location's endpoint and region as
    ``storage_options``; polars finds the credentials where the other clients do).
    Any other filesystem is read through pyarrow, one file at a time, into memory.
    """
    import polars as pl

    if not files or isinstance(files[0], Path):
        return pl.scan_parquet([str(f) for f in files], **options)
    backend = files[0].backend  # type: ignore[union-attr]
    if backend.polars_native:
        return pl.scan_parquet([str(f) for f in files], storage_options=backend.storage_options, **options)
    name = options.pop("include_file_paths", None)
    frames = []
    for f in files:
        lf = pl.scan_parquet(pa.BufferReader(f.read_bytes()), **options)  # type: ignore[union-attr]
        frames.append(lf.with_columns(pl.lit(str(f)).alias(name)) if name else lf)
    return pl.concat(frames, how="vertical")


# ----- checks before a driver writes -----
def check_writable(directory: ObjectPath) -> None:
    """The object store answers, the bucket exists, credentials are at hand and an object can be written
    under `directory`: a probe object is written and deleted (nothing is left).

    Raises:
        UsageError: one line naming the location, the reason and the fix.
    """
    shown = str(directory)
    backend = directory.backend
    if backend.s3 is not None:
        _check_s3_credentials(backend, shown)
    try:
        if backend.s3 is not None and backend.s3["endpoint"]:
            _connect(backend.s3["endpoint"], backend.s3["connect_timeout"], shown)
        directory.iterdir()  # the endpoint answers, the bucket exists, listing is allowed
        probe = directory / f".tmp-probe-{secrets.token_hex(4)}"
        if not create_new(probe, b"\0" * 1024):
            raise StorageError(shown, "a probe object of a fresh random name already existed")
        delete(probe)
    except StorageError as exc:
        raise UsageError(f"cannot write results to {shown!r} ({exc.reason}); {_fix(exc.reason, backend)}") from None


def _connect(endpoint: str, timeout: float, where: str) -> None:
    """One TCP connect to `endpoint`: an endpoint that does not answer costs one connect timeout, not the
    client's retries of it. Behind a proxy a direct connect says nothing, so it is skipped there."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except OSError as exc:
        raise StorageError(where, f"cannot connect to the endpoint {parts.hostname}:{port} within {timeout:g}s "
                                  f"({exc.strerror or type(exc).__name__})") from None


def _fix(reason: str, backend: Backend) -> str:
    text = reason.lower()
    if "no_such_bucket" in text or "nosuchbucket" in text or ("bucket" in text and "not found" in text):
        return "create the bucket, or check its name in --results"
    if "access_denied" in text or "accessdenied" in text or "forbidden" in text or "403" in text:
        return "check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and their rights on the bucket"
    if backend.s3 is not None:
        endpoint = backend.s3["endpoint"] or "AWS S3"
        return (f"check that the endpoint ({endpoint}; AWS_ENDPOINT_URL or ?endpoint_override=) is reachable, or "
                "pass --results a local directory")
    return "check the URI and that the storage is reachable, or pass --results a local directory"


def _check_s3_credentials(backend: Backend, shown: str) -> None:
    assert backend.s3 is not None
    if backend.s3["anonymous"]:
        return
    boto3, _ = _boto3()
    if boto3.session.Session().get_credentials() is None:
        raise UsageError(f"no credentials for {shown!r}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                         "AWS_PROFILE with a profile in ~/.aws/credentials (or run where an instance role "
                         "provides them)")


def _boto3() -> tuple[Any, Any]:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise UsageError("results on s3:// need boto3 for the run lock and deletes (pyarrow has no conditional "
                         "write); pip install boto3, or pass --results a local directory") from None
    for name in ("boto3", "botocore"):  # "Found credentials in environment variables" on every client
        logging.getLogger(name).setLevel(logging.WARNING)
    return boto3, Config


def _unsigned() -> Any:
    from botocore import UNSIGNED

    return UNSIGNED


def _call_boto(fn: Callable[[], Any], where: str) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn()
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(where, _reason(exc)) from None
