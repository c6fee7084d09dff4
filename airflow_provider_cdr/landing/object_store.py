"""One day's partition on object storage: parts written in place, one conditional manifest PUT as
the commit point, under a lease.

The protocol, for a writer W of day D (S3; see the end for other stores):

1. *Lease.* W takes ``{base}/.cdr-leases/date=D.json`` (``lease.DayLease``) or fails with
   ``PartitionBusyError``, having written and deleted nothing.
2. *Manifest seen.* W reads ``date=D/_manifest.json`` with its ETag (or learns there is none),
   then renews the lease: that renewal succeeds only if W held the lease the whole time, so the
   manifest W saw is one no other lease holder could read after W took over.
3. *Finish an earlier clean-up.* The manifest lists, in ``superseded_files``, the files of the
   version it replaced; any still there are deleted (a clean-up that failed after that commit).
4. *Parts.* W writes ``part-<run>-<nonce>-<n>.parquet`` objects; each appears only once its
   upload completes. The nonce is new for every writer, so W's names are W's alone.
5. *Commit.* W renews the lease (a writer that lost it stops here: ``LeaseLostError``), then PUTs
   the manifest with ``If-Match`` on the ETag seen in step 2 (``If-None-Match: *`` if there was
   none). If the store answered 412, another writer has committed since: W lost, and deletes
   only its own parts. If the PUT's answer was lost (timeout, dropped connection; s3fs then
   retries and that retry may be refused because the first attempt won), W reads the manifest
   back: its own bytes mean the commit happened; another manifest means W lost; the old one
   means the PUT is tried again, and if it keeps failing W fails with ``CommitUncertainError``
   and keeps its parts, because a PUT still in flight could yet make them the day.
6. *Clean-up.* If the lease still names W, every ``part-*.parquet`` the new manifest does not
   list is deleted (the old version, parts of crashed or beaten writers); otherwise only the
   replaced version's files. Deletions are checked by listing again (s3fs's bulk delete does not
   report per-key failures), retried, and if files remain W fails with
   ``CleanupIncompleteError``, which says the new version IS committed and names what is left.
7. W releases the lease (a conditional PUT marking it released).

Why the deletions in step 6 cannot remove a file a later manifest will list. A writer X can
commit only with a PUT conditional on the manifest X read in its step 2; once W's manifest is in
place, only a writer that read W's manifest can still commit. X reads the manifest while holding
the lease, and its step-2 renewal proves it held the lease from before that read until after it.
W's manifest exists only after W's step-5 renewal, and W's lease still naming W at step 6 means
nobody took the lease between that renewal and step 6: so no writer has both held the lease and
read W's manifest, and every part W does not list belongs to a writer that can no longer commit
(its PUT would be refused) or to none. Parts of a writer that has not started yet do not exist.
Files listed by a replaced manifest are dead for good: only the writer that made them lists
them, and it has committed already. The one thing W does not delete at its start is a part no
manifest lists: a writer whose lease expired may still be writing and could commit against the
manifest W saw (if W never commits); such parts go at the next commit.

What a reader sees: a reader that reads ``_manifest.json`` and the files it lists sees exactly
one complete version, always. A reader that globs ``date=D/*.parquet`` sees, during a rewrite,
the old files plus the new ones finished so far (the day counted twice) until step 6, and after a
crash or a failed clean-up the files left over until the next commit of that day.

Azure Blob Storage (adlfs) honours the same conditions, atomically (``conditional_azure``), and
gets the same protocol; a part's upload there is staged blocks that become a blob only when the
block list is committed at close, so a discarded part never appears.

Stores without conditional writes (any fsspec store but S3 and Azure here): the lease and the manifest are
checked by reading just before writing, so two writers starting at the same moment can both pass;
then the later commit wins and each manifest still names only its own complete files. Since a
racing writer could still commit, unlisted parts are never deleted there (only replaced
versions' files), and leftovers of crashed runs stay until deleted by hand (they are logged).
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import IO, Any

from upath import UPath

from airflow_provider_cdr.api.errors import CDRError
from airflow_provider_cdr.landing.conditional import (
    VersionConflict,
    Versioned,
    WriteUncertain,
    read_versioned,
    replace_version,
    supports_conditional_writes,
)
from airflow_provider_cdr.landing.lease import LEASE_DIR, DayLease, PartitionBusyError
from airflow_provider_cdr.landing.location import plain_url
from airflow_provider_cdr.landing.manifest import MANIFEST_NAME

log = logging.getLogger(__name__)

_DELETE_ATTEMPTS = 3
_DELETE_BACKOFF_S = 0.5


class CommitUncertainError(CDRError, RuntimeError):
    """The manifest PUT kept failing and the outcome is unknown: the task must fail, keeping its files."""


class CleanupIncompleteError(CDRError, RuntimeError):
    """The new version IS committed, but files of older versions or crashed runs could not be deleted."""


def _is_part(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


def _parse_manifest(version: Versioned | None, where: str) -> dict[str, Any] | None:
    if version is None:
        return None
    try:
        manifest: dict[str, Any] = json.loads(version.data)
    except ValueError:
        log.warning("The manifest %s is not JSON; it is replaced without its history", where)
        return None
    return manifest


def _listed(manifest: Mapping[str, Any] | None, key: str = "files") -> set[str]:
    if not manifest:
        return set()
    return {entry["name"] if isinstance(entry, Mapping) else str(entry) for entry in manifest.get(key, [])}


class ObjectPartitionStore:
    """Writes parts in place; the conditional manifest PUT, under the day's lease, is the commit point."""

    def __init__(self, base: UPath, day_dir: str, *, run_id: str, token: str, lease_ttl: timedelta) -> None:
        self.partition = base / day_dir
        self.fs = self.partition.fs
        self.prefix = self.partition.path.rstrip("/")
        self.location = plain_url(self.partition)  # never the conn_id (s3://conn@bucket/...)
        self.manifest_path = plain_url(self.partition / MANIFEST_NAME)
        self.conditional = supports_conditional_writes(self.fs)
        self.lease = DayLease(
            self.fs,
            f"{base.path.rstrip('/')}/{LEASE_DIR}/{day_dir}.json",
            location=self.location,
            day=day_dir.removeprefix("date="),
            run_id=run_id,
            holder=token,
            ttl=lease_ttl,
            conditional=self.conditional,
        )
        self._manifest_key = f"{self.prefix}/{MANIFEST_NAME}"
        self._seen: Versioned | None = None
        self._previous: dict[str, Any] | None = None
        self._uncertain = False
        self._last_delete_error: BaseException | None = None

    # --- the store protocol of DayPartitionWriter ---------------------------------------

    def open(self) -> None:
        self.lease.acquire()
        try:
            self._seen = read_versioned(self.fs, self._manifest_key)
            self.lease.renew()  # proves the lease was held while the manifest was read
            self._previous = _parse_manifest(self._seen, self.manifest_path)
            self._finish_earlier_clean_up()
        except BaseException:
            self.lease.release()
            raise

    def previous_manifest(self) -> Mapping[str, Any] | None:
        return self._previous

    def create(self, name: str) -> IO[bytes]:
        # The fsspec file itself (not UPath.open's wrapper): discard() needs it.
        handle: IO[bytes] = self.fs.open(f"{self.prefix}/{name}", "wb")
        return handle

    def finish(self, name: str, handle: IO[bytes]) -> int:
        size = handle.tell()
        handle.close()  # completes the upload: only now does the object appear
        return size

    def discard(self, name: str, handle: IO[bytes]) -> None:
        file: Any = handle
        try:
            file.discard()  # cancels the upload (s3fs aborts its multipart upload; adlfs never commits its blocks)
        finally:
            file.closed = True  # else fsspec finishes the upload when the file object is collected

    def commit(self, manifest: bytes, names: list[str]) -> None:
        self.lease.renew()
        try:
            replace_version(self.fs, self._manifest_key, manifest, self._seen, conditional=self.conditional)
        except VersionConflict as conflict:
            raise PartitionBusyError(
                f"Another writer committed {self.location} while this one was writing "
                f"({self._describe(conflict.current)}): this version is not committed, and only this "
                "writer's own files are deleted"
            ) from None
        except WriteUncertain as err:
            self._uncertain = True
            raise CommitUncertainError(
                f"Could not commit {self.location}: the PUT of {self.manifest_path} kept failing and "
                "the previous manifest is still there, which readers of the manifest see. This run's "
                f"{len(names)} files are kept (unlisted) because a PUT still in flight could yet make "
                "them the day; the next commit of this day deletes whatever its manifest does not list."
            ) from err

    def clean_up(self, names: list[str]) -> None:
        try:
            try:
                doomed = self._doomed_after_commit(set(names))
            except Exception as err:
                self._last_delete_error = err
                raise self._incomplete(names, sorted(_listed(self._previous) - set(names))) from err
            if remaining := self._delete_verified(doomed):
                raise self._incomplete(names, remaining) from self._last_delete_error
        finally:
            self.lease.release()

    def abort(self, names: list[str]) -> None:
        try:
            if self._uncertain:
                log.warning("Keeping %s of %s: the manifest PUT may still land", names, self.location)
            elif names and (remaining := self._delete_verified(set(names))):
                log.warning("Could not delete this run's %s; the next commit of the day will", remaining)
        finally:
            self.lease.release()

    # --- helpers ----------------------------------------------------------------------------

    def _doomed_after_commit(self, listed: set[str]) -> set[str]:
        """What the commit made dead: see the module docstring for why this is safe."""
        replaced = _listed(self._previous)
        unlisted = {name for name in self._names() if _is_part(name) and name not in listed}
        if self.conditional and self.lease.still_held():
            return (replaced | unlisted) - listed
        if unlisted - replaced:
            log.warning(
                "Not deleting %s in %s: no manifest lists them, but on this store another writer could "
                "still commit them. Delete them by hand once no run of this day is active.",
                sorted(unlisted - replaced),
                self.location,
            )
        return replaced - listed

    def _finish_earlier_clean_up(self) -> None:
        left = _listed(self._previous, "superseded_files") - _listed(self._previous)
        if left and (remaining := self._delete_verified(left)):
            log.warning("Could not delete %s, left by an earlier clean-up of %s", remaining, self.location)

    def _names(self) -> list[str]:
        self.fs.invalidate_cache(self.prefix)
        try:
            listed = self.fs.ls(self.prefix, detail=False)
        except FileNotFoundError:
            return []
        return [posixpath.basename(path.rstrip("/")) for path in listed]

    def _present(self, names: set[str] | list[str]) -> list[str]:
        return sorted(set(names) & set(self._names()))

    def _delete_verified(self, names: set[str]) -> list[str]:
        """Delete, list again to see what is really gone, retry; return what could not be deleted."""
        if not names:
            return []
        remaining = sorted(names)
        for attempt in range(_DELETE_ATTEMPTS):
            if attempt:
                time.sleep(_DELETE_BACKOFF_S * attempt)  # a back-off between retries
            try:
                if present := self._present(remaining):
                    self.fs.rm([f"{self.prefix}/{name}" for name in present])
                remaining = self._present(remaining)
            except Exception as err:
                self._last_delete_error = err
                log.warning("Deleting %d files in %s failed: %s", len(remaining), self.location, err)
                continue
            if not remaining:
                return []
            log.warning("%d files in %s are still there after being deleted", len(remaining), self.location)
        return remaining

    def _incomplete(self, names: list[str], remaining: list[str]) -> CleanupIncompleteError:
        return CleanupIncompleteError(
            f"{self.location} IS committed: {self.manifest_path} lists this run's {len(names)} files, "
            "and readers of the manifest see exactly that version. But files of earlier versions or "
            f"crashed runs could not be deleted: {', '.join(remaining) or '(could not list them)'}. "
            "Until they are gone, readers that glob *.parquet count them too; the next writer of this "
            "day deletes them."
        )

    @staticmethod
    def _describe(version: Versioned | None) -> str:
        manifest = _parse_manifest(version, "the winning manifest") or {}
        return f"run {manifest.get('run_id', '?')}, committed at {manifest.get('committed_at', '?')}"
