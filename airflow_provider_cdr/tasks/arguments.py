"""Task arguments shared by the operator and the sensor: the day, the filters, templated values.

Checked when the DAG is parsed where they are not templated, otherwise before the first request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from airflow_provider_cdr.api.errors import CDRQueryError
from airflow_provider_cdr.api.query import WINDOW_FILTERS, CDRQuery, build_query

if TYPE_CHECKING:
    from airflow.sdk import Context


def is_templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(is_templated(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_templated(v) for v in value)
    return False


def check_filters(filters: dict[str, Any] | None, timezone: str = "UTC") -> CDRQuery:
    """The operator's filters: any documented one except the date window, which the operator owns."""
    if filters is not None and not isinstance(filters, Mapping):
        # e.g. a templated `filters` that rendered to a string: dict() of it fails obscurely, or not at all.
        raise CDRQueryError(
            f"Invalid CDR filters: filters must be a mapping of filter names to values, got {type(filters).__name__}"
        )
    filters = dict(filters or {})
    owned = sorted(WINDOW_FILTERS & set(filters))
    if owned:
        raise CDRQueryError(
            f"Invalid CDR filters: {', '.join(owned)} set by the task from its `day` or window; remove them"
        )
    return build_query(filters, timezone)


def parse_day(value: Any) -> date:
    """A day from 'YYYY-MM-DD', a date, or a datetime (its date); anything else is refused."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise CDRQueryError(f"day={value!r} is not a day in YYYY-MM-DD form")


def day_from_context(context: Context, tz: ZoneInfo) -> date:
    """The day a run covers, when `day` is not given.

    With a data interval (a daily ``CronDataIntervalTimetable`` in the account's time zone), the
    day the interval starts on. Without one (``CronTriggerTimetable``, ``@daily`` in Airflow 3, a
    manual run), the day BEFORE the run's logical date (or run_after): a run at midnight lands the
    day that has just ended, never a day still in progress.
    """
    start = context.get("data_interval_start")
    end = context.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return start.astimezone(tz).date()
    dag_run = context.get("dag_run")
    moment = context.get("logical_date") or getattr(dag_run, "run_after", None)
    if moment is None:
        raise CDRQueryError("cannot tell which day to land: give `day=` (e.g. '{{ ds }}')")
    return moment.astimezone(tz).date() - timedelta(days=1)
