"""Fixtures for the deployment tests: one stand-in and one real Airflow deployment per module.

The scenario: the 30 account-local days up to yesterday, 500 records a day. The stand-in's
clock starts frozen a millisecond before the last day begins, so that day has no record
yet: its deferrable sensor must wait in the triggerer until the test moves the clock on
(records "arrive", as from a lagging API), which proves the defer/resume round trip.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_cdr.fake_api.server import StandIn
from tests.deployment.airflow_deployment import AirflowDeployment
from tests.deployment.postgres import LocalPostgres
from tests.deployment.scenario import MAX_API_TASKS, RATE_LIMIT, TIMEZONE, Scenario, midnight


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    last = datetime.now(ZoneInfo(TIMEZONE)).date() - timedelta(days=1)
    days = [last - timedelta(days=n) for n in range(29, -1, -1)]
    return Scenario(days=days, output=tmp_path_factory.mktemp("cdr-deploy-data"))


@pytest.fixture(scope="module")
def deploy_stand_in(scenario: Scenario) -> Iterator[StandIn]:
    """500 records a day; its clock frozen just before the last day begins (that day: no records yet)."""
    frozen = midnight(scenario.days[-1]) - timedelta(milliseconds=1)
    with StandIn(seed=7, records_per_day=500, timezone=TIMEZONE, now=frozen) as server:
        yield server


@pytest.fixture(scope="module")
def deployment(scenario: Scenario, deploy_stand_in: StandIn) -> Iterator[AirflowDeployment]:
    """api-server, scheduler, dag-processor, triggerer on PostgreSQL (CDR_TEST_DB=sqlite: SQLite)."""
    connection = {
        "conn_type": "cdr",
        "host": deploy_stand_in.url,
        "password": deploy_stand_in.api_key,
        "extra": {"timezone": TIMEZONE, "rate_limit": RATE_LIMIT},
    }
    settings = {
        "AIRFLOW_CONN_CDR_DEFAULT": json.dumps(connection),
        "CDR_TIMEZONE": TIMEZONE,
        # From today: catch-up creates no run of its own; the backfills create them.
        "CDR_START_DATE": (scenario.days[-1] + timedelta(days=1)).isoformat(),
        "CDR_OUTPUT_PATH": str(scenario.output),
        "CDR_RETRIES": "2",
        "CDR_RETRY_DELAY_S": "1",
        "CDR_SETTLE_MINUTES": "0",
        # Yesterday still counts as "not yet" (not "a quiet day") at any hour of today.
        "CDR_GRACE_HOURS": "72",
        "CDR_POKE_INTERVAL_S": "3",
        "CDR_MAX_API_TASKS": str(MAX_API_TASKS),
    }
    database = os.environ.get("CDR_TEST_DB", "postgres").strip().lower()
    postgres = LocalPostgres().start() if database == "postgres" else None
    try:
        airflow = AirflowDeployment(postgres.url if postgres else None, settings)
        try:
            yield airflow.start()
        finally:
            airflow.stop()
    finally:
        if postgres is not None:
            postgres.stop()
