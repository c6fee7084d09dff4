"""Azure Blob Storage, on a real emulator (Azurite, started by the `azurite` fixture): the operator
lands and reruns days, a failing run leaves the previous version, writers racing for one day leave
one whole version, and Put Blob's conditions let exactly one of racing writers through.

Airflow resolves ``abfs://`` only with apache-airflow-providers-microsoft-azure, which is not a
dependency here: without it the operator (``open_base``) opens the URL with fsspec's adlfs, which
reads ``AZURE_STORAGE_CONNECTION_STRING``, set per test. The writer-level checks of landing, rerun,
empty day, abort and crashed runs run on Azure too: tests/test_partition.py, the `store` fixture.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import fsspec.config
import pyarrow.dataset as ds
import pytest
from upath import UPath

from airflow_provider_cdr.api.errors import CDRConfigError
from airflow_provider_cdr.landing.conditional import (
    VersionConflict,
    Versioned,
    read_versioned,
    replace_version,
    supports_conditional_writes,
)
from airflow_provider_cdr.landing.lease import LEASE_DIR, LeaseRecord
from airflow_provider_cdr.landing.writer import DayPartitionWriter
from airflow_provider_cdr.tasks.output import open_base
from tests.airflow_db import ensure_airflow_db
from tests.operators.test_cdr_to_parquet import xcom_return
from tests.reliability.reliability_support import land
from tests.reliability.test_concurrent_writers import DAY, Race, race_rounds
from tests.test_partition import day_records, write_day

RACE_ROUNDS = 5  # a round costs ~40 requests to Azurite and ~1.5 s here; the conditions test races more


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


@pytest.fixture
def azure(azurite: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """adlfs configured from the environment, as a deployment without the azure provider does; yields
    a filesystem of its own for reading back. (The writer processes of a race inherit the variable.)"""
    import adlfs

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    yield adlfs.AzureBlobFileSystem(connection_string=azurite)


def names(fs: Any, prefix: str) -> set[str]:
    fs.invalidate_cache()
    return {path.rsplit("/", 1)[1] for path in fs.ls(prefix, detail=False)}


def day_state(fs: Any, prefix: str) -> tuple[dict[str, Any], set[str]]:
    """The day's manifest and what is in its directory."""
    return json.loads(fs.cat_file(f"{prefix}/_manifest.json")), names(fs, prefix)


def test_the_operator_lands_and_reruns_days_on_azure(
    azure: Any, make_stand_in: Any, cdr_conn_for: Any, request: pytest.FixtureRequest
) -> None:
    api = cdr_conn_for(make_stand_in(records_per_day=300))
    url = f"abfs://cdr/{request.node.name}"
    days = ["2024-03-05", "2024-03-06"]
    landed = []
    for day in [*days, days[0]]:  # the first day twice: the rerun replaces it
        run = land(url, day, "azure_land", slices=2, per_page=100, file_rows=120)
        assert run.state == "success"
        assert xcom_return(run)["location"] == f"{url}/date={day}"
        landed.append(day_state(azure, f"cdr/{request.node.name}/date={day}")[0])
    first_files = {entry["name"] for entry in landed[0]["files"]}

    for day in days:
        prefix = f"cdr/{request.node.name}/date={day}"
        manifest, present = day_state(azure, prefix)
        listed = {entry["name"] for entry in manifest["files"]}
        assert present == listed | {"_manifest.json"}, "only the committed version is there"
        table = ds.dataset(prefix, filesystem=azure, format="parquet").to_table(columns=["uuid"])
        uuids = table.column("uuid").to_pylist()
        assert len(uuids) == len(set(uuids)) == manifest["rows"]
        assert set(uuids) == api.truth(start_date=day, end_date=day)
    rerun, _ = day_state(azure, f"cdr/{request.node.name}/date={days[0]}")
    assert len(rerun["versions"]) == 2, "the rerun is the day's second version"
    assert len(first_files) == 3 and first_files.isdisjoint(entry["name"] for entry in rerun["files"])

    with duckdb.connect() as connection:  # a glob reader, through the same fsspec filesystem
        connection.register_filesystem(azure)
        counts = connection.sql(
            f"select date::varchar, count(*) from read_parquet('abfs://cdr/{request.node.name}/*/*.parquet', "
            "hive_partitioning = true) group by all order by 1"
        ).fetchall()
    assert counts == [(day, len(api.truth(start_date=day, end_date=day))) for day in days]


