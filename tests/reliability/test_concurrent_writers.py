"""Two writers of one day at once, on local disk and on S3 (moto): one version at a time, always whole.

Two writer processes meet the test at a barrier every round and then open a DayPartitionWriter for
the same day. In the "colliding" tests they also meet once both have tried to open, so the first is
still holding the day when the second tries: each round has exactly one winner, and the loser's
error names the winner's run. In the "free" tests they run to the end unhindered, so commits,
clean-ups and releases interleave with the other's start in whatever order the machine gives.
After every round the test reads the day back (pyarrow on the manifest's files, and the glob
readers: DuckDB and pyarrow.dataset on disk, pyarrow.dataset on S3): it is exactly the records of the run the manifest
names, no file is left beside it, and the manifest's history has grown by that commit.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_cdr.landing.lease import LEASE_DIR, LeaseRecord
from airflow_provider_cdr.landing.writer import MAX_VERSIONS, read_manifest
from tests.reliability.race_worker import BARRIER_TIMEOUT_S, race, records_of
from tests.reliability.reliability_support import visible_rows
from tests.s3_local import atomic_conditional_puts, aws_connection_json, create_bucket

DAY = date(2024, 7, 31)
ROUNDS = 20
S3_ROUNDS = 12  # a round on S3 costs ~40 requests to moto (writers and checks): ~0.5 s
CONN_ID = "aws_race"


@pytest.fixture(scope="module")
def race_bucket(s3_endpoint: str) -> Iterator[str]:
    """A bucket for the races, connection `aws_race` (inherited by the writer processes), and moto
    made to apply conditional PUTs atomically, as S3 does (see tests/s3_local.py)."""
    create_bucket(s3_endpoint, "cdr-race")
    with pytest.MonkeyPatch.context() as patch, atomic_conditional_puts():
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", aws_connection_json(s3_endpoint))
        yield "cdr-race"


class Race:
    """Two writer processes, `A` and `B`, landing the same day round after round."""

    def __init__(self, spec: str, conn_id: str | None, rounds: int, *, colliding: bool) -> None:
        context = multiprocessing.get_context("spawn")
        self.start = context.Barrier(3)
        self.tried = context.Barrier(2) if colliding else None
        self.results: Any = context.Queue()
        self.processes = [
            context.Process(
                target=race,
                args=(spec, conn_id, DAY.isoformat(), name, rounds, self.start, self.tried, self.results),
                daemon=True,
            )
            for name in ("A", "B")
        ]

    def __enter__(self) -> Race:
        for process in self.processes:
            process.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # If the test failed mid-way: free writers waiting at a barrier, and take what they put on
        # the queue (a process does not end while its queued results are unread).
        for barrier in (self.start, self.tried):
            if barrier is not None:
                barrier.abort()
        deadline = time.monotonic() + 30
        for process in self.processes:
            while process.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    self.results.get(timeout=0.1)
            if process.is_alive():
                process.kill()
            process.join()

    def round(self) -> dict[str, tuple[Any, ...]]:
        """Let both writers go once; their results by run id."""
        self.start.wait(BARRIER_TIMEOUT_S)
        results: dict[str, tuple[Any, ...]] = {}
        for _ in self.processes:
            try:
                result = self.results.get(timeout=BARRIER_TIMEOUT_S)
            except queue.Empty:
                pytest.fail(f"a writer gave no result; so far {results}")
            assert result[0] != "error", result[2]
            results[result[1]] = result
        return results


def assert_round(results: dict[str, tuple[Any, ...]], *, colliding: bool) -> str:
    """Who won; a loser's error names the day and the winner."""
    winners = [run_id for run_id, result in results.items() if result[0] == "won"]
    losers = [run_id for run_id, result in results.items() if result[0] == "busy"]
    assert len(winners) == 1 if colliding else len(winners) >= 1, results
    for loser in losers:
        message = results[loser][2]
        assert "Another writer is writing" in message and "date=2024-07-31" in message
        (other,) = set(results) - {loser}
        assert f"run {other} " in message, message
    return winners[-1]


def assert_manifest(manifest: dict[str, Any], winners: list[str]) -> None:
    """The manifest is the last winner's, its history the winners in order (the last 20)."""
    assert manifest["run_id"] in winners
    history = [entry["run_id"] for entry in manifest["versions"]]
    assert history[-1] == manifest["run_id"]
    assert len(history) == min(len(winners), MAX_VERSIONS)
    assert set(history) <= set(winners)
    assert manifest["complete"] is True


def expected_uuids(run_id: str) -> set[str]:
    return {record["uuid"] for record in records_of(DAY, run_id)}


# --- local disk -------------------------------------------------------------------------


