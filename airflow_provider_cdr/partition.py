"""Write one day of CDR batches as Parquet files and commit them as that day's partition.

Layout, under a base location (a local path, or an ``ObjectStoragePath``)::

    {base}/date=YYYY-MM-DD/part-<run_id>-<nonce>-<nnnnn>.parquet
    {base}/date=YYYY-MM-DD/_manifest.json

The nonce (8 hex digits, new for every writer) keeps two attempts that share an
Airflow ``run_id`` (a retry) from writing objects of the same name. Batches are
written as they arrive, at most one row group (``row_group_rows``) buffered, in a
new file every ``file_rows`` rows; so memory does not grow with the day. Every
file has the declared schema, zstd compression, statistics, and timestamps as
INT64 microseconds adjusted to UTC (never INT96), so pandas, Spark and DuckDB read
instants. A day without records still commits: one zero-row file with the full
schema, and the manifest.

What a reader sees while a day is rewritten (e.g. by a rerun):

*Local disk.* The new version is staged in the hidden directory
``{base}/.cdr-staging/.date=YYYY-MM-DD.staging-<id>/`` with files named
``*.parquet.inprogress`` until the commit. It sits one level deeper than the partitions
because DuckDB's glob does not skip dot-directories: ``{base}/*/*.parquet`` would
otherwise count a staged (or just replaced) version beside the live one. Readers that
glob ``{base}/*/*.parquet`` (DuckDB) or read the dataset (pyarrow.dataset, Spark, which
skip dot-directories) see only the committed version; a ``**`` glob does not skip
dot-directories but finds no ``*.parquet`` there before the commit. The commit fsyncs the files, writes the manifest, renames the files to
``*.parquet`` and then swaps the staging directory with ``date=YYYY-MM-DD`` in one
``renameat2(RENAME_EXCHANGE)`` call: a reader sees the old version or the new one,
never a mix, and never an absent day. The old version, then under the staging name,
is deleted right after (a ``**`` glob can meet its files during that deletion). On a
platform without ``renameat2`` (not Linux, an old kernel, a filesystem that refuses
it) the swap is two renames, old aside then new in place: between them (microseconds)
the day is absent, never mixed; a crash there leaves the old version in
``.cdr-staging/.date=YYYY-MM-DD.previous-<id>``, which the next writer of that day puts back.
A writer killed mid-day leaves only its staging directory, which the next writer of
that day deletes; the committed version is never touched before the swap. Other days
are never touched.

*Object storage (S3 and others).* An object appears only when its upload completes,
so no half-written file is ever visible, but there is no atomic rename of a prefix.
The new files are written next to the old ones; the commit point is one PUT of
``_manifest.json`` naming the new files, after which the old files are deleted. So a
reader that globs ``date=YYYY-MM-DD/*.parquet`` may, during a rewrite, see the old
files plus some or all of the new ones (double counting that day), and after a crash
the finished files of the crashed run stay until the next writer of that day deletes
them (it deletes every ``part-*.parquet`` the current manifest does not list, at start
and at commit). A reader that opens ``_manifest.json`` and reads the files it lists
always sees exactly one complete version. An abort deletes the run's own objects and
cancels the upload in flight. Multipart uploads left by a killed process stay invisible
and are reclaimed by the bucket's lifecycle rule for incomplete uploads.

Two writers of the same day at once are not supported. On local disk a writer refuses
to start while another live writer's staging directory exists (detected with a lock
on that directory); on object storage nothing detects it.

The manifest holds the caller's ``manifest`` dict under ``"extraction"`` and nothing
else that could be secret; keys that name credentials (``key``, ``api_key``,
``password``, ``token``, ...) are redacted anyway, with a warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from airflow_provider_cdr.memory import release_unused
from airflow_provider_cdr.schema import CDR_SCHEMA, DICTIONARY_COLUMNS, SCHEMA_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
_SECRET_KEYS = frozenset(
    {"key", "api_key", "apikey", "password", "passwd", "secret", "token", "access_token", "authorization"}
)
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_IN_PROGRESS = ".inprogress"
STAGING_DIR = ".cdr-staging"


@dataclass(frozen=True)
class PartitionSummary:
    """What a commit made visible: one day's partition."""

    location: str
    day: date
    rows: int
    files: list[str]
    bytes: int
    manifest_path: str


