"""CDRToParquetOperator through real Airflow runs (dag.test()) against the stand-in, read back for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_cdr.api.errors import CDRQueryError
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from tests.airflow_db import ensure_airflow_db, register_dag
from tests.s3_local import aws_connection_json, create_bucket


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


def set_connection(
    monkeypatch: pytest.MonkeyPatch, stand_in: Any, conn_id: str = "cdr_default", **extra: Any
) -> None:
    extra.setdefault("timezone", stand_in.timezone)
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "cdr", "host": stand_in.url, "password": stand_in.api_key, "extra": extra}),
    )


def run_days(out: str | Path, days: list[str], dag_id: str, **operator_kwargs: Any) -> list[Any]:
    """One dag.test() per day, each landing that day; returns the dag runs."""
    with DAG(dag_id, schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        CDRToParquetOperator(task_id="land", output_path=str(out), day="{{ params.day }}", **operator_kwargs)
    register_dag(dag)
    runs = []
    for day in days:
        run = dag.test(
            run_conf={"day": day}, logical_date=datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
        )
        assert run.state == "success", f"{dag_id} failed for {day}"
        runs.append(run)
    return runs


def landed_uuids(out: Path, day: str) -> list[str]:
    table = pq.read_table(out / f"date={day}", columns=["uuid"])
    return table.column("uuid").to_pylist()


def manifest(out: Path, day: str) -> dict[str, Any]:
    return json.loads((out / f"date={day}" / "_manifest.json").read_text())


def xcom_return(run: Any, task_id: str = "land") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value"
        )
        return XComModel.deserialize_value(session.scalars(query).one())


def test_consecutive_days_equal_ground_truth(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_connection(monkeypatch, api)
    days = ["2024-03-04", "2024-03-05", "2024-03-06"]
    runs = run_days(tmp_path, days, "op_consecutive", slices=4)
    for day, run in zip(days, runs):
        got = landed_uuids(tmp_path, day)
        assert len(got) == len(set(got))
        assert set(got) == api.truth(start_date=day, end_date=day)
        summary = xcom_return(run)
        assert summary["rows"] == len(got) == manifest(tmp_path, day)["rows"]
        assert summary["day"] == day and summary["files"] >= 1 and summary["bytes"] > 0
    # the first and the last millisecond of each day landed on their own day
    stamps = duckdb.sql(
        f"select date, strftime(timezone('America/Sao_Paulo', timestamp), '%H:%M:%S.%g') as t "
        f"from read_parquet('{tmp_path}/*/*.parquet', hive_partitioning=true)"
    ).fetchall()
    for day in days:
        times = {t for d, t in stamps if str(d) == day}
        assert "00:00:00.000" in times and "23:59:59.999" in times


def test_dst_days_are_23_and_25_hours(
    make_stand_in: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stand_in = make_stand_in(timezone="America/New_York", now="2024-12-01T00:00:00Z", records_per_day=1500)
    set_connection(monkeypatch, stand_in)
    days = ["2024-03-10", "2024-11-03"]
    run_days(tmp_path, days, "op_dst", slices=12)
    for day in days:
        assert set(landed_uuids(tmp_path, day)) == stand_in.truth(start_date=day, end_date=day)
    spans = duckdb.sql(
        f"select date, epoch(max(timestamp)) - epoch(min(timestamp)) "
        f"from read_parquet('{tmp_path}/*/*.parquet', hive_partitioning=true) group by date order by date"
    ).fetchall()
    assert [round(span / 3600) for _, span in spans] == [23, 25]


def test_rerun_replaces_the_day_with_identical_content(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_connection(monkeypatch, api)
    run_days(tmp_path, ["2024-03-07", "2024-03-08"], "op_rerun_a")
    other = tmp_path / "date=2024-03-08"
    other_files = {p.name: p.stat().st_mtime_ns for p in other.iterdir()}
    first = pq.read_table(tmp_path / "date=2024-03-07").sort_by("uuid")
    run_days(tmp_path, ["2024-03-07"], "op_rerun_b")
    second = pq.read_table(tmp_path / "date=2024-03-07").sort_by("uuid")
    assert second.num_rows == first.num_rows
    assert second.equals(first)
    assert {p.name: p.stat().st_mtime_ns for p in other.iterdir()} == other_files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging left behind"


def test_sms_only_and_empty_days_open_with_full_days_in_one_query(
    make_stand_in: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stand_in = make_stand_in(day_profiles={"2024-03-06": "sms_only", "2024-03-07": "empty"})
    set_connection(monkeypatch, stand_in)
    days = ["2024-03-05", "2024-03-06", "2024-03-07"]
    run_days(tmp_path, days, "op_profiles")
    counts = dict(
        duckdb.sql(
            f"select cast(date as varchar), count(*) from read_parquet('{tmp_path}/*/*.parquet', "
            "hive_partitioning=true, union_by_name=false) group by 1"
        ).fetchall()
    )
    assert counts["2024-03-05"] == len(stand_in.truth(start_date="2024-03-05", end_date="2024-03-05"))
    assert counts["2024-03-06"] == len(stand_in.truth(start_date="2024-03-06", end_date="2024-03-06")) > 0
    assert "2024-03-07" not in counts and manifest(tmp_path, "2024-03-07")["rows"] == 0
    schemas = {str(pq.read_schema(f)) for day in days for f in (tmp_path / f"date={day}").glob("*.parquet")}
    assert len(schemas) == 1, "every partition carries the same schema"
    described = duckdb.sql(f"describe select * from read_parquet('{tmp_path}/*/*.parquet')").fetchall()
    assert all(row[1] != "NULL" for row in described)
    dataset = ds.dataset(tmp_path, format="parquet", partitioning="hive")
    assert dataset.to_table().num_rows == sum(counts.values())


def test_unknown_fields_and_drifted_types_are_preserved(
    make_stand_in: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stand_in = make_stand_in(type_drift=0.05)
    set_connection(monkeypatch, stand_in)
    day = "2024-03-05"
    run_days(tmp_path, [day], "op_drift")
    table = pq.read_table(tmp_path / f"date={day}")
    assert set(table.column("uuid").to_pylist()) == stand_in.truth(start_date=day, end_date=day)
    facts = manifest(tmp_path, day)["extraction"]
    assert facts["coerced_values"] > 0 and facts["unknown_fields"]
    extras = [json.loads(v) for v in table.column("extra_fields").to_pylist() if v]
    assert extras and any(set(e) & set(facts["unknown_fields"]) for e in extras)
    if facts["uncoercible_values"]:
        assert any(table.column("raw_values").to_pylist())


def test_day_follows_the_data_interval(api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    set_connection(monkeypatch, api)
    with DAG(
        "op_interval",
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="America/Sao_Paulo"),
        start_date=datetime(2024, 3, 1),
        catchup=False,
    ) as dag:
        CDRToParquetOperator(task_id="land", output_path=str(tmp_path))
    register_dag(dag)
    # dag.test() infers the interval that ends at this moment: Sao Paulo's midnight starting 03-06
    # (03:00Z), so the interval is the whole of 03-05 in Sao Paulo.
    run = dag.test(logical_date=datetime(2024, 3, 6, 3, 0, tzinfo=timezone.utc))
    assert run.state == "success"
    assert xcom_return(run)["day"] == "2024-03-05"
    assert set(landed_uuids(tmp_path, "2024-03-05")) == api.truth(
        start_date="2024-03-05", end_date="2024-03-05"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"day": "2024-02-30"}, "not a day"),
        ({"day": "yesterday"}, "not a day"),
        ({"filters": {"typ": "inbound"}}, "did you mean 'type'"),
        ({"filters": {"start_date": "2024-01-01"}}, "set by the task"),
        ({"timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"output_path": ""}, "output_path"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    arguments = {"task_id": "bad", "output_path": "/tmp/never-written"} | kwargs
    with pytest.raises(CDRQueryError, match=message):
        CDRToParquetOperator(**arguments)


def test_templated_filters_are_checked_before_any_request(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_connection(monkeypatch, api)
    api.reset_stats()
    with DAG("op_bad_template", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
        CDRToParquetOperator(
            task_id="land", output_path=str(tmp_path), day="2024-03-05", filters={"type": "{{ 'inbond' }}"}
        )
    register_dag(dag)
    assert dag.test().state == "failed"
    assert api.stats()["requests"] == 0
    assert not list(tmp_path.iterdir())


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
    op = CDRToParquetOperator(task_id="crash", output_path=sys.argv[1], day=sys.argv[2],
                              slices=1, concurrency=1, per_page=100, row_group_rows=100)
    op.execute({})
    """
)