def assert_local_day(base: Path, winners: list[str]) -> None:
    partition = base / f"date={DAY.isoformat()}"
    manifest = read_manifest(partition)
    assert_manifest(manifest, winners)
    listed = [entry["name"] for entry in manifest["files"]]
    assert sorted(path.name for path in partition.iterdir()) == sorted([*listed, "_manifest.json"])
    assert [path.name for path in base.iterdir()] == [partition.name], "no staging or lock left behind"
    uuids = pq.read_table([str(partition / name) for name in listed], columns=["uuid"]).column("uuid")
    assert sorted(uuids.to_pylist()) == sorted(expected_uuids(manifest["run_id"]))
    assert visible_rows(base) == manifest["rows"] == len(uuids), "DuckDB's glob and pyarrow.dataset agree"


@pytest.mark.parametrize("colliding", [True, False], ids=["colliding", "free"])
def test_two_writers_of_a_day_on_local_disk_leave_one_whole_version(tmp_path: Path, colliding: bool) -> None:
    with Race(str(tmp_path), None, ROUNDS, colliding=colliding) as writers:
        winners = race_rounds(writers, tmp_path, ROUNDS, colliding=colliding, check_day=assert_local_day)
    if not colliding:
        print(f"free race on disk: {ROUNDS * 2 - len(winners)} of {ROUNDS} rounds had a loser")


# --- S3 (moto) ------------------------------------------------------------------------------


def s3_names(partition: ObjectStoragePath) -> list[str]:
    partition.fs.invalidate_cache()
    return sorted(path.name for path in partition.iterdir())


def lease_record(base: ObjectStoragePath) -> LeaseRecord:
    record = LeaseRecord.from_bytes((base / LEASE_DIR / f"date={DAY.isoformat()}.json").read_bytes())
    assert record is not None
    return record


def assert_s3_day(base: ObjectStoragePath, winners: list[str]) -> None:
    partition = base / f"date={DAY.isoformat()}"
    manifest = read_manifest(partition)
    assert_manifest(manifest, winners)
    listed = [entry["name"] for entry in manifest["files"]]
    assert s3_names(partition) == sorted([*listed, "_manifest.json"]), "only the listed files are left"
    fs = base.fs
    uuids = pq.read_table([f"{partition.path}/{name}" for name in listed], filesystem=fs, columns=["uuid"])
    assert sorted(uuids.column("uuid").to_pylist()) == sorted(expected_uuids(manifest["run_id"]))
    globbed = ds.dataset(base.path, filesystem=fs, format="parquet", partitioning="hive").count_rows()
    assert globbed == manifest["rows"] == uuids.num_rows
    assert lease_record(base).released, "the winner released the day's lease"


def race_rounds(
    race: Race,
    base: Any,
    rounds: int,
    *,
    colliding: bool,
    check_day: Callable[[Any, list[str]], None] = assert_s3_day,
) -> list[str]:
    """Run `rounds` rounds of `race`, each checked (assert_round) and leaving the day exactly the last
    winner's version (`check_day`: assert_s3_day on object stores, assert_local_day on disk); returns
    the winners in order."""
    winners: list[str] = []
    for _ in range(rounds):
        results = race.round()
        assert_round(results, colliding=colliding)
        manifest = read_manifest(base / f"date={DAY.isoformat()}")
        # Both may win a free round, one after the other: the manifest says who was last.
        winners += sorted((r for r in results if results[r][0] == "won"), key=manifest["run_id"].__eq__)
        check_day(base, winners)
    return winners


@pytest.mark.parametrize("colliding", [True, False], ids=["colliding", "free"])
def test_two_writers_of_a_day_on_s3_leave_one_whole_version(race_bucket: str, colliding: bool) -> None:
    url = f"s3://{race_bucket}/{'colliding' if colliding else 'free'}"
    base = ObjectStoragePath(url, conn_id=CONN_ID)
    with Race(url, CONN_ID, S3_ROUNDS, colliding=colliding) as race:
        winners = race_rounds(race, base, S3_ROUNDS, colliding=colliding)
    if not colliding:
        print(f"free race on S3: {S3_ROUNDS * 2 - len(winners)} of {S3_ROUNDS} rounds had a loser")


def test_an_expired_lease_is_taken_over_by_exactly_one_of_two_writers(race_bucket: str) -> None:
    """A holder that died leaves its lease live until it expires; two writers then race to take it
    over (If-Match on the stale lease's ETag): one wins, the other is refused, every round."""
    url = f"s3://{race_bucket}/takeover"
    base = ObjectStoragePath(url, conn_id=CONN_ID)
    lease = base / LEASE_DIR / f"date={DAY.isoformat()}.json"
    rounds = 8
    winners: list[str] = []
    with Race(url, CONN_ID, rounds, colliding=True) as race:
        for number in range(rounds):
            expired = datetime.now(timezone.utc) - timedelta(seconds=1)
            lease.write_bytes(
                LeaseRecord(
                    DAY.isoformat(), f"dead-{number}", "dead", "nowhere", 1, expired, expired
                ).to_bytes()
            )
            results = race.round()
            winners.append(assert_round(results, colliding=True))
            assert_s3_day(base, winners)
