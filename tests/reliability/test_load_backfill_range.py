"""Load: a 30-day backfill through the range example DAG, against a rate-limited stand-in with faults on.

Every day must land exactly, the stand-in must never see more requests in a second than the
connection's cap, and the requests the faults wasted (retries) are reported. dag.test() runs the
mapped task instances one after another in this process; inside each, the day's 8 slices run with
4 requests in flight, all under the one rate gate.
"""

from __future__ import annotations

import json
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.airflow_db import ensure_airflow_db
from tests.reliability.reliability_support import point_connection

DAGS = Path(__file__).resolve().parents[2] / "dags_examples"
FIRST_DAY = date(2024, 3, 1)
DAYS = [FIRST_DAY + timedelta(days=n) for n in range(30)]  # São Paulo's March: no DST change
RATE_CAP = 10
FAULTS = {
    "rate_429": 0.03,
    "rate_5xx": 0.03,
    "burst_5xx": 2,
    "rate_drop": 0.02,
    "rate_reset_mid_body": 0.02,
    "rate_truncate": 0.02,
    "rate_bad_json": 0.02,
    "rate_limit_rps": RATE_CAP,
}


@pytest.mark.load
def test_a_30_day_backfill_under_a_rate_cap_with_faults_lands_every_day_exactly(
    make_stand_in: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow import settings
    from airflow.dag_processing.dagbag import BundleDagBag

    ensure_airflow_db()
    server = make_stand_in(records_per_day=300, now="2024-06-01T12:00:00Z")
    point_connection(monkeypatch, server, rate_limit=RATE_CAP, concurrency=4, max_retry_wait=120)
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(DAGS))
    monkeypatch.setenv("CDR_TIMEZONE", server.timezone)
    monkeypatch.setenv("CDR_START_DATE", FIRST_DAY.isoformat())
    monkeypatch.setenv("CDR_OUTPUT_PATH", str(tmp_path))
    monkeypatch.setenv("CDR_RETRIES", "0")
    monkeypatch.setenv("CDR_MAX_API_TASKS", "4")
    for name in ("CDR_OUTPUT_CONN_ID", "CDR_CONN_ID", "CDR_POOL", "CDR_SETTLE_MINUTES"):
        monkeypatch.delenv(name, raising=False)
    bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name="dags-folder")
    assert bag.import_errors == {}
    dag = bag.dags["cdr_backfill_range"]

    server.set_faults(**FAULTS)
    server.reset_stats()
    started = time.monotonic()
    run = dag.test(
        run_conf={"start_day": DAYS[0].isoformat(), "end_day": DAYS[-1].isoformat(), "redo_landed": False}
    )
    duration = time.monotonic() - started
    stats = server.stats()
    assert run.state == "success", {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}

    requests = retries = 0
    for day in DAYS:
        partition = tmp_path / "cdr" / f"date={day.isoformat()}"
        manifest = json.loads((partition / "_manifest.json").read_text())
        uuids = pq.read_table([str(partition / f["name"]) for f in manifest["files"]], columns=["uuid"])
        landed = uuids.column("uuid").to_pylist()
        assert len(landed) == len(set(landed)), day
        assert set(landed) == server.truth(start_date=day.isoformat(), end_date=day.isoformat()), day
        requests += manifest["extraction"]["requests"]
        retries += manifest["extraction"]["retries"]

    print(
        f"\nload run: {len(DAYS)} days in {duration:.0f} s; stand-in saw {stats['requests']} requests "
        f"({stats['by_status']}); the tasks sent {requests}, of which {retries} were wasted (retried); "
        f"max {stats['max_per_second']} requests/s against a cap of {RATE_CAP}, "
        f"max {stats['max_in_flight']} in flight"
    )
    assert stats["requests"] == requests, "every request the stand-in saw is accounted for in a manifest"
    assert stats["max_per_second"] <= RATE_CAP
    assert stats["by_status"].get("429", 0) < retries, "some retries were faults other than 429"
    assert retries > 0, "the faults fired"
