"""
### CDR daily: one account-local day of Call Detail Records per run, as Parquet

`wait_for_day` (deferrable: no worker slot while it waits) until the day has ended, settled
and has records -> `land_day` writes `{CDR_OUTPUT_PATH}/cdr/date=YYYY-MM-DD/` atomically ->
`check_day` reads the files back: manifest rows == Parquet rows == the operator's rows,
uuids unique, every timestamp inside the day.

Each run covers exactly one calendar day in the contact centre's time zone (`CDR_TIMEZONE`):
the timetable's data interval is [00:00, next 00:00) there, 23 or 25 hours on DST days.
`catchup` lands every day since `CDR_START_DATE`; re-landing a day replaces it whole, so
clearing a run, or `airflow backfill create --dag-id cdr_daily --from-date ... --to-date ...
--reprocess-behavior completed`, is always safe.

Late records: a timely run (within a day of its day's end) also lands again the
`CDR_LOOKBACK_DAYS` days before its own (`reland_day`, default 1), each an atomic replace, so
records that reach the API after their day was landed (or change after it) reach the lake; the
manifest keeps when each version was landed. Catch-up and backfill runs do not (their days'
late records are long in). Settings: see `cdr_settings.py`.
"""

from __future__ import annotations

import logging
from typing import Any

import cdr_settings
from airflow.sdk import DAG, task
from airflow.timetables.interval import CronDataIntervalTimetable
from cdr_checks import days_to_reland, inspect_partition, is_landed, summary

from airflow_provider_cdr.api import availability
from airflow_provider_cdr.api.query import time_zone
from airflow_provider_cdr.compat import AirflowFailException
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from airflow_provider_cdr.sensors.cdr import CDRRecordsSensor

log = logging.getLogger(__name__)
settings = cdr_settings.load()

with DAG(
    dag_id="cdr_daily",
    description="One account-local day of CDRs per run, landed as Parquet and checked",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=settings.timezone),
    start_date=settings.start_date,
    catchup=True,
    # Catch-up runs land days side by side; the caps keep the API within its rate.
    max_active_runs=3,
    max_active_tasks=4,
    default_args=settings.default_args,
    doc_md=__doc__,
    tags=["cdr"],
) as dag:
    wait_for_day = CDRRecordsSensor(
        task_id="wait_for_day",
        cdr_conn_id=settings.cdr_conn_id,
        timezone=settings.timezone,
        settle_period=settings.settle_period,
        grace_period=settings.grace_period,
        deferrable=True,
        poke_interval=settings.poke_interval,
        # Beyond the sensor's own grace period, a day that never shows up is a failure to look at.
        timeout=24 * 3600,
    )

    landing = {
        "cdr_conn_id": settings.cdr_conn_id,
        "output_path": settings.records_path,
        "output_conn_id": settings.output_conn_id,
        "table_format": settings.table_format,
        "timezone": settings.timezone,
        "settle_period": settings.settle_period,
        "pool": settings.pool,
        "max_active_tis_per_dag": settings.max_api_tasks,
        "execution_timeout": settings.task_timeout,
    }
    land_day = CDRToParquetOperator(task_id="land_day", **landing)

    @task
    def recent_days(data_interval_start: Any = None) -> list[str]:
        """The landed days before this run's that a timely run lands again (`CDR_LOOKBACK_DAYS`)."""
        day = data_interval_start.astimezone(time_zone(settings.timezone)).date()
        days = days_to_reland(day, settings.timezone, settings.lookback_days, availability.utcnow())
        landed = [
            d
            for d in days
            if is_landed(settings.records_path, d, settings.output_conn_id, settings.table_format)
        ]
        log.info("Landing again, for records that came late: %s", [d.isoformat() for d in landed])
        return [d.isoformat() for d in landed]

    reland_day = CDRToParquetOperator.partial(
        task_id="reland_day", map_index_template="{{ task.day }}", **landing
    ).expand(day=recent_days())

    @task(retries=0)
    def check_day(landed: dict[str, Any]) -> dict[str, Any]:
        """Fail the run (no retry: rereading would not change the files) if the day is not sound."""
        check = inspect_partition(landed, settings.timezone, settings.output_conn_id, settings.table_format)
        log.info("%s", summary(check))
        if check.null_timestamps:
            log.warning("%d records kept without a readable timestamp", check.null_timestamps)
        problems = check.problems()
        if problems:
            raise AirflowFailException(f"{check.location}: " + "; ".join(problems))
        return {"day": check.day, "rows": check.parquet_rows, "files": check.parquet_files}

    wait_for_day >> land_day >> reland_day
    check_day(land_day.output)
