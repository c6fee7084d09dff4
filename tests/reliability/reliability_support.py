"""Shared steps of the reliability tests: point the connection, land a day with dag.test(), read back."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from airflow.sdk import DAG

from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from tests.airflow_db import register_dag

_dag_numbers: dict[str, int] = {}


def point_connection(monkeypatch: pytest.MonkeyPatch, server: Any, **extra: Any) -> None:
    """`cdr_default` at a stand-in (or any server with .url/.api_key), with fast-failing retries by default."""
    extra.setdefault("timezone", server.timezone)
    monkeypatch.setenv(
        "AIRFLOW_CONN_CDR_DEFAULT",
        json.dumps({"conn_type": "cdr", "host": server.url, "password": server.api_key, "extra": extra}),
    )


def land(out: Path, day: str, dag_id: str, **operator_kwargs: Any) -> Any:
    """One real Airflow run (dag.test()) of CDRToParquetOperator for `day`; returns the dag run."""
    number = _dag_numbers[dag_id] = _dag_numbers.get(dag_id, 0) + 1
    with DAG(f"{dag_id}_{number}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        CDRToParquetOperator(task_id="land", output_path=str(out), day=day, **operator_kwargs)
    register_dag(dag)
    return dag.test(logical_date=datetime.now(timezone.utc))


def defer_sensor(day: str, dag_id: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A deferrable CDRRecordsSensor for `day` through dag.test(): its clock says the day has not ended
    when execute() checks, so it defers, and the trigger (run inline) asks the API; returns the dag run."""
    from airflow_provider_cdr.api import availability
    from airflow_provider_cdr.sensors.cdr import CDRRecordsSensor

    moments = iter([datetime.fromisoformat(f"{day}T12:00:00+00:00")])
    monkeypatch.setattr(availability, "utcnow", lambda: next(moments, datetime.now(timezone.utc)))
    with DAG(dag_id, schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        CDRRecordsSensor(task_id="wait", day=day, deferrable=True, poke_interval=1)
    register_dag(dag)
    return dag.test(logical_date=datetime.now(timezone.utc))


def day_table(out: Path, day: str) -> pa.Table:
    """The day as a reader finds it at `date=DAY`, sorted by uuid."""
    return pq.read_table(out / f"date={day}").sort_by("uuid")


def day_files(out: Path, day: str) -> set[str]:
    return {path.name for path in (out / f"date={day}").iterdir()}


def assert_exact_day(out: Path, day: str, truth: set[str]) -> pa.Table:
    """The day holds every expected record once, and nothing else; the manifest agrees."""
    table = day_table(out, day)
    uuids = table.column("uuid").to_pylist()
    assert len(uuids) == len(set(uuids)), "a record landed twice"
    assert set(uuids) == truth
    manifest = json.loads((out / f"date={day}" / "_manifest.json").read_text())
    assert manifest["rows"] == table.num_rows
    return table


def visible_rows(out: Path) -> int:
    """Rows that a glob reader (DuckDB) and a dataset reader (pyarrow) find; they must agree."""
    [(glob_rows,)] = duckdb.sql(f"select count(*) from read_parquet('{out}/*/*.parquet')").fetchall()
    assert glob_rows == ds.dataset(out, format="parquet", partitioning="hive").count_rows()
    return int(glob_rows)


def task_error(captured: Any) -> str:
    """The task's exception lines as the task runner logged them (dag.test() logs to the console)."""
    lines = (captured.out + captured.err).splitlines()
    return "\n".join(line for line in lines if re.match(r"[\w.]+(Error|Expired|Exception): ", line))
