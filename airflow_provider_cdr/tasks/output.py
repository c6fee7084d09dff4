"""Where a dataset lives: a local directory or an object-storage URL (or ObjectStoragePath), and its Asset URI."""

from __future__ import annotations

import os
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import has_fs
from upath import UPath

from airflow_provider_cdr.api.errors import CDRConfigError
from airflow_provider_cdr.landing.location import is_local, local_path


def check_output_path(value: Any) -> str | UPath:
    """`value` as an output location, or CDRConfigError: a non-empty str, an ObjectStoragePath (any
    ``UPath``), or a ``pathlib`` path (as its str)."""
    if isinstance(value, UPath):
        return value  # ObjectStoragePath is a virtual subclass of UPath
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not value or not isinstance(value, str):
        raise CDRConfigError(
            f"output_path must be a non-empty path or URL, or an ObjectStoragePath; got {value!r}"
        )
    return value


def open_base(output_path: str | UPath, conn_id: str | None = None) -> str | UPath | ObjectStoragePath:
    """A plain absolute path for local disk (atomic renames), an ObjectStoragePath otherwise.

    A URL whose scheme no installed provider registers with Airflow (``abfs://`` without
    apache-airflow-providers-microsoft-azure) and no ``conn_id``: a plain ``UPath``, which fsspec
    configures from the store's own settings (adlfs: ``AZURE_STORAGE_*`` variables). Airflow
    itself would refuse the scheme.
    """
    if is_local(output_path):
        path = local_path(output_path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise CDRConfigError(f"output_path {path} exists and is not a directory")
        return path
    if isinstance(output_path, UPath):
        own = getattr(output_path, "conn_id", None)
        if conn_id and own and own != conn_id:
            raise CDRConfigError(
                f"output_path names connection {own!r} and output_conn_id {conn_id!r}: give one of them"
            )
        if conn_id and not own:
            return ObjectStoragePath(str(output_path), conn_id=conn_id)
        return cast(ObjectStoragePath, output_path)
    if urlsplit(output_path).password or urlsplit(output_path).username:
        raise CDRConfigError("output_path must not carry credentials; use output_conn_id")
    scheme = urlsplit(output_path).scheme
    if not has_fs(scheme):
        if conn_id:
            raise CDRConfigError(
                f"output_conn_id {conn_id!r} needs a provider that gives Airflow a {scheme}:// filesystem, "
                f"and none is installed; or leave output_conn_id unset and configure the {scheme}:// "
                "filesystem through its own settings (environment variables)"
            )
        return UPath(output_path)
    return ObjectStoragePath(output_path, conn_id=conn_id)


def asset_uri(output_path: str | UPath) -> str:
    """The dataset's URI for Airflow Assets and lineage: file:///abs/path or the storage URL.

    The same for a str and an ObjectStoragePath of one location; never a connection id.
    """
    if is_local(output_path):
        return "file://" + local_path(output_path)
    parts = urlsplit(str(output_path))
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path.rstrip("/"), "", ""))
