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


def open_base(output_path: str | UPath, conn_id: str | None = None) -> str | ObjectStoragePath | UPath:
    """A plain absolute path for local disk (atomic renames), an ObjectStoragePath otherwise (or, for
    a scheme no installed provider registers, fsspec's own filesystem: see `_remote`)."""
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
    return _remote(output_path, conn_id)


def _remote(url: str, conn_id: str | None) -> ObjectStoragePath | UPath:
    """Airflow's ObjectStoragePath when an installed provider registers the URL's scheme (its
    connection, `conn_id`, gives the credentials); else fsspec's own filesystem for the scheme, with
    the credentials that library finds itself (gcsfs for ``gs://``: Application Default Credentials;
    adlfs for ``abfs://`` and ``az://``: ``AZURE_STORAGE_*`` variables).

    Airflow has no such fallback: an ObjectStoragePath of an unregistered scheme fails at its first
    use ("No filesystem registered for scheme gs"), with or without a connection id.
    """
    scheme = urlsplit(url).scheme
    if has_fs(scheme):
        return ObjectStoragePath(url, conn_id=conn_id)
    if conn_id:
        raise CDRConfigError(
            f"output_conn_id {conn_id!r} needs an Airflow filesystem for {scheme}://, and no installed "
            f"provider registers one (for gs://: apache-airflow-providers-google; for abfs://: "
            f"apache-airflow-providers-microsoft-azure). Install it, or leave "
            f"output_conn_id out to use the credentials the fsspec library for {scheme}:// finds itself."
        )
    return UPath(url)


def asset_uri(output_path: str | UPath) -> str:
    """The dataset's URI for Airflow Assets and lineage: file:///abs/path or the storage URL.

    The same for a str and an ObjectStoragePath of one location; never a connection id.
    """
    if is_local(output_path):
        return "file://" + local_path(output_path)
    parts = urlsplit(str(output_path))
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path.rstrip("/"), "", ""))
