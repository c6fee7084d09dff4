"""The example DAGs on a real Airflow deployment: scheduler, LocalExecutor, triggerer, api-server.

The tests run in file order and share one deployment: the first backfill lands the days the
later tests re-land. Run states and task instances are read back through the REST API.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil
import pyarrow.parquet as pq
import pytest

from airflow_provider_cdr.fake_api.server import StandIn
from tests.deployment.airflow_deployment import AirflowDeployment
from tests.deployment.processes import wait_for
from tests.deployment.scenario import MAX_API_TASKS, RATE_LIMIT, TIMEZONE, Scenario, midnight

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1800)]

REPROCESSED = 10
LOOKUPS = ("agents", "queues", "teams", "wrapup_codes", "campaigns", "deleted_agents")


def instant(text: str) -> datetime:
    """An ISO instant from the REST API ("...Z")."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def local_day(text: str) -> date:
    """The account-local day an ISO instant (a run's logical date) falls on."""
    return instant(text).astimezone(ZoneInfo(TIMEZONE)).date()


def landed_uuids(records: Path, day: date) -> list[str]:
    """uuids of every Parquet file in the day's folder (a glob reader's view: duplicates would show)."""
    partition = records / f"date={day.isoformat()}"
    manifest = json.loads((partition / "_manifest.json").read_text())
    files = sorted(partition.glob("part-*.parquet"))
    assert sorted(entry["name"] for entry in manifest["files"]) == [f.name for f in files]
    return pq.read_table([str(f) for f in files], columns=["uuid"]).column("uuid").to_pylist()


def assert_exact(stand_in: StandIn, records: Path, days: list[date]) -> None:
    for day in days:
        landed = landed_uuids(records, day)
        truth = stand_in.truth(start_date=day.isoformat(), end_date=day.isoformat())
        assert truth, f"{day}: the stand-in has no records"
        assert len(landed) == len(set(landed)), f"{day}: duplicate uuids"
        assert set(landed) == truth, f"{day}: landed {len(landed)}, truth {len(truth)}"


def backfill(
    deployment: AirflowDeployment, scenario: Scenario, *extra: str, days: list[date] | None = None
) -> dict[str, Any]:
    """`airflow backfill create` over `days` (consecutive; the scenario's by default); the new
    backfill as the REST API shows it.

    Bare dates are read as UTC midnight, which in São Paulo is 21:00 the evening before: the
    bounds are the days' local midnights, with their offset, so the last day is included.
    """
    days = days or scenario.days
    first, last = midnight(days[0]), midnight(days[-1])
    deployment.airflow(
        "backfill", "create", "--dag-id", "cdr_daily",
        "--from-date", first.isoformat(), "--to-date", last.isoformat(), *extra,
    )  # fmt: skip
    backfills = deployment.get("/api/v2/backfills", dag_id="cdr_daily", limit=100)["backfills"]
    return dict(max(backfills, key=lambda item: item["id"]))


def exit_taken_in(deployment: AirflowDeployment, ti: dict[str, Any]) -> bool:
    """Whether the scheduler has taken in the executor's event of `ti`'s worker exit at its try."""
    key = f"task_id='{ti['task_id']}', run_id='{ti['dag_run_id']}', try_number={ti['try_number']},"
    return any(
        "Received executor event" in line and key in line
        for line in deployment.service_log("scheduler").splitlines()
    )


def wait_for_backfill(deployment: AirflowDeployment, backfill_id: int, timeout: float) -> None:
    def completed() -> bool:
        return deployment.get(f"/api/v2/backfills/{backfill_id}")["completed_at"] is not None

    try:
        wait_for(f"backfill {backfill_id}", completed, timeout, pause=3.0)
    except TimeoutError:
        print(deployment.diagnostics())
        raise


def daily_runs(deployment: AirflowDeployment) -> dict[date, dict[str, Any]]:
    runs = deployment.get("/api/v2/dags/cdr_daily/dagRuns", limit=100)["dag_runs"]
    return {local_day(run["logical_date"]): run for run in runs}


