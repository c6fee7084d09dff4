"""CDRRecordsSensor: wait until a day (or any window) of CDRs is in, before landing it.

The rule, and what "empty" means, is :mod:`airflow_provider_cdr.api.availability`'s; the sensor and
its deferrable trigger both apply it, and ask the API the same question (``records_exist``, one
probe driven by CDRHook here and by CDRAsyncHook in the trigger, both reading the connection the
same way), so ``mode="poke"``, ``"reschedule"`` and ``deferrable=True`` agree on every window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_cdr.api import availability
from airflow_provider_cdr.api.availability import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_SETTLE_PERIOD,
    AvailabilityRule,
    Verdict,
    Window,
    as_timedelta,
    check_on_empty,
    empty_message,
    window_label,
)
from airflow_provider_cdr.api.errors import CDRAPIError, CDRQueryError
from airflow_provider_cdr.api.query import CDRQuery, time_zone
from airflow_provider_cdr.compat import AirflowFailException, AirflowSkipException, conf
from airflow_provider_cdr.days.day_window import DayWindow
from airflow_provider_cdr.hooks.cdr import CDRHook
from airflow_provider_cdr.tasks.arguments import (
    check_filters,
    day_from_context,
    is_templated,
    parse_day,
)
from airflow_provider_cdr.triggers.cdr import CDRRecordsTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class CDRRecordsSensor(BaseSensorOperator):
    """
    Wait until the CDR API has the records of a window: by default, the day the run covers.

    The window is AVAILABLE once it has ended, ``settle_period`` has passed, and the API returns
    at least one record for it (with ``filters``). With no record ``grace_period`` after its end
    it is EMPTY, and ``on_empty`` decides: ``"succeed"``, ``"skip"`` or ``"fail"``. See
    :mod:`airflow_provider_cdr.api.availability` for the exact rule.

    The return value (XCom) is a summary without the key: status, window, time zone, query.

    :param cdr_conn_id: connection of type ``cdr``. (templated)
    :param day: the account-local day to wait for, ``YYYY-MM-DD``; default: the day the run
        covers, as for ``CDRToParquetOperator``. (templated)
    :param start_datetime: instead of ``day``, any window's start: account-local
        ``YYYY-MM-DDTHH:MM:SS``, or an aware datetime / ISO string with an offset. (templated)
    :param end_datetime: that window's exclusive end, in the same forms. (templated)
    :param timezone: IANA name of the account's time zone; default: the connection's. (templated)
    :param filters: any documented filter except the date window (as for the hook). (templated)
    :param settle_period: how long after the window's end its records are trusted to be in
        (timedelta or seconds; default 0).
    :param grace_period: how long after the window's end "no record" still means "not yet"
        (timedelta or seconds; default 6 hours).
    :param on_empty: ``"succeed"`` (a quiet window), ``"skip"`` or ``"fail"``.
    :param deferrable: wait in the triggerer instead of a worker slot.
    """

    template_fields: Sequence[str] = (
        "cdr_conn_id",
        "day",
        "start_datetime",
        "end_datetime",
        "timezone",
        "filters",
    )
    ui_color = "#d9ecf7"

    def __init__(
        self,
        *,
        cdr_conn_id: str = CDRHook.default_conn_name,
        day: str | date | None = None,
        start_datetime: str | datetime | None = None,
        end_datetime: str | datetime | None = None,
        timezone: str | None = None,
        filters: dict[str, Any] | None = None,
        settle_period: timedelta | float = DEFAULT_SETTLE_PERIOD,
        grace_period: timedelta | float = DEFAULT_GRACE_PERIOD,
        on_empty: str = "succeed",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        # Naive window bounds are checked in the given zone; a templated zone is checked at run time.
        zone = time_zone(timezone if timezone is not None and not is_templated(timezone) else "UTC")
        if not is_templated(filters):
            check_filters(filters)
        _check_window_arguments(day, start_datetime, end_datetime, zone)
        self.rule = AvailabilityRule(
            settle_period=as_timedelta(settle_period, "settle_period"),
            grace_period=as_timedelta(grace_period, "grace_period"),
        )
        self.on_empty = check_on_empty(on_empty)
        super().__init__(**kwargs)
        self.cdr_conn_id = cdr_conn_id
        self.day = day
        self.start_datetime = start_datetime
        self.end_datetime = end_datetime
        self.timezone = timezone
        self.filters = filters
        self.deferrable = deferrable

    # -- the window and its query ----------------------------------------------------------------

    def _probe(self, context: Context, hook: CDRHook) -> tuple[Window, CDRQuery, ZoneInfo]:
        """The rendered window and filters, validated, as one query in the account's time zone."""
        tz = time_zone(self.timezone or hook.timezone)
        filters = check_filters(self.filters, tz.key)
        if self.start_datetime is not None or self.end_datetime is not None:
            window = Window.between(self.start_datetime, self.end_datetime, tz)
        else:
            day = parse_day(self.day) if self.day else day_from_context(context, tz)
            day_window = DayWindow(day, tz)
            window = Window(day_window.start, day_window.end)
        return window, filters.with_window(**window.api_params(tz)), tz

    def _summary(self, status: str, window: Window, query: CDRQuery, tz: ZoneInfo) -> dict[str, Any]:
        """The XCom: what was waited for and what came of it; the query never holds the key."""
        return {"status": status, "window": window.describe(), "timezone": tz.key, "query": query.as_params()}

    # -- poke / reschedule -----------------------------------------------------------------------

    def poke(self, context: Context) -> bool | PokeReturnValue:
        hook = CDRHook(cdr_conn_id=self.cdr_conn_id)
        window, query, tz = self._probe(context, hook)
        verdict = self._check(hook, window, query)
        if verdict is Verdict.WAIT:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(verdict, window, query, tz))

    def _check(self, hook: CDRHook, window: Window, query: CDRQuery) -> Verdict:
        """The rule at this moment: no request before the window has settled, else exactly one."""
        label = window_label(query.as_params())
        now = availability.utcnow()
        if not self.rule.should_ask(now, window.end):
            self.log.info(
                "Waiting for %s: it ends at %s, plus a settle period of %s",
                label,
                window.end.isoformat(),
                self.rule.settle_period,
            )
            return Verdict.WAIT
        verdict = self.rule.judge(now, window.end, hook.records_exist(query.as_params()))
        if verdict is Verdict.WAIT:
            self.log.info(
                "No CDR record yet for %s; it counts as empty from %s",
                label,
                (window.end + self.rule.grace_period).isoformat(),
            )
        return verdict

    def _finish(self, verdict: Verdict, window: Window, query: CDRQuery, tz: ZoneInfo) -> dict[str, Any]:
        """Succeed with a summary, or skip / fail an EMPTY window as `on_empty` says."""
        label = window_label(query.as_params())
        if verdict is Verdict.AVAILABLE:
            self.log.info("CDR records are in for %s", label)
            return self._summary(verdict.value, window, query, tz)
        return self._on_empty(empty_message(label, self.rule.grace_period, self.on_empty), window, query, tz)

    def _on_empty(self, message: str, window: Window, query: CDRQuery, tz: ZoneInfo) -> dict[str, Any]:
        if self.on_empty == "skip":
            raise AirflowSkipException(message)
        if self.on_empty == "fail":
            raise AirflowFailException(message)
        self.log.warning(message)
        return self._summary(Verdict.EMPTY.value, window, query, tz)

    # -- deferrable ------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        hook = CDRHook(cdr_conn_id=self.cdr_conn_id)
        window, query, tz = self._probe(context, hook)
        verdict = self._check(hook, window, query)
        if verdict is not Verdict.WAIT:  # a past day that is in: no deferral round trip
            return self._finish(verdict, window, query, tz)
        self.defer(
            trigger=CDRRecordsTrigger(
                conn_id=self.cdr_conn_id,
                params=query.as_params(),
                window_end=window.end.isoformat(),
                settle_seconds=self.rule.settle_period.total_seconds(),
                grace_seconds=self.rule.grace_period.total_seconds(),
                poll_interval=max(self.poke_interval, 1.0),
                on_empty=self.on_empty,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger (in a new instance): act on its event exactly as poke() would."""
        status = (event or {}).get("status")
        message = str((event or {}).get("message", "the trigger sent no event"))
        if status not in (Verdict.AVAILABLE.value, Verdict.EMPTY.value):
            raise CDRAPIError(f"Waiting for CDR records failed: {message}")
        window, query, tz = self._probe(context, CDRHook(cdr_conn_id=self.cdr_conn_id))
        if status == Verdict.AVAILABLE.value:
            self.log.info(message)
            return self._summary(status, window, query, tz)
        return self._on_empty(message, window, query, tz)


def _check_window_arguments(day: Any, start: Any, end: Any, zone: ZoneInfo) -> None:
    """Refuse, at DAG parse time, windows that could never be asked for."""
    if (start is None) != (end is None):
        raise CDRQueryError("give both start_datetime and end_datetime, or neither")
    if start is not None and day is not None:
        raise CDRQueryError("give either day or start_datetime/end_datetime, not both")
    if day is not None and not is_templated(day):
        parse_day(day)
    if start is not None and not is_templated(start) and not is_templated(end):
        # Naive values are read in the given zone (UTC when the connection's is used): enough
        # to check their form and order here; the real zone applies at run time.
        Window.between(start, end, zone)
