"""Where a dataset lives: a local directory or an object-storage URL, and its Asset URI."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import ObjectStoragePath

from airflow_provider_cdr.api.errors import CDRConfigError
from airflow_provider_cdr.landing.location import is_local, local_path


def open_base(output_path: str, conn_id: str | None = None) -> str | ObjectStoragePath:
    """A plain absolute path for local disk (atomic renames), an ObjectStoragePath otherwise."""
    if is_local(output_path):
        path = local_path(output_path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise CDRConfigError(f"output_path {path} exists and is not a directory")
        return path
    if urlsplit(output_path).password or urlsplit(output_path).username:
        raise CDRConfigError("output_path must not carry credentials; use output_conn_id")
    return ObjectStoragePath(output_path, conn_id=conn_id)


def asset_uri(output_path: str) -> str:
    """The dataset's URI for Airflow Assets and lineage: file:///abs/path or the storage URL."""
    if is_local(output_path):
        return "file://" + local_path(output_path)
    parts = urlsplit(output_path)
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path.rstrip("/"), "", ""))
