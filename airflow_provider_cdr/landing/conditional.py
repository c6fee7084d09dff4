"""Replace one small object only if it is still the version read before: the building block of
the object-store lease and of the manifest commit.

S3 (s3fs) honours ``If-Match: <etag>`` and ``If-None-Match: *`` on PutObject, and applies them
atomically: of two writers that read the same version, at most one replaces it; so does Azure
Blob Storage through adlfs (``conditional_azure``). On other fsspec stores the version is checked
by reading just before the write, which leaves a window in which two writers can both pass
(``conditional=False``; the partition module says what that costs). Google Cloud Storage is one of
those: GCS applies ``ifGenerationMatch`` atomically, but the emulator the tests can run
(gcp-storage-emulator) ignores it, so it is not relied on untested.

A write whose answer is lost (a timeout, a dropped connection) may still have happened; s3fs and
botocore even retry it, and the retry is refused (412) because the first attempt succeeded. So
every failed write is settled by reading the object back: our bytes there mean it happened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import fsspec.asyn

from airflow_provider_cdr.landing import conditional_azure

log = logging.getLogger(__name__)

_CONDITIONAL_PROTOCOLS = frozenset({"s3", "s3a"})
_READ_ATTEMPTS = 3


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the version tag (S3's ETag) they were read or written under."""

    data: bytes
    etag: str | None


class VersionConflict(Exception):
    """Another version than the expected one is there: this write did not happen and never will."""

    def __init__(self, path: str, current: Versioned | None) -> None:
        super().__init__(f"{path} is no longer the version this writer read")
        self.current = current


class WriteUncertain(Exception):
    """The write kept failing while the object stayed as expected: it may still land later."""


def supports_conditional_writes(fs: Any) -> bool:
    """True for the stores whose writes honour If-Match / If-None-Match (S3 through s3fs, Azure through adlfs)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool(_CONDITIONAL_PROTOCOLS.intersection(protocols)) or conditional_azure.handles(fs)


def read_versioned(fs: Any, path: str) -> Versioned | None:
    """The object and its ETag from one consistent read, or None when there is no object."""
    if supports_conditional_writes(fs) and hasattr(fs, "_call_s3"):
        return _read_s3(fs, path)
    if conditional_azure.handles(fs):
        return conditional_azure.read_versioned(fs, path)
    return _read_generic(fs, path)


def _read_s3(fs: Any, path: str) -> Versioned | None:
    """One GetObject: bytes and ETag in the same answer."""
    bucket, key, _ = fs.split_path(path)

    async def get() -> Versioned:
        answer = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        try:
            data = await answer["Body"].read()
        finally:
            answer["Body"].close()
        return Versioned(data, answer.get("ETag"))

    try:
        result: Versioned = fsspec.asyn.sync(fs.loop, get)
    except FileNotFoundError:
        return None
    return result


def _read_generic(fs: Any, path: str) -> Versioned | None:
    """Through the fsspec file, whose details carry the store's version tag where it has one."""
    for attempt in range(_READ_ATTEMPTS):
        fs.invalidate_cache(path)  # a cached listing would give stale details
        try:
            with fs.open(path, "rb") as handle:
                details = getattr(handle, "details", {}) or {}
                data = handle.read()
        except FileNotFoundError:
            return None
        except OSError:
            if attempt == _READ_ATTEMPTS - 1:
                raise
            continue
        return Versioned(data, details.get("ETag"))
    raise AssertionError("unreachable")


def same_version(first: Versioned | None, second: Versioned | None) -> bool:
    if first is None or second is None:
        return first is second
    if first.etag is not None and second.etag is not None:
        return first.etag == second.etag
    return first.data == second.data


def replace_version(
    fs: Any, path: str, data: bytes, expected: Versioned | None, *, conditional: bool, attempts: int = 3
) -> Versioned:
    """Write ``data`` at ``path`` if the object there is still ``expected`` (None: no object).

    Returns the version now there, which is ours. Raises :class:`VersionConflict` when another
    version is there, :class:`WriteUncertain` when every attempt failed and the object is still
    ``expected``.
    """
    last_error: BaseException | None = None
    for _ in range(attempts):
        try:
            return _put(fs, path, data, expected, conditional=conditional)
        except Exception as err:
            last_error = err
            log.info("Writing %s failed (%s); reading it back to see what happened", path, err)
        try:
            current = read_versioned(fs, path)
        except Exception as err:
            raise WriteUncertain(f"{path}: the write failed and reading it back failed too") from err
        if current is not None and current.data == data:
            log.info("%s holds what this writer wrote: the write happened, its answer was lost", path)
            return current  # or a retry was refused because the first attempt had succeeded
        if not same_version(current, expected):
            raise VersionConflict(path, current) from last_error
    raise WriteUncertain(f"{path}: {attempts} writes failed, the object is unchanged") from last_error


def _put(fs: Any, path: str, data: bytes, expected: Versioned | None, *, conditional: bool) -> Versioned:
    if conditional and conditional_azure.handles(fs):
        return conditional_azure.put(fs, path, data, expected)
    if conditional:
        condition = {"IfMatch": expected.etag} if expected is not None else {"IfNoneMatch": "*"}
        answer = fs.pipe_file(path, data, **condition)
        etag = answer.get("ETag") if isinstance(answer, dict) else None
        if etag is None:
            written = read_versioned(fs, path)
            if written is None or written.data != data:
                raise WriteUncertain(f"{path}: written, but the store gave no version tag to check")
            return written
        return Versioned(data, etag)
    # No condition the store enforces: check just before writing (a window remains).
    current = read_versioned(fs, path)
    if not same_version(current, expected):
        raise VersionConflict(path, current)
    fs.pipe_file(path, data)
    return Versioned(data, None)
