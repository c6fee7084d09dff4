"""Who may write one day of an object store now: a lease object with an expiry.

The lease is a small JSON object, ``{base}/.cdr-leases/date=YYYY-MM-DD.json``, naming the holder
(run id, writer token, host, pid) and when its hold ends. It is taken, renewed and released only
by conditional writes (``conditional.replace_version``): taking a free lease is ``If-None-Match:
*``, taking over a released or expired one is ``If-Match`` on the ETag of the stale lease that was
read, and a renewal is ``If-Match`` on the holder's own last write. So of two writers that see the
same free or stale lease, one wins and the other gets :class:`PartitionBusyError`; a holder whose
lease was taken over learns it at its next renewal (:class:`LeaseLostError`).

The hold lasts ``ttl`` (10 minutes by default) and a thread of the holder renews it every third of
that while the writer is open, so a live writer never loses it, and a writer that died (SIGKILL, a
lost machine) blocks its day for at most ``ttl``. A process that is alive but frozen (SIGSTOP, a
swap storm) for longer than ``ttl`` loses it. Expiry is judged on the taker's clock against the
time the holder wrote, so hosts' clocks must agree to well within ``ttl / 3``.

Leases stay in place when released (marked ``released``): deleting one could not be made
conditional everywhere, and a deleted lease would let a second writer in with ``If-None-Match``
while a late holder still believed it held the day. One small object per day ever written.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_cdr.api.errors import CDRError
from airflow_provider_cdr.landing.conditional import (
    VersionConflict,
    Versioned,
    WriteUncertain,
    read_versioned,
    replace_version,
)

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = timedelta(minutes=10)
LEASE_DIR = ".cdr-leases"
_TAKE_ATTEMPTS = 3


class PartitionBusyError(CDRError, RuntimeError):
    """Another live writer holds the day: this one wrote nothing and deleted nothing."""


class LeaseLostError(CDRError, RuntimeError):
    """This writer's lease was taken over after it expired: it must not commit."""


