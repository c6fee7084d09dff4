"""DayPartitionWriter: a day's Parquet files, committed atomically, read back by real readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath
from upath import UPath

import airflow_provider_cdr
from airflow_provider_cdr.convert.records import RecordConverter
from airflow_provider_cdr.convert.schema import CDR_SCHEMA, SCHEMA_VERSION
from airflow_provider_cdr.landing import local_store
from airflow_provider_cdr.landing.writer import (
    MAX_VERSIONS,
    DayPartitionWriter,
    PartitionSummary,
    read_manifest,
)
from tests.s3_local import aws_connection_json, create_bucket

DAY = date(2024, 7, 31)
OTHER_DAY = date(2024, 7, 30)
REPO_ROOT = Path(__file__).resolve().parents[1]


def day_records(
    day: date, count: int, *, seed: int = 0, kinds: str = "call,chat,sms"
) -> list[dict[str, Any]]:
    """Records of one day shaped like the API's: calls, chats with sla, SMS with non-ASCII text."""
    allowed = kinds.split(",")
    records = []
    for number in range(count):
        local = datetime(day.year, day.month, day.day, tzinfo=timezone(timedelta(hours=-3)))
        local += timedelta(seconds=(number * 86_399) // max(count, 1))
        kind = allowed[(number + seed) % len(allowed)]
        record: dict[str, Any] = {
            "uuid": f"{day.isoformat()}-{seed}-{number:06d}",
            "timestamp": local.isoformat(timespec="milliseconds"),
            "type": "outbound",
            "disposition": "answered",
            "agent": "Zoë Łukasz" if number % 2 else "Mike A",
            "agent_id": 56215 + number % 7,
            "from": "15557571011",
            "to": "31208112500",
            "queue": None,
            "wrapup_code": "0101",
            "duration": f"{number % 30:02d}:{number % 60:02d}:{number % 60:02d}",
            "cpc": 0.3972,
        }
        if kind == "chat":
            record.update(
                type="chat",
                cpc=0,
                sla={
                    "time_to_first_response": "00:01:45",
                    "time_to_resolution": "48:16:27",
                    "time_to_reply": "00:00:23",
                },
            )
        elif kind == "sms":
            record = {
                "uuid": record["uuid"],
                "timestamp": record["timestamp"],
                "type": "outbound_sms",
                "disposition": "delivered",
                "from": "ACME",
                "to": "15557571011",
                "sid": "ACME",
                "text": "Привет, ваш заказ готов ✓",
                "template": "order_ready",
                "num_segments": 1,
                "cpc": "0.0075",
            }
        records.append(record)
    return records


def pages(records: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def write_day(
    base: Any, day: date, records: list[dict[str, Any]], *, page_size: int = 400, **options: Any
) -> PartitionSummary:
    converter = RecordConverter()
    with DayPartitionWriter(base, day, **options) as writer:
        for page in pages(records, page_size):
            writer.write_batch(converter.to_batch(page))
        return writer.commit(
            manifest={"query": {"start_date": day.isoformat()}, "counts": converter.counts()}
        )


def expected_table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_batches([RecordConverter().to_batch(records)])


def sorted_rows(table: pa.Table) -> list[dict[str, Any]]:
    table = table.select(CDR_SCHEMA.names)
    return sorted(table.to_pylist(), key=lambda row: row["uuid"])


def read_local_day(base: Path, day: date) -> pa.Table:
    return pq.read_table(base / f"date={day.isoformat()}", partitioning=None)


def duck_rows(query: str) -> list[tuple[Any, ...]]:
    with duckdb.connect() as connection:
        return connection.execute(query).fetchall()


def duck_table(query: str) -> pa.Table:
    with duckdb.connect() as connection:
        return connection.sql(query).to_arrow_table()


def parquet_outside_day_dirs(base: Path) -> list[Path]:
    return [
        path for path in base.rglob("*.parquet") if not path.relative_to(base).parts[0].startswith("date=")
    ]


def tree(base: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(base)): path.read_bytes() for path in sorted(base.rglob("*")) if path.is_file()
    }


# --- local disk -------------------------------------------------------------------------


def test_day_reads_back_with_pyarrow_dataset_and_duckdb(tmp_path: Path) -> None:
    records = day_records(DAY, 3000)
    summary = write_day(tmp_path, DAY, records, row_group_rows=1000, file_rows=2500)

    assert summary.location == str(tmp_path / "date=2024-07-31")
    assert summary.rows == 3000
    assert len(summary.files) == 2
    assert sorted(os.listdir(summary.location)) == sorted([*summary.files, "_manifest.json"])
    assert summary.bytes == sum(os.path.getsize(Path(summary.location, name)) for name in summary.files)
    assert sorted_rows(read_local_day(tmp_path, DAY)) == sorted_rows(expected_table(records))

    dataset = ds.dataset(tmp_path, format="parquet", partitioning="hive")
    assert dataset.count_rows() == 3000
    assert dataset.to_table(filter=ds.field("date") == "2024-07-31").num_rows == 3000

    glob = f"{tmp_path}/*/*.parquet"
    ((count, first, offset),) = duck_rows(
        f"SELECT count(*), min(timestamp), min(utc_offset_minutes) FROM read_parquet('{glob}', hive_partitioning=true)"
    )
    assert count == 3000
    assert first == datetime(2024, 7, 31, 3, 0, tzinfo=timezone.utc)
    assert offset == -180
    assert duck_rows(f"SELECT typeof(timestamp) FROM read_parquet('{glob}') LIMIT 1") == [
        ("TIMESTAMP WITH TIME ZONE",)
    ]


def test_parquet_files_are_typed_for_every_reader(tmp_path: Path) -> None:
    summary = write_day(tmp_path, DAY, day_records(DAY, 1500), row_group_rows=500)
    parquet = pq.ParquetFile(Path(summary.location, summary.files[0]))
    metadata = parquet.metadata
    timestamp_index = parquet.schema_arrow.get_field_index("timestamp")
    column = metadata.schema.column(timestamp_index)
    assert column.physical_type == "INT64"
    logical = json.loads(column.logical_type.to_json())
    assert logical["Type"] == "Timestamp"
    assert logical["isAdjustedToUTC"] is True
    assert logical["timeUnit"] == "microseconds"
    assert metadata.num_row_groups == 3
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group).column(timestamp_index)
        assert chunk.compression == "ZSTD"
        assert chunk.statistics is not None and chunk.statistics.has_min_max
        assert chunk.statistics.min < chunk.statistics.max
    # The Arrow schema (with version and units) is stored, so readers get it back exactly.
    assert parquet.schema_arrow.equals(CDR_SCHEMA, check_metadata=True)
    frame = pq.read_table(Path(summary.location, summary.files[0])).to_pandas()
    assert str(frame["timestamp"].dtype) == "datetime64[us, UTC]"


