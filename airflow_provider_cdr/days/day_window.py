"""A calendar day in the account's time zone: its instants, and its time slices for the API.

The API reads `start_datetime`/`end_datetime` as account-local wall-clock times at second
precision; whether either bound is inclusive, and of the whole second or only of its first
instant, is not documented (a record at 10:59:59.700 and `end_datetime=10:59:59`; a record at
exactly 00:00:00.000 and `start_datetime=00:00:00`). So each slice asks from one second before
its share of the day to one second after it: whichever way a server reads its bounds, every
instant of the day falls inside some slice. The caller keeps only records whose instant lies
inside the day (those of the two edge seconds were fetched on purpose and are not counted as
out of the day); the overlaps' duplicates are dropped by uuid. Slice boundaries never sit in a
DST gap or fold, where a local time names no instant or two.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from airflow_provider_cdr.api.query import DATETIME_FORMAT
from airflow_provider_cdr.convert.arrays import bool_array, valid_mask, values

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_SECOND = timedelta(seconds=1)
# Records this close outside the day are asked for on purpose (the slices' one-second reach, read
# up to the end of its second): not a sign of a wrong time zone.
_EDGE_SECONDS = 2


def _micros(instant: datetime) -> int:
    """Microseconds since the epoch: how the timestamp column stores an instant."""
    return (instant - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class DayWindow:
    """One local calendar day: [start, end) as UTC instants, plus its API slices."""

    day: date
    tz: ZoneInfo

    @property
    def start(self) -> datetime:
        return datetime.combine(self.day, time(0), tzinfo=self.tz).astimezone(timezone.utc)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.day + timedelta(days=1), time(0), tzinfo=self.tz).astimezone(
            timezone.utc
        )

    @property
    def hours(self) -> float:
        """23, 24 or 25 (DST days), or other lengths in unusual zones."""
        return (self.end - self.start).total_seconds() / 3600

    def keep(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
        """The batch's rows inside the day, and how many fell outside it unexpectedly.

        Rows of the seconds just before and after the day are fetched on purpose (the slices
        reach a second beyond it either side): dropped, not counted. A row whose timestamp
        could not be read is kept (the API returned it for this day); its raw value is in
        raw_values.
        """
        stamps = batch.column("timestamp")
        micros, valid = values(stamps, np.int64), valid_mask(stamps)
        start, end = _micros(self.start), _micros(self.end)
        inside = (micros >= start) & (micros < end)
        if valid is not None:
            inside |= ~valid
        if inside.all():
            return batch, 0
        margin = _EDGE_SECONDS * 1_000_000
        fetched_on_purpose = ((micros >= start - margin) & (micros < start)) | (
            (micros >= end) & (micros < end + margin)
        )
        edge = int((fetched_on_purpose if valid is None else fetched_on_purpose & valid).sum())
        kept = batch.filter(bool_array(inside))
        return kept, batch.num_rows - kept.num_rows - edge

    def slices(self, count: int) -> list[dict[str, str]]:
        """`count` (or fewer, near DST changes) API windows covering the whole day, each reaching a second
        beyond its share either side."""
        if count < 1:
            raise ValueError(f"slices must be at least 1, got {count}")
        marks = [datetime.combine(self.day, time(0))]
        for k in range(1, count):
            local = datetime.combine(self.day, time(0)) + timedelta(minutes=round(k * 24 * 60 / count))
            if _names_one_instant(local, self.tz) and local > marks[-1]:
                marks.append(local)
        marks.append(datetime.combine(self.day + timedelta(days=1), time(0)))
        return [
            {
                "start_datetime": self._local_text(a, -_ONE_SECOND),
                "end_datetime": self._local_text(b, _ONE_SECOND),
            }
            for a, b in itertools.pairwise(marks)
        ]

    def _local_text(self, mark: datetime, shift: timedelta) -> str:
        """The wall-clock time one second before or after a boundary, stepped in real time: next to
        a DST gap that lands outside the gap (an ambiguous result only widens the slice)."""
        instant = mark.replace(tzinfo=self.tz).astimezone(timezone.utc) + shift
        return instant.astimezone(self.tz).strftime(DATETIME_FORMAT)


def _names_one_instant(local: datetime, tz: ZoneInfo) -> bool:
    """False for a wall-clock time skipped by a DST gap or repeated by a fold."""
    early = local.replace(tzinfo=tz, fold=0)
    late = local.replace(tzinfo=tz, fold=1)
    if early.utcoffset() != late.utcoffset():
        return False
    roundtrip = early.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None)
    return roundtrip == local