def test_backfill_lands_30_days_exactly_with_the_sensor_deferred_in_the_triggerer(
    deployment: AirflowDeployment, deploy_stand_in: StandIn, scenario: Scenario
) -> None:
    started = time.monotonic()
    deployment.unpause("cdr_daily")
    created = backfill(deployment, scenario)
    last = scenario.days[-1]

    # The last day has no record yet: its sensor must hand the wait to the triggerer.
    def last_sensor_deferred() -> dict[str, Any] | None:
        sensors = deployment.task_instances("cdr_daily", task_id="wait_for_day")
        return next(
            (ti for ti in sensors if local_day(ti["logical_date"]) == last and ti["state"] == "deferred"),
            None,
        )

    deferred = wait_for(f"the {last} sensor in state deferred", last_sensor_deferred, 600, pause=2.0)
    # Airflow 3.3 fails a resumed task when the scheduler takes in the exit of the worker that
    # deferred it only after the resumed one has started (apache/airflow#71580: the likely cause
    # of a try that failed here under load, after which the next try found the records without
    # deferring). The records arrive once the scheduler has taken that exit in, so the round
    # trip that runs is the one under test.
    wait_for(
        "the scheduler to take in the deferring worker's exit",
        lambda: exit_taken_in(deployment, deferred),
        120,
        pause=1.0,
    )
    deploy_stand_in.set_clock(now=None)  # the day's records arrive; the trigger's next poll sees them

    wait_for_backfill(deployment, created["id"], 900)
    runs = daily_runs(deployment)
    assert sorted(runs) == scenario.days
    assert {run["state"] for run in runs.values()} == {"success"}, deployment.diagnostics()
    assert {run["run_type"] for run in runs.values()} == {"backfill"}
    assert_exact(deploy_stand_in, scenario.records, scenario.days)

    # Its log (task and trigger): no record, deferred, the triggerer's event, resumed in a new process.
    sensor = next(
        ti
        for ti in deployment.task_instances("cdr_daily", task_id="wait_for_day")
        if local_day(ti["logical_date"]) == last
    )
    milestones = [
        "No CDR record yet",
        "Pausing task as DEFERRED",
        "Trigger fired event",
        "CDR records are in",
    ]
    told: dict[str, list[str]] = {"events": []}

    def sensor_story() -> list[int] | None:
        """Where each milestone is in the sensor's log; None until all are there (the triggerer's
        lines reach the task log after the run has ended, when the machine is busy)."""
        log = deployment.get(
            f"/api/v2/dags/cdr_daily/dagRuns/{sensor['dag_run_id']}/taskInstances/wait_for_day/logs/{sensor['try_number']}",
            full_content=True,
        )
        told["events"] = events = [str(line.get("event", "")) for line in log["content"]]
        found = [
            next((n for n, event in enumerate(events) if milestone in event), None)
            for milestone in milestones
        ]
        return None if None in found else [n for n in found if n is not None]

    try:
        seen = wait_for("the sensor's log to tell the whole deferral", sensor_story, 120, pause=2.0)
    except TimeoutError:
        mismatches = deployment.get(
            "/api/v2/eventLogs", dag_id="cdr_daily", task_id="wait_for_day", event="state mismatch"
        )["event_logs"]
        raise AssertionError(
            f"the sensor's log (try {sensor['try_number']}) lacks a milestone of {milestones}: "
            f"{told['events']}; Airflow's state mismatches: {[e.get('extra') for e in mismatches]}"
        ) from None
    assert seen == sorted(seen), told["events"]
    print(f"30-day backfill: {time.monotonic() - started:.0f}s")