def test_a_failing_run_leaves_the_previous_version_and_none_of_its_parts_on_azure(
    azure: Any,
    azurite: str,
    make_stand_in: Any,
    cdr_conn_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from azure.storage.blob import ContainerClient

    cdr_conn_for(make_stand_in(records_per_day=300))
    day = "2024-03-07"
    url, prefix = f"abfs://cdr/{request.node.name}", f"cdr/{request.node.name}/date={day}"
    options = {"slices": 1, "per_page": 50, "row_group_rows": 50, "file_rows": 100}
    assert land(url, day, "azure_fail", **options).state == "success"
    before = day_state(azure, prefix)

    # 1 KiB blocks: the part being written when the run fails has staged blocks, never committed.
    monkeypatch.setitem(fsspec.config.conf, "abfs", {"blocksize": 1024})
    original, calls = DayPartitionWriter.write_batch, []

    def fail_at_the_fifth_batch(self: DayPartitionWriter, batch: Any) -> None:
        calls.append(batch.num_rows)
        if len(calls) == 5:  # one part finished, a row group of the next one written
            raise RuntimeError("the run fails mid-day")
        original(self, batch)

    monkeypatch.setattr(DayPartitionWriter, "write_batch", fail_at_the_fifth_batch)
    assert land(url, day, "azure_fail", **options).state == "failed"
    assert len(calls) == 5

    assert day_state(azure, prefix) == before, "the previous version, and nothing of the failed run"
    container = ContainerClient.from_connection_string(azurite, "cdr")
    staged = {
        blob.name.rsplit("/", 1)[1]
        for blob in container.list_blobs(
            name_starts_with=prefix.removeprefix("cdr/"), include=["uncommittedblobs"]
        )
    } - before[1]
    assert len(staged) == 1, "the discarded part had blocks staged, and they never became a blob"
    lease = LeaseRecord.from_bytes(azure.cat_file(f"cdr/{request.node.name}/{LEASE_DIR}/date={day}.json"))
    assert lease is not None and lease.released


@pytest.mark.parametrize("colliding", [True, False], ids=["colliding", "free"])
def test_two_writers_of_a_day_on_azure_leave_one_whole_version(azure: Any, colliding: bool) -> None:
    url = f"abfs://cdr/race-{'colliding' if colliding else 'free'}"
    base = UPath(url)
    assert supports_conditional_writes(base.fs), "Azure takes the conditional path, as S3 does"
    with Race(url, None, RACE_ROUNDS, colliding=colliding) as race:
        # Only the winner's files are left: a loser's parts are deleted, which the protocol does
        # only on stores whose conditional writes are atomic.
        race_rounds(race, base, RACE_ROUNDS, colliding=colliding)


def race_once(fs: Any, path: str, expected: Versioned | None, payloads: list[bytes]) -> list[str]:
    """Each payload written by a thread of its own, all released at once, all expecting `expected`."""
    start = threading.Barrier(len(payloads))

    def write(payload: bytes) -> str:
        start.wait(30)
        try:
            replace_version(fs, path, payload, expected, conditional=True)
        except VersionConflict:
            return "refused"
        return "won"

    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(write, payloads))


def test_put_blob_conditions_let_exactly_one_of_racing_writers_through(azure: Any) -> None:
    """Create-only (If-None-Match: *) and replace (If-Match) races of four writers with the same
    expectation, through replace_version: every round, one write lands and three are refused."""
    for number in range(30):
        path = f"cdr/conditions/{number}.json"
        expected = None  # create-only: no blob there yet
        if number % 2:
            expected = replace_version(azure, path, b"base", None, conditional=True)
        payloads = [f"{number}-{writer}".encode() for writer in range(4)]
        outcomes = race_once(azure, path, expected, payloads)
        assert sorted(outcomes) == ["refused"] * 3 + ["won"], (number, outcomes)
        current = read_versioned(azure, path)
        assert current is not None and current.data == payloads[outcomes.index("won")]


def test_abfs_and_az_need_no_connection_but_a_connection_needs_the_azure_provider(azure: Any) -> None:
    for scheme in ("abfs", "az"):
        base = open_base(f"{scheme}://cdr/scheme-{scheme}")
        assert isinstance(base, UPath) and base.protocol == scheme and getattr(base, "conn_id", None) is None
        assert supports_conditional_writes(base.fs)
        summary = write_day(base, DAY, day_records(DAY, 20))
        assert summary.location == f"{scheme}://cdr/scheme-{scheme}/date={DAY.isoformat()}"
        assert azure.cat_file(f"cdr/scheme-{scheme}/date={DAY.isoformat()}/{summary.files[0]}")[:4] == b"PAR1"
    with pytest.raises(
        CDRConfigError,
        match=r"output_conn_id 'wasb_default' needs an Airflow filesystem for abfs://.*microsoft-azure",
    ):
        open_base("abfs://cdr/somewhere", "wasb_default")
