"""A writer that dies holding a day, and one that is frozen past its lease, followed by a new run.

The first writer is a real process (writer_child.py) stopped with SIGKILL or SIGSTOP while it holds
the day with finished parts written. On local disk the kernel drops a dead writer's lock at once;
on S3 its lease blocks the day until it expires, then the next run takes it over, commits and
deletes the dead run's parts. A writer frozen past its lease (SIGSTOP, as a swap storm or a paused
VM would) and woken after another took over must not commit, and deletes only its own parts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_cdr.convert.records import RecordConverter
from airflow_provider_cdr.landing.lease import LEASE_DIR, LeaseRecord
from airflow_provider_cdr.landing.writer import DayPartitionWriter, PartitionBusyError, read_manifest
from tests.reliability.writer_child import REFUSED
from tests.s3_local import aws_connection_json, create_bucket
from tests.test_partition import day_records, expected_table, sorted_rows, write_day

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("writer_child.py")
DAY = date(2024, 7, 31)
CONN_ID = "aws_dead"
LEASE_TTL_S = 2.0


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> Iterator[str]:
    create_bucket(s3_endpoint, "cdr-dead")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", aws_connection_json(s3_endpoint))
        yield "cdr-dead"


class HoldingWriter:
    """writer_child.py, started and waited for until it holds the day with parts written."""

    def __init__(self, spec: str, conn_id: str, run_id: str, tmp_path: Path) -> None:
        self.run_id = run_id
        marker = tmp_path / f"{run_id}.holding"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(CHILD),
                spec,
                conn_id,
                DAY.isoformat(),
                run_id,
                str(LEASE_TTL_S),
                str(marker),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert self.process.poll() is None, (
                f"the writer ended (rc {self.process.returncode}) before holding"
            )
            assert time.monotonic() < deadline, "the writer never came to hold the day"
            time.sleep(0.05)  # polling for the marker, not waiting for time to pass

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def commit(self) -> tuple[int, str]:
        """Tell it to commit; its exit code and what it printed."""
        out, _ = self.process.communicate("commit\n", timeout=120)
        return self.process.returncode, out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_until_expired(lease: ObjectStoragePath) -> LeaseRecord:
    """Poll the lease object (a real condition, with a deadline) until its hold has ended."""
    deadline = time.monotonic() + 60
    while True:
        lease.fs.invalidate_cache()
        record = LeaseRecord.from_bytes(lease.read_bytes())
        assert record is not None
        if not record.is_live(datetime.now(timezone.utc)):
            return record
        assert time.monotonic() < deadline, f"the lease never expired: {record}"
        time.sleep(0.05)


def s3_names(partition: ObjectStoragePath) -> set[str]:
    partition.fs.invalidate_cache()
    return {path.name for path in partition.iterdir()}


# --- local disk -------------------------------------------------------------------------


def test_a_killed_writer_on_local_disk_does_not_block_the_next_run(tmp_path: Path) -> None:
    base = tmp_path / "out"
    previous = write_day(base, DAY, day_records(DAY, 50))
    holder = HoldingWriter(str(base), "-", "killed-local", tmp_path)
    try:
        with pytest.raises(PartitionBusyError, match=r"Another writer .* run killed-local \(pid"):
            DayPartitionWriter(base, DAY).__enter__()
        holder.kill()
    finally:
        holder.stop()
    assert {path.name for path in (base / "date=2024-07-31").iterdir()} == {*previous.files, "_manifest.json"}

    records = day_records(DAY, 80, seed=1)
    write_day(base, DAY, records)  # at once: the kernel dropped the dead writer's lock
    assert sorted_rows(pq.read_table(base / "date=2024-07-31")) == sorted_rows(expected_table(records))
    assert [path.name for path in base.iterdir()] == ["date=2024-07-31"], "its staging and lock are gone"


# --- S3 -------------------------------------------------------------------------------------


def test_a_killed_writer_on_s3_holds_the_day_until_its_lease_expires_then_the_next_run_cleans_up(
    bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = ObjectStoragePath(f"s3://{bucket}/killed", conn_id=CONN_ID)
    partition = base / "date=2024-07-31"
    lease = base / LEASE_DIR / "date=2024-07-31.json"
    previous = write_day(base, DAY, day_records(DAY, 50), run_id="first")
    holder = HoldingWriter(f"s3://{bucket}/killed", CONN_ID, "killed-s3", tmp_path)
    holder.kill()
    dead_parts = s3_names(partition) - {*previous.files, "_manifest.json"}
    assert len(dead_parts) == 2, "the killed run's finished parts are there, unlisted"

    with pytest.raises(PartitionBusyError) as refused:
        DayPartitionWriter(base, DAY).__enter__()
    stale = LeaseRecord.from_bytes(lease.read_bytes())
    assert stale is not None and stale.run_id == "killed-s3" and not stale.released
    message = str(refused.value)
    assert "date=2024-07-31" in message and "run killed-s3 " in message
    assert re.search(rf"until {re.escape(stale.expires_at.isoformat())}", message), message
    assert s3_names(partition) == {*previous.files, "_manifest.json", *dead_parts}, (
        "the refused run touched nothing"
    )

    wait_until_expired(lease)
    records = day_records(DAY, 70, seed=2)
    with caplog.at_level("WARNING", logger="airflow_provider_cdr.landing.lease"):
        latest = write_day(base, DAY, records, run_id="next")
    assert "Took over the lease" in caplog.text and "killed-s3" in caplog.text
    assert s3_names(partition) == {*latest.files, "_manifest.json"}, "the dead run's parts are deleted"
    table = pq.read_table([f"{partition.path}/{name}" for name in latest.files], filesystem=base.fs)
    assert sorted_rows(table) == sorted_rows(expected_table(records))
    released = LeaseRecord.from_bytes(lease.read_bytes())
    assert released is not None and released.released and released.run_id == "next"


def test_a_writer_frozen_past_its_lease_does_not_commit_over_the_one_that_took_over(
    bucket: str, tmp_path: Path
) -> None:
    base = ObjectStoragePath(f"s3://{bucket}/frozen", conn_id=CONN_ID)
    partition = base / "date=2024-07-31"
    lease = base / LEASE_DIR / "date=2024-07-31.json"
    previous = write_day(base, DAY, day_records(DAY, 50), run_id="first")
    frozen = HoldingWriter(f"s3://{bucket}/frozen", CONN_ID, "frozen", tmp_path)
    try:
        frozen.process.send_signal(signal.SIGSTOP)  # its lease renewals stop with it
        frozen_parts = s3_names(partition) - {*previous.files, "_manifest.json"}
        wait_until_expired(lease)

        records = day_records(DAY, 90, seed=3)
        converter = RecordConverter()
        with DayPartitionWriter(base, DAY, run_id="taker", row_group_rows=50, file_rows=50) as taker:
            taker.write_batch(converter.to_batch(records))
            taker_parts = s3_names(partition) - {*previous.files, "_manifest.json", *frozen_parts}
            assert taker_parts, "the taker's finished parts are there"

            frozen.process.send_signal(signal.SIGCONT)
            code, out = frozen.commit()
            assert code == REFUSED, out
            (refusal,) = [line for line in out.splitlines() if line.startswith("REFUSED ")]
            assert refusal.startswith("REFUSED LeaseLostError: Run frozen lost its lease"), refusal
            assert "run taker " in refusal, "it names who holds the day now"
            left = s3_names(partition)
            assert not left & frozen_parts, "the frozen writer deleted its own parts"
            assert taker_parts <= left, "and nothing of the taker's"
            assert read_manifest(partition)["run_id"] == "first", "it committed nothing"

            summary = taker.commit()
    finally:
        frozen.stop()
    assert s3_names(partition) == {*summary.files, "_manifest.json"}
    table = pq.read_table([f"{partition.path}/{name}" for name in summary.files], filesystem=base.fs)
    assert sorted_rows(table) == sorted_rows(expected_table(records))
    manifest = read_manifest(partition)
    assert [entry["run_id"] for entry in manifest["versions"]][-1] == "taker"
    assert manifest["superseded_files"] == previous.files