def test_manifest_describes_the_commit_and_holds_no_secret(tmp_path: Path) -> None:
    with DayPartitionWriter(tmp_path, DAY, run_id="scheduled__2024-07-31T00:00:00+00:00") as writer:
        writer.write_batch(RecordConverter().to_batch(day_records(DAY, 10)))
        summary = writer.commit(
            manifest={
                "query": {"start_date": "2024-07-31", "type": "outbound"},
                "pages": 1,
                "auth": {"key": "a387aaf1f101fc-secret", "API-Key": "another-secret"},
            }
        )
    text = Path(summary.manifest_path).read_text()
    assert "secret" not in text
    manifest = json.loads(text)
    assert manifest == read_manifest(Path(summary.location))
    assert set(manifest) == {
        "schema_version",
        "day",
        "rows",
        "files",
        "run_id",
        "committed_at",
        "provider_version",
        "complete",
        "versions",
        "superseded_files",
        "extraction",
    }
    assert manifest["complete"] is True
    assert manifest["versions"] == [
        {
            "committed_at": manifest["committed_at"],
            "run_id": "scheduled__2024-07-31T00:00:00+00:00",
            "rows": 10,
            "complete": True,
        }
    ]
    assert manifest["superseded_files"] == []
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["day"] == "2024-07-31"
    assert manifest["rows"] == 10
    assert manifest["files"] == [
        {"name": name, "rows": 10, "bytes": os.path.getsize(Path(summary.location, name))}
        for name in summary.files
    ]
    assert manifest["run_id"] == "scheduled__2024-07-31T00:00:00+00:00"
    assert datetime.fromisoformat(manifest["committed_at"]).utcoffset() == timedelta(0)
    assert manifest["provider_version"] == airflow_provider_cdr.__version__
    assert manifest["extraction"] == {
        "query": {"start_date": "2024-07-31", "type": "outbound"},
        "pages": 1,
        "auth": {"key": "***", "API-Key": "***"},
    }
    # The run id is made file-name safe; the manifest keeps it as given.
    assert summary.files[0].startswith("part-scheduled__2024-07-31T00_00_00_00_00-")


