"""CDRRecordsSensor through real Airflow runs (dag.test()): poke, reschedule and deferrable modes.

The stand-in's clock is frozen at 2024-03-20T12:00Z; where a test needs time to pass, it
replaces `availability.utcnow` (the sensor's and the trigger's one clock) with a script of
moments on that same timeline. dag.test() runs the task, and any trigger, in this process.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_cdr.api import availability
from airflow_provider_cdr.api.errors import CDRAPIError, CDRQueryError
from airflow_provider_cdr.sensors.cdr import CDRRecordsSensor
from airflow_provider_cdr.triggers.cdr import CDRRecordsTrigger
from tests.airflow_db import ensure_airflow_db, register_dag
from tests.conftest import connection_json
from tests.tls_stand_in import TLSStandIn, private_ca, server_certificate

UTC = timezone.utc
# 2024-03-19 in São Paulo: [03:00Z, next day 03:00Z); complete on the frozen stand-in.
DAY = "2024-03-19"
DAY_SUMMARY = {
    "window": {"start": "2024-03-19T03:00:00+00:00", "end": "2024-03-20T03:00:00+00:00"},
    "timezone": "America/Sao_Paulo",
    "query": {"start_datetime": "2024-03-19T00:00:00", "end_datetime": "2024-03-19T23:59:59"},
}
QUIET_DAY = "2023-12-31"  # before the stand-in's first day: never a record


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


def run_dag(dag: DAG, **test_kwargs: Any) -> Any:
    """dag.test() of a DAG built in a test (registered first: see register_dag)."""
    register_dag(dag)
    test_kwargs.setdefault("logical_date", datetime(2024, 3, 20, 12, tzinfo=UTC))
    return dag.test(**test_kwargs)


def sensor_dag(dag_id: str, **sensor_kwargs: Any) -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False) as dag:
        CDRRecordsSensor(task_id="wait", **sensor_kwargs)
    return dag


def task_instance(run: Any, task_id: str = "wait") -> Any:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id).one()
        )
        session.expunge(ti)
        return ti


def xcom_return(run: Any, task_id: str = "wait") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value"
        )
        rows = session.scalars(query).all()
        return XComModel.deserialize_value(rows[0]) if rows else None


def reschedules(run: Any) -> int:
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    ti_id = task_instance(run).id
    with create_session() as session:
        return session.query(TaskReschedule).filter_by(ti_id=ti_id).count()


def clock(monkeypatch: pytest.MonkeyPatch, *moments: datetime) -> None:
    """The sensor's and trigger's clock: each check reads the next moment; the last one stays."""
    ahead = iter(moments[:-1])
    monkeypatch.setattr(availability, "utcnow", lambda: next(ahead, moments[-1]))


@pytest.fixture
def trigger_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(serialized kwargs, event) of every CDRRecordsTrigger run, however Airflow built it."""
    seen: list[tuple[dict[str, Any], dict[str, str]]] = []
    original = CDRRecordsTrigger.run

    async def spy(self: CDRRecordsTrigger) -> AsyncIterator[Any]:
        async for event in original(self):
            seen.append((self.serialize()[1], dict(event.payload)))
            yield event

    monkeypatch.setattr(CDRRecordsTrigger, "run", spy)
    return seen


# -- poke ----------------------------------------------------------------------------------------


def test_poke_passes_at_once_on_a_past_day_with_records(cdr_conn: Any, capfd: Any) -> None:
    run = run_dag(sensor_dag("sensor_poke_past", day=DAY, poke_interval=1, timeout=30))
    assert run.state == "success"
    assert xcom_return(run) == {"status": "available", **DAY_SUMMARY}
    assert cdr_conn.stats()["requests"] == 1
    captured = capfd.readouterr()
    assert "CDR records are in for 2024-03-19T00:00:00..2024-03-19T23:59:59" in captured.out + captured.err
    assert cdr_conn.api_key not in captured.out + captured.err


def test_the_default_day_is_the_one_before_the_run(cdr_conn: Any) -> None:
    """No `day`: the same rule as CDRToParquetOperator (here: a manual run on 2024-03-20)."""
    run = run_dag(sensor_dag("sensor_default_day", poke_interval=1, timeout=30))
    assert run.state == "success"
    assert xcom_return(run)["query"]["start_datetime"] == "2024-03-19T00:00:00"


