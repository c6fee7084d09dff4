"""Is the configured time zone the account's? A day's records tell, so a wrong one fails the task.

The API reads `start_datetime`/`end_datetime` in the account's time zone. With another zone
configured, every run asks for the wrong instants: records of some hours come back although
they lie outside the day (they are dropped), and records of as many hours at the other end are
never asked for: lost, in every run, silently. Two signs give it away, and either fails the task
before the day is committed (the previous version stays):

* records whose UTC offset (the API stamps each with the account's) differs from the configured
  zone's offset at that instant: exact, whatever the records' spread over the day; and
* records outside the day beyond a small share (for an API whose offsets do not follow the
  account's zone, `check_offsets=False` leaves only this sign).

The message names the zones whose offsets fit what the records carry.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from airflow_provider_cdr.api.errors import CDRQueryError
from airflow_provider_cdr.convert.arrays import valid_mask, values
from airflow_provider_cdr.days.day_window import DayWindow

_MICROS = 1_000_000
_SAMPLES = 24  # mismatched records kept to find the zones that fit
_SUGGESTIONS = 6


class CDRTimeZoneMismatch(CDRQueryError):
    """The records show that the configured time zone is not the account's."""


def _offset_minutes(tz: zoneinfo.ZoneInfo, micros: int) -> int:
    moment = datetime.fromtimestamp(micros / _MICROS, timezone.utc).astimezone(tz)
    offset = moment.utcoffset() or timedelta(0)
    return int(offset.total_seconds() // 60)


def _offset_changes(tz: zoneinfo.ZoneInfo, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """The zone's UTC offsets over [start, end) (epoch micros): change instants and the offsets between.

    Probed hourly, then bisected to the second: a zone changes its offset at most a few times a year.
    """
    changes: list[int] = []
    offsets = [_offset_minutes(tz, start)]
    step = 3600 * _MICROS
    for left in range(start, end, step):
        right = min(left + step, end)
        if _offset_minutes(tz, right) == offsets[-1]:
            continue
        low, high = left, right
        while high - low > _MICROS:
            middle = (low + high) // 2
            low, high = (middle, high) if _offset_minutes(tz, middle) == offsets[-1] else (low, middle)
        changes.append(high)
        offsets.append(_offset_minutes(tz, high))
    return np.array(changes, dtype=np.int64), np.array(offsets, dtype=np.int64)


def zones_fitting(samples: list[tuple[int, int]]) -> list[str]:
    """IANA zones whose UTC offset at each sample's instant (epoch micros) is the sample's (minutes)."""
    fitting = []
    for name in sorted(zoneinfo.available_timezones()):
        if name.startswith(("Etc/", "SystemV/")) or "/" not in name:
            continue
        zone = zoneinfo.ZoneInfo(name)
        if all(_offset_minutes(zone, micros) == minutes for micros, minutes in samples):
            fitting.append(name)
    return fitting


@dataclass
class ZoneCheck:
    """Watches a day's batches for the signs of a wrong time zone (see the module docstring)."""

    window: DayWindow
    check_offsets: bool = True
    records: int = 0
    out_of_day: int = 0
    offset_mismatches: int = 0
    samples: list[tuple[int, int]] = field(default_factory=list)
    """(instant in epoch micros, UTC offset in minutes) of records whose offset did not fit."""

    def __post_init__(self) -> None:
        day = 24 * 3600 * _MICROS
        start = int(self.window.start.timestamp()) * _MICROS - day
        end = int(self.window.end.timestamp()) * _MICROS + day
        self._changes, self._offsets = _offset_changes(self.window.tz, start, end)

    def keep(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch's rows inside the day; counts those outside and those whose offset does not fit."""
        kept, outside = self.window.keep(batch)
        self.records += batch.num_rows
        self.out_of_day += outside
        if self.check_offsets:
            self._count_offsets(batch)
        return kept

    def _count_offsets(self, batch: pa.RecordBatch) -> None:
        stamps, sent = batch.column("timestamp"), batch.column("utc_offset_minutes")
        micros, minutes = values(stamps, np.int64), values(sent, np.int16).astype(np.int64)
        expected = self._offsets[np.searchsorted(self._changes, micros, "right")]
        wrong = minutes != expected
        for valid in (valid_mask(stamps), valid_mask(sent)):
            if valid is not None:
                wrong &= valid
        rows = np.flatnonzero(wrong)
        self.offset_mismatches += len(rows)
        room = _SAMPLES - len(self.samples)
        for row in rows[np.linspace(0, len(rows) - 1, min(room, len(rows))).astype(int)] if room else ():
            self.samples.append((int(micros[row]), int(minutes[row])))

    def problem(self, max_out_of_day_share: float) -> str | None:
        """Why the zone looks wrong, or None."""
        window = self.window
        share = self.out_of_day / max(self.records, 1)
        if not self.offset_mismatches and share <= max_out_of_day_share:
            return None
        signs = []
        if self.offset_mismatches:
            seen = sorted({minutes for _, minutes in self.samples})
            signs.append(
                f"{self.offset_mismatches} of {self.records} records carry a UTC offset "
                f"({', '.join(_offset_text(m) for m in seen)}) that {window.tz.key} does not have at their instant"
            )
        if share > max_out_of_day_share:
            signs.append(
                f"{self.out_of_day} of {self.records} records the API returned for {window.day} lie outside "
                f"that day in {window.tz.key} ({share:.1%}, more than the {max_out_of_day_share:.1%} allowed)"
            )
        fitting = zones_fitting(self.samples) if self.samples else []
        hint = f" Zones that fit the records: {', '.join(fitting[:_SUGGESTIONS])}." if fitting else ""
        return (
            f"The time zone {window.tz.key} is probably not the account's: {'; '.join(signs)}. The API reads "
            "dates in the account's zone, so hours at one end of every day would be lost. Set the "
            f"connection's `timezone` extra (or the task's `timezone`) to the contact centre's zone.{hint} "
            "Nothing was landed."
        )


def _offset_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def offset_hint(stamp: Any, timezone_name: str) -> str | None:
    """From one record's ``timestamp``: a hint when its UTC offset is not the configured zone's then.

    The API stamps records with the account's offset, so one record is enough to tell (the UI's
    connection test gets one). None when the stamp fits, or carries no offset to compare.
    """
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    sent = moment.utcoffset()
    if sent is None:
        return None
    minutes = int(sent.total_seconds() // 60)
    micros = int(moment.timestamp() * _MICROS)
    try:
        configured = _offset_minutes(zoneinfo.ZoneInfo(timezone_name), micros)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
    if configured == minutes:
        return None
    fitting = zones_fitting([(micros, minutes)])
    more = f" (and {len(fitting) - _SUGGESTIONS} more)" if len(fitting) > _SUGGESTIONS else ""
    fits = f" Zones that fit: {', '.join(fitting[:_SUGGESTIONS])}{more}." if fitting else ""
    return (
        f"But a record is stamped {_offset_text(minutes)}, which the connection's `timezone` "
        f"{timezone_name} is not at that instant ({_offset_text(configured)}): set it to the account's "
        f"zone, or days will be cut at the wrong hours.{fits}"
    )
