"""A local day's instants and slices, DST days included."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from airflow_provider_cdr.days.day_window import DayWindow


@pytest.mark.parametrize(
    ("day", "zone", "hours"),
    [
        (date(2024, 3, 10), "America/New_York", 23),
        (date(2024, 11, 3), "America/New_York", 25),
        (date(2024, 3, 31), "Europe/Berlin", 23),
        (date(2024, 3, 5), "America/Sao_Paulo", 24),
    ],
)
def test_day_length_and_bounds(day: date, zone: str, hours: int) -> None:
    window = DayWindow(day, ZoneInfo(zone))
    assert window.hours == hours
    assert window.start.astimezone(ZoneInfo(zone)).replace(tzinfo=None) == datetime(
        day.year, day.month, day.day
    )


def _instants(text: str, tz: ZoneInfo) -> set[datetime]:
    """Every instant a wall-clock time names: one, or two in a DST fold (none in a gap)."""
    local = datetime.fromisoformat(text)
    named = {local.replace(tzinfo=tz, fold=fold).astimezone(timezone.utc) for fold in (0, 1)}
    return {instant for instant in named if instant.astimezone(tz).replace(tzinfo=None) == local}


@pytest.mark.parametrize("count", [1, 3, 8, 12, 24, 48])
@pytest.mark.parametrize("day", [date(2024, 3, 10), date(2024, 11, 3), date(2024, 6, 1)])
def test_slices_cover_the_day_reaching_a_second_beyond_each_boundary(day: date, count: int) -> None:
    tz = ZoneInfo("America/New_York")
    slices = DayWindow(day, tz).slices(count)
    assert slices[0]["start_datetime"] == f"{day - timedelta(days=1)}T23:59:59"
    assert slices[-1]["end_datetime"] == f"{day + timedelta(days=1)}T00:00:01"
    for bounds in slices:
        for text in bounds.values():
            assert _instants(text, tz), f"{text} falls in a DST gap"
    for before, after in itertools.pairwise(slices):
        # At least two seconds in common however the API reads its bounds (and a time in the autumn
        # fold, read as its earlier instant, only widens a slice).
        end = min(_instants(before["end_datetime"], tz))
        start = max(_instants(after["start_datetime"], tz))
        assert end - start >= timedelta(seconds=2)
    assert len(slices) <= count


def _batch(*stamps: datetime | None) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"timestamp": pa.array(list(stamps), pa.timestamp("us", tz="UTC"))})


def test_keep_drops_other_days_and_counts_only_the_unexpected() -> None:
    window = DayWindow(date(2024, 3, 5), ZoneInfo("America/Sao_Paulo"))  # 03:00Z to 03:00Z
    inside = datetime(2024, 3, 5, 12, tzinfo=timezone.utc)
    next_first_second = datetime(2024, 3, 6, 3, 0, 0, 500_000, tzinfo=timezone.utc)
    far = datetime(2024, 3, 6, 5, tzinfo=timezone.utc)
    before = datetime(2024, 3, 5, 2, 59, 59, 999_999, tzinfo=timezone.utc)
    earlier = datetime(2024, 3, 5, 2, 59, 57, tzinfo=timezone.utc)
    kept, outside = window.keep(_batch(inside, next_first_second, far, before, earlier, None, window.start))
    assert kept.column("timestamp").to_pylist() == [inside, None, window.start]
    # `far` and `earlier`; the seconds next to the day were fetched on purpose
    assert outside == 2


def test_keep_passes_a_batch_inside_the_day_untouched() -> None:
    window = DayWindow(date(2024, 3, 5), ZoneInfo("UTC"))
    batch = _batch(window.start, window.end - timedelta(microseconds=1))
    kept, outside = window.keep(batch)
    assert kept is batch and outside == 0
