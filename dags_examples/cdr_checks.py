"""Read a landed day partition back and check it, independently of the code that wrote it.

The operator already counts what it writes; this re-reads the committed files the way a
consumer would, so a partial swap, a stale file or a shifted day is caught before anyone
queries it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from airflow_provider_cdr.api.query import time_zone
from airflow_provider_cdr.days.day_window import DayWindow
from airflow_provider_cdr.landing.delta_store import MANIFEST_KEY, PARTITION_COLUMN, delta_location
from airflow_provider_cdr.landing.location import is_local, local_path
from airflow_provider_cdr.landing.writer import MANIFEST_NAME as MANIFEST


@dataclass(frozen=True)
class PartitionCheck:
    """What the files of one day say, next to what the manifest and the operator said."""

    day: str
    location: str
    parquet_rows: int
    parquet_files: int
    manifest_rows: int
    manifest_files: int
    unlisted_files: int
    reported_rows: int
    distinct_uuids: int
    outside_day: int
    null_timestamps: int

    def problems(self) -> list[str]:
        found = []
        if not self.parquet_rows == self.manifest_rows == self.reported_rows:
            found.append(
                f"row counts disagree: Parquet {self.parquet_rows}, manifest {self.manifest_rows}, "
                f"operator {self.reported_rows}"
            )
        if self.parquet_files != self.manifest_files:
            found.append(f"{self.parquet_files} of the {self.manifest_files} files the manifest lists exist")
        if self.unlisted_files:
            # A reader globbing the folder would count these too.
            found.append(f"{self.unlisted_files} Parquet files the manifest does not list")
        if self.distinct_uuids != self.parquet_rows:
            found.append(f"{self.parquet_rows - self.distinct_uuids} duplicate uuids")
        if self.outside_day:
            found.append(f"{self.outside_day} timestamps outside {self.day}")
        return found


def landed_manifest(
    records_path: str, day: date, conn_id: str | None = None, table_format: str = "parquet"
) -> dict[str, Any] | None:
    """The manifest of a committed day, or None: the manifest is written last, so no manifest, no day.
    For a Delta table: the manifest in the metadata of the commit that made the day's current files."""
    if table_format == "delta":
        table = delta_table(records_path, conn_id)
        return None if table is None else delta_day_manifest(table, day, delta_day_files(table, day))
    manifest = open_partition(f"{records_path}/date={day.isoformat()}", conn_id) / MANIFEST
    if not manifest.exists():
        return None
    landed: dict[str, Any] = json.loads(manifest.read_text())
    return landed


def is_landed(
    records_path: str, day: date, conn_id: str | None = None, table_format: str = "parquet"
) -> bool:
    """A day counts as landed once a complete version is committed (a partial one, landed with
    `allow_partial` before the day ended, says "complete": false and is landed again)."""
    manifest = landed_manifest(records_path, day, conn_id, table_format)
    return manifest is not None and manifest.get("complete", True) is not False


def day_has_settled(day: date, timezone: str, settle_period: timedelta, now: datetime) -> bool:
    """Whether `day` (account-local) has ended and settled at `now`."""
    return DayWindow(day, time_zone(timezone)).end + settle_period <= now


def days_to_reland(day: date, timezone: str, lookback_days: int, now: datetime) -> list[date]:
    """The days before `day` that its run lands again, so records that arrived late reach the lake.

    Only a timely run (started within a day of its day's end) re-lands: a catch-up or backfill run
    lands days whose late records are long in, and re-landing from runs that overlap would only
    make them race for the same day.
    """
    if now - DayWindow(day, time_zone(timezone)).end > timedelta(days=1):
        return []
    return [day - timedelta(days=back) for back in range(1, lookback_days + 1)]


def open_partition(location: str, conn_id: str | None = None) -> ObjectStoragePath:
    """The partition folder as one path type for local disk and object storage alike."""
    if is_local(location):
        location = "file://" + local_path(location)
    return ObjectStoragePath(location, conn_id=conn_id)


def read_landed_day(
    records_path: str,
    day: date,
    columns: list[str],
    conn_id: str | None = None,
    table_format: str = "parquet",
) -> pa.Table:
    """The `columns` of a committed day, from the files its manifest lists (what a manifest-aware
    reader reads; on object storage, files beside them may belong to a rewrite in progress), or
    from the Delta table's current snapshot."""
    if table_format == "delta":
        table = delta_table(records_path, conn_id)
        if table is None or not delta_day_files(table, day):
            raise FileNotFoundError(f"{records_path} holds no {day}: it has not been landed")
        return delta_day_rows(table, day, columns)
    folder = open_partition(f"{records_path}/date={day.isoformat()}", conn_id)
    manifest = folder / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"{folder} has no {MANIFEST}: {day} has not been landed")
    listed = [str((folder / entry["name"]).path) for entry in json.loads(manifest.read_text())["files"]]
    return pq.read_table(listed, filesystem=folder.fs, columns=columns)