def test_manifest_keeps_when_each_version_was_landed(tmp_path: Path) -> None:
    partition = tmp_path / "date=2024-07-31"
    partition.mkdir()
    old_release = {"run_id": "old-release", "committed_at": "2024-08-01T03:00:00+00:00", "rows": 7}
    (partition / "_manifest.json").write_text(json.dumps({**old_release, "files": []}))
    landed = []
    for number in range(MAX_VERSIONS + 1):
        with DayPartitionWriter(tmp_path, DAY, run_id=f"run-{number}") as writer:
            writer.write_batch(RecordConverter().to_batch(day_records(DAY, number + 1)))
            landed.append(writer.commit(complete=number % 2 == 0))
        if number == 0:
            # A manifest of an earlier release, without history, becomes the first entry.
            first = read_manifest(partition)["versions"]
            assert first[0] == {**old_release, "complete": True}
            assert [entry["run_id"] for entry in first] == ["old-release", "run-0"]

    manifest = read_manifest(partition)
    history = manifest["versions"]
    assert len(history) == MAX_VERSIONS, "bounded: the oldest are dropped"
    assert [entry["run_id"] for entry in history] == [
        f"run-{number}" for number in range(1, MAX_VERSIONS + 1)
    ]
    assert [entry["rows"] for entry in history] == list(range(2, MAX_VERSIONS + 2))
    assert [entry["complete"] for entry in history] == [
        number % 2 == 0 for number in range(1, MAX_VERSIONS + 1)
    ]
    times = [datetime.fromisoformat(entry["committed_at"]) for entry in history]
    assert times == sorted(times) and history[-1]["committed_at"] == manifest["committed_at"]
    assert manifest["complete"] is True and manifest["rows"] == MAX_VERSIONS + 1
    assert manifest["superseded_files"] == landed[-2].files


def test_batches_are_written_as_they_arrive_not_at_commit(tmp_path: Path) -> None:
    converter = RecordConverter()
    with DayPartitionWriter(tmp_path, DAY, row_group_rows=200, file_rows=1000) as writer:
        for page in pages(day_records(DAY, 2600), 300):
            writer.write_batch(converter.to_batch(page))
        staged = list(tmp_path.glob(".cdr-staging/.date=2024-07-31.staging-*/*.parquet.inprogress"))
        # Two full files are finished and a third holds its row groups so far.
        assert len(staged) == 3
        assert all(path.stat().st_size > 0 for path in staged)
        assert writer.rows == 2600
        summary = writer.commit()
    row_groups = [
        pq.ParquetFile(Path(summary.location, name)).metadata.num_row_groups for name in summary.files
    ]
    assert row_groups == [5, 5, 3]
    assert pq.ParquetFile(Path(summary.location, summary.files[2])).metadata.num_rows == 600


def test_rows_buffered_while_the_caller_waits_are_written_early_from_half_a_row_group(
    tmp_path: Path,
) -> None:
    converter = RecordConverter()
    records = day_records(DAY, 600)
    with DayPartitionWriter(tmp_path, DAY, row_group_rows=200) as writer:
        writer.flush_idle()  # nothing buffered, nothing opened: a no-op
        writer.write_batch(converter.to_batch(records[:90]))
        writer.flush_idle()  # 90 < half a row group: stays buffered
        writer.write_batch(converter.to_batch(records[90:120]))
        writer.flush_idle()  # 120 rows: written as a row group of their own
        writer.write_batch(converter.to_batch(records[120:600]))  # 480: two full groups, 80 left
        summary = writer.commit()
    (name,) = summary.files
    metadata = pq.ParquetFile(Path(summary.location, name)).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [120, 200, 200, 80]
    assert sorted_rows(read_local_day(tmp_path, DAY)) == sorted_rows(expected_table(records))


@pytest.fixture(scope="module")
def day_of_50_000() -> tuple[list[dict[str, Any]], pa.Table]:
    records = day_records(DAY, 50_000)
    return records, expected_table(records)


