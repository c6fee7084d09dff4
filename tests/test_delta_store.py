"""The writer's Delta store on local disk: what two writers of one day, an empty day and an abort leave."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from airflow_provider_cdr.convert.schema import CDR_SCHEMA
from airflow_provider_cdr.landing.writer import DayPartitionWriter

DAY = date(2024, 3, 5)


def batch(*uuids: str) -> pa.RecordBatch:
    columns = [
        pa.array(list(uuids), pa.string()) if field.name == "uuid" else pa.nulls(len(uuids), field.type)
        for field in CDR_SCHEMA
    ]
    return pa.RecordBatch.from_arrays(columns, schema=CDR_SCHEMA)


def day_rows(table_path: Path, day: date = DAY) -> list[str]:
    table = DeltaTable(str(table_path)).to_pyarrow_dataset().to_table(filter=pa.compute.field("date") == day)
    return sorted(table.column("uuid").to_pylist())


def writer(base: Path, day: date = DAY) -> DayPartitionWriter:
    return DayPartitionWriter(base, day, table_format="delta", row_group_rows=2)


@pytest.mark.parametrize(
    "table_exists", [False, True], ids=["first-commits-create-the-table", "table-exists"]
)
def test_of_two_writers_of_one_day_the_later_commit_is_the_day(tmp_path: Path, table_exists: bool) -> None:
    if table_exists:
        with writer(tmp_path) as first_version:
            first_version.write_batch(batch("old-1"))
            first_version.commit()
    with writer(tmp_path) as one, writer(tmp_path) as other:
        one.write_batch(batch("a-1", "a-2", "a-3"))
        other.write_batch(batch("b-1", "b-2"))
        one.commit()
        assert day_rows(tmp_path) == ["a-1", "a-2", "a-3"]
        other.commit()  # based on the version `one` made: replaces the day again, whole
    assert day_rows(tmp_path) == ["b-1", "b-2"]
    assert DeltaTable(str(tmp_path)).version() == (2 if table_exists else 1)


def test_an_empty_day_is_an_empty_partition_and_other_days_stay(tmp_path: Path) -> None:
    other_day = date(2024, 3, 6)
    with writer(tmp_path, other_day) as other:
        other.write_batch(batch("kept"))
        other.commit()
    with writer(tmp_path) as empty:
        summary = empty.commit(manifest={"requests": 1})
    assert summary.rows == 0 and len(summary.files) == 1
    assert day_rows(tmp_path) == [] and day_rows(tmp_path, other_day) == ["kept"]
    assert DeltaTable(str(tmp_path)).version() == 1


def test_an_abort_deletes_its_parts_and_commits_nothing(tmp_path: Path) -> None:
    with writer(tmp_path) as landed:
        landed.write_batch(batch("v1"))
        landed.commit()
    parts = sorted(p.name for p in (tmp_path / f"date={DAY}").iterdir())
    with pytest.raises(RuntimeError, match="stop"), writer(tmp_path) as failing:
        failing.write_batch(batch("x-1", "x-2", "x-3", "x-4", "x-5"))  # two row groups written to a part
        assert len(list((tmp_path / f"date={DAY}").iterdir())) == len(parts) + 1
        raise RuntimeError("stop")
    assert sorted(p.name for p in (tmp_path / f"date={DAY}").iterdir()) == parts
    assert day_rows(tmp_path) == ["v1"] and DeltaTable(str(tmp_path)).version() == 0


def test_days_committed_at_once_into_a_new_table_all_land(tmp_path: Path) -> None:
    """A backfill's first days race to create the table, then to append their partitions."""
    days = [date(2024, 3, day) for day in range(1, 7)]
    writers = [writer(tmp_path, day) for day in days]
    for day, each in zip(days, writers):
        each.__enter__()
        each.write_batch(batch(f"{day}-1", f"{day}-2"))
    start = threading.Barrier(len(writers))
    failures: list[BaseException] = []

    def commit(each: DayPartitionWriter) -> None:
        start.wait()
        try:
            each.commit()
        except BaseException as err:  # collected: the assertion below names it
            failures.append(err)
            each.abort()

    threads = [threading.Thread(target=commit, args=(each,)) for each in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for day in days:
        assert day_rows(tmp_path, day) == [f"{day}-1", f"{day}-2"]
    assert DeltaTable(str(tmp_path)).version() == len(days) - 1


def test_the_last_rows_written_side_by_side_are_two_parts_of_one_delta_commit(tmp_path: Path) -> None:
    uuids = [f"u-{number:05d}" for number in range(40_000)]
    with DayPartitionWriter(tmp_path, DAY, table_format="delta") as split:
        split.write_batch(batch(*uuids))
        summary = split.commit()
    assert len(summary.files) == 2 and summary.rows == 40_000
    table = DeltaTable(str(tmp_path))
    assert sorted(Path(uri).name for uri in table.file_uris()) == sorted(summary.files)
    assert day_rows(tmp_path) == uuids