def inspect_partition(
    landed: dict[str, Any], timezone: str, conn_id: str | None = None, table_format: str = "parquet"
) -> PartitionCheck:
    """Count rows, files, distinct uuids and out-of-day timestamps of the partition `landed` names.

    The files read are those the manifest lists (the commit point on object storage); files
    in the folder that it does not list are counted as a problem of their own. For a Delta
    table, the files are the day's in the current snapshot, and the manifest is its commit's.

    :param landed: the operator's XCom (``day``, ``location``, ``rows``, ...).
    :param timezone: the account's time zone, which defines the day's bounds.
    """
    day = date.fromisoformat(landed["day"])
    if table_format == "delta":
        records_path = landed["location"].rsplit("/", 1)[0]
        delta = delta_table(records_path, conn_id)
        if delta is None:
            raise FileNotFoundError(f"{records_path} is not a Delta table")
        present = delta_day_files(delta, day)
        manifest = delta_day_manifest(delta, day, present)
        if manifest is None:
            raise FileNotFoundError(f"no commit of {records_path} carries the manifest of {day}'s files")
        listed = [entry["name"] for entry in manifest["files"]]
        table = delta_day_rows(delta, day, ["uuid", "timestamp"])
        files_read = len(present & set(listed))
    else:
        folder = open_partition(landed["location"], conn_id)
        manifest = json.loads((folder / MANIFEST).read_text())
        listed = [entry["name"] for entry in manifest["files"]]
        present = {
            p.name for p in folder.iterdir() if p.name.startswith("part-") and p.name.endswith(".parquet")
        }
        files = [folder / name for name in listed if name in present]
        table = pq.read_table([p.path for p in files], filesystem=folder.fs, columns=["uuid", "timestamp"])
        files_read = len(files)
    window = DayWindow(day, time_zone(timezone))
    ts = table.column("timestamp")
    outside = pc.invert(pc.and_(pc.greater_equal(ts, window.start), pc.less(ts, window.end)))
    return PartitionCheck(
        day=landed["day"],
        location=landed["location"],
        parquet_rows=table.num_rows,
        parquet_files=files_read,
        manifest_rows=int(manifest["rows"]),
        manifest_files=len(listed),
        unlisted_files=len(present - set(listed)),
        reported_rows=int(landed["rows"]),
        distinct_uuids=pc.count_distinct(table.column("uuid")).as_py(),
        outside_day=pc.sum(outside).as_py() or 0,
        null_timestamps=ts.null_count,
    )


def delta_table(records_path: str, conn_id: str | None = None) -> Any:
    """The Delta table at `records_path` (credentials from `conn_id`, as the operator takes them), or None."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri, options = delta_location(
        records_path if is_local(records_path) else open_partition(records_path, conn_id)
    )
    try:
        return DeltaTable(uri, storage_options=options or None)
    except TableNotFoundError:
        return None


def delta_day_files(table: Any, day: date) -> set[str]:
    """Names of the day's files in the table's current snapshot."""
    return {uri.rsplit("/", 1)[1] for uri in table.file_uris([(PARTITION_COLUMN, "=", day.isoformat())])}


def delta_day_rows(table: Any, day: date, columns: list[str]) -> pa.Table:
    """The `columns` of the day in the table's current snapshot."""
    return table.to_pyarrow_dataset(partitions=[(PARTITION_COLUMN, "=", day.isoformat())]).to_table(
        columns=columns
    )


def delta_day_manifest(table: Any, day: date, current: set[str]) -> dict[str, Any] | None:
    """The manifest of the commit that made the day's `current` files (newest commits first), or None."""
    if not current:
        return None
    for commit in table.history():
        if MANIFEST_KEY not in commit:
            continue
        manifest: dict[str, Any] = json.loads(commit[MANIFEST_KEY])
        if manifest["day"] == day.isoformat() and {entry["name"] for entry in manifest["files"]} == current:
            return manifest
    return None


def summary(check: PartitionCheck) -> str:
    return json.dumps(asdict(check))
