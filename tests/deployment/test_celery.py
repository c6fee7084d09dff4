"""The example DAGs under CeleryExecutor: two workers on a real Redis broker, one shared API rate limit.

A deployment of its own (PostgreSQL, Redis, api-server, scheduler, dag-processor, triggerer and
two ``airflow celery worker`` processes with distinct hostnames). The tests run in file order:
the backfill lands the days, then a worker is killed under a task and the other one finishes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from airflow_provider_cdr.fake_api.server import StandIn
from tests.deployment.airflow_deployment import AirflowDeployment, CeleryWorkers
from tests.deployment.postgres import LocalPostgres
from tests.deployment.processes import wait_for
from tests.deployment.scenario import TIMEZONE, Scenario
from tests.deployment.test_deployment_dags import (
    assert_exact,
    backfill,
    daily_runs,
    instant,
    max_overlap,
    wait_for_backfill,
)

pytestmark = [pytest.mark.deployment, pytest.mark.celery, pytest.mark.timeout(1800)]

WORKERS = ("worker-a", "worker-b")
SHARED_RATE = 6  # requests per second to the API from every worker and task together
API_TASKS = 4  # landing tasks at once: more than one worker, each with its own process
BACKFILL_DAYS = 15  # the scenario's last days: enough for both workers and overlapping tasks


@pytest.fixture(scope="module")
def celery_stand_in() -> Iterator[StandIn]:
    """500 records a day, on the live clock: every day of the scenario is in."""
    with StandIn(seed=11, records_per_day=500, timezone=TIMEZONE) as server:
        yield server


@pytest.fixture(scope="module")
def celery_deployment(
    scenario: Scenario, celery_stand_in: StandIn, redis_url: str
) -> Iterator[AirflowDeployment]:
    base = redis_url.rsplit("/", 1)[0]
    connection = {
        "conn_type": "cdr",
        "host": celery_stand_in.url,
        "password": celery_stand_in.api_key,
        "extra": {"timezone": TIMEZONE, "rate_limit": SHARED_RATE, "rate_limit_redis": f"{base}/2"},
    }
    settings = {
        "AIRFLOW_CONN_CDR_DEFAULT": json.dumps(connection),
        "CDR_TIMEZONE": TIMEZONE,
        "CDR_START_DATE": (scenario.days[-1] + timedelta(days=1)).isoformat(),
        "CDR_OUTPUT_PATH": str(scenario.output),
        "CDR_RETRIES": "2",
        "CDR_RETRY_DELAY_S": "1",
        "CDR_SETTLE_MINUTES": "0",
        "CDR_GRACE_HOURS": "72",
        "CDR_POKE_INTERVAL_S": "3",
        "CDR_MAX_API_TASKS": str(API_TASKS),
    }
    postgres = LocalPostgres().start()
    try:
        airflow = AirflowDeployment(postgres.url, settings, CeleryWorkers(f"{base}/1", WORKERS))
        try:
            yield airflow.start()
        finally:
            airflow.stop()
    finally:
        postgres.stop()


def test_a_15_day_backfill_runs_on_both_workers_under_one_rate_limit(
    celery_deployment: AirflowDeployment, celery_stand_in: StandIn, scenario: Scenario
) -> None:
    started = time.monotonic()
    celery_stand_in.reset_stats()
    days = scenario.days[-BACKFILL_DAYS:]
    celery_deployment.unpause("cdr_daily")
    created = backfill(celery_deployment, scenario, days=days)
    wait_for_backfill(celery_deployment, created["id"], 1500)
    runs = daily_runs(celery_deployment)
    assert sorted(runs) == days
    assert {run["state"] for run in runs.values()} == {"success"}, celery_deployment.diagnostics()
    assert_exact(celery_stand_in, scenario.records, days)

    landings = celery_deployment.task_instances("cdr_daily", task_id="land_day")
    assert {ti["hostname"] for ti in landings} == set(WORKERS), "both workers ran landing tasks"
    intervals = [
        (instant(ti["start_date"]), instant(ti["end_date"]))
        for ti in landings
        if ti["start_date"] and ti["end_date"]
    ]
    assert max_overlap(intervals) >= 2, "landing tasks ran side by side"
    stats = celery_stand_in.stats()
    assert stats["max_per_second"] <= SHARED_RATE, json.dumps(stats["per_second"])
    print(
        f"{BACKFILL_DAYS}-day backfill on Celery: {time.monotonic() - started:.0f}s, {stats['requests']} requests"
    )


def test_a_worker_killed_mid_task_leaves_it_to_the_other(
    celery_deployment: AirflowDeployment, celery_stand_in: StandIn, scenario: Scenario
) -> None:
    day: date = scenario.days[3]
    celery_deployment.unpause("cdr_backfill_range")
    celery_stand_in.set_faults(latency_ms=3000)  # every request slow: the task is caught mid-extraction
    try:
        conf = {"start_day": day.isoformat(), "end_day": day.isoformat(), "redo_landed": True}
        run_id = celery_deployment.trigger("cdr_backfill_range", conf)

        def landing_running() -> dict[str, Any] | None:
            found = celery_deployment.task_instances("cdr_backfill_range", run_id, task_id="land_day")
            return next((ti for ti in found if ti["state"] == "running" and ti["hostname"]), None)

        caught = wait_for("the landing task running on a worker", landing_running, 600, pause=1.0)
        celery_deployment.kill(caught["hostname"])
    finally:
        celery_stand_in.clear_faults()
    run = celery_deployment.wait_for_run("cdr_backfill_range", run_id, 900)
    assert run["state"] == "success", celery_deployment.diagnostics()
    (landing,) = celery_deployment.task_instances("cdr_backfill_range", run_id, task_id="land_day")
    survivor = next(name for name in WORKERS if name != caught["hostname"])
    assert landing["try_number"] > caught["try_number"], "the killed try was retried"
    assert landing["hostname"] == survivor
    assert_exact(celery_stand_in, scenario.records, [day])
