"""Conditional writes on Azure Blob Storage (adlfs): the same guarantee as S3's conditional PUT.

Put Blob honours ``If-Match: <etag>`` and ``If-None-Match: *`` and checks the condition and stores
the blob in one step, so of two writers that read the same version at most one replaces it (the
other gets 412, or 409 for create-only). azure-storage-blob sends them for ``upload_blob(etag=...,
match_condition=IfNotModified)`` and ``upload_blob(overwrite=False)``, and adlfs's ``pipe_file``
passes those arguments through. The version tag is the blob's ETag; a read takes the bytes and the
ETag from one Get Blob answer, so they always belong together.

Checked against Azurite, whose check-and-store is one step too (tests/reliability/test_azure_store.py
races writers of one day through it). The azure packages are imported only when an adlfs
filesystem is in use: adlfs is the optional extra ``azure``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import fsspec.asyn

if TYPE_CHECKING:
    from airflow_provider_cdr.landing.conditional import Versioned

PROTOCOLS = frozenset({"abfs", "abfss", "az"})


def handles(fs: Any) -> bool:
    """True for adlfs's AzureBlobFileSystem (registered as abfs://, abfss:// and az://)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool(PROTOCOLS.intersection(protocols)) and hasattr(fs, "service_client")


def read_versioned(fs: Any, path: str) -> Versioned | None:
    """The blob and its ETag from one Get Blob, or None when there is no blob."""
    from azure.core.exceptions import ResourceNotFoundError

    from airflow_provider_cdr.landing.conditional import Versioned

    container, blob, _ = fs.split_path(path)

    async def get() -> Versioned:
        async with fs.service_client.get_blob_client(container=container, blob=blob) as client:
            stream = await client.download_blob()
            data = await stream.readall()
        return Versioned(data, stream.properties.etag)

    try:
        result: Versioned = fsspec.asyn.sync(fs.loop, get)
    except ResourceNotFoundError:
        return None
    return result


def put(fs: Any, path: str, data: bytes, expected: Versioned | None) -> Versioned:
    """Put Blob if the blob is still ``expected`` (None: no blob); raises if the store refuses."""
    from azure.core import MatchConditions

    from airflow_provider_cdr.landing.conditional import Versioned

    if expected is None:
        condition: dict[str, Any] = {"overwrite": False}  # If-None-Match: *
    elif expected.etag is None:
        raise ValueError(f"{path}: no ETag to make the write conditional on")
    else:
        condition = {"etag": expected.etag, "match_condition": MatchConditions.IfNotModified}
    answer = fs.pipe_file(path, data, **condition)
    return Versioned(data, answer["etag"])
