"""table_format="delta": days as partitions of one Delta Lake table, through real Airflow runs against the
stand-in, read back with deltalake and DuckDB, on local disk and on the local S3 server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable

from airflow_provider_cdr.api.errors import CDRConfigError
from airflow_provider_cdr.compat import AirflowFailException
from airflow_provider_cdr.convert.schema import CDR_SCHEMA
from airflow_provider_cdr.landing.delta_store import MANIFEST_KEY, delta_table_schema
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from tests.airflow_db import ensure_airflow_db
from tests.operators.test_cdr_to_parquet import run_days, set_connection, xcom_return
from tests.s3_local import aws_connection_json, create_bucket

DAYS = ["2024-03-05", "2024-03-06"]


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


def day_uuids(table: DeltaTable, day: str) -> list[str]:
    """The uuids of one day in the table's current snapshot, through DuckDB over deltalake's dataset."""
    dataset = table.to_pyarrow_dataset()  # noqa: F841 - DuckDB finds it by name
    rows = duckdb.sql(f"select uuid from dataset where date = DATE '{day}'").fetchall()
    return [uuid for (uuid,) in rows]


def commit_manifest(table: DeltaTable, version: int) -> dict[str, Any]:
    (entry,) = [entry for entry in table.history() if entry["version"] == version]
    manifest: dict[str, Any] = json.loads(entry[MANIFEST_KEY])
    return manifest


def test_days_land_as_partitions_of_one_table(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_connection(monkeypatch, api)
    runs = run_days(tmp_path, DAYS, "delta_days", table_format="delta")
    table = DeltaTable(str(tmp_path))
    assert table.version() == 1  # one commit per day
    assert table.metadata().partition_columns == ["date"]
    arrow_schema = table.to_pyarrow_dataset().schema
    assert arrow_schema.names == delta_table_schema(CDR_SCHEMA).names
    assert str(arrow_schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    for version, (day, run) in enumerate(zip(DAYS, runs)):
        uuids = day_uuids(table, day)
        assert len(uuids) == len(set(uuids)), "each record once"
        assert set(uuids) == api.truth(start_date=day, end_date=day)
        landed = xcom_return(run)
        assert landed["rows"] == len(uuids) and landed["location"] == f"{tmp_path}/date={day}"
        manifest = commit_manifest(table, version)
        assert manifest["day"] == day and manifest["rows"] == len(uuids)
        assert manifest["extraction"]["requests"] >= 1
        assert api.api_key not in json.dumps(manifest)
    for path in tmp_path.rglob("*"):
        assert api.api_key not in path.name
        if path.is_file() and path.suffix in (".json", ".crc"):
            assert api.api_key not in path.read_text()


def test_a_rerun_replaces_the_day_in_one_commit(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_connection(monkeypatch, api)
    run_days(tmp_path, DAYS, "delta_before_rerun", table_format="delta")
    first, other = DAYS
    run_days(tmp_path, [first], "delta_rerun", table_format="delta", filters={"type": "inbound"})
    table = DeltaTable(str(tmp_path))
    assert table.version() == 2
    truth = api.truth(start_date=first, end_date=first)
    inbound = api.truth(start_date=first, end_date=first, type="inbound")
    assert 0 < len(inbound) < len(truth)
    rerun = day_uuids(table, first)
    assert sorted(rerun) == sorted(inbound), "the day is the rerun's version, whole and alone"
    assert set(day_uuids(table, other)) == api.truth(start_date=other, end_date=other), "other days stay"
    table.load_as_version(1)
    assert set(day_uuids(table, first)) == truth, "the replaced version is still there for time travel"


def test_a_failed_run_keeps_the_previous_version(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    day = DAYS[0]
    set_connection(monkeypatch, api)
    run_days(tmp_path, [day], "delta_before_failure", table_format="delta")
    files_before = sorted(p.name for p in (tmp_path / f"date={day}").iterdir())
    wrong_zone = CDRToParquetOperator(
        task_id="wrong_zone", output_path=str(tmp_path), day=day, timezone="Asia/Tokyo", table_format="delta"
    )
    with pytest.raises(AirflowFailException, match="time zone"):
        wrong_zone.execute({})  # every record is fetched and written, then the check refuses the commit
    table = DeltaTable(str(tmp_path))
    assert table.version() == 0
    assert set(day_uuids(table, day)) == api.truth(start_date=day, end_date=day)
    assert sorted(p.name for p in (tmp_path / f"date={day}").iterdir()) == files_before, "its parts deleted"


def test_bad_table_settings_are_refused_before_any_request(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, api)
    with pytest.raises(CDRConfigError, match="table_format='iceberg' is not one of parquet, delta"):
        CDRToParquetOperator(task_id="bad", output_path="/tmp/x", day=DAYS[0], table_format="iceberg")
    with pytest.raises(CDRConfigError, match="gs:// is not supported"):
        CDRToParquetOperator(task_id="gcs", output_path="gs://bucket/cdr", day=DAYS[0], table_format="delta")
    assert api.stats()["requests"] == 0


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
    op = CDRToParquetOperator(task_id="crash", output_path=sys.argv[1], day=sys.argv[2], table_format="delta",
                              slices=1, concurrency=1, per_page=100, row_group_rows=100)
    op.execute({})
    """
)


