"""Write one day of CDR batches as Parquet files and commit them as that day's partition.

Layout, under a base location (a local path, or a ``UPath`` such as Airflow's ``ObjectStoragePath``)::

    {base}/date=YYYY-MM-DD/part-<run_id>-<nonce>-<nnnnn>.parquet
    {base}/date=YYYY-MM-DD/_manifest.json

The nonce (8 hex digits, new for every writer) keeps two attempts that share an
Airflow ``run_id`` (a retry) from writing objects of the same name. Batches are
written as they arrive, at most one row group (``row_group_rows``) buffered, in a
new file every ``file_rows`` rows; so memory does not grow with the day. A caller
waiting on its source may have half a row group or more written early (``flush_idle``),
so row groups hold between half and all of ``row_group_rows`` rows, except next to a
file's end. What is left at the commit, when it is many rows (``SPLIT_LAST_ROWS`` and half a
row group at least), is written as two halves encoded side by side on two threads, the second
into one more file: pyarrow encodes a row group on one core, and these rows are the part of
the day that no download overlaps. Every file has the declared schema, zstd compression, statistics, and
timestamps as INT64 microseconds adjusted to UTC (never INT96), so pandas, Spark and
DuckDB read instants. A day without records still commits: one zero-row file with the full
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
are never touched. A write that fails midway (a full disk, ENOSPC) aborts the same way:
the staging directory is deleted, the previous version stays, and the error raised is the
one that stopped the write, not one from the clean-up.

*Object storage (S3 and others).* An object appears only when its upload completes,
so no half-written file is ever visible, but there is no atomic rename of a prefix.
The new files are written next to the old ones; the commit point is one PUT of
``_manifest.json`` naming the new files (conditional on the manifest this writer saw),
after which the files no manifest lists any more are deleted. So a reader that globs
``date=YYYY-MM-DD/*.parquet`` may, during a rewrite, see the old files plus some or all
of the new ones (double counting that day), and after a crash or a failed clean-up the
files left over until the next commit of that day. A reader that opens
``_manifest.json`` and reads the files it lists always sees exactly one complete
version. An abort deletes the run's own objects and cancels the upload in flight.
Multipart uploads left by a killed process stay invisible and are reclaimed by the
bucket's lifecycle rule for incomplete uploads (on Azure, uncommitted blocks are dropped
by the service after a week). The protocol (a lease per day, the
conditional commit, what is deleted when and why that is safe) is in ``object_store``.

*Two writers of the same day at once.* At most one version is committed at a time and
the day is always exactly one complete version; the second writer fails with
:class:`PartitionBusyError` naming the holder, having deleted nothing of anyone else's.
On local disk the writer holds an exclusive ``flock`` on
``.cdr-staging/.date=YYYY-MM-DD.lock`` from open to commit or abort; the kernel drops it
when the process dies, so a killed writer never blocks the day. On object storage the
writer holds the day's lease (``lease``), taken and renewed by conditional PUTs; a writer
that died blocks its day until its lease expires (``lease_ttl``, 10 minutes by default).

The manifest also keeps ``complete`` (what :meth:`DayPartitionWriter.commit` was told),
``versions`` (when each of the last 20 versions was committed, by which run, how many
rows, complete or not, carried forward from the manifest it replaces) and
``superseded_files`` (the files of the version it replaced, for a later writer to delete
if this one's clean-up failed).

The manifest holds the caller's ``manifest`` dict under ``"extraction"`` and nothing
else that could be secret; keys that name credentials (``key``, ``api_key``,
``password``, ``token``, ...) are redacted anyway, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from airflow_provider_cdr.convert.schema import CDR_SCHEMA, DICTIONARY_COLUMNS, SCHEMA_VERSION
from airflow_provider_cdr.landing.delta_store import TABLE_FORMATS, DeltaPartitionStore
from airflow_provider_cdr.landing.lease import (
    DEFAULT_LEASE_TTL,
    LeaseLostError,
    LeaseUnavailableError,
    PartitionBusyError,
)
from airflow_provider_cdr.landing.local_store import LocalStore
from airflow_provider_cdr.landing.location import is_local, local_path
from airflow_provider_cdr.landing.manifest import (
    MANIFEST_NAME,
    MAX_VERSIONS,
    earlier_versions,
    file_names,
    read_manifest,
    redact_credentials,
)
from airflow_provider_cdr.landing.memory import release_unused
from airflow_provider_cdr.landing.object_store import (
    CleanupIncompleteError,
    CommitUncertainError,
    ObjectPartitionStore,
)

if TYPE_CHECKING:
    from types import TracebackType

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "MAX_VERSIONS",
    "CleanupIncompleteError",
    "CommitUncertainError",
    "DayPartitionWriter",
    "LeaseLostError",
    "LeaseUnavailableError",
    "PartitionBusyError",
    "PartitionSummary",
    "read_manifest",
]

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
SPLIT_LAST_ROWS = 16_384
"""Rows left at the commit (and half a row group at least) from which they are written as two halves
encoded side by side (`DayPartitionWriter._drain_last`); fewer encode in about 10 ms, not worth a file."""


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
    def previous_manifest(self) -> Mapping[str, Any] | None: ...
    def create(self, name: str) -> IO[bytes]: ...
    def finish(self, name: str, handle: IO[bytes]) -> int: ...
    def discard(self, name: str, handle: IO[bytes]) -> None: ...
    def commit(self, manifest: bytes, names: list[str]) -> None: ...
    def clean_up(self, names: list[str]) -> None: ...
    def abort(self, names: list[str]) -> None: ...


@dataclass
class _OpenFile:
    name: str
    handle: IO[bytes]
    writer: pq.ParquetWriter
    rows: int = 0

    def write(self, table: pa.Table) -> None:
        """`table` as one row group."""
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows


@dataclass
class _Buffer:
    """Rows waiting to fill a row group."""

    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0


class DayPartitionWriter:
    """Writes one day's record batches as Parquet and commits them as that day's partition.

    Use as a context manager: leaving the block without :meth:`commit` (e.g. on an
    exception) aborts, which removes what this writer staged and leaves the previous
    version of the day as it was. Entering raises :class:`PartitionBusyError` while
    another writer holds the day (nothing written, nothing deleted).

    :param base: the dataset root: a local path (``str``/``PathLike``), or an
        ``UPath`` such as Airflow's ``ObjectStoragePath`` (``file``/``local`` protocols are written as
        local disk); a ``str`` with ``://`` is taken as a ``UPath`` with fsspec's own credentials.
    :param day: the partition's day.
    :param run_id: names the files; defaults to the UTC time the writer was made.
    :param table_format: ``"parquet"`` (the Hive layout above) or ``"delta"``: the day as the partition
        ``date=D`` of a Delta Lake table at ``base``, replaced by one Delta commit (``delta_store``).
    :param lease_ttl: on object storage, how long the day's lease holds without renewal (it is
        renewed every third of that while the writer is open): a writer that died blocks its day
        for at most this long. Not used on local disk, where the lock dies with the process.
    """

    def __init__(
        self,
        base: UPath | str | os.PathLike[str],
        day: date,
        *,
        schema: pa.Schema = CDR_SCHEMA,
        compression: str = "zstd",
        row_group_rows: int = 65_536,
        file_rows: int = 1_000_000,
        run_id: str | None = None,
        lease_ttl: timedelta = DEFAULT_LEASE_TTL,
        table_format: str = "parquet",
    ) -> None:
        if not isinstance(day, date) or isinstance(day, datetime):
            raise TypeError(f"day must be a datetime.date, not {type(day).__name__}")
        if row_group_rows < 1 or file_rows < 1:
            raise ValueError("row_group_rows and file_rows must be positive")
        if lease_ttl <= timedelta(0):
            raise ValueError(f"lease_ttl must be positive, got {lease_ttl}")
        if table_format not in TABLE_FORMATS:
            raise ValueError(f"table_format must be one of {', '.join(TABLE_FORMATS)}, got {table_format!r}")
        self.day = day
        self.schema = schema
        self.run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self._token = f"{_UNSAFE_NAME_CHARS.sub('_', self.run_id)[:64]}-{secrets.token_hex(4)}"
        self._compression = compression
        self._row_group_rows = row_group_rows
        self._file_rows = file_rows
        day_dir = f"date={day.isoformat()}"
        self._store: _PartitionStore
        if table_format == "delta":
            self._store = DeltaPartitionStore(base, day_dir, schema)
        elif is_local(base):
            local = Path(local_path(base))
            self._store = LocalStore(local, day_dir, self._token, self._holder())
        else:
            remote = base if isinstance(base, UPath) else UPath(str(base))
            self._store = ObjectPartitionStore(
                remote, day_dir, run_id=self.run_id, token=self._token, lease_ttl=lease_ttl
            )
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
        if self._state not in ("new", "open"):
            return
        if exc_type is None:
            log.warning("Leaving the writer of %s without commit(): aborting", self.location)
            self.abort()
            return
        try:
            self.abort()
        except Exception:
            # The error that made us leave is the one to see (a full disk, a lost lease...).
            log.exception("Aborting the write of %s failed too", self.location)

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

    def flush_idle(self) -> None:
        """Write what is buffered as a row group now, if it is at least half a row group.

        For a caller that would otherwise wait (e.g. on the API): the encoding then runs in the
        wait instead of after the last page, when nothing else is left to overlap it. Half a row
        group at least, so that a slow source does not leave a file of tiny row groups.
        """
        if self._state == "open" and self._buffer.rows >= max(self._row_group_rows // 2, 1):
            self._drain(final=True)

    def commit(self, manifest: Mapping[str, Any] | None = None, *, complete: bool = True) -> PartitionSummary:
        """Flush, write the manifest and make this version the day's partition.

        :param manifest: what the caller knows about the extraction (query without the
            API key, counters...), stored under ``"extraction"``.
        :param complete: whether this version holds the whole day (False for a day landed
            before it ended); stored as the manifest's ``complete``.
        :raises PartitionBusyError: another writer committed the day meanwhile (object storage);
            this version is not committed, and the abort deletes its files.
        :raises LeaseLostError: this writer's lease expired and was taken over; nothing committed.
        :raises CommitUncertainError: the manifest PUT's outcome could not be learned; the abort
            keeps this writer's files, which the PUT may yet have made the day.
        :raises CleanupIncompleteError: committed, but older files could not all be deleted.
        """
        self._open()
        self._drain_last()
        self._close_file()
        if not self._written:
            self._start_file()  # an empty day is still a valid partition
            self._close_file()
        names = [written.name for written in self._written]
        manifest_bytes = self._manifest_bytes(manifest or {}, complete, self._store.previous_manifest())
        self._store.commit(manifest_bytes, names)
        self._state = "committed"
        self._store.clean_up(names)
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
                self._discard(current)
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

    def _drain_last(self) -> None:
        """Write what is left at the commit, the part of the day no download overlaps.

        pyarrow encodes a row group on one thread, so many rows left (the pages that came after the
        last idle flush: about 50,000 in a 100,000-record day) would keep one core busy while the
        other waits. They go as two halves instead: one into the file open (or a new one), the
        other into one more file, each encoded, closed and finished on its own thread.
        """
        rows = self._buffer.rows
        if rows < max(SPLIT_LAST_ROWS, self._row_group_rows // 2) or (
            self._file_rows_open() + rows > self._file_rows
        ):
            self._drain(final=True)
            return
        table = pa.Table.from_batches(self._buffer.batches, schema=self.schema)
        self._buffer = _Buffer()
        if self._file is None:
            self._start_file()
        assert self._file is not None
        first, second = table.slice(0, rows // 2), table.slice(rows // 2)
        extra = self._new_file(len(self._written) + 1)
        with ThreadPoolExecutor(1, thread_name_prefix="cdr-encode") as encoder:
            encoded = encoder.submit(self._write_whole, extra, second)
            try:
                self._file.write(first)
                self._close_file()
            finally:
                wait([encoded])  # the other half is done with its file, whichever way it went
                if encoded.exception() is not None:
                    self._discard(extra)
                # Raises the other half's error; else lists its file (an abort then deletes it too).
                self._written.append(encoded.result())
        release_unused()

    def _write_whole(self, file: _OpenFile, table: pa.Table) -> _WrittenFile:
        """`table` as the one row group of `file`, then the file finished (on the encoder thread)."""
        file.write(table)
        return self._finish(file)

    def _discard(self, file: _OpenFile) -> None:
        """A file that failed midway or is aborted: closed if it can be, and its upload cancelled.
        Never raises: the error to see is the one that stopped the write."""
        with contextlib.suppress(Exception):
            # Closed now, or pyarrow closes it when collected, writing into a discarded file.
            file.writer.close()
        try:
            self._store.discard(file.name, file.handle)
        except Exception:
            log.warning("Could not cancel the upload of %s", file.name, exc_info=True)

    def _write_row_group(self, table: pa.Table) -> None:
        if self._file is None:
            self._start_file()
        assert self._file is not None
        self._file.write(table)
        release_unused()  # the row group's buffers are free now: keep the peak from creeping up
        if self._file.rows >= self._file_rows:
            self._close_file()

    def _start_file(self) -> None:
        self._file = self._new_file(len(self._written))

    def _new_file(self, number: int) -> _OpenFile:
        """The day's file `number` (its place in the day), created and open for row groups."""
        name = f"part-{self._token}-{number:05d}.parquet"
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
        return _OpenFile(name, handle, writer)

    def _close_file(self) -> None:
        if self._file is None:
            return
        current, self._file = self._file, None
        self._written.append(self._finish(current))

    def _finish(self, file: _OpenFile) -> _WrittenFile:
        """`file`'s footer written and the file made durable (fsync) or uploaded."""
        file.writer.close()
        return _WrittenFile(file.name, file.rows, self._store.finish(file.name, file.handle))

    def _holder(self) -> dict[str, Any]:
        """Who this writer is, for the message of a writer its lock refuses."""
        return {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(),
        }

    def _manifest_bytes(
        self, extraction: Mapping[str, Any], complete: bool, previous: Mapping[str, Any] | None
    ) -> bytes:
        from airflow_provider_cdr import __version__

        rows = sum(written.rows for written in self._written)
        committed_at = datetime.now(timezone.utc).isoformat()
        this_version = {
            "committed_at": committed_at,
            "run_id": self.run_id,
            "rows": rows,
            "complete": complete,
        }
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "day": self.day.isoformat(),
            "rows": rows,
            "complete": complete,
            "files": [{"name": w.name, "rows": w.rows, "bytes": w.bytes} for w in self._written],
            "run_id": self.run_id,
            "committed_at": committed_at,
            "provider_version": __version__,
            "versions": [*earlier_versions(previous), this_version][-MAX_VERSIONS:],
            "superseded_files": file_names(previous),
            "extraction": redact_credentials(extraction),
        }
        return json.dumps(manifest, indent=2, ensure_ascii=False, default=str).encode("utf-8") + b"\n"
