"""What the operator refuses to land as final: a day that has not ended, and a day asked in the wrong zone.

Through real Airflow runs (dag.test()) against the stand-in; the clock the operator reads
(`availability.utcnow`) is moved where a test needs a day still in progress.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk import DAG

from airflow_provider_cdr.api import availability
from airflow_provider_cdr.api.errors import CDRConfigError
from airflow_provider_cdr.days.zone_check import zones_fitting
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from tests.airflow_db import ensure_airflow_db, register_dag

DAY = "2024-03-05"  # in the session stand-in's zone, America/Sao_Paulo (UTC-3, no DST in 2024)
_dag_numbers: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


def point(monkeypatch: pytest.MonkeyPatch, server: Any, zone: str) -> None:
    connection = {
        "conn_type": "cdr",
        "host": server.url,
        "password": server.api_key,
        "extra": {"timezone": zone},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CDR_DEFAULT", json.dumps(connection))


def land(out: Path, day: str, name: str, **operator_kwargs: Any) -> Any:
    number = _dag_numbers[name] = _dag_numbers.get(name, 0) + 1
    with DAG(f"{name}_{number}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        CDRToParquetOperator(task_id="land", output_path=str(out), day=day, **operator_kwargs)
    register_dag(dag)
    return dag.test()


def manifest(out: Path, day: str) -> dict[str, Any]:
    return json.loads((out / f"date={day}" / "_manifest.json").read_text())


def uuids(out: Path, day: str) -> set[str]:
    return set(pq.read_table(out / f"date={day}", columns=["uuid"]).column("uuid").to_pylist())


# -- a day that has not ended ------------------------------------------------------------------------


def test_a_day_in_progress_is_refused_before_any_request(
    cdr_conn: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(availability, "utcnow", lambda: datetime(2024, 3, 5, 20, 0, tzinfo=timezone.utc))
    capfd.readouterr()
    run = land(tmp_path, DAY, "partial_refused")
    assert run.state == "failed"
    assert "has not ended and settled yet" in capfd.readouterr().out
    assert cdr_conn.stats()["requests"] == 0
    assert not list(tmp_path.iterdir())


def test_the_settle_period_counts_too(cdr_conn: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Sao Paulo's 2024-03-05 ends at 03:00Z on the 6th; ten minutes later it has not settled for 30.
    monkeypatch.setattr(availability, "utcnow", lambda: datetime(2024, 3, 6, 3, 10, tzinfo=timezone.utc))
    assert land(tmp_path, DAY, "unsettled", settle_period=1800).state == "failed"
    assert land(tmp_path, DAY, "settled", settle_period=300).state == "success"


def test_allow_partial_lands_the_day_so_far_marked_incomplete(
    cdr_conn: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(availability, "utcnow", lambda: datetime(2024, 3, 5, 20, 0, tzinfo=timezone.utc))
    run = land(tmp_path, DAY, "partial_allowed", allow_partial=True)
    assert run.state == "success"
    assert manifest(tmp_path, DAY)["complete"] is False
    monkeypatch.setattr(availability, "utcnow", lambda: datetime(2024, 3, 7, tzinfo=timezone.utc))
    assert land(tmp_path, DAY, "partial_then_whole").state == "success"
    assert manifest(tmp_path, DAY)["complete"] is True
    assert uuids(tmp_path, DAY) == cdr_conn.truth(start_date=DAY, end_date=DAY)


# -- a wrong time zone ---------------------------------------------------------------------------------


def test_a_wrong_zone_fails_names_the_zones_that_fit_and_keeps_the_previous_version(
    cdr_conn: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    point(monkeypatch, cdr_conn, "America/Sao_Paulo")
    assert land(tmp_path, DAY, "zone_right").state == "success"
    files = sorted(p.name for p in (tmp_path / f"date={DAY}").iterdir())
    before = pq.read_table(tmp_path / f"date={DAY}").sort_by("uuid")

    point(monkeypatch, cdr_conn, "UTC")
    capfd.readouterr()
    assert land(tmp_path, DAY, "zone_wrong").state == "failed"
    printed = capfd.readouterr().out
    assert "is probably not the account's" in printed and "-03:00" in printed
    assert "America/Sao_Paulo" in printed or "Zones that fit the records" in printed
    assert sorted(p.name for p in (tmp_path / f"date={DAY}").iterdir()) == files
    assert pq.read_table(tmp_path / f"date={DAY}").sort_by("uuid").equals(before)


@pytest.mark.parametrize(
    "zone",
    [
        "UTC",  # 3 hours off
        "America/Noronha",  # 1 hour off
        "Asia/Kathmandu",  # +05:45: off by a fraction of an hour
        "America/New_York",
        "America/Argentina/Buenos_Aires",  # another name for the same offset all year: the same instants
    ],
)
def test_with_any_zone_the_day_is_exact_or_the_task_fails(
    cdr_conn: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, zone: str
) -> None:
    point(monkeypatch, cdr_conn, zone)
    run = land(tmp_path, DAY, "any_zone")
    if run.state == "success":
        assert uuids(tmp_path, DAY) == cdr_conn.truth(start_date=DAY, end_date=DAY)
    else:
        assert run.state == "failed" and not (tmp_path / f"date={DAY}").exists()
    assert (run.state == "success") == (zone == "America/Argentina/Buenos_Aires")


def test_only_the_out_of_day_sign_is_left_when_offsets_are_not_checked(
    cdr_conn: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point(monkeypatch, cdr_conn, "UTC")
    assert land(tmp_path, DAY, "share_only", check_offsets=False).state == "failed"  # 12.5 % outside
    tolerant = land(tmp_path, DAY, "share_tolerated", check_offsets=False, max_out_of_day_share=0.5)
    assert tolerant.state == "success"


def test_zones_that_fit_a_days_offsets() -> None:
    summer = int(datetime(2024, 7, 1, 12, tzinfo=timezone.utc).timestamp() * 1_000_000)
    winter = int(datetime(2024, 1, 1, 12, tzinfo=timezone.utc).timestamp() * 1_000_000)
    fitting = zones_fitting([(summer, -240), (winter, -300)])  # US Eastern: EDT in July, EST in January
    assert "America/New_York" in fitting and "America/Bogota" not in fitting and "UTC" not in fitting


# -- arguments that can never work, refused when the DAG is parsed --------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_restarts": -1}, "max_restarts must be a whole number of at least 0"),
        ({"compression": "zstdd"}, "compression='zstdd' is not one of"),
        ({"row_group_rows": 0}, "row_group_rows must be"),
        ({"file_rows": 0}, "file_rows must be"),
        ({"concurrency": 0}, "concurrency must be"),
        ({"per_page": 0}, "per_page must be"),
        ({"per_page": 10_001}, "per_page must be at most 10000"),
        ({"slices": 0}, "slices must be"),
        ({"max_out_of_day_share": 1.5}, "max_out_of_day_share"),
        ({"settle_period": -5}, "settle_period"),
    ],
)
def test_arguments_that_cannot_work_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(CDRConfigError, match=message):
        CDRToParquetOperator(task_id="bad", output_path="/tmp/never-written", **kwargs)
