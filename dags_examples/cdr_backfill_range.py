"""
### CDR backfill range: land a range of days on demand, one mapped task per day

Trigger with `start_day` and `end_day` (inclusive, account-local days in `CDR_TIMEZONE`);
`end_day` must have ended and settled (`CDR_SETTLE_MINUTES`). Days already landed whole (a
complete `_manifest.json`) are skipped unless `redo_landed` is on; a redone day is replaced
atomically. At most `CDR_MAX_API_TASKS` days are fetched at once, so a long
range does not exceed the API's rate.

For the scheduled daily DAG's own history, `airflow backfill create --dag-id cdr_daily ...`
does the same through `cdr_daily`'s runs; this DAG is for ad-hoc ranges (another output
path, a first load before the daily DAG is switched on, a repair after an incident).
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

import cdr_settings
from airflow.sdk import DAG, Param, task
from cdr_checks import day_has_settled, is_landed

from airflow_provider_cdr.api import availability
from airflow_provider_cdr.compat import AirflowFailException
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator

# One request per run would not be the problem; a typo'd year would.
MAX_DAYS = 400

log = logging.getLogger(__name__)
settings = cdr_settings.load()
default_day = settings.start_date.date().isoformat()


def days_between(start_day: str, end_day: str) -> list[date]:
    """Every day from start_day to end_day, both included; refuses an empty or huge range, and a
    range that reaches a day that has not ended and settled (it would be landed as if whole)."""
    start, end = date.fromisoformat(start_day), date.fromisoformat(end_day)
    if end < start:
        raise AirflowFailException(f"end_day {end} is before start_day {start}")
    if (end - start).days >= MAX_DAYS:
        raise AirflowFailException(f"{(end - start).days + 1} days asked; at most {MAX_DAYS} per run")
    if not day_has_settled(end, settings.timezone, settings.settle_period, availability.utcnow()):
        raise AirflowFailException(
            f"end_day {end} has not ended and settled yet in {settings.timezone}; "
            "the daily DAG lands it once it has"
        )
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


with DAG(
    dag_id="cdr_backfill_range",
    description="Land a range of CDR days on demand (dynamic task mapping, one task per day)",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    max_active_tasks=4,
    default_args=settings.default_args,
    params={
        "start_day": Param(default_day, type="string", format="date", description="first day (YYYY-MM-DD)"),
        "end_day": Param(default_day, type="string", format="date", description="last day, included"),
        "redo_landed": Param(False, type="boolean", description="land again days already landed"),
    },
    doc_md=__doc__,
    tags=["cdr"],
) as dag:

    @task
    def days_to_land(params: dict[str, Any] | None = None) -> list[str]:
        """The range's days, minus those already landed unless `redo_landed`."""
        assert params is not None
        days = days_between(params["start_day"], params["end_day"])
        if params["redo_landed"]:
            return [day.isoformat() for day in days]
        todo = [
            day.isoformat()
            for day in days
            if not is_landed(settings.records_path, day, settings.output_conn_id, settings.table_format)
        ]
        log.info("%d days asked, %d already landed, %d to land", len(days), len(days) - len(todo), len(todo))
        return todo

    landed = CDRToParquetOperator.partial(
        task_id="land_day",
        cdr_conn_id=settings.cdr_conn_id,
        output_path=settings.records_path,
        output_conn_id=settings.output_conn_id,
        table_format=settings.table_format,
        timezone=settings.timezone,
        settle_period=settings.settle_period,
        pool=settings.pool,
        max_active_tis_per_dag=settings.max_api_tasks,
        execution_timeout=settings.task_timeout,
        map_index_template="{{ task.day }}",
    ).expand(day=days_to_land())

    @task(trigger_rule="none_failed")
    def report(results: list[dict[str, Any]]) -> dict[str, int]:
        """One line per landed day, and the totals (also when there was nothing to land)."""
        results = sorted(results or [], key=lambda landed_day: landed_day["day"])
        for landed_day in results:
            log.info("%s  rows=%d  files=%d", landed_day["day"], landed_day["rows"], landed_day["files"])
        return {"days": len(results), "rows": sum(landed_day["rows"] for landed_day in results)}

    report(landed.output)
