"""One day as the partition ``date=D`` of a Delta Lake table, replaced by one Delta commit.

Layout, under the table's root::

    {table}/date=YYYY-MM-DD/part-<run_id>-<nonce>-<nnnnn>.parquet
    {table}/_delta_log/<version>.json

The writer puts a day's parts where Delta keeps the partition's files. A Delta reader sees only
the files the log lists, so the parts are invisible until the commit: one transaction that
removes every file of ``date=D`` and adds the new parts (an overwrite with a partition
filter), with the day's manifest in the commit's metadata (``cdr.manifest``). Readers see the
old day or the new one, as one snapshot, on local disk and on object storage alike.

Concurrency is Delta's: a commit is a put-if-absent of the next log entry (on S3 a conditional
PUT, which deltalake >= 1.0 uses without a lock table), and a commit based on a version that
another writer has since changed for the same day conflicts and fails; that writer's abort then
deletes its parts. A writer killed before its commit leaves parts no version lists: invisible
to Delta readers, removed by ``VACUUM``. Files of replaced versions stay for time travel until a
``VACUUM`` outlives them, as with any Delta table.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa
from upath import UPath

from airflow_provider_cdr.api.errors import CDRConfigError
from airflow_provider_cdr.landing.location import is_local, local_path, plain_url

if TYPE_CHECKING:
    from deltalake.schema import Schema as DeltaSchema

log = logging.getLogger(__name__)

PARTITION_COLUMN = "date"
MANIFEST_KEY = "cdr.manifest"
TABLE_FORMATS = ("parquet", "delta")
MAX_COMMIT_ATTEMPTS = 10
_S3_PROTOCOLS = frozenset({"s3", "s3a"})


def require_deltalake() -> None:
    """Fail with how to install it when the ``deltalake`` package is missing (the ``delta`` extra)."""
    try:
        import deltalake  # noqa: F401
    except ImportError:
        raise CDRConfigError(
            "table_format='delta' needs the deltalake package: pip install 'airflow-provider-cdr[delta]'"
        ) from None


def delta_table_schema(schema: pa.Schema) -> pa.Schema:
    """The table's schema: the files' columns, then the partition column (kept in the log, not the files)."""
    return schema.append(pa.field(PARTITION_COLUMN, pa.date32(), nullable=False))


def check_delta_location(base: UPath | str | os.PathLike[str]) -> None:
    """Refuse a location deltalake is not set up for here (before anything is asked or written)."""
    if is_local(base):
        return
    protocol = base.protocol if isinstance(base, UPath) else urlsplit(os.fspath(base)).scheme
    if (protocol or "") not in _S3_PROTOCOLS:
        raise CDRConfigError(
            f"table_format='delta' writes to local disk and S3; {protocol}:// is not supported yet"
        )


def delta_location(base: UPath | str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """The table's URI for deltalake and the storage options it needs (credentials from the
    location's own file system, as Airflow's connection configured it). Local disk and S3."""
    check_delta_location(base)
    if is_local(base):
        return local_path(base), {}
    remote = base if isinstance(base, UPath) else UPath(str(base))
    return plain_url(remote).rstrip("/"), _s3_options(remote.fs)


def _s3_options(fs: Any) -> dict[str, str]:
    """deltalake's S3 options from an s3fs file system: its own keys, or those of the botocore
    session Airflow's S3 file system is built on; what is absent, deltalake finds itself
    (environment, instance role)."""
    client = dict(getattr(fs, "client_kwargs", None) or {})
    endpoint = getattr(fs, "endpoint_url", None) or client.get("endpoint_url")
    key, secret, token = getattr(fs, "key", None), getattr(fs, "secret", None), getattr(fs, "token", None)
    region = client.get("region_name")
    session = getattr(fs, "session", None)
    if session is not None and not key:
        credentials = _frozen_credentials(session)
        if credentials is not None:
            key, secret, token = credentials.access_key, credentials.secret_key, credentials.token
        region = region or session.get_config_variable("region")
    options = {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_SESSION_TOKEN": token,
        "AWS_REGION": region,
        "AWS_ENDPOINT_URL": endpoint,
    }
    if endpoint and urlsplit(endpoint).scheme == "http":
        options["AWS_ALLOW_HTTP"] = "true"
    return {name: str(value) for name, value in options.items() if value}


def _frozen_credentials(session: Any) -> Any:
    """A botocore or aiobotocore session's current credentials (aiobotocore's calls are coroutines)."""
    credentials = session.get_credentials()
    if inspect.iscoroutine(credentials):
        credentials = asyncio.run(credentials)
    if credentials is None:
        return None
    frozen = credentials.get_frozen_credentials()
    return asyncio.run(frozen) if inspect.iscoroutine(frozen) else frozen


class DeltaPartitionStore:
    """The writer's store (see writer._PartitionStore) for a day of a Delta table."""

    def __init__(self, base: UPath | str | os.PathLike[str], day_dir: str, schema: pa.Schema) -> None:
        require_deltalake()
        self.uri, self._options = delta_location(base)
        self.day = day_dir.removeprefix(f"{PARTITION_COLUMN}=")
        self.location = f"{self.uri}/{day_dir}"
        self.manifest_path = f"{self.uri}/_delta_log"
        self._day_dir = day_dir
        self._schema = delta_table_schema(schema)
        # None on local disk: parts are plain files there, fsynced before the commit.
        self._remote = None if is_local(base) else (base if isinstance(base, UPath) else UPath(str(base)))
        self._sizes: dict[str, int] = {}

    def open(self) -> None:
        if self._remote is None:
            Path(self.uri, self._day_dir).mkdir(parents=True, exist_ok=True)

    def previous_manifest(self) -> Mapping[str, Any] | None:
        return None  # the table's history is Delta's own (DESCRIBE HISTORY, DeltaTable.history())

    def create(self, name: str) -> IO[bytes]:
        if self._remote is None:
            return open(self._path(name), "wb")
        handle: IO[bytes] = self._remote.fs.open(self._path(name), "wb")
        return handle

    def finish(self, name: str, handle: IO[bytes]) -> int:
        size = handle.tell()
        if self._remote is None:
            handle.flush()
            os.fsync(handle.fileno())  # durable before the log can list it
        handle.close()
        self._sizes[name] = size
        return size

    def discard(self, name: str, handle: IO[bytes]) -> None:
        file: Any = handle
        with contextlib.suppress(Exception):
            if self._remote is None:
                file.close()
            else:
                file.discard()  # no object appears
                file.closed = True
        self._delete([name])

    def commit(self, manifest: bytes, names: list[str]) -> None:
        """One Delta transaction: the day's files out, these in, the manifest in the commit's metadata.

        A commit that another writer's commit beat (a conflict: Delta's optimistic concurrency) is
        made again on the version now current, up to MAX_COMMIT_ATTEMPTS times: replacing one day is
        the same transaction on any version, so a day's later commit is the day, whole.
        """
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import CommitProperties

        facts = json.loads(manifest)
        rows = {entry["name"]: int(entry["rows"]) for entry in facts["files"]}
        actions = [self._add_action(name, rows[name]) for name in names]
        metadata = CommitProperties(custom_metadata={MANIFEST_KEY: manifest.decode("utf-8")})
        for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
            try:
                self._commit_once(actions, metadata)
                return
            except CommitFailedError as conflict:
                if attempt == MAX_COMMIT_ATTEMPTS:
                    raise
                log.info("Delta commit of %s conflicted (%s); committing again", self.location, conflict)
                time.sleep(random.uniform(0, 0.05 * attempt))  # apart from the writer it met

    def _commit_once(self, actions: list[Any], metadata: Any) -> None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError
        from deltalake.schema import Schema
        from deltalake.transaction import create_table_with_add_actions

        schema: DeltaSchema = Schema.from_arrow(self._schema)
        options = self._options or None
        try:
            table = DeltaTable(self.uri, storage_options=options)
        except TableNotFoundError:
            try:
                create_table_with_add_actions(
                    self.uri,
                    schema,
                    actions,
                    mode="error",
                    partition_by=[PARTITION_COLUMN],
                    storage_options=options,
                    commit_properties=metadata,
                )
                return
            except Exception:  # another writer created the table first: replace the day in it, as below
                table = DeltaTable(self.uri, storage_options=options)
        table.create_write_transaction(
            actions,
            mode="overwrite",
            schema=schema,
            partition_by=[PARTITION_COLUMN],
            partition_filters=[(PARTITION_COLUMN, "=", self.day)],
            commit_properties=metadata,
        )

    def clean_up(self, names: list[str]) -> None:
        """Nothing: replaced files belong to older versions (time travel) until VACUUM."""

    def abort(self, names: list[str]) -> None:
        self._delete(names)

    def _add_action(self, name: str, rows: int) -> Any:
        from deltalake.transaction import AddAction

        return AddAction(
            path=f"{self._day_dir}/{name}",
            size=self._sizes[name],
            partition_values={PARTITION_COLUMN: self.day},
            modification_time=int(time.time() * 1000),
            data_change=True,
            stats=json.dumps({"numRecords": rows}),
        )

    def _path(self, name: str) -> str:
        """Where a part lives: a local path, or the key on the remote file system."""
        root = self.uri if self._remote is None else self._remote.path.rstrip("/")
        return f"{root}/{self._day_dir}/{name}"

    def _delete(self, names: list[str]) -> None:
        """Remove parts no version lists (best effort: a leftover is invisible, and VACUUM takes it)."""
        for name in names:
            try:
                if self._remote is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._path(name))
                else:
                    self._remote.fs.rm_file(self._path(name))
            except Exception:
                log.warning("Could not delete %s/%s; VACUUM will", self.location, name, exc_info=True)
