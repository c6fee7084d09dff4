"""Is a dataset location local disk, and where on it: one answer for the operator, the writer and the DAGs.

Local disk gets atomic renames and a file lock (``local_store``); anything else goes through fsspec
(``object_store``). A location is local when it has no scheme, or ``file://`` (``local://`` for a
``UPath``).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from upath import UPath

LOCAL_PROTOCOLS = frozenset({"", "file", "local"})


def is_local(location: str | os.PathLike[str] | UPath) -> bool:
    """Whether `location` (a path, a URL, or a UPath such as Airflow's ObjectStoragePath) is local disk."""
    if isinstance(location, UPath):
        return (location.protocol or "") in LOCAL_PROTOCOLS
    text = os.fspath(location)
    return "://" not in text or text.startswith(("file://", "local://"))


def local_path(location: str | os.PathLike[str] | UPath) -> str:
    """The absolute local path of a local `location`."""
    if isinstance(location, UPath):
        return os.path.abspath(location.path)
    return os.path.abspath(os.fspath(location).removeprefix("file://").removeprefix("local://"))


def plain_url(location: UPath) -> str:
    """The URL of `location` without userinfo: where the data is, never a connection id.

    Airflow's ObjectStoragePath keeps its ``conn_id`` as the URL's user (``s3://conn@bucket/key``):
    in ``str()`` always, and in ``as_uri()`` too on Airflow 3.1 (where it is a ``CloudPath``; from
    3.2 it is a ``ProxyUPath``, whose ``as_uri()`` leaves it out). The same URL on every release.
    """
    parts = urlsplit(location.as_uri())
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
