"""
### CDR agent summary: per agent and day, calls, talk time and answered share, once the day is landed

Scheduled on the Asset `cdr_daily` emits each time it lands a day (the records' location,
`{CDR_OUTPUT_PATH}/cdr`): no timetable to keep in step, and a day landed again (late records,
a backfill) is summarised again. The day comes from each triggering event's `extra["day"]`;
triggered by hand, the run summarises the days of its `days` parameter.

For each day, DuckDB reads the files the day's manifest lists and writes one row per agent to
`{CDR_OUTPUT_PATH}/cdr_agent_summary/date=YYYY-MM-DD/summary.parquet`, atomically (a temporary
file renamed over it on local disk, one PUT on object storage):

| column | meaning |
| --- | --- |
| `agent_id`, `agent` | the agent (records without an agent are left out) |
| `calls` | voice interactions: inbound, outbound, dialer, click-to-call, callbacks (not SMS, chats, messengers) |
| `answered` | those whose disposition is `answered` |
| `answered_share` | answered / calls |
| `total_duration_s` | the calls' summed `duration`, in seconds |

Needs `pip install duckdb` where the task runs (imported inside the task, so the DAG parses
without it). Settings: see `cdr_settings.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import cdr_settings
import pyarrow as pa
from airflow.sdk import DAG, Asset, Param, task
from cdr_checks import read_landed_day
from cdr_tables import write_table

from airflow_provider_cdr.tasks.output import asset_uri

# Voice interaction types, in the filter spelling; records keep the API's (`click-to-call`...).
CALL_TYPES = ("inbound", "outbound", "dialer", "click_to_call", "queue_callback", "scheduled_callback")
COLUMNS = ["agent_id", "agent", "type", "disposition", "duration"]
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("agent_id", pa.int64(), nullable=False),
        pa.field("agent", pa.string()),
        pa.field("calls", pa.int64(), nullable=False),
        pa.field("answered", pa.int64(), nullable=False),
        pa.field("answered_share", pa.float64(), nullable=False),
        pa.field("total_duration_s", pa.int64(), nullable=False),
    ]
)
SUMMARY_SQL = f"""
    SELECT agent_id,
           max(agent) AS agent,
           count(*)::BIGINT AS calls,
           count_if(disposition = 'answered')::BIGINT AS answered,
           count_if(disposition = 'answered')::DOUBLE / count(*) AS answered_share,
           coalesce(sum(duration), 0)::BIGINT AS total_duration_s
    FROM records
    WHERE agent_id IS NOT NULL
      AND replace(lower(type), '-', '_') IN ({", ".join(f"'{name}'" for name in CALL_TYPES)})
    GROUP BY agent_id
    ORDER BY agent_id
"""

log = logging.getLogger(__name__)
settings = cdr_settings.load()
records = Asset(asset_uri(settings.records_path))  # the Asset CDRToParquetOperator declares for this path


def days_to_summarise(
    events_by_asset: Mapping[Any, Iterable[Any]] | None, asked: Iterable[str]
) -> list[date]:
    """The days named by the triggering Asset events (`extra["day"]`), and those asked by hand."""
    days = {date.fromisoformat(day) for day in asked}
    for events in (events_by_asset or {}).values():
        for event in events:
            day = (event.extra or {}).get("day")
            if day:
                days.add(date.fromisoformat(day))
    return sorted(days)


def summarise_day(day: date) -> pa.Table:
    """One row per agent of the landed `day`, computed by DuckDB over the day's Arrow table."""
    import duckdb  # only this task needs it: `pip install duckdb`

    landed = read_landed_day(
        settings.records_path, day, COLUMNS, settings.output_conn_id, settings.table_format
    )
    with duckdb.connect() as connection:
        connection.register("records", landed)
        cursor = connection.execute(SUMMARY_SQL)
        names = [column[0] for column in cursor.description]
        rows = cursor.fetchall()
    return pa.Table.from_pylist([dict(zip(names, row)) for row in rows], schema=SUMMARY_SCHEMA)


with DAG(
    dag_id="cdr_agent_summary",
    description="Per agent and day: calls, talk time, answered share, from the landed CDRs (DuckDB)",
    schedule=records,
    start_date=settings.start_date,
    catchup=False,
    max_active_runs=1,
    default_args=settings.default_args,
    params={
        "days": Param(
            [],
            type="array",
            items={"type": "string", "format": "date"},
            description="days to summarise when triggered by hand (YYYY-MM-DD); Asset events name their own",
        )
    },
    doc_md=__doc__,
    tags=["cdr"],
) as dag:

    @task(execution_timeout=settings.task_timeout)
    def summarise(
        triggering_asset_events: Any = None, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Summarise each day the run was triggered for; a day not landed fails the task."""
        days = days_to_summarise(triggering_asset_events, (params or {}).get("days") or [])
        if not days:
            log.warning("No day to summarise: no Asset event named one, and no `days` were given")
        written = []
        for day in days:
            table = summarise_day(day)
            target = f"{settings.summaries_path}/date={day.isoformat()}/summary.parquet"
            location = write_table(table, target, settings.output_conn_id)
            calls = sum(table.column("calls").to_pylist())
            log.info("%s: %d agents, %d calls -> %s", day, table.num_rows, calls, location)
            written.append(
                {"day": day.isoformat(), "agents": table.num_rows, "calls": calls, "location": location}
            )
        return written

    summarise()
