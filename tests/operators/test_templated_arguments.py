"""Connection ids, the time zone and the output location from templates, an ObjectStoragePath or XCom,
through real Airflow runs (dag.test()) against the stand-in; and which Asset each way gets."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk import DAG, Asset, AssetAlias, ObjectStoragePath, task

from airflow_provider_cdr.api.errors import CDRQueryError
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from airflow_provider_cdr.sensors.cdr import CDRRecordsSensor
from airflow_provider_cdr.tasks.output import asset_uri
from tests.airflow_db import ensure_airflow_db, register_dag

DAY = "2024-03-05"  # in the session stand-in's zone, America/Sao_Paulo


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


@pytest.fixture
def only_templated_connection(api: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The stand-in under `cdr_templated` only, its `timezone` extra wrong (UTC): a run lands the exact
    São Paulo day only if both the connection id and the task's time zone came from their templates."""
    monkeypatch.delenv("AIRFLOW_CONN_CDR_DEFAULT", raising=False)
    connection = {"conn_type": "cdr", "host": api.url, "password": api.api_key, "extra": {"timezone": "UTC"}}
    monkeypatch.setenv("AIRFLOW_CONN_CDR_TEMPLATED", json.dumps(connection))
    return api


def landed(out: Path, day: str) -> list[str]:
    return pq.read_table(out / f"date={day}", columns=["uuid"]).column("uuid").to_pylist()


def asset_events(uri: str) -> list[dict[str, Any]]:
    """The `extra` of every event on the Asset at `uri`, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri)
            .order_by(AssetEvent.id)
        ).all()
        return [dict(event.extra) for event in events]


def test_connection_ids_and_time_zones_are_template_fields() -> None:
    assert {"cdr_conn_id", "output_conn_id", "timezone", "output_path"} <= set(
        CDRToParquetOperator.template_fields
    )
    assert {"cdr_conn_id", "timezone"} <= set(CDRRecordsSensor.template_fields)


def test_conn_id_time_zone_and_output_path_from_templates_land_the_exact_day(
    only_templated_connection: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    api = only_templated_connection
    monkeypatch.setenv("AIRFLOW_VAR_CDR_LAKE", str(tmp_path))
    params = {"conn": "cdr_templated", "tz": "America/Sao_Paulo"}
    with DAG("tpl_args", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, params=params) as dag:
        wait = CDRRecordsSensor(
            task_id="wait", cdr_conn_id="{{ params.conn }}", timezone="{{ params.tz }}", day=DAY
        )
        land = CDRToParquetOperator(
            task_id="land",
            cdr_conn_id="{{ params.conn }}",
            timezone="{{ params.tz }}",
            output_path="{{ var.value.cdr_lake }}/cdr",
            day=DAY,
        )
        wait >> land
    assert land.outlets == []  # the path is not known before the run: no Asset to declare
    register_dag(dag)
    capfd.readouterr()
    run = dag.test()
    printed = capfd.readouterr().out
    assert run.state == "success"
    got = landed(tmp_path / "cdr", DAY)
    assert len(got) == len(set(got))
    assert set(got) == api.truth(start_date=DAY, end_date=DAY)
    uri = f"file://{tmp_path}/cdr"
    assert f"outlets=[Asset('{uri}')]" in printed, "the log says which Asset to declare"
    assert asset_events(uri) == []


def test_a_bad_templated_time_zone_fails_before_any_request(
    only_templated_connection: Any, tmp_path: Path
) -> None:
    api = only_templated_connection
    with DAG("tpl_bad_zone", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        CDRToParquetOperator(
            task_id="land",
            cdr_conn_id="cdr_templated",
            timezone="{{ 'Mars/Olympus_Mons' }}",  # accepted when parsed: a template
            output_path=str(tmp_path),
            day=DAY,
        )
    register_dag(dag)
    api.reset_stats()
    assert dag.test().state == "failed"
    assert api.stats()["requests"] == 0
    assert not list(tmp_path.iterdir())


def test_an_object_storage_path_lands_the_exact_day_with_its_asset(cdr_conn: Any, tmp_path: Path) -> None:
    location = ObjectStoragePath(f"file://{tmp_path}/cdr")
    with DAG("tpl_osp", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        land = CDRToParquetOperator(task_id="land", output_path=location, day=DAY)
    uri = f"file://{tmp_path}/cdr"
    assert land.outlets == [Asset(uri)]
    assert asset_uri(location) == asset_uri(str(tmp_path / "cdr")) == uri  # one dataset, one Asset
    register_dag(dag)
    assert dag.test().state == "success"
    got = landed(tmp_path / "cdr", DAY)
    assert len(got) == len(set(got))
    assert set(got) == cdr_conn.truth(start_date=DAY, end_date=DAY)
    [event] = asset_events(uri)
    assert event["day"] == DAY and event["rows"] == len(got)


def test_an_output_path_from_xcom_gets_its_asset_through_an_alias(cdr_conn: Any, tmp_path: Path) -> None:
    with DAG("tpl_xcom", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:

        @task
        def where() -> str:
            return str(tmp_path / "from-xcom")

        CDRToParquetOperator(
            task_id="land", output_path=where(), day=DAY, outlets=[AssetAlias("cdr_tpl_xcom")]
        )
    register_dag(dag)
    assert dag.test().state == "success"
    got = landed(tmp_path / "from-xcom", DAY)
    assert set(got) == cdr_conn.truth(start_date=DAY, end_date=DAY)
    [event] = asset_events(f"file://{tmp_path}/from-xcom")
    assert event["day"] == DAY and event["rows"] == len(got)


@pytest.mark.parametrize("bad", [None, "", 42, ["/data"]])
def test_an_output_path_of_the_wrong_kind_is_refused_when_parsed(bad: Any) -> None:
    with pytest.raises(CDRQueryError, match="output_path"):
        CDRToParquetOperator(task_id="land", output_path=bad)


def test_a_pathlib_output_path_is_taken_as_its_string(tmp_path: Path) -> None:
    land = CDRToParquetOperator(task_id="land", output_path=tmp_path / "cdr")
    assert land.output_path == str(tmp_path / "cdr")
    assert land.outlets == [Asset(f"file://{tmp_path}/cdr")]
