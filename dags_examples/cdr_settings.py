"""Deployment settings shared by the example CDR DAGs, read from environment variables.

The same DAG files run in the demo (local disk, a stand-in API), the docker-compose
deployment (MinIO, CeleryExecutor) and production; only these variables change:

=========================  ===================================================================
``CDR_TIMEZONE``           the contact centre's IANA time zone; each daily run covers one
                           calendar day in it (default ``America/Sao_Paulo``). Keep it equal to
                           the connection's ``timezone`` extra.
``CDR_START_DATE``         first day the daily DAG lands, ``YYYY-MM-DD`` (default ``2024-01-01``).
                           ``catchup`` fills every day since. Fixed, as Airflow advises for a
                           ``start_date``; ``-N`` ("N days before the day the file is parsed")
                           is kept for throwaway stacks such as docker/ (``-3``), where it moves
                           with the clock: never use it for a deployment that lasts.
``CDR_OUTPUT_PATH``        root of the data: local directory or ``s3://bucket/prefix``. Records
                           go to ``{root}/cdr/date=YYYY-MM-DD/``, lookups to
                           ``{root}/dimensions/<name>/date=YYYY-MM-DD/``, agent summaries to
                           ``{root}/cdr_agent_summary/date=YYYY-MM-DD/`` (default
                           ``$AIRFLOW_HOME/cdr-data``).
``CDR_OUTPUT_CONN_ID``     connection for object storage, e.g. ``aws_cdr`` (default: none).
``CDR_TABLE_FORMAT``       how the records land: ``parquet`` (Hive partitions with manifests,
                           the default) or ``delta`` (one Delta Lake table at ``{root}/cdr``;
                           needs the ``delta`` extra). Lookups and summaries stay Parquet.
``CDR_CONN_ID``            connection of type ``cdr`` (default ``cdr_default``).
``CDR_POOL``               Airflow pool the API-calling tasks share (default ``default_pool``).
``CDR_MAX_API_TASKS``      API-calling task instances running at once per DAG (default 2).
``CDR_RETRIES``            task retries (default 3).
``CDR_RETRY_DELAY_S``      first retry delay in seconds, doubling after (default 300).
``CDR_SETTLE_MINUTES``     how long after midnight a day is left to settle before landing it,
                           for late-written records (default 30).
``CDR_GRACE_HOURS``        how long after a day's end "no record yet" still means "not yet"
                           rather than "a quiet day" (default 6).
``CDR_POKE_INTERVAL_S``    seconds between two checks of the waiting sensor (default 300).
``CDR_LOOKBACK_DAYS``      how many days before its own a timely daily run lands again, so
                           records that arrive or change late reach the lake (default 1;
                           0 turns it off). Each costs that day's requests again.
``CDR_TASK_TIMEOUT_MIN``   ``execution_timeout`` of the landing tasks, in minutes (default 120):
                           a task that hangs is failed (and retried) instead of holding its slot.
=========================  ===================================================================

Every value is read when a DAG file is parsed, through a function, so a test or the demo
can change the environment between parses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from airflow_provider_cdr.api.query import time_zone
from airflow_provider_cdr.landing.delta_store import TABLE_FORMATS

DEFAULT_TIMEZONE = "America/Sao_Paulo"
DEFAULT_START_DATE = "2024-01-01"


@dataclass(frozen=True)
class CDRDagSettings:
    """One parse's view of the environment variables above."""

    timezone: str
    start_date: datetime
    output_root: str
    output_conn_id: str | None
    table_format: str
    cdr_conn_id: str
    pool: str
    max_api_tasks: int
    retries: int
    retry_delay: timedelta
    settle_period: timedelta
    grace_period: timedelta
    poke_interval: float
    lookback_days: int
    task_timeout: timedelta

    @property
    def records_path(self) -> str:
        """Where the records' day partitions go: a folder of their own, so a Hive-style
        read of it never picks up the dimension tables."""
        return f"{self.output_root.rstrip('/')}/cdr"

    @property
    def dimensions_path(self) -> str:
        return f"{self.output_root.rstrip('/')}/dimensions"

    @property
    def summaries_path(self) -> str:
        """Where `cdr_agent_summary` writes, beside the records: ``{root}/cdr_agent_summary``."""
        return f"{self.output_root.rstrip('/')}/cdr_agent_summary"

    @property
    def default_args(self) -> dict[str, object]:
        """Retries with exponential backoff: a broken API or store gets time to recover."""
        return {
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(hours=1),
        }


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _start_date(text: str, tz: ZoneInfo) -> datetime:
    """Midnight of the first day, account-local: `YYYY-MM-DD`, or `-N` days before today (moving:
    only for throwaway stacks; a DAG whose start moves each day is one Airflow advises against)."""
    if text.startswith("-") and text[1:].isdigit():
        day = datetime.now(tz).date() - timedelta(days=int(text[1:]))
    else:
        day = date.fromisoformat(text)
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def _table_format(text: str) -> str:
    if text not in TABLE_FORMATS:
        raise ValueError(f"CDR_TABLE_FORMAT={text!r} is not one of {', '.join(TABLE_FORMATS)}")
    return text


def load() -> CDRDagSettings:
    """The settings as the environment says now; a wrong value fails the DAG file's import."""
    timezone = _env("CDR_TIMEZONE", DEFAULT_TIMEZONE)
    tz = time_zone(timezone)
    airflow_home = _env("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
    return CDRDagSettings(
        timezone=timezone,
        start_date=_start_date(_env("CDR_START_DATE", DEFAULT_START_DATE), tz),
        output_root=_env("CDR_OUTPUT_PATH", os.path.join(airflow_home, "cdr-data")),
        output_conn_id=os.environ.get("CDR_OUTPUT_CONN_ID") or None,
        table_format=_table_format(_env("CDR_TABLE_FORMAT", "parquet")),
        cdr_conn_id=_env("CDR_CONN_ID", "cdr_default"),
        pool=_env("CDR_POOL", "default_pool"),
        max_api_tasks=int(_env("CDR_MAX_API_TASKS", "2")),
        retries=int(_env("CDR_RETRIES", "3")),
        retry_delay=timedelta(seconds=float(_env("CDR_RETRY_DELAY_S", "300"))),
        settle_period=timedelta(minutes=float(_env("CDR_SETTLE_MINUTES", "30"))),
        grace_period=timedelta(hours=float(_env("CDR_GRACE_HOURS", "6"))),
        poke_interval=float(_env("CDR_POKE_INTERVAL_S", "300")),
        lookback_days=int(_env("CDR_LOOKBACK_DAYS", "1")),
        task_timeout=timedelta(minutes=float(_env("CDR_TASK_TIMEOUT_MIN", "120"))),
    )