def test_backfill_reprocessing_completed_days_replaces_them_in_place(
    deployment: AirflowDeployment, deploy_stand_in: StandIn, scenario: Scenario
) -> None:
    # The last REPROCESSED days of the 30 the first backfill landed (fewer days: CI's time; what
    # is checked per day is the same).
    started = time.monotonic()
    days = scenario.days[-REPROCESSED:]
    before = {day: sorted((scenario.records / f"date={day}").glob("part-*")) for day in scenario.days}
    created = backfill(deployment, scenario, "--reprocess-behavior", "completed", days=days)
    wait_for_backfill(deployment, created["id"], 900)
    runs = daily_runs(deployment)
    assert sorted(runs) == scenario.days
    assert {run["state"] for run in runs.values()} == {"success"}
    assert_exact(deploy_stand_in, scenario.records, scenario.days)
    after = {day: sorted((scenario.records / f"date={day}").glob("part-*")) for day in scenario.days}
    # Every reprocessed day was written again (new file names), not skipped nor appended to; the
    # others were left alone.
    assert all(set(before[day]).isdisjoint(after[day]) for day in days)
    assert all(before[day] == after[day] for day in scenario.days if day not in days)
    print(f"{REPROCESSED}-day reprocessing backfill: {time.monotonic() - started:.0f}s")


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """Most intervals open at one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_range_dag_keeps_its_mapped_tasks_and_request_rate_within_their_caps(
    deployment: AirflowDeployment, deploy_stand_in: StandIn, scenario: Scenario
) -> None:
    days = scenario.days[:10]
    deploy_stand_in.reset_stats()
    deployment.unpause("cdr_backfill_range")
    conf = {"start_day": days[0].isoformat(), "end_day": days[-1].isoformat(), "redo_landed": True}
    run_id = deployment.trigger("cdr_backfill_range", conf)
    run = deployment.wait_for_run("cdr_backfill_range", run_id, 600)
    assert run["state"] == "success", deployment.diagnostics()

    mapped = deployment.task_instances("cdr_backfill_range", run_id, task_id="land_day")
    assert sorted(ti["rendered_map_index"] for ti in mapped) == [day.isoformat() for day in days]
    assert {ti["state"] for ti in mapped} == {"success"}
    intervals = [(instant(ti["start_date"]), instant(ti["end_date"])) for ti in mapped]
    assert max_overlap(intervals) <= MAX_API_TASKS
    # `rate_limit` holds per task process. The stand-in stamps a request when its thread handles
    # it; on a loaded machine that can be a few milliseconds after the client sent it, carrying one
    # request across a second's edge: one is allowed for that (a gate that did not hold would
    # exceed by a whole second's worth).
    stats = deploy_stand_in.stats()
    # Each land_day task asks for its own day only: in any second, at most RATE_LIMIT of its
    # requests (no bound on how many tasks hand over within one second is assumed).
    by_day = stats["per_second_by_day"]
    assert sorted(by_day) == [day.isoformat() for day in days]
    for day, seconds in by_day.items():
        assert max(seconds.values()) <= RATE_LIMIT + 1, (day, seconds)
    # And all of them together: at most RATE_LIMIT for each land_day task running during that
    # second (one may end as the next starts).
    per_second = stats["per_second"]
    assert per_second
    for second, count in per_second.items():
        start = float(second)
        running = sum(
            1 for begin, end in intervals if begin.timestamp() < start + 1 and end.timestamp() >= start
        )
        assert count <= RATE_LIMIT * max(running, 1) + 1, (second, count, running)
    assert_exact(deploy_stand_in, scenario.records, days)


def test_lookups_dag_lands_its_dimension_tables(
    deployment: AirflowDeployment, deploy_stand_in: StandIn, scenario: Scenario
) -> None:
    deployment.unpause("cdr_lookups")
    # Not before the DAG's start_date (today): such a manual run would get no task instances.
    logical_date = midnight(scenario.days[-1] + timedelta(days=1)).isoformat()
    run_id = deployment.trigger("cdr_lookups", {}, logical_date=logical_date)
    run = deployment.wait_for_run("cdr_lookups", run_id, 600)
    snapshots = deployment.task_instances("cdr_lookups", run_id, task_id="snapshot")
    assert run["state"] == "success", deployment.diagnostics()
    assert sorted(ti["state"] for ti in snapshots) == ["success"] * len(LOOKUPS), (run, snapshots)
    expected = deploy_stand_in.dataset.lookups()
    for name in LOOKUPS:
        [path] = (scenario.output / "dimensions" / name).glob(f"date=*/{name}.parquet")
        table = pq.read_table(path)
        assert table.column("id").to_pylist() == [item["id"] for item in expected[name]]
        assert table.column("name").to_pylist() == [item["name"] for item in expected[name]]


def task_process(ti_id: str) -> psutil.Process | None:
    """The task runner process of one task instance: Airflow titles it `airflow worker -- <ti id>`."""
    for process in psutil.process_iter(["cmdline"]):
        if f"airflow worker -- {ti_id}" in " ".join(process.info["cmdline"] or []):
            return process
    return None


def test_a_task_killed_mid_run_is_retried_and_its_day_ends_exact(
    deployment: AirflowDeployment, deploy_stand_in: StandIn, scenario: Scenario
) -> None:
    day = scenario.days[4]
    deployment.unpause("cdr_backfill_range")
    deploy_stand_in.set_faults(latency_ms=4000)  # every request slow: the task is caught mid-extraction
    try:
        conf = {"start_day": day.isoformat(), "end_day": day.isoformat(), "redo_landed": True}
        run_id = deployment.trigger("cdr_backfill_range", conf)

        def running_task() -> psutil.Process | None:
            [ti] = deployment.task_instances("cdr_backfill_range", run_id, task_id="land_day") or [None]
            if ti is None or ti["state"] != "running":
                return None
            process = task_process(ti["id"])
            # Killed once it is talking to the API, not while it starts up.
            return process if process and deploy_stand_in.stats()["requests"] > 0 else None

        deploy_stand_in.reset_stats()
        victim = wait_for("land_day running", running_task, 300, pause=0.5)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        deploy_stand_in.clear_faults()

    run = deployment.wait_for_run("cdr_backfill_range", run_id, 600)
    assert run["state"] == "success", deployment.diagnostics()
    [ti] = deployment.task_instances("cdr_backfill_range", run_id, task_id="land_day")
    assert ti["try_number"] >= 2
    tries = deployment.get(
        f"/api/v2/dags/cdr_backfill_range/dagRuns/{run_id}/taskInstances/land_day/{ti['map_index']}/tries"
    )["task_instances"]
    # The killed try is recorded as failed (with the pid that was killed), the retry succeeded.
    assert (tries[0]["state"], tries[0]["pid"]) == ("failed", victim.pid)
    assert tries[-1]["state"] == "success"
    assert_exact(deploy_stand_in, scenario.records, [day])


def test_the_api_key_is_in_no_file_the_deployment_wrote(
    deployment: AirflowDeployment, deploy_stand_in: StandIn
) -> None:
    """Task logs as Airflow's workers write them, and every component's log: no API key anywhere."""
    written = [path for path in deployment.home.rglob("*") if path.is_file()]
    task_logs = [path for path in written if "land_day" in str(path) or "wait_for_day" in str(path)]
    assert task_logs, "the tasks above wrote their logs under AIRFLOW_HOME"
    secret = deploy_stand_in.api_key.encode()
    leaking = [str(path) for path in written if secret in path.read_bytes()]
    assert not leaking