def test_filters_and_any_window_go_into_the_request(cdr_conn: Any) -> None:
    run = run_dag(
        sensor_dag(
            "sensor_window_filters",
            start_datetime="2024-03-19T09:00:00",
            end_datetime=datetime(2024, 3, 19, 13, tzinfo=UTC),
            filters={"type": "{{ params.kind }}"},
            params={"kind": "inbound"},
            poke_interval=1,
            timeout=30,
        )
    )
    assert run.state == "success"
    assert xcom_return(run)["query"] == {
        "start_datetime": "2024-03-19T09:00:00",
        "end_datetime": "2024-03-19T09:59:59",
        "type": "inbound",
    }


# -- reschedule ----------------------------------------------------------------------------------


def test_reschedule_mode_frees_the_slot_until_the_day_is_over(
    cdr_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First poke before the day's end: no request, rescheduled. The next poke finds records."""
    clock(monkeypatch, datetime(2024, 3, 20, 2, 0, tzinfo=UTC), datetime(2024, 3, 20, 12, 0, tzinfo=UTC))
    run = run_dag(sensor_dag("sensor_reschedule", day=DAY, mode="reschedule", poke_interval=1, timeout=60))
    assert run.state == "success"
    assert reschedules(run) == 1
    assert task_instance(run).try_number == 1
    assert cdr_conn.stats()["requests"] == 1
    assert xcom_return(run)["status"] == "available"


# -- deferrable ----------------------------------------------------------------------------------


def test_deferrable_passes_a_past_day_without_deferring(cdr_conn: Any, trigger_events: list[Any]) -> None:
    run = run_dag(sensor_dag("sensor_defer_past", day=DAY, deferrable=True, poke_interval=1))
    assert run.state == "success"
    assert trigger_events == []
    assert xcom_return(run) == {"status": "available", **DAY_SUMMARY}


def test_deferrable_defers_then_resumes_in_execute_complete(
    cdr_conn: Any,
    monkeypatch: pytest.MonkeyPatch,
    trigger_events: list[Any],
    capfd: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The check in execute() is too early; the trigger (run inline by dag.test()) sees the day in."""
    clock(monkeypatch, datetime(2024, 3, 20, 2, 0, tzinfo=UTC), datetime(2024, 3, 20, 12, 0, tzinfo=UTC))
    run = run_dag(sensor_dag("sensor_defer_resume", day=DAY, deferrable=True, poke_interval=1))
    assert run.state == "success"
    [(kwargs, event)] = trigger_events
    assert event["status"] == "available"
    assert kwargs["params"] == DAY_SUMMARY["query"]
    assert kwargs["window_end"] == "2024-03-20T03:00:00+00:00"
    assert xcom_return(run) == {"status": "available", **DAY_SUMMARY}  # from execute_complete
    assert task_instance(run).try_number == 1
    assert cdr_conn.stats()["requests"] == 1  # only the trigger asked
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert "running trigger in line" in logged  # dag.test()'s stand-in for the triggerer
    assert "Trigger completed" in logged
    assert cdr_conn.api_key not in json.dumps(kwargs) + json.dumps(event) + logged


def test_the_trigger_reads_a_metadata_db_connection_through_the_supervisor(
    api: Any, monkeypatch: pytest.MonkeyPatch, trigger_events: list[Any]
) -> None:
    """No AIRFLOW_CONN_* variable: the trigger's async lookup goes through the supervisor's comms."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Connection).filter_by(conn_id="cdr_in_db").delete()
        session.add(
            Connection(
                conn_id="cdr_in_db",
                conn_type="cdr",
                host=api.url,
                password=api.api_key,
                extra=json.dumps({"timezone": api.timezone}),
            )
        )
    clock(monkeypatch, datetime(2024, 3, 20, 2, 0, tzinfo=UTC), datetime(2024, 3, 20, 12, 0, tzinfo=UTC))
    run = run_dag(sensor_dag("sensor_defer_db_conn", cdr_conn_id="cdr_in_db", day=DAY, deferrable=True))
    assert run.state == "success"
    [(kwargs, event)] = trigger_events
    assert kwargs["conn_id"] == "cdr_in_db" and event["status"] == "available"


def test_an_error_event_fails_the_task_without_the_key(
    api: Any,
    cdr_conn_for: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    trigger_events: list[Any],
    capfd: Any,
) -> None:
    cdr_conn_for(api, max_retries=1, max_retry_wait=5)
    api.set_faults(rate_bad_json=1.0)
    clock(monkeypatch, datetime(2024, 3, 20, 2, 0, tzinfo=UTC), datetime(2024, 3, 20, 12, 0, tzinfo=UTC))
    run = run_dag(sensor_dag("sensor_defer_error", day=DAY, deferrable=True, poke_interval=1))
    api.clear_faults()
    assert run.state == "failed"
    assert task_instance(run).state == "failed"
    [(_, event)] = trigger_events
    assert event["status"] == "error"
    captured = capfd.readouterr()
    assert "Waiting for CDR records failed" in captured.out + captured.err
    assert api.api_key not in json.dumps(event) + captured.out + captured.err


def test_execute_complete_raises_the_event_message() -> None:
    sensor = CDRRecordsSensor(task_id="wait", day=DAY)
    with pytest.raises(CDRAPIError, match="HTTP 401: Invalid api_key"):
        sensor.execute_complete(
            {}, {"status": "error", "message": "GET /api/v2/cdr answered HTTP 401: Invalid api_key"}
        )
    with pytest.raises(CDRAPIError, match="no event"):
        sensor.execute_complete({}, None)


# -- empty windows -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_empty", "state"), [("succeed", "success"), ("skip", "skipped"), ("fail", "failed")]
)
def test_a_quiet_day_after_the_grace_period(cdr_conn: Any, on_empty: str, state: str) -> None:
    run = run_dag(
        sensor_dag(f"sensor_quiet_{on_empty}", day=QUIET_DAY, on_empty=on_empty, retries=2, poke_interval=1)
    )
    ti = task_instance(run)
    assert ti.state == state
    assert ti.try_number == 1  # "fail" fails for good: no retry can make a quiet day busy
    assert cdr_conn.stats()["requests"] == 1
    if on_empty == "succeed":
        assert xcom_return(run)["status"] == "empty"


def test_deferrable_quiet_day_turns_empty_in_the_trigger(
    cdr_conn: Any, monkeypatch: pytest.MonkeyPatch, trigger_events: list[Any]
) -> None:
    """Within the grace period "no record" waits; the trigger's check past it is EMPTY -> skip."""
    quiet_end = datetime(2024, 1, 1, 3, 0, tzinfo=UTC)
    clock(monkeypatch, quiet_end + timedelta(hours=1), quiet_end + timedelta(hours=7))
    run = run_dag(
        sensor_dag("sensor_defer_quiet", day=QUIET_DAY, on_empty="skip", deferrable=True, poke_interval=1)
    )
    assert task_instance(run).state == "skipped"
    [(_, event)] = trigger_events
    assert event["status"] == "empty"
    assert cdr_conn.stats()["requests"] == 2  # execute()'s check, then the trigger's


# -- windows not in yet (real clock) -------------------------------------------------------------


def test_a_window_ending_in_the_future_times_out(
    make_stand_in: Callable[..., Any], cdr_conn_for: Callable[..., Any], capfd: Any
) -> None:
    live = cdr_conn_for(make_stand_in(now=None))
    now = datetime.now(UTC)
    run = run_dag(
        sensor_dag(
            "sensor_future_window",
            start_datetime=now - timedelta(hours=1),
            end_datetime=now + timedelta(days=1),
            poke_interval=0.2,
            timeout=0.5,
        )
    )
    assert task_instance(run).state == "failed"
    captured = capfd.readouterr()
    assert "Sensor has timed out" in captured.out + captured.err
    assert live.stats()["requests"] == 0  # a window not over is never asked for


def test_an_ended_window_not_yet_ingested_waits(
    make_stand_in: Callable[..., Any], cdr_conn_for: Callable[..., Any]
) -> None:
    """The API lags an hour behind: a window that ended 10 minutes ago has no record yet."""
    lagging = cdr_conn_for(make_stand_in(now=None, ingest_lag_s=3600))
    now = datetime.now(UTC)
    sensor = CDRRecordsSensor(
        task_id="wait", start_datetime=now - timedelta(minutes=40), end_datetime=now - timedelta(minutes=10)
    )
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    assert lagging.stats()["requests"] == 1


# -- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"day": "2024-02-30"}, "not a day"),
        ({"day": "yesterday"}, "not a day"),
        ({"filters": {"typ": "inbound"}}, "did you mean 'type'"),
        ({"filters": {"type": "carrier_pigeon"}}, "unknown value"),
        ({"filters": {"start_date": "2024-03-01"}}, "set by the task"),
        ({"start_datetime": "2024-03-19T00:00:00"}, "both start_datetime and end_datetime"),
        (
            {"day": DAY, "start_datetime": "2024-03-19T00:00:00", "end_datetime": "2024-03-19T01:00:00"},
            "either day",
        ),
        ({"start_datetime": "2024-03-19T02:00:00", "end_datetime": "2024-03-19T01:00:00"}, "window is empty"),
        ({"start_datetime": "2024-03-19", "end_datetime": "2024-03-20"}, "YYYY-MM-DDTHH:MM:SS"),
        ({"timezone": "Mars/Olympus"}, "IANA"),
        ({"on_empty": "ignore"}, "on_empty"),
        ({"grace_period": -1}, "grace_period"),
        ({"settle_period": "1h"}, "settle_period"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(CDRQueryError, match=message):
        CDRRecordsSensor(task_id="wait", **kwargs)


def test_templated_filters_are_checked_before_any_request(cdr_conn: Any) -> None:
    dag = sensor_dag(
        "sensor_bad_template",
        day=DAY,
        filters={"type": "{{ params.kind }}"},
        params={"kind": "carrier_pigeon"},
    )
    run = run_dag(dag)
    assert run.state == "failed"
    assert cdr_conn.stats()["requests"] == 0


# -- deferred over TLS: the trigger trusts exactly what the connection says ---------------------------


def test_deferrable_over_tls_trusts_the_private_ca_named_in_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trigger_events: list[Any]
) -> None:
    ca = private_ca(tmp_path)
    with TLSStandIn(*server_certificate(ca, tmp_path)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_CDR_DEFAULT", connection_json(server, verify=str(ca.cert_path)))
        clock(monkeypatch, datetime(2024, 3, 20, 2, 0, tzinfo=UTC), datetime(2024, 3, 20, 12, 0, tzinfo=UTC))
        run = run_dag(sensor_dag("sensor_defer_private_ca", day=DAY, deferrable=True, poke_interval=1))
    assert run.state == "success"
    [(_, event)] = trigger_events
    assert event["status"] == "available"
    assert xcom_return(run) == {"status": "available", **DAY_SUMMARY}
    assert server.requests() == 1  # execute()'s check was too early: the trigger asked, over TLS


def test_deferrable_over_tls_fails_at_once_on_an_untrusted_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trigger_events: list[Any], capfd: Any
) -> None:
    with TLSStandIn(*server_certificate(private_ca(tmp_path), tmp_path)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_CDR_DEFAULT", connection_json(server))  # the default CA bundle
        clock(monkeypatch, datetime(2024, 3, 20, 2, 0, tzinfo=UTC), datetime(2024, 3, 20, 12, 0, tzinfo=UTC))
        run = run_dag(sensor_dag("sensor_defer_untrusted", day=DAY, deferrable=True, poke_interval=1))
    assert run.state == "failed"
    [(_, event)] = trigger_events
    assert event["status"] == "error" and "(no retry)" in event["message"]
    assert server.connections == 1 and server.requests() == 0  # no retry, and the key never went out
    logged = "".join(capfd.readouterr())
    assert re.search(
        r"Waiting for CDR records failed: CDRTLSError: GET /api/v2/cdr: TLS verification of "
        r"https://127\.0\.0\.1:\d+ failed \(no retry\): .*certificate verify failed",
        logged,
        re.IGNORECASE,
    )
    assert server.api_key not in logged