class LeaseUnavailableError(CDRError, RuntimeError):
    """The lease object could not be written at all (the store refuses or ignores conditional PUTs?)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class LeaseRecord:
    """What the lease object holds."""

    day: str
    run_id: str
    holder: str
    host: str
    pid: int
    acquired_at: datetime
    expires_at: datetime
    released: bool = False

    def is_live(self, now: datetime) -> bool:
        return not self.released and now < self.expires_at

    def describe(self) -> str:
        return f"run {self.run_id} (writer {self.holder} on {self.host}, pid {self.pid})"

    def to_bytes(self) -> bytes:
        fields: dict[str, Any] = asdict(self)
        fields["acquired_at"] = self.acquired_at.isoformat()
        fields["expires_at"] = self.expires_at.isoformat()
        return json.dumps(fields, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord | None:
        """The record, or None when the object is not one (then it counts as expired)."""
        try:
            fields = json.loads(data)
            known = {name: fields[name] for name in cls.__dataclass_fields__ if name in fields}
            known["acquired_at"] = datetime.fromisoformat(fields["acquired_at"])
            known["expires_at"] = datetime.fromisoformat(fields["expires_at"])
            return cls(**known)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


class DayLease:
    """One writer's lease on one day: acquire, renew (also from a thread), release."""

    def __init__(
        self,
        fs: Any,
        path: str,
        *,
        location: str,
        day: str,
        run_id: str,
        holder: str,
        ttl: timedelta,
        conditional: bool,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError(f"lease_ttl must be positive, got {ttl}")
        self.fs = fs
        self.path = path
        self.location = location
        self.ttl = ttl
        self.conditional = conditional
        self._record = LeaseRecord(day, run_id, holder, socket.gethostname(), os.getpid(), _now(), _now())
        self._current: Versioned | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._lost_error: LeaseLostError | None = None

    def acquire(self) -> None:
        """Take the lease, or raise PartitionBusyError naming the live holder."""
        for _ in range(_TAKE_ATTEMPTS):
            current = read_versioned(self.fs, self.path)
            stale = LeaseRecord.from_bytes(current.data) if current is not None else None
            if stale is not None and stale.is_live(_now()):
                raise self._busy(stale)
            now = _now()
            mine = replace(self._record, acquired_at=now, expires_at=now + self.ttl)
            try:
                self._write(mine, expected=current)
            except WriteUncertain as err:
                raise LeaseUnavailableError(
                    f"Could not take the lease on {self.location}: writing {self.path} kept failing "
                    f"({err.__cause__ or err}). The store must accept conditional PUTs (If-None-Match, "
                    "If-Match); if the lease was written after all, it expires at "
                    f"{mine.expires_at.isoformat()}."
                ) from err
            except VersionConflict as conflict:
                other = LeaseRecord.from_bytes(conflict.current.data) if conflict.current else None
                if other is not None and other.is_live(_now()):
                    raise self._busy(other) from None
                continue  # it changed, but to a lease that is not live: look again
            if current is not None and stale is None:
                log.warning("Replaced %s, which did not hold a lease record", self.path)
            elif stale is not None and not stale.released:
                log.warning(
                    "Took over the lease on %s from %s, which expired at %s without being released",
                    self.location,
                    stale.describe(),
                    stale.expires_at.isoformat(),
                )
            self._start_keeper()
            return
        raise PartitionBusyError(
            f"Could not take the lease on {self.location} ({self.path}): it changed hands "
            f"{_TAKE_ATTEMPTS} times while this writer tried"
        )

    def renew(self) -> None:
        """Push the expiry to now + ttl; LeaseLostError when someone else holds the lease now."""
        with self._lock:
            if self._current is None:
                raise self._lost_error or LeaseLostError(
                    f"This writer does not hold the lease on {self.location}"
                )
            self._write_over(replace(self._record, expires_at=_now() + self.ttl))

    def still_held(self) -> bool:
        """Whether the lease object still names this writer as its live holder."""
        with self._lock:
            if self._current is None:
                return False
            current = read_versioned(self.fs, self.path)
            record = self._parse(current) if current is not None else None
            return record is not None and record.holder == self._record.holder and not record.released

    def release(self) -> None:
        """Mark the lease released (conditionally: never over another holder's). Never raises."""
        self._stop_keeper()
        with self._lock:
            if self._current is None:
                return
            try:
                self._write_over(replace(self._record, expires_at=_now(), released=True))
            except LeaseLostError as err:
                log.warning("Not releasing %s: %s", self.path, err)
            except Exception:
                log.warning(
                    "Could not release the lease %s; it expires at %s",
                    self.path,
                    self._record.expires_at.isoformat(),
                    exc_info=True,
                )
            self._current = None

    def _write(self, record: LeaseRecord, *, expected: Versioned | None) -> None:
        self._current = replace_version(
            self.fs, self.path, record.to_bytes(), expected, conditional=self.conditional
        )
        self._record = record

    def _write_over(self, record: LeaseRecord) -> None:
        """Replace this writer's own last lease write; LeaseLostError if another holder's is there."""
        try:
            self._write(record, expected=self._current)
        except VersionConflict as conflict:
            if conflict.current is None or not self._is_mine(conflict.current):
                self._current = None
                self._lost_error = self._lost(conflict.current)
                raise self._lost_error from None
            # An earlier write of ours that landed after its answer was lost: build on it.
            self._current = conflict.current
            self._write(record, expected=self._current)

    def _is_mine(self, version: Versioned) -> bool:
        record = self._parse(version)
        return record is not None and record.holder == self._record.holder

    @staticmethod
    def _parse(version: Versioned) -> LeaseRecord | None:
        return LeaseRecord.from_bytes(version.data)

    def _busy(self, holder: LeaseRecord) -> PartitionBusyError:
        return PartitionBusyError(
            f"Another writer is writing {self.location} now: {holder.describe()} holds its lease "
            f"until {holder.expires_at.isoformat()} (renewed while it writes; {self.path}). Refusing "
            "to write the same day concurrently: retry once it has finished, or once its lease has "
            "expired if it died."
        )

    def _lost(self, current: Versioned | None) -> LeaseLostError:
        other = LeaseRecord.from_bytes(current.data) if current is not None else None
        who = f"{other.describe()} holds it until {other.expires_at.isoformat()}" if other else "it is gone"
        return LeaseLostError(
            f"Run {self._record.run_id} lost its lease on {self.location} ({who}): it was not "
            f"renewed within {self.ttl} (the process paused or lost the store) and was taken over. "
            "Not committing; only this writer's own files are deleted."
        )

    def _start_keeper(self) -> None:
        self._stop.clear()
        self._keeper = threading.Thread(
            target=self._keep_renewing, name=f"cdr-lease-{self._record.day}", daemon=True
        )
        self._keeper.start()

    def _stop_keeper(self) -> None:
        self._stop.set()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join()
        self._keeper = None

    def _keep_renewing(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLostError as err:
                log.error("%s", err)
                return
            except Exception:
                log.warning("Could not renew the lease %s; trying again", self.path, exc_info=True)
