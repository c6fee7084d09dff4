"""Local disk: a day staged in a hidden directory, swapped in atomically under an exclusive flock.

How readers see a rewrite, and why the staging directory sits where it does, is in
:mod:`airflow_provider_cdr.landing.writer`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from airflow_provider_cdr.landing.lease import PartitionBusyError
from airflow_provider_cdr.landing.manifest import MANIFEST_NAME

log = logging.getLogger(__name__)

IN_PROGRESS = ".inprogress"
STAGING_DIR = ".cdr-staging"

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2, or None where there is none (not Linux, glibc < 2.28)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing directory entries in one step; False when the platform cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(first), None, str(second))


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check_local_base(base: Path) -> None:
    """Refuse a base that is a file or not writable, before anything is written."""
    existing = base
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"CDR partition base {base} is not a directory ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"CDR partition base {base} is not writable ({existing})")


def _not_writable(base: Path, err: OSError) -> OSError:
    """Root passes os.access() where the kernel still refuses (/proc, /sys, read-only mounts): say where."""
    return OSError(err.errno, f"CDR partition base {base} is not writable: {err.strerror}")


_HOLDER_MAX_BYTES = 64 * 1024  # a holder's record is ~150 bytes


class _DayLock:
    """An exclusive flock on ``{base}/.cdr-staging/.date=YYYY-MM-DD.lock``, held from open to commit or
    abort. The kernel drops it when the process dies, so a killed writer never blocks the day.

    The holder deletes the file when it is done (the base is left holding only partitions). A
    writer that opened the file just before that deletion locks an unlinked inode: it sees that
    the path no longer leads to the inode it locked, and starts again.
    """

    def __init__(self, path: Path, location: str) -> None:
        self.path = path
        self.location = location
        self._descriptor: int | None = None

    def acquire(self, holder: Mapping[str, Any]) -> None:
        for _ in range(3):
            # A writer of another day may remove the (empty) staging root between these two steps.
            self.path.parent.mkdir(exist_ok=True)
            try:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                refused = self._busy(descriptor)
                os.close(descriptor)
                raise refused from None
            if self._leads_to(descriptor):
                self._descriptor = descriptor
                self._record(holder)
                return
            os.close(descriptor)
        raise PartitionBusyError(f"Could not lock {self.path}: it changed hands 3 times while trying")

    def release(self) -> None:
        if self._descriptor is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still holding it: see the class docstring
        os.close(self._descriptor)
        self._descriptor = None

    def _leads_to(self, descriptor: int) -> bool:
        try:
            on_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(descriptor)
        return (on_path.st_dev, on_path.st_ino) == (held.st_dev, held.st_ino)

    def _record(self, holder: Mapping[str, Any]) -> None:
        """Who holds the lock, for the message of a writer it refuses; best effort (the disk may be full)."""
        assert self._descriptor is not None
        with contextlib.suppress(OSError):
            os.ftruncate(self._descriptor, 0)
            os.pwrite(self._descriptor, json.dumps(dict(holder)).encode(), 0)

    def _busy(self, descriptor: int) -> PartitionBusyError:
        holder = self._holder_of_lock(descriptor)
        who = (
            f"run {holder['run_id']} (pid {holder['pid']} on {holder['host']}, since {holder['since']})"
            if holder
            else "another process"
        )
        return PartitionBusyError(
            f"Another writer is writing {self.location} now: {who} holds the day's lock {self.path} "
            "until it commits, aborts or dies. Refusing to write the same day concurrently."
        )

    def _holder_of_lock(self, descriptor: int) -> dict[str, Any] | None:
        """What the holder recorded; it writes that just after taking the lock, so allow it a moment.

        Read through `descriptor`, the refused writer's own opening of the locked file, not the path:
        a holder that commits meanwhile deletes the path, and the name was then lost (seen once in a
        race of two writers), but the file stays readable while it is open here."""
        deadline = time.monotonic() + 0.5
        while True:
            try:
                holder: dict[str, Any] = json.loads(os.pread(descriptor, _HOLDER_MAX_BYTES, 0))
                if {"run_id", "pid", "host", "since"} <= set(holder):
                    return holder
            except (OSError, ValueError, TypeError):
                pass
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)


class LocalStore:
    """Stages a day in a hidden directory and swaps it in atomically."""

    def __init__(self, base: Path, day_dir: str, token: str, holder: Mapping[str, Any]) -> None:
        _check_local_base(base)
        self.base = base
        self.day_dir = day_dir
        self.target = base / day_dir
        # Not in `base` itself: DuckDB globs dot-directories, so `{base}/*/*.parquet` would see them.
        self.staging_root = base / STAGING_DIR
        self.staging = self.staging_root / f".{day_dir}.staging-{token}"
        self.aside = self.staging_root / f".{day_dir}.previous-{token}"
        self.location = str(self.target)
        self.manifest_path = str(self.target / MANIFEST_NAME)
        self.day_lock = _DayLock(self.staging_root / f".{day_dir}.lock", self.location)
        self._holder = holder
        self._lock: int | None = None
        self._previous: dict[str, Any] | None = None

    def open(self) -> None:
        try:
            self.base.mkdir(parents=True, exist_ok=True)
            self.day_lock.acquire(self._holder)
        except OSError as err:
            raise _not_writable(self.base, err) from None
        try:
            self._prepare()
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            self._release()
            raise

    def previous_manifest(self) -> Mapping[str, Any] | None:
        return self._previous

    def _prepare(self) -> None:
        """Under the day's lock: repair what a crashed writer left, read the live version, stage."""
        self._restore_interrupted_swap()
        self._remove_stale_staging()
        self._previous = self._read_live_manifest()
        try:
            self.staging.mkdir()  # its parent holds our lock file, so no other writer removes it now
        except OSError as err:
            raise _not_writable(self.base, err) from None
        # Also a lock on the staging directory itself: what writers of earlier releases look for.
        self._lock = os.open(self.staging, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _read_live_manifest(self) -> dict[str, Any] | None:
        try:
            manifest: dict[str, Any] = json.loads((self.target / MANIFEST_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("%s is not JSON; the new version is written without its history", self.manifest_path)
            return None
        return manifest

    def create(self, name: str) -> IO[bytes]:
        # Closed by finish() or discard(), not here.
        return open(self.staging / (name + IN_PROGRESS), "xb")

    def finish(self, name: str, handle: IO[bytes]) -> int:
        handle.flush()
        os.fsync(handle.fileno())
        size = handle.tell()
        handle.close()
        return size

    def discard(self, name: str, handle: IO[bytes]) -> None:
        # Closing flushes what is buffered, which fails again on a full disk; the file goes with the staging.
        with contextlib.suppress(OSError):
            handle.close()

    def commit(self, manifest: bytes, names: list[str]) -> None:
        with open(self.staging / MANIFEST_NAME, "xb") as handle:
            handle.write(manifest)
            handle.flush()
            os.fsync(handle.fileno())
        for name in names:
            os.rename(self.staging / (name + IN_PROGRESS), self.staging / name)
        _fsync_directory(self.staging)
        self._swap()
        _fsync_directory(self.base)

    def clean_up(self, names: list[str]) -> None:
        # The old version now sits under the staging (or aside) name; the new one is live.
        for leftover in (self.staging, self.aside):
            shutil.rmtree(leftover, ignore_errors=True)
        self._release()

    def abort(self, names: list[str]) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self._release()

    def _remove_staging_root(self) -> None:
        """Leave the base holding only partitions; another day's writer may still be staging there."""
        with contextlib.suppress(OSError):
            self.staging_root.rmdir()

    def _swap(self) -> None:
        if not self.target.exists():
            os.rename(self.staging, self.target)
        elif not _exchange(self.staging, self.target):
            log.info("renameat2(RENAME_EXCHANGE) unavailable; swapping %s in two renames", self.target)
            os.rename(self.target, self.aside)
            os.rename(self.staging, self.target)

    def _release(self) -> None:
        """Drop both locks (closing drops a flock), then the staging root if nothing else is in it."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        self.day_lock.release()
        self._remove_staging_root()

    def _leftovers(self, kind: str) -> list[Path]:
        """This day's staging or aside directories, also where earlier versions left them (in base)."""
        pattern = f".{self.day_dir}.{kind}-*"
        return [*self.base.glob(pattern), *self.staging_root.glob(pattern)]

    def _restore_interrupted_swap(self) -> None:
        asides = sorted(self._leftovers("previous"), key=lambda path: path.stat().st_mtime)
        if asides and not self.target.exists():
            log.warning("Restoring %s from %s, left by a swap that was interrupted", self.target, asides[-1])
            os.rename(asides.pop(), self.target)
        for aside in asides:
            shutil.rmtree(aside, ignore_errors=True)

    def _remove_stale_staging(self) -> None:
        for staging in self._leftovers("staging"):
            descriptor = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PartitionBusyError(
                    f"Another writer is writing {self.target} now (its staging directory {staging} is "
                    "locked); refusing to write the same day concurrently"
                ) from None
            finally:
                os.close(descriptor)
            log.info("Removing %s, left by a writer that did not finish", staging)
            shutil.rmtree(staging, ignore_errors=True)