@pytest.mark.parametrize(
    ("options", "row_groups"),
    [
        ({}, [[25_000], [25_000]]),
        ({"row_group_rows": 32_000}, [[32_000, 9_000], [9_000]]),
        ({"row_group_rows": 40_000}, [[40_000, 10_000]]),
        ({"row_group_rows": 32_000, "file_rows": 45_000}, [[32_000, 13_000], [5_000]]),
    ],
    ids=["no-file-open", "file-open", "below-half-a-row-group", "beyond-the-file"],
)
def test_many_rows_left_at_the_commit_are_written_as_two_files_side_by_side(
    tmp_path: Path,
    day_of_50_000: tuple[list[dict[str, Any]], pa.Table],
    options: dict[str, int],
    row_groups: list[list[int]],
) -> None:
    """At least SPLIT_LAST_ROWS and half a row group left at the commit: half go to the file open
    (or a new one), half to one more file; fewer, or more than the open file can take, go as before."""
    records, expected = day_of_50_000
    summary = write_day(tmp_path, DAY, records, page_size=5_000, **options)

    files = [pq.ParquetFile(Path(summary.location, name)).metadata for name in summary.files]
    assert [[meta.row_group(i).num_rows for i in range(meta.num_row_groups)] for meta in files] == row_groups
    manifest = read_manifest(Path(summary.location))
    assert [entry["name"] for entry in manifest["files"]] == summary.files
    assert [entry["rows"] for entry in manifest["files"]] == [sum(groups) for groups in row_groups]
    in_order = pa.concat_tables(pq.read_table(Path(summary.location, name)) for name in summary.files)
    assert in_order.equals(expected), "the files in the manifest's order hold the rows as they were written"
    ((count,),) = duck_rows(f"SELECT count(*) FROM read_parquet('{tmp_path}/*/*.parquet')")
    assert count == 50_000


def test_sms_day_empty_day_and_full_day_open_in_one_duckdb_query(tmp_path: Path) -> None:
    write_day(tmp_path, OTHER_DAY, day_records(OTHER_DAY, 900))
    write_day(tmp_path, DAY, day_records(DAY, 50, kinds="sms"))
    empty = write_day(tmp_path, date(2024, 8, 1), [])

    assert empty.rows == 0 and len(empty.files) == 1
    empty_file = Path(empty.location, empty.files[0])
    assert pq.read_schema(empty_file).equals(CDR_SCHEMA, check_metadata=True)
    assert pq.read_metadata(empty_file).num_rows == 0
    assert read_manifest(Path(empty.location))["rows"] == 0

    files = sorted(tmp_path.glob("*/*.parquet"))
    assert len(files) == 3
    schemas = {str(duck_rows(f"DESCRIBE SELECT * FROM read_parquet('{file}')")) for file in files}
    assert len(schemas) == 1, "every day, even empty or SMS-only, has one and the same schema"
    assert "NULL" not in next(iter(schemas))

    rows = duck_rows(
        f"""SELECT date, count(*), count(sla), count(text), typeof(any_value(sla)), typeof(any_value(duration))
            FROM read_parquet('{tmp_path}/*/*.parquet', hive_partitioning=true)
            GROUP BY date ORDER BY date"""
    )
    sla_type = "STRUCT(time_to_first_response BIGINT, time_to_resolution BIGINT, time_to_reply BIGINT)"
    assert rows == [
        (OTHER_DAY, 900, 300, 300, sla_type, "BIGINT"),
        (DAY, 50, 0, 50, sla_type, "BIGINT"),
    ]


def test_rerun_replaces_only_that_day_with_identical_content(tmp_path: Path) -> None:
    write_day(tmp_path, OTHER_DAY, day_records(OTHER_DAY, 500))
    other_before = tree(tmp_path / "date=2024-07-30")
    records = day_records(DAY, 1200)
    first = write_day(tmp_path, DAY, records, file_rows=500)
    first_content = [pq.read_table(Path(first.location, name)) for name in first.files]
    second = write_day(tmp_path, DAY, records, file_rows=500)

    assert set(first.files).isdisjoint(second.files)
    assert sorted(os.listdir(second.location)) == sorted([*second.files, "_manifest.json"])
    assert [pq.read_table(Path(second.location, name)) for name in second.files] == first_content
    assert sorted_rows(read_local_day(tmp_path, DAY)) == sorted_rows(expected_table(records))
    assert tree(tmp_path / "date=2024-07-30") == other_before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["date=2024-07-30", "date=2024-07-31"]


