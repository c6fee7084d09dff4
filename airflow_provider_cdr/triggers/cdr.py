"""CDRRecordsTrigger: waits in the triggerer until a window of CDRs is in, or is known to be empty.

The rule is :mod:`airflow_provider_cdr.api.availability`'s, and the question it asks the API is the
one the sensor's ``poke()`` asks (``records_exist``), here through
:class:`~airflow_provider_cdr.hooks.cdr_async.CDRAsyncHook`: the same connection handling (TLS
trust, proxies, headers, timeouts, deadline), retry policy and key scrubbing as the sync hook.
The trigger holds no HTTP code: it stores only serialisable arguments (never the key: they are
written to the metadata database), builds its hook when it runs, checks, then fires or sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_cdr.api import availability
from airflow_provider_cdr.api.availability import (
    AvailabilityRule,
    Verdict,
    check_on_empty,
    empty_message,
    window_label,
)
from airflow_provider_cdr.api.errors import CDRConfigError, CDRQueryError
from airflow_provider_cdr.hooks.cdr_async import CDRAsyncHook

CLASSPATH = "airflow_provider_cdr.triggers.cdr.CDRRecordsTrigger"


class CDRRecordsTrigger(BaseTrigger):
    """
    Poll the CDR API until a window is AVAILABLE or EMPTY, then fire one event.

    The event is ``{"status": "available" | "empty" | "error", "message": ...}``; the sensor's
    ``execute_complete`` acts on it (``on_empty`` decides what "empty" means for the task).

    :param conn_id: the ``cdr`` connection; its key is read when the trigger runs.
    :param params: the window (``start_datetime``/``end_datetime``) and filters as validated API
        parameters, without paging and without the key.
    :param window_end: the window's exclusive end, ISO 8601 in UTC.
    :param settle_seconds: the rule's settle period.
    :param grace_seconds: the rule's grace period.
    :param poll_interval: seconds between two requests while the verdict is WAIT.
    :param on_empty: what the sensor will do on "empty"; named in the event's message.
    """

    def __init__(
        self,
        conn_id: str,
        params: Mapping[str, str],
        window_end: str,
        settle_seconds: float = 0.0,
        grace_seconds: float = 6 * 3600.0,
        poll_interval: float = 60.0,
        on_empty: str = "succeed",
    ) -> None:
        super().__init__()
        if "key" in params or not all(isinstance(v, str) for v in params.values()):
            raise CDRQueryError("params must be the API's string parameters, without the key")
        end = datetime.fromisoformat(window_end.replace("Z", "+00:00"))
        if end.tzinfo is None:
            raise CDRQueryError(f"window_end={window_end!r} has no UTC offset")
        if poll_interval <= 0:
            raise CDRConfigError(f"poll_interval={poll_interval} must be positive")
        self.conn_id = conn_id
        self.params = dict(sorted(params.items()))
        self.window_end = end.astimezone(timezone.utc)
        self.settle_seconds = float(settle_seconds)
        self.grace_seconds = float(grace_seconds)
        self.poll_interval = float(poll_interval)
        self.on_empty = check_on_empty(on_empty)
        self.rule = AvailabilityRule(
            settle_period=timedelta(seconds=self.settle_seconds),
            grace_period=timedelta(seconds=self.grace_seconds),
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "conn_id": self.conn_id,
                "params": dict(self.params),
                "window_end": self.window_end.isoformat(),
                "settle_seconds": self.settle_seconds,
                "grace_seconds": self.grace_seconds,
                "poll_interval": self.poll_interval,
                "on_empty": self.on_empty,
            },
        )

    def _get_async_hook(self) -> CDRAsyncHook:
        return CDRAsyncHook(cdr_conn_id=self.conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Check; fire on a verdict, else sleep until the next check. A failure fires an "error" event."""
        hook = self._get_async_hook()
        try:
            while True:
                now = availability.utcnow()
                verdict = await self._check(hook, now)
                if verdict is not Verdict.WAIT:
                    break
                delay = self.rule.seconds_to_next_check(now, self.window_end, self.poll_interval)
                self.log.info("No CDR record yet for %s; next check in %.0fs", self._label, delay)
                await asyncio.sleep(delay)
        except Exception as err:  # the task must hear of it: the triggerer's log alone goes unread
            event = {"status": "error", "message": hook.redact(f"{type(err).__name__}: {err}")}
        else:
            event = self._verdict_event(verdict)
        yield TriggerEvent(event)

    async def _check(self, hook: CDRAsyncHook, now: datetime) -> Verdict:
        """The rule at `now`: no request before the window has settled, else the probe."""
        if not self.rule.should_ask(now, self.window_end):
            return Verdict.WAIT
        return self.rule.judge(now, self.window_end, await hook.records_exist(self.params))

    def _verdict_event(self, verdict: Verdict) -> dict[str, str]:
        if verdict is Verdict.AVAILABLE:
            return {"status": "available", "message": f"CDR records are in for {self._label}."}
        return {
            "status": "empty",
            "message": empty_message(self._label, self.rule.grace_period, self.on_empty),
        }

    @property
    def _label(self) -> str:
        return window_label(self.params)
