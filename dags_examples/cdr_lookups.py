"""
### CDR lookups: a daily snapshot of the six lookup lists as Parquet dimension tables

Agents, queues, teams, wrap-up codes, campaigns and deleted agents, each to
`{CDR_OUTPUT_PATH}/dimensions/<name>/date=YYYY-MM-DD/<name>.parquet`, so the records'
`agent_id`, `wrapup_code`, `queue` ... can be joined to names. `date=D` holds the lists as
fetched by the run covering day D (right after D ended), beside the records of D.

Columns: `id` (int64, as the records' `agent_id`; a string for wrap-up codes, whose leading
zeros matter), `name`, `extra_fields` (every other field, as JSON: the lists' shapes are not
documented) and `fetched_at`. A snapshot of "now" cannot be taken for a past day, so this DAG
does not catch up.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

import cdr_settings
import pyarrow as pa
from airflow.sdk import DAG, task
from airflow.timetables.interval import CronDataIntervalTimetable
from cdr_tables import write_table

from airflow_provider_cdr.api.endpoints import LOOKUP_PATHS
from airflow_provider_cdr.api.query import time_zone
from airflow_provider_cdr.hooks.cdr import CDRHook
from airflow_provider_cdr.tasks.arguments import day_from_context

LOOKUPS = tuple(LOOKUP_PATHS)  # agents, queues, teams, wrapup_codes, campaigns, deleted_agents
STRING_IDS = {"wrapup_codes"}

log = logging.getLogger(__name__)
settings = cdr_settings.load()


def lookup_schema(name: str) -> pa.Schema:
    id_type = pa.string() if name in STRING_IDS else pa.int64()
    return pa.schema(
        [
            pa.field("id", id_type, nullable=False),
            pa.field("name", pa.string()),
            pa.field("extra_fields", pa.string(), metadata={"format": "json"}),
            pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


def to_table(name: str, items: list[dict[str, Any]], fetched_at: datetime) -> pa.Table:
    """The list as its declared table; an id that does not fit the type fails loudly."""
    schema = lookup_schema(name)
    # Ids may come as 56215 or "56215"; anything else that is not an integer fails loudly.
    cast = str if name in STRING_IDS else int
    ids = [None if item.get("id") is None else cast(item["id"]) for item in items]
    extras = [{k: v for k, v in item.items() if k not in ("id", "name")} for item in items]
    columns = {
        "id": ids,
        "name": [item.get("name") for item in items],
        "extra_fields": [json.dumps(extra, ensure_ascii=False) if extra else None for extra in extras],
        "fetched_at": [fetched_at] * len(items),
    }
    return pa.table(columns, schema=schema)


with DAG(
    dag_id="cdr_lookups",
    description="Daily snapshot of the CDR API's six lookup lists as Parquet dimension tables",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=settings.timezone),
    start_date=settings.start_date,
    catchup=False,
    max_active_runs=1,
    max_active_tasks=settings.max_api_tasks,
    default_args=settings.default_args,
    doc_md=__doc__,
    tags=["cdr"],
) as dag:

    @task(pool=settings.pool, execution_timeout=settings.task_timeout)
    def snapshot(name: str, **context: Any) -> dict[str, Any]:
        """Fetch one lookup list and write its day's dimension file."""
        hook = CDRHook(cdr_conn_id=settings.cdr_conn_id)
        day = day_from_context(context, time_zone(settings.timezone))
        items = hook.lookup(name)
        table = to_table(name, items, datetime.now(timezone.utc))
        target = f"{settings.dimensions_path}/{name}/date={day.isoformat()}/{name}.parquet"
        written = write_table(table, target, settings.output_conn_id)
        log.info("%s: %d rows -> %s", name, table.num_rows, written)
        return {"name": name, "day": day.isoformat(), "rows": table.num_rows, "location": written}

    snapshot.expand(name=list(LOOKUPS))