def test_rerun_with_fewer_records_drops_the_old_rows(tmp_path: Path) -> None:
    write_day(tmp_path, DAY, day_records(DAY, 800))
    write_day(tmp_path, DAY, day_records(DAY, 100, seed=1))
    assert duck_rows(f"SELECT count(*) FROM read_parquet('{tmp_path}/*/*.parquet')") == [(100,)]


def test_exception_inside_the_block_aborts_and_keeps_the_previous_version(tmp_path: Path) -> None:
    write_day(tmp_path, DAY, day_records(DAY, 300))
    before = tree(tmp_path)
    converter = RecordConverter()
    with (
        pytest.raises(RuntimeError, match="API went away"),
        DayPartitionWriter(tmp_path, DAY, row_group_rows=100, file_rows=200) as writer,
    ):
        for page in pages(day_records(DAY, 700, seed=2), 100):
            writer.write_batch(converter.to_batch(page))
        raise RuntimeError("API went away")
    assert tree(tmp_path) == before
    assert [path.name for path in tmp_path.iterdir()] == ["date=2024-07-31"]


def test_leaving_without_commit_aborts(tmp_path: Path) -> None:
    with DayPartitionWriter(tmp_path, DAY) as writer:
        writer.write_batch(RecordConverter().to_batch(day_records(DAY, 5)))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="aborted"):
        writer.write_batch(RecordConverter().to_batch(day_records(DAY, 5)))


CRASHING_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import date
    sys.path.insert(0, sys.argv[3])
    from test_partition import day_records, pages
    from airflow_provider_cdr.landing.writer import DayPartitionWriter
    from airflow_provider_cdr.convert.records import RecordConverter

    day = date.fromisoformat(sys.argv[2])
    writer = DayPartitionWriter(sys.argv[1], day, row_group_rows=100, file_rows=250).__enter__()
    converter = RecordConverter()
    for page in pages(day_records(day, 700, seed=3), 100):
        writer.write_batch(converter.to_batch(page))
    os.kill(os.getpid(), signal.SIGKILL)  # mid-day: no commit, no abort, no cleanup
    """
)


def test_killed_writer_leaves_the_previous_version_and_next_run_cleans_up(tmp_path: Path) -> None:
    records = day_records(DAY, 400)
    write_day(tmp_path, DAY, records)
    before = tree(tmp_path / "date=2024-07-31")

    crash = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(tmp_path), DAY.isoformat(), str(Path(__file__).parent)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        timeout=120,
    )
    assert crash.returncode == -signal.SIGKILL, crash.stderr.decode()[-2000:]

    (staging,) = tmp_path.glob(".cdr-staging/.date=2024-07-31.staging-*")
    assert len(list(staging.glob("*.parquet.inprogress"))) == 3
    assert parquet_outside_day_dirs(tmp_path) == []
    assert tree(tmp_path / "date=2024-07-31") == before
    visible = duck_table(f"SELECT * FROM read_parquet('{tmp_path}/*/*.parquet')")
    assert sorted_rows(visible) == sorted_rows(expected_table(records))

    with DayPartitionWriter(tmp_path, DAY) as writer:
        assert not staging.exists(), "the next writer of the day removes what the killed one left"
        writer.abort()
    assert tree(tmp_path / "date=2024-07-31") == before
    write_day(tmp_path, DAY, records)
    assert [path.name for path in tmp_path.iterdir()] == ["date=2024-07-31"]


def test_a_live_writer_of_the_same_day_is_not_disturbed(tmp_path: Path) -> None:
    with DayPartitionWriter(tmp_path, DAY) as first:
        with pytest.raises(RuntimeError, match="Another writer"):
            DayPartitionWriter(tmp_path, DAY).__enter__()
        write_day(tmp_path, OTHER_DAY, day_records(OTHER_DAY, 10))  # other days are independent
        first.write_batch(RecordConverter().to_batch(day_records(DAY, 10)))
        assert first.commit().rows == 10


def test_a_refused_writer_names_the_holder_even_if_it_committed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder may commit, and delete its lock file, between the refused writer's failed lock and
    its reading who holds it (seen in a free race of two writers, tests/reliability): the name is
    still read, from the locked file the refused writer has open."""
    first = DayPartitionWriter(tmp_path, DAY, run_id="first-run")
    first.__enter__()
    first.write_batch(RecordConverter().to_batch(day_records(DAY, 10)))
    read_holder = local_store._DayLock._holder_of_lock

    def holder_commits_first(lock: Any, descriptor: int) -> Any:
        first.commit()
        first.__exit__(None, None, None)
        assert not lock.path.exists(), "the holder deleted its lock file on commit"
        return read_holder(lock, descriptor)

    monkeypatch.setattr(local_store._DayLock, "_holder_of_lock", holder_commits_first)
    with pytest.raises(RuntimeError, match=r"Another writer .* run first-run \(pid \d+ on "):
        DayPartitionWriter(tmp_path, DAY, run_id="second-run").__enter__()
    assert read_manifest(tmp_path / f"date={DAY.isoformat()}")["run_id"] == "first-run"