def test_a_kill_mid_write_leaves_the_previous_version_intact(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    day = "2024-03-09"
    set_connection(monkeypatch, api)
    run_days(tmp_path, [day], "op_before_crash")
    before = pq.read_table(tmp_path / f"date={day}").sort_by("uuid")
    api.set_faults(latency_ms=150)
    worker = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), day], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size > 0 for p in tmp_path.glob(".cdr-staging/.date=*/*.inprogress")):
            assert worker.poll() is None, "the run ended before it was caught mid-write"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.wait()
    api.clear_faults()
    assert pq.read_table(tmp_path / f"date={day}").sort_by("uuid").equals(before)
    visible = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/*/*.parquet')").fetchall()
    assert visible == [(before.num_rows,)]
    run_days(tmp_path, [day], "op_after_crash")
    assert pq.read_table(tmp_path / f"date={day}").sort_by("uuid").equals(before)
    assert not list(tmp_path.glob(".cdr-staging/.date=*")), "the rerun cleaned the crashed run's staging"


def test_summary_and_manifest_hold_no_secret(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_connection(monkeypatch, api)
    (run,) = run_days(tmp_path, ["2024-03-05"], "op_secret")
    assert api.api_key not in json.dumps(xcom_return(run))
    for path in tmp_path.rglob("*"):
        assert api.api_key not in path.name
        if path.suffix == ".json":
            assert api.api_key not in path.read_text()


def test_asset_event_carries_row_counts(api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    set_connection(monkeypatch, api)
    (run,) = run_days(tmp_path, ["2024-03-05"], "op_asset")
    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == f"file://{tmp_path}")
        ).all()
        assert events
        extra = events[-1].extra
    assert extra["rows"] == xcom_return(run)["rows"] and extra["day"] == "2024-03-05"
    assert api.api_key not in json.dumps(extra)


def test_rate_cap_and_concurrency_are_respected(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_connection(monkeypatch, api, rate_limit=8, concurrency=4)
    api.set_faults(latency_ms=50)
    run_days(tmp_path, ["2024-03-05"], "op_rate", slices=8, per_page=200)
    stats = api.stats()
    assert stats["requests"] >= 13
    assert stats["max_per_second"] <= 8
    assert 1 < stats["max_in_flight"] <= 4
    assert set(landed_uuids(tmp_path, "2024-03-05")) == api.truth(
        start_date="2024-03-05", end_date="2024-03-05"
    )


def test_rows_are_encoded_while_the_slices_wait_on_the_api(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Two slices, pages of 500 every 300 ms: between answers the writer has 1,000 rows and
    # nothing to do, so it writes them then (half a row group or more) instead of waiting
    # for 1,200. Without that, the groups would be 1,200, 1,200 and the rest.
    set_connection(monkeypatch, api, concurrency=2)
    api.set_faults(latency_ms=300)
    day = "2024-03-05"
    run_days(tmp_path, [day], "op_idle_flush", slices=2, per_page=500, row_group_rows=1200)
    (path,) = (tmp_path / f"date={day}").glob("*.parquet")
    metadata = pq.ParquetFile(path).metadata
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert len(groups) >= 3 and all(600 <= rows < 1200 for rows in groups[:-1]), groups
    assert set(landed_uuids(tmp_path, day)) == api.truth(start_date=day, end_date=day)


def test_the_same_through_an_s3_url(api: Any, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> None:
    import pyarrow.fs as pafs

    create_bucket(s3_endpoint, "cdr-operator")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CDR_TEST", aws_connection_json(s3_endpoint))
    set_connection(monkeypatch, api)
    days = ["2024-03-05", "2024-03-06"]
    with DAG("op_s3", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        CDRToParquetOperator(
            task_id="land",
            output_path="s3://cdr-operator/cdr",
            output_conn_id="aws_cdr_test",
            day="{{ params.day }}",
        )
    register_dag(dag)
    for day in [*days, days[0]]:  # the first day twice: a rerun replaces it
        run = dag.test(
            run_conf={"day": day}, logical_date=datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
        )
        assert run.state == "success"
        assert xcom_return(run)["location"].startswith("s3://cdr-operator/cdr/date=")
    s3 = pafs.S3FileSystem(
        access_key="testing", secret_key="testing", endpoint_override=s3_endpoint, region="us-east-1"
    )
    for day in days:
        listed = json.loads(s3.open_input_file(f"cdr-operator/cdr/date={day}/_manifest.json").read())
        files = sorted(
            info.base_name for info in s3.get_file_info(pafs.FileSelector(f"cdr-operator/cdr/date={day}"))
        )
        assert {f["name"] for f in listed["files"]} | {"_manifest.json"} == set(files), "old files deleted"
        table = ds.dataset(f"cdr-operator/cdr/date={day}", filesystem=s3, format="parquet").to_table()
        assert table.num_rows == listed["rows"] == len(set(table.column("uuid").to_pylist()))
        assert set(table.column("uuid").to_pylist()) == api.truth(start_date=day, end_date=day)