@dataclass(frozen=True)
class _WrittenFile:
    name: str
    rows: int
    bytes: int


class _PartitionStore(Protocol):
    """Where a partition's files live until and after the commit; one per backend."""

    location: str
    manifest_path: str

    def open(self) -> None: ...
    def create(self, name: str) -> IO[bytes]: ...
    def finish(self, name: str, handle: IO[bytes]) -> int: ...
    def discard(self, name: str, handle: IO[bytes]) -> None: ...
    def commit(self, manifest: bytes, names: list[str]) -> None: ...
    def clean_up(self, names: list[str]) -> None: ...
    def abort(self, names: list[str]) -> None: ...


# --- local disk -------------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2, or None where there is none (not Linux, glibc < 2.28)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing directory entries in one step; False when the platform cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(first), None, str(second))


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check_local_base(base: Path) -> None:
    """Refuse a base that is a file or not writable, before anything is written."""
    existing = base
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"CDR partition base {base} is not a directory ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"CDR partition base {base} is not writable ({existing})")


def _not_writable(base: Path, err: OSError) -> OSError:
    """Root passes os.access() where the kernel still refuses (/proc, /sys, read-only mounts): say where."""
    return OSError(err.errno, f"CDR partition base {base} is not writable: {err.strerror}")


class _LocalStore:
    """Stages a day in a hidden directory and swaps it in atomically."""

    def __init__(self, base: Path, day_dir: str, token: str) -> None:
        _check_local_base(base)
        self.base = base
        self.day_dir = day_dir
        self.target = base / day_dir
        # Not in `base` itself: DuckDB globs dot-directories, so `{base}/*/*.parquet` would see them.
        self.staging_root = base / STAGING_DIR
        self.staging = self.staging_root / f".{day_dir}.staging-{token}"
        self.aside = self.staging_root / f".{day_dir}.previous-{token}"
        self.location = str(self.target)
        self.manifest_path = str(self.target / MANIFEST_NAME)
        self._lock: int | None = None

    def open(self) -> None:
        try:
            self.base.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _not_writable(self.base, err) from None
        self._restore_interrupted_swap()
        self._remove_stale_staging()
        try:
            self._make_staging()
        except OSError as err:
            raise _not_writable(self.base, err) from None
        # Held until the commit or abort (or the process's death): tells other writers we are live.
        self._lock = os.open(self.staging, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def create(self, name: str) -> IO[bytes]:
        # Closed by finish() or discard(), not here.
        return open(self.staging / (name + _IN_PROGRESS), "xb")

    def finish(self, name: str, handle: IO[bytes]) -> int:
        handle.flush()
        os.fsync(handle.fileno())
        size = handle.tell()
        handle.close()
        return size

    def discard(self, name: str, handle: IO[bytes]) -> None:
        handle.close()

    def commit(self, manifest: bytes, names: list[str]) -> None:
        with open(self.staging / MANIFEST_NAME, "xb") as handle:
            handle.write(manifest)
            handle.flush()
            os.fsync(handle.fileno())
        for name in names:
            os.rename(self.staging / (name + _IN_PROGRESS), self.staging / name)
        _fsync_directory(self.staging)
        self._swap()
        _fsync_directory(self.base)

    def clean_up(self, names: list[str]) -> None:
        self._release()
        # The old version now sits under the staging (or aside) name; the new one is live.
        for leftover in (self.staging, self.aside):
            shutil.rmtree(leftover, ignore_errors=True)
        self._remove_staging_root()

    def abort(self, names: list[str]) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self._release()
        self._remove_staging_root()

    def _make_staging(self) -> None:
        # A writer of another day may remove the (empty) staging root between our two mkdirs.
        for attempt in range(3):
            self.staging_root.mkdir(exist_ok=True)
            try:
                self.staging.mkdir()
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise

    def _remove_staging_root(self) -> None:
        """Leave the base holding only partitions; another day's writer may still be staging there."""
        with contextlib.suppress(OSError):
            self.staging_root.rmdir()

    def _swap(self) -> None:
        if not self.target.exists():
            os.rename(self.staging, self.target)
        elif not _exchange(self.staging, self.target):
            log.info("renameat2(RENAME_EXCHANGE) unavailable; swapping %s in two renames", self.target)
            os.rename(self.target, self.aside)
            os.rename(self.staging, self.target)

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing drops the flock
            self._lock = None

    def _leftovers(self, kind: str) -> list[Path]:
        """This day's staging or aside directories, also where earlier versions left them (in base)."""
        pattern = f".{self.day_dir}.{kind}-*"
        return [*self.base.glob(pattern), *self.staging_root.glob(pattern)]

    def _restore_interrupted_swap(self) -> None:
        asides = sorted(self._leftovers("previous"), key=lambda path: path.stat().st_mtime)
        if asides and not self.target.exists():
            log.warning("Restoring %s from %s, left by a swap that was interrupted", self.target, asides[-1])
            os.rename(asides.pop(), self.target)
        for aside in asides:
            shutil.rmtree(aside, ignore_errors=True)

    def _remove_stale_staging(self) -> None:
        for staging in self._leftovers("staging"):
            descriptor = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(
                    f"Another writer is writing {self.target} now (its staging directory {staging} is "
                    "locked); refusing to write the same day concurrently"
                ) from None
            finally:
                os.close(descriptor)
            log.info("Removing %s, left by a writer that did not finish", staging)
            shutil.rmtree(staging, ignore_errors=True)


# --- object storage ---------------------------------------------------------------------


class _ObjectStore:
    """Writes parts in place; the manifest PUT is the commit point."""

    def __init__(self, base: ObjectStoragePath, day_dir: str) -> None:
        self.partition = base / day_dir
        self.fs = self.partition.fs
        self.prefix = self.partition.path.rstrip("/")
        # as_uri() leaves out the conn_id that str() shows as userinfo (s3://conn@bucket/...).
        self.location = self.partition.as_uri()
        self.manifest_path = (self.partition / MANIFEST_NAME).as_uri()

    def open(self) -> None:
        # Parts of a run that crashed are not in the manifest: delete them before they confuse more readers.
        self._delete_unlisted(self._committed_names())

    def create(self, name: str) -> IO[bytes]:
        # The fsspec file itself (not ObjectStoragePath.open's wrapper): discard() needs it.
        handle: IO[bytes] = self.fs.open(f"{self.prefix}/{name}", "wb")
        return handle

    def finish(self, name: str, handle: IO[bytes]) -> int:
        size = handle.tell()
        handle.close()  # completes the upload: only now does the object appear
        return size

    def discard(self, name: str, handle: IO[bytes]) -> None:
        file: Any = handle
        file.discard()  # cancels the upload (s3fs aborts its multipart upload): no object appears
        file.closed = True  # else fsspec finishes the upload when the file object is collected

    def commit(self, manifest: bytes, names: list[str]) -> None:
        self.fs.pipe_file(f"{self.prefix}/{MANIFEST_NAME}", manifest)

    def clean_up(self, names: list[str]) -> None:
        self._delete_unlisted(set(names))

    def abort(self, names: list[str]) -> None:
        self._delete(names)

    def _names(self) -> list[str]:
        self.fs.invalidate_cache(self.prefix)
        try:
            listed = self.fs.ls(self.prefix, detail=False)
        except FileNotFoundError:
            return []
        return [posixpath.basename(path.rstrip("/")) for path in listed]

    def _committed_names(self) -> set[str]:
        try:
            manifest = json.loads(self.fs.cat_file(f"{self.prefix}/{MANIFEST_NAME}"))
        except FileNotFoundError:
            return set()
        return {entry["name"] for entry in manifest.get("files", [])}

    def _delete_unlisted(self, keep: set[str]) -> None:
        stale = [name for name in self._names() if name.startswith("part-") and name.endswith(".parquet")]
        self._delete([name for name in stale if name not in keep])

    def _delete(self, names: list[str]) -> None:
        if names:
            self.fs.rm([f"{self.prefix}/{name}" for name in names])


# --- the writer -------------------------------------------------------------------------


def _redact(value: Any) -> Any:
    """A copy with the values of credential-named keys replaced, at any depth."""
    if isinstance(value, Mapping):
        redacted = {}
        for key, item in value.items():
            if str(key).lower().replace("-", "_") in _SECRET_KEYS:
                log.warning("Redacting %r in the CDR partition manifest: it names a credential", key)
                redacted[key] = "***"
            else:
                redacted[key] = _redact(item)
        return redacted
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def _is_local(base: ObjectStoragePath | str | os.PathLike[str]) -> bool:
    if isinstance(base, ObjectStoragePath):
        return (base.protocol or "") in _LOCAL_PROTOCOLS
    return "://" not in str(base)


@dataclass
class _OpenFile:
    name: str
    handle: IO[bytes]
    writer: pq.ParquetWriter
    rows: int = 0


@dataclass
class _Buffer:
    """Rows waiting to fill a row group."""

    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0


class DayPartitionWriter:
    """Writes one day's record batches as Parquet and commits them as that day's partition.

    Use as a context manager: leaving the block without :meth:`commit` (e.g. on an
    exception) aborts, which removes what this writer staged and leaves the previous
    version of the day as it was.

    :param base: the dataset root: a local path (``str``/``PathLike``), or an
        ``ObjectStoragePath`` (``file``/``local`` protocols are written as local disk);
        a ``str`` with ``://`` is taken as an ``ObjectStoragePath`` without a connection.
    :param day: the partition's day.
    :param run_id: names the files; defaults to the UTC time the writer was made.
    """

    def __init__(
        self,
        base: ObjectStoragePath | str | os.PathLike[str],
        day: date,
        *,
        schema: pa.Schema = CDR_SCHEMA,
        compression: str = "zstd",
        row_group_rows: int = 65_536,
        file_rows: int = 1_000_000,
        run_id: str | None = None,
    ) -> None:
        if not isinstance(day, date) or isinstance(day, datetime):
            raise TypeError(f"day must be a datetime.date, not {type(day).__name__}")
        if row_group_rows < 1 or file_rows < 1:
            raise ValueError("row_group_rows and file_rows must be positive")
        self.day = day
        self.schema = schema
        self.run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self._token = f"{_UNSAFE_NAME_CHARS.sub('_', self.run_id)[:64]}-{secrets.token_hex(4)}"
        self._compression = compression
        self._row_group_rows = row_group_rows
        self._file_rows = file_rows
        day_dir = f"date={day.isoformat()}"
        self._store: _PartitionStore
        if _is_local(base):
            local = Path(base.path) if isinstance(base, ObjectStoragePath) else Path(base)
            self._store = _LocalStore(local, day_dir, self._token)
        else:
            remote = base if isinstance(base, ObjectStoragePath) else ObjectStoragePath(str(base))
            self._store = _ObjectStore(remote, day_dir)
        self._state = "new"
        self._buffer = _Buffer()
        self._file: _OpenFile | None = None
        self._written: list[_WrittenFile] = []

    @property
    def location(self) -> str:
        """Where the day's partition is (or will be once committed)."""
        return self._store.location

    @property
    def rows(self) -> int:
        """Rows accepted so far."""
        return sum(written.rows for written in self._written) + self._buffer.rows + self._file_rows_open()

    def __enter__(self) -> DayPartitionWriter:
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._state in ("new", "open"):
            if exc_type is None:
                log.warning("Leaving the writer of %s without commit(): aborting", self.location)
            self.abort()

    def write_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Append rows; a full row group goes to the current file at once."""
        self._open()
        if not batch.schema.equals(self.schema):
            raise ValueError(
                f"Batch schema differs from the partition schema:\n{batch.schema}\nexpected:\n{self.schema}"
            )
        batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        for part in batches:
            if part.num_rows:
                # Re-labelled (zero-copy) so the declared schema's metadata is what gets written.
                self._buffer.batches.append(pa.RecordBatch.from_arrays(part.columns, schema=self.schema))
                self._buffer.rows += part.num_rows
        self._drain(final=False)

    def commit(self, manifest: Mapping[str, Any] | None = None) -> PartitionSummary:
        """Flush, write the manifest and make this version the day's partition.

        :param manifest: what the caller knows about the extraction (query without the
            API key, counters...), stored under ``"extraction"``.
        """
        self._open()
        self._drain(final=True)
        self._close_file()
        if not self._written:
            self._start_file()  # an empty day is still a valid partition
            self._close_file()
        names = [written.name for written in self._written]
        self._store.commit(self._manifest_bytes(manifest or {}), names)
        self._state = "committed"
        try:
            self._store.clean_up(names)
        except Exception:
            # The new version is committed; what is left over is deleted by the next writer of the day.
            log.warning(
                "Committed %s but could not remove the previous version", self.location, exc_info=True
            )
        summary = PartitionSummary(
            location=self._store.location,
            day=self.day,
            rows=sum(written.rows for written in self._written),
            files=names,
            bytes=sum(written.bytes for written in self._written),
            manifest_path=self._store.manifest_path,
        )
        log.info("Committed %s: %d rows in %d files", summary.location, summary.rows, len(names))
        return summary

    def abort(self) -> None:
        """Remove what this writer wrote; the previous version of the day stays. Idempotent."""
        if self._state in ("committed", "aborted"):
            return
        was_open = self._state == "open"
        self._state = "aborted"
        if not was_open:
            return
        try:
            if self._file is not None:
                current, self._file = self._file, None
                with contextlib.suppress(Exception):
                    # Closed now, or pyarrow closes it when collected, writing into a discarded file.
                    current.writer.close()
                self._store.discard(current.name, current.handle)
        finally:
            self._store.abort([written.name for written in self._written])
        log.info("Aborted the write of %s", self.location)

    def _open(self) -> None:
        if self._state == "open":
            return
        if self._state != "new":
            raise RuntimeError(f"The writer of {self.location} is already {self._state}")
        self._store.open()
        self._state = "open"

    def _file_rows_open(self) -> int:
        return self._file.rows if self._file is not None else 0

    def _drain(self, *, final: bool) -> None:
        """Write full row groups (or, when final, everything) from the buffer."""
        while self._buffer.rows:
            room = min(self._row_group_rows, self._file_rows - self._file_rows_open())
            if self._buffer.rows < room and not final:
                return
            table = pa.Table.from_batches(self._buffer.batches, schema=self.schema)
            rows = min(room, table.num_rows)
            self._write_row_group(table.slice(0, rows))
            rest = table.slice(rows)
            self._buffer = _Buffer(rest.to_batches(), rest.num_rows)

    def _write_row_group(self, table: pa.Table) -> None:
        if self._file is None:
            self._start_file()
        assert self._file is not None
        self._file.writer.write_table(table, row_group_size=table.num_rows)
        self._file.rows += table.num_rows
        release_unused()  # the row group's buffers are free now: keep the peak from creeping up
        if self._file.rows >= self._file_rows:
            self._close_file()

    def _start_file(self) -> None:
        name = f"part-{self._token}-{len(self._written):05d}.parquet"
        handle = self._store.create(name)
        try:
            writer = pq.ParquetWriter(
                handle,
                self.schema,
                compression=self._compression,
                use_dictionary=[name for name in DICTIONARY_COLUMNS if name in self.schema.names],
                write_statistics=True,
                coerce_timestamps="us",
                allow_truncated_timestamps=False,
                use_deprecated_int96_timestamps=False,
                store_schema=True,
            )
        except BaseException:
            self._store.discard(name, handle)
            raise
        self._file = _OpenFile(name, handle, writer)

    def _close_file(self) -> None:
        if self._file is None:
            return
        current, self._file = self._file, None
        current.writer.close()
        size = self._store.finish(current.name, current.handle)
        self._written.append(_WrittenFile(current.name, current.rows, size))

    def _manifest_bytes(self, extraction: Mapping[str, Any]) -> bytes:
        from airflow_provider_cdr import __version__

        manifest = {
            "schema_version": SCHEMA_VERSION,
            "day": self.day.isoformat(),
            "rows": sum(written.rows for written in self._written),
            "files": [{"name": w.name, "rows": w.rows, "bytes": w.bytes} for w in self._written],
            "run_id": self.run_id,
            "committed_at": datetime.now(timezone.utc).isoformat(),
            "provider_version": __version__,
            "extraction": _redact(extraction),
        }
        return json.dumps(manifest, indent=2, ensure_ascii=False, default=str).encode("utf-8") + b"\n"


def read_manifest(partition: ObjectStoragePath | str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a committed partition directory (e.g. ``{base}/date=2024-07-31``)."""
    if isinstance(partition, ObjectStoragePath):
        text = (partition / MANIFEST_NAME).read_text()
    else:
        text = Path(partition, MANIFEST_NAME).read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result
