"""Writing one small table (a dimension snapshot, a day's summary) so that a reader never sees half of it."""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from airflow_provider_cdr.landing.location import is_local, local_path


def write_table(table: pa.Table, target: str, conn_id: str | None) -> str:
    """Write next to the target, then rename over it: a reader sees the old file or the new one."""
    if is_local(target):
        path = local_path(target)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            pq.write_table(table, temporary, compression="zstd")
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return path
    # Object stores have no rename; a single PUT is already all-or-nothing.
    remote = ObjectStoragePath(target, conn_id=conn_id)
    with remote.open("wb") as out:
        pq.write_table(table, out, compression="zstd")
    return str(remote)