def test_swap_without_renameat2_falls_back_to_two_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_day(tmp_path, DAY, day_records(DAY, 100))
    monkeypatch.setattr(local_store, "_exchange", lambda first, second: False)
    records = day_records(DAY, 30, seed=5)
    write_day(tmp_path, DAY, records)
    assert sorted_rows(read_local_day(tmp_path, DAY)) == sorted_rows(expected_table(records))
    assert [path.name for path in tmp_path.iterdir()] == ["date=2024-07-31"]


def test_a_swap_interrupted_between_its_two_renames_is_undone(tmp_path: Path) -> None:
    write_day(tmp_path, DAY, day_records(DAY, 100))
    before = tree(tmp_path / "date=2024-07-31")
    # What a crash between "old aside" and "new in place" leaves behind.
    (tmp_path / "date=2024-07-31").rename(tmp_path / ".date=2024-07-31.previous-crashed")
    with DayPartitionWriter(tmp_path, DAY) as writer:
        writer.abort()
    assert tree(tmp_path / "date=2024-07-31") == before
    assert [path.name for path in tmp_path.iterdir()] == ["date=2024-07-31"]


def test_renameat2_exchange_swaps_two_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from-a").touch()
    (tmp_path / "b").mkdir()
    if not local_store._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert [path.name for path in (tmp_path / "b").iterdir()] == ["from-a"]
    assert list((tmp_path / "a").iterdir()) == []


def test_object_storage_path_with_file_protocol_is_local_disk(tmp_path: Path) -> None:
    summary = write_day(ObjectStoragePath(f"file://{tmp_path}"), DAY, day_records(DAY, 20))
    assert summary.location == str(tmp_path / "date=2024-07-31")
    assert read_local_day(tmp_path, DAY).num_rows == 20


def test_base_that_is_a_file_is_refused_before_writing(tmp_path: Path) -> None:
    base = tmp_path / "cdr"
    base.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        DayPartitionWriter(base, DAY)
    with pytest.raises(NotADirectoryError):
        DayPartitionWriter(base / "below", DAY)
    assert base.read_text() == "not a directory"


def test_base_that_is_not_writable_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, for whom permission bits do not apply: ask os.access to say no.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="not writable"):
        DayPartitionWriter(tmp_path, DAY)
    assert list(tmp_path.iterdir()) == []


def test_misuse_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"datetime\.date"):
        DayPartitionWriter(tmp_path, datetime(2024, 7, 31))  # type: ignore[arg-type]
    with DayPartitionWriter(tmp_path, DAY) as writer:
        with pytest.raises(ValueError, match="schema differs"):
            writer.write_batch(pa.record_batch({"uuid": ["x"]}))
        writer.commit()
        with pytest.raises(RuntimeError, match="committed"):
            writer.commit()


# --- object storage (moto's S3 and Azurite's Blob Storage on 127.0.0.1) --------------------


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint: str) -> Iterator[str]:
    """A bucket on the local S3 server, and the Airflow connection ``aws_test`` pointing at it.

    ObjectStoragePath resolves ``s3://`` with a ``conn_id`` through the amazon provider's filesystem.
    """
    create_bucket(s3_endpoint, "cdr-test")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_AWS_TEST", aws_connection_json(s3_endpoint))
        yield "cdr-test"