def test_a_kill_mid_write_leaves_the_table_as_it_was(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    day = DAYS[1]
    set_connection(monkeypatch, api)
    run_days(tmp_path, [day], "delta_before_crash", table_format="delta")
    committed = {p.name for p in (tmp_path / f"date={day}").iterdir()}
    before = sorted(day_uuids(DeltaTable(str(tmp_path)), day))
    api.set_faults(latency_ms=150)
    worker = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), day], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not any(
            p.name not in committed and p.stat().st_size > 0 for p in (tmp_path / f"date={day}").iterdir()
        ):
            assert worker.poll() is None, "the run ended before it was caught mid-write"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.wait()
    api.clear_faults()
    table = DeltaTable(str(tmp_path))
    assert table.version() == 0, "no commit from the killed run"
    assert sorted(day_uuids(table, day)) == before, "its unlisted part is invisible to Delta readers"
    run_days(tmp_path, [day], "delta_after_crash", table_format="delta")
    table = DeltaTable(str(tmp_path))
    assert table.version() == 1
    assert sorted(day_uuids(table, day)) == before


def test_the_same_on_s3(api: Any, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> None:
    create_bucket(s3_endpoint, "cdr-delta")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CDR_DELTA", aws_connection_json(s3_endpoint))
    set_connection(monkeypatch, api)
    days = [*DAYS, DAYS[0]]  # the first day twice: a rerun replaces it
    runs = run_days(
        "s3://cdr-delta/calls", days, "delta_s3", output_conn_id="aws_cdr_delta", table_format="delta"
    )
    for day, run in zip(days[1:], runs[1:]):  # the first run's XCom went with its rerun (same logical date)
        assert xcom_return(run)["location"] == f"s3://cdr-delta/calls/date={day}"
    options = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    table = DeltaTable("s3://cdr-delta/calls", storage_options=options)
    assert table.version() == 2
    for day in DAYS:
        uuids = day_uuids(table, day)
        assert len(uuids) == len(set(uuids))
        assert set(uuids) == api.truth(start_date=day, end_date=day)
    # The commit's metadata, from the log entry itself (moto's server leaves deltalake's history()
    # listing hanging, so the entry is read as a plain object).
    log_entry = pafs.S3FileSystem(
        access_key="testing", secret_key="testing", endpoint_override=s3_endpoint, region="us-east-1"
    ).open_input_file(f"cdr-delta/calls/_delta_log/{2:020d}.json")
    (commit,) = [
        line["commitInfo"] for line in map(json.loads, log_entry.read().splitlines()) if "commitInfo" in line
    ]
    assert json.loads(commit[MANIFEST_KEY])["day"] == DAYS[0]
