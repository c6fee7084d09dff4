"""What the S3 writer says is what happened: lost answers, lost requests, failed deletions.

The writer talks to the local S3 server (moto) through S3FaultProxy (tests/s3_local.py), which loses
the answer to a request that took effect, loses a request before it arrives, or answers a bulk
delete "done" without doing it. botocore and s3fs retry as they would against AWS. Every test reads
the day back from the store itself: its manifest, the files there, and the records (pyarrow).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath
from botocore.exceptions import ConnectionClosedError

from airflow_provider_cdr.convert.records import RecordConverter
from airflow_provider_cdr.landing import object_store
from airflow_provider_cdr.landing.lease import LEASE_DIR, LeaseRecord
from airflow_provider_cdr.landing.writer import (
    CleanupIncompleteError,
    CommitUncertainError,
    DayPartitionWriter,
    LeaseUnavailableError,
    PartitionBusyError,
    PartitionSummary,
    read_manifest,
)
from tests.s3_local import S3FaultProxy, aws_connection_json, create_bucket
from tests.test_partition import day_records, expected_table, sorted_rows, write_day

DAY = date(2024, 7, 31)
BUCKET = "cdr-honesty"
# Paths as they arrive: the "=" of date=... is percent-encoded.
MANIFEST_PUT = r"/date(=|%3D)2024-07-31/_manifest\.json$"
LEASE_PUT = rf"/{LEASE_DIR}/date(=|%3D)2024-07-31\.json$"
BULK_DELETE = r"\?delete"


@pytest.fixture(scope="module")
def proxy(s3_endpoint: str) -> Iterator[S3FaultProxy]:
    """The proxy, and connection `aws_faulty` through it: botocore does not retry and s3fs twice, so
    failures end quickly (the retry that matters, of a PUT whose answer was lost, is s3fs's)."""
    create_bucket(s3_endpoint, BUCKET)
    config = {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 10}
    with S3FaultProxy(s3_endpoint) as faulty, pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_AWS_FAULTY", aws_connection_json(faulty.url, config_kwargs=config))
        ObjectStoragePath(f"s3://{BUCKET}", conn_id="aws_faulty").fs.retries = 2
        yield faulty


@pytest.fixture
def faults(proxy: S3FaultProxy) -> Iterator[S3FaultProxy]:
    proxy.clear()
    yield proxy
    proxy.clear()


def base_for(name: str) -> ObjectStoragePath:
    return ObjectStoragePath(f"s3://{BUCKET}/{name}", conn_id="aws_faulty")


def names(base: ObjectStoragePath) -> set[str]:
    partition = base / "date=2024-07-31"
    partition.fs.invalidate_cache()
    return {path.name for path in partition.iterdir()} if partition.exists() else set()


def day_rows(base: ObjectStoragePath, files: list[str]) -> list[dict[str, Any]]:
    paths = [f"{base.path}/date=2024-07-31/{name}" for name in files]
    return sorted_rows(pq.read_table(paths, filesystem=base.fs))


def lease_of(base: ObjectStoragePath) -> LeaseRecord:
    lease = base / LEASE_DIR / "date=2024-07-31.json"
    lease.fs.invalidate_cache()
    record = LeaseRecord.from_bytes(lease.read_bytes())
    assert record is not None
    return record


def test_the_local_s3_server_honours_conditional_puts(s3_endpoint: str, proxy: S3FaultProxy) -> None:
    """What the protocol relies on: 412 for If-None-Match on an existing key and for a stale If-Match."""
    fs = base_for("contract").fs
    key = f"{BUCKET}/contract/object"
    first = fs.pipe_file(key, b"one", IfNoneMatch="*")
    with pytest.raises(FileExistsError):
        fs.pipe_file(key, b"two", IfNoneMatch="*")
    second = fs.pipe_file(key, b"three", IfMatch=first["ETag"])
    with pytest.raises(OSError, match="pre-conditions"):
        fs.pipe_file(key, b"four", IfMatch=first["ETag"])
    assert second["ETag"] != first["ETag"]
    assert fs.cat_file(key) == b"three"


@pytest.mark.parametrize("earlier_version", [False, True], ids=["first-version", "replacing"])
def test_a_lost_answer_to_the_manifest_put_is_a_commit_not_an_abort(
    faults: S3FaultProxy, earlier_version: bool
) -> None:
    """The PUT lands, its answer is lost, the retry is refused (412: the first attempt won). The
    writer reads the manifest back, finds its own, and goes on as committed."""
    base = base_for(f"lost-answer-{earlier_version}")
    previous = write_day(base, DAY, day_records(DAY, 40), run_id="previous") if earlier_version else None
    lost = faults.add("PUT", MANIFEST_PUT, "lose_answer", times=1)
    records = day_records(DAY, 60, seed=1)
    summary = write_day(base, DAY, records, run_id="lost-answer")

    assert lost.fired == 1
    manifest = read_manifest(base / "date=2024-07-31")
    assert manifest["run_id"] == "lost-answer"
    assert names(base) == {*summary.files, "_manifest.json"}, "its files kept, the old version deleted"
    assert day_rows(base, summary.files) == sorted_rows(expected_table(records))
    assert [entry["run_id"] for entry in manifest["versions"]] == (
        ["previous", "lost-answer"] if previous else ["lost-answer"]
    )
    assert lease_of(base).released


def test_a_lost_answer_to_the_lease_put_still_takes_the_lease(faults: S3FaultProxy) -> None:
    base = base_for("lost-lease-answer")
    lost = faults.add("PUT", LEASE_PUT, "lose_answer", times=1)
    records = day_records(DAY, 30)
    summary = write_day(base, DAY, records, run_id="lease-answer-lost")
    assert lost.fired == 1
    assert day_rows(base, summary.files) == sorted_rows(expected_table(records))
    lease = lease_of(base)
    assert lease.run_id == "lease-answer-lost" and lease.released


def test_a_lease_that_cannot_be_written_stops_the_writer_before_it_writes(faults: S3FaultProxy) -> None:
    base = base_for("no-lease")
    previous = write_day(base, DAY, day_records(DAY, 40), run_id="previous")
    faults.add("PUT", LEASE_PUT, "lose_request")
    with pytest.raises(LeaseUnavailableError, match="conditional PUTs"):
        DayPartitionWriter(base, DAY).__enter__()
    assert names(base) == {*previous.files, "_manifest.json"}
    assert read_manifest(base / "date=2024-07-31")["run_id"] == "previous"


def test_a_manifest_put_that_never_lands_fails_and_keeps_the_previous_version(faults: S3FaultProxy) -> None:
    """Every manifest PUT is lost before it arrives: the outcome cannot be proven, so the writer fails
    with CommitUncertainError and deletes nothing (a PUT in flight could still make its files the
    day). The previous version stays whole; the next commit removes the kept files."""
    base = base_for("never-lands")
    previous_records = day_records(DAY, 40)
    previous = write_day(base, DAY, previous_records, run_id="previous")
    lost = faults.add("PUT", MANIFEST_PUT, "lose_request")
    with pytest.raises(CommitUncertainError, match="kept failing") as failure:
        write_day(base, DAY, day_records(DAY, 60, seed=1), run_id="uncertain")
    assert lost.fired >= 3
    assert "date=2024-07-31" in str(failure.value)
    assert read_manifest(base / "date=2024-07-31")["run_id"] == "previous"
    kept = names(base) - {*previous.files, "_manifest.json"}
    assert len(kept) == 1 and kept.pop().startswith("part-uncertain-"), "its part is kept, unlisted"
    assert day_rows(base, previous.files) == sorted_rows(expected_table(previous_records))
    assert lease_of(base).released

    faults.clear()
    records = day_records(DAY, 70, seed=2)
    latest = write_day(base, DAY, records)
    assert names(base) == {*latest.files, "_manifest.json"}
    assert day_rows(base, latest.files) == sorted_rows(expected_table(records))


@pytest.mark.parametrize("failure", ["pretend_deleted", "lose_request"])
def test_a_failed_clean_up_fails_visibly_and_the_next_writer_finishes_it(
    faults: S3FaultProxy, failure: str
) -> None:
    """The bulk delete is lost, or answered "done" without deleting (s3fs would believe it). The
    writer lists again, retries, then fails saying the new version IS committed and which old files
    remain. The next writer of the day deletes them as it starts, even if it then commits nothing."""
    base = base_for(f"clean-up-{failure}")
    previous = write_day(base, DAY, day_records(DAY, 40), run_id="previous")
    deletes = faults.add("POST", BULK_DELETE, failure)
    records = day_records(DAY, 60, seed=1)
    with pytest.raises(CleanupIncompleteError) as failed:
        write_day(base, DAY, records, run_id="committed")
    message = str(failed.value)
    assert "IS committed" in message and all(name in message for name in previous.files), message
    assert deletes.fired >= 3
    manifest = read_manifest(base / "date=2024-07-31")
    new_files = [entry["name"] for entry in manifest["files"]]
    assert manifest["run_id"] == "committed" and manifest["superseded_files"] == previous.files
    assert day_rows(base, new_files) == sorted_rows(expected_table(records)), "manifest readers see it whole"
    assert names(base) == {*previous.files, *new_files, "_manifest.json"}, "the old files are still there"
    assert lease_of(base).released, "the failure did not keep the day locked"

    faults.clear()
    with DayPartitionWriter(base, DAY) as next_writer:
        assert names(base) == {*new_files, "_manifest.json"}, "the next writer deletes them first thing"
        next_writer.abort()
    assert read_manifest(base / "date=2024-07-31") == manifest


def test_a_commit_beaten_by_another_manifest_deletes_only_its_own_files(faults: S3FaultProxy) -> None:
    """A manifest that appears after this writer read its own (a writer whose lease had expired, got
    there first) makes the conditional PUT fail: this writer loses and deletes only its files."""
    base = base_for("beaten")
    previous = write_day(base, DAY, day_records(DAY, 40), run_id="previous")
    partition = base / "date=2024-07-31"
    converter = RecordConverter()
    with (
        pytest.raises(PartitionBusyError, match=r"Another writer committed .*run zombie"),
        DayPartitionWriter(base, DAY, run_id="beaten", row_group_rows=20, file_rows=20) as writer,
    ):
        writer.write_batch(converter.to_batch(day_records(DAY, 60, seed=1)))
        ours = names(base) - {*previous.files, "_manifest.json"}
        assert len(ours) == 3
        zombie = land_behind_the_lease(partition, day_records(DAY, 25, seed=9))
        writer.commit()
    assert read_manifest(partition)["run_id"] == "zombie"
    assert names(base) == {*previous.files, *zombie.files, "_manifest.json"}, "only its own files went"


def test_the_last_rows_written_side_by_side_land_and_a_beaten_commit_deletes_both_halves(
    faults: S3FaultProxy,
) -> None:
    """40,000 rows left at the commit go to two uploads at once (one on the encoder thread): both
    are listed and read back; a commit that loses deletes both, and nothing else."""
    base = base_for("beaten-split")
    partition = base / "date=2024-07-31"
    records = day_records(DAY, 40_000, seed=2)
    previous = write_day(base, DAY, records, page_size=5_000, run_id="previous")
    assert len(previous.files) == 2 and names(base) == {*previous.files, "_manifest.json"}
    assert [entry["rows"] for entry in read_manifest(partition)["files"]] == [20_000, 20_000]
    assert day_rows(base, previous.files) == sorted_rows(expected_table(records))

    converter = RecordConverter()
    with (
        pytest.raises(PartitionBusyError, match=r"Another writer committed .*run zombie"),
        DayPartitionWriter(base, DAY, run_id="beaten") as writer,
    ):
        writer.write_batch(converter.to_batch(day_records(DAY, 40_000, seed=3)))
        zombie = land_behind_the_lease(partition, day_records(DAY, 25, seed=9))
        writer.commit()
    assert read_manifest(partition)["run_id"] == "zombie"
    assert names(base) == {*previous.files, *zombie.files, "_manifest.json"}, "only its own files went"


def test_a_half_that_fails_leaves_nothing_though_the_other_half_was_uploaded(faults: S3FaultProxy) -> None:
    """The upload of the half written on the caller's thread is lost; the other half's, on the
    encoder thread, reached the store: the abort deletes it, and the previous version stays."""
    base = base_for("half-failed")
    previous = write_day(base, DAY, day_records(DAY, 40), run_id="previous")
    lost = faults.add("PUT", r"/part-halfway-[0-9a-f]{8}-00000\.parquet", "lose_request")
    reached = faults.add("PUT", r"/part-halfway-[0-9a-f]{8}-00001\.parquet", "lose_answer", times=1)
    with pytest.raises(ConnectionClosedError, match=r"part-halfway-[0-9a-f]{8}-00000"):
        write_day(base, DAY, day_records(DAY, 40_000, seed=4), page_size=5_000, run_id="halfway")
    assert lost.fired >= 1 and reached.fired == 1, (
        "the first half's upload was lost, the second's took effect"
    )
    faults.clear()
    assert names(base) == {*previous.files, "_manifest.json"}, "the uploaded half was deleted"
    assert read_manifest(base / "date=2024-07-31")["run_id"] == "previous"


def land_behind_the_lease(partition: ObjectStoragePath, records: list[dict[str, Any]]) -> PartitionSummary:
    """A zombie's version: a part and a manifest naming it, written straight to the store."""
    name = "part-zombie-00000000-00000.parquet"
    table = expected_table(records)
    with partition.fs.open(f"{partition.path}/{name}", "wb") as handle:
        pq.write_table(table, handle)
    manifest = {"run_id": "zombie", "committed_at": "now", "rows": table.num_rows, "files": [{"name": name}]}
    partition.fs.pipe_file(f"{partition.path}/_manifest.json", json_bytes(manifest))
    return PartitionSummary(partition.as_uri(), DAY, table.num_rows, [name], 0, "")


def json_bytes(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


def test_without_conditional_writes_unlisted_parts_are_left_alone(
    faults: S3FaultProxy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A store without conditional PUTs (here S3 treated as one): the lease still refuses a second
    writer that comes later, replaced versions are deleted, but a part no manifest lists is left
    (a racing writer could still commit it) and named in a warning."""
    monkeypatch.setattr(object_store, "supports_conditional_writes", lambda fs: False)
    base = base_for("unconditional")
    previous = write_day(base, DAY, day_records(DAY, 40), run_id="previous")
    orphan = base / "date=2024-07-31" / "part-crashed-00000000-00000.parquet"
    orphan.write_bytes(b"a finished part of a run that never committed")
    with DayPartitionWriter(base, DAY, run_id="holder") as holder:
        with pytest.raises(PartitionBusyError, match="run holder "):
            DayPartitionWriter(base, DAY).__enter__()
        holder.write_batch(RecordConverter().to_batch(day_records(DAY, 30, seed=1)))
        with caplog.at_level("WARNING", logger="airflow_provider_cdr.landing.object_store"):
            summary = holder.commit()
    assert names(base) == {*summary.files, orphan.name, "_manifest.json"}
    assert not {*previous.files} & names(base), "the replaced version is deleted"
    assert orphan.name in caplog.text and "by hand" in caplog.text