@pytest.fixture(params=["s3", "azure"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The root URL of an object store: moto's S3 through an Airflow connection, or Azurite through
    adlfs configured from the environment (Airflow has no abfs:// filesystem without the azure provider)."""
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", request.getfixturevalue("azurite"))
    return "abfs://cdr"


def object_base(store: str, name: str) -> UPath:
    if store.startswith("s3://"):
        return ObjectStoragePath(f"{store}/{name}", conn_id="aws_test")
    return UPath(f"{store}/{name}")


def object_names(base: UPath, day: date) -> list[str]:
    partition = base / f"date={day.isoformat()}"
    partition.fs.invalidate_cache()
    return sorted(path.name for path in partition.iterdir())


def read_object_day(base: UPath, day: date) -> pa.Table:
    return pq.read_table(f"{base.path}/date={day.isoformat()}", filesystem=base.fs, partitioning=None)


def test_object_store_day_written_rerun_and_read_back(store: str) -> None:
    base = object_base(store, "cdr")
    other = write_day(base, OTHER_DAY, day_records(OTHER_DAY, 200))
    records = day_records(DAY, 1500)
    first = write_day(base, DAY, records, file_rows=600)
    assert first.rows == 1500 and len(first.files) == 3
    assert object_names(base, DAY) == sorted([*first.files, "_manifest.json"])
    assert sorted_rows(read_object_day(base, DAY)) == sorted_rows(expected_table(records))

    second = write_day(base, DAY, records, file_rows=600)
    assert object_names(base, DAY) == sorted([*second.files, "_manifest.json"]), "old parts are deleted"
    assert sorted_rows(read_object_day(base, DAY)) == sorted_rows(expected_table(records))
    manifest = read_manifest(base / "date=2024-07-31")
    assert [entry["name"] for entry in manifest["files"]] == second.files
    assert manifest["rows"] == 1500
    assert object_names(base, OTHER_DAY) == sorted([*other.files, "_manifest.json"])

    base.fs.invalidate_cache()
    dataset = ds.dataset(base.path, filesystem=base.fs, format="parquet", partitioning="hive")
    assert dataset.count_rows() == 1700
    assert dataset.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")


def test_object_store_empty_day_is_a_valid_partition(store: str) -> None:
    base = object_base(store, "empty")
    summary = write_day(base, DAY, [])
    assert summary.rows == 0 and len(summary.files) == 1
    assert summary.manifest_path.endswith("date=2024-07-31/_manifest.json")
    table = read_object_day(base, DAY)
    assert table.num_rows == 0
    assert table.schema.equals(CDR_SCHEMA, check_metadata=False)
    assert read_manifest(base / "date=2024-07-31")["files"][0]["rows"] == 0


def test_object_store_unfinished_file_is_invisible_and_abort_deletes_the_run(store: str) -> None:
    base = object_base(store, "abort")
    previous = write_day(base, DAY, day_records(DAY, 100))
    converter = RecordConverter()
    with (
        pytest.raises(RuntimeError, match="stop"),
        DayPartitionWriter(base, DAY, row_group_rows=100, file_rows=300) as writer,
    ):
        for page in pages(day_records(DAY, 500, seed=4), 100):
            writer.write_batch(converter.to_batch(page))
        names = object_names(base, DAY)
        # One finished part of this run is visible (no manifest names it yet); the one being
        # uploaded is not.
        new = [name for name in names if name not in [*previous.files, "_manifest.json"]]
        assert len(new) == 1
        raise RuntimeError("stop")
    assert object_names(base, DAY) == sorted([*previous.files, "_manifest.json"])
    assert read_manifest(base / "date=2024-07-31")["files"][0]["name"] == previous.files[0]


def test_object_store_parts_left_by_a_crashed_run_are_deleted_by_the_next_commit(store: str) -> None:
    base = object_base(store, "orphans")
    previous = write_day(base, DAY, day_records(DAY, 50))
    orphan = base / "date=2024-07-31" / "part-crashed-00000000-00000.parquet"
    orphan.write_bytes(b"a finished part of a run that never committed")
    # A writer that does not commit leaves it: it could be a live writer's whose lease expired.
    with DayPartitionWriter(base, DAY) as writer:
        writer.abort()
    assert object_names(base, DAY) == sorted([*previous.files, "_manifest.json", orphan.name])
    # A commit, made while holding the lease, leaves only what its manifest lists.
    records = day_records(DAY, 70, seed=1)
    latest = write_day(base, DAY, records)
    assert object_names(base, DAY) == sorted([*latest.files, "_manifest.json"])
    assert sorted_rows(read_object_day(base, DAY)) == sorted_rows(expected_table(records))
