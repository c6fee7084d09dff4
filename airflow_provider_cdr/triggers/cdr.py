"""CDRRecordsTrigger: waits in the triggerer until a window of CDRs is in, or is known to be empty.

The rule is :mod:`airflow_provider_cdr.availability`'s, shared with the sensor's ``poke()``.
Nothing here blocks the triggerer's event loop: the connection is read with Airflow's async
connection API, requests go through one aiohttp session per run, and every wait is an
``asyncio.sleep``. The API key is read at run time, never stored in the trigger's kwargs (they
are written to the metadata database), and scrubbed from every log line, event and error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import orjson
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_cdr import availability
from airflow_provider_cdr.availability import (
    MAX_PROBE_REQUESTS,
    AvailabilityRule,
    Verdict,
    check_on_empty,
    empty_message,
    probe_params,
    probe_step,
    window_label,
)
from airflow_provider_cdr.errors import CDRQueryError, redact
from airflow_provider_cdr.hooks.cdr import RECORDS_PATH
from airflow_provider_cdr.retry import RetryBudget, RetryPolicy, read_answer
from airflow_provider_cdr.settings import CDRConnectionSettings

CLASSPATH = "airflow_provider_cdr.triggers.cdr.CDRRecordsTrigger"


@dataclass(frozen=True)
class _Endpoint:
    """What one run needs from the connection: where to ask, with which key, on which terms."""

    url: str
    key: str
    settings: CDRConnectionSettings


async def _get_connection(conn_id: str) -> tuple[Any, dict[str, Any]]:
    """The connection and its extras, read without blocking the event loop.

    Airflow 3.3.2+ reads and masks them asynchronously (``BaseHook.aget_connection``,
    ``Connection.aextra_dejson``); the common-compat helpers pick that path or, on older
    versions, run the synchronous calls in a worker thread, where blocking is safe.

    ``dag.test()`` runs triggers in-process with comms that answer only synchronous requests
    (Airflow 3.3.2's ``InProcessSupervisorComms`` has no ``asend``), so there the async lookup
    finds environment and secrets-backend connections but not metadata-DB ones: on "not found"
    the synchronous lookup is tried once more, in a thread.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from asgiref.sync import sync_to_async

    try:
        from airflow.providers.common.compat.connection import (
            get_async_connection,
            get_async_extra_dejson,
        )
    except ImportError:  # an older common-compat provider: the thread path is always safe
        connection = await sync_to_async(BaseHook.get_connection)(conn_id)
        return connection, await sync_to_async(lambda: connection.extra_dejson)()
    try:
        connection = await get_async_connection(conn_id)
    except AirflowNotFoundException:
        connection = await sync_to_async(BaseHook.get_connection)(conn_id)
    return connection, await get_async_extra_dejson(connection)


async def _mask(secret: str) -> None:
    """Register the key with the secrets masker, with the async call where there is one."""
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
        return
    await amask_secret(secret)


def _base_url(connection: Any) -> str:
    """The base URL exactly as HttpHook (and so CDRHook) derives it from host, schema and port."""
    host = connection.host or ""
    base_url = host if "://" in host else f"{connection.schema or 'http'}://{host}"
    if connection.port:
        base_url = f"{base_url}:{connection.port}"
    return base_url


async def _load_endpoint(conn_id: str) -> _Endpoint:
    connection, extras = await _get_connection(conn_id)
    if not connection.password:
        raise CDRQueryError(f"Connection {conn_id!r} has no API key in its password field")
    await _mask(connection.password)
    settings = CDRConnectionSettings.from_extras(extras)
    base_url = _base_url(connection)
    settings.check_base_url(base_url)
    return _Endpoint(base_url.rstrip("/") + RECORDS_PATH, connection.password, settings)


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
            raise CDRQueryError(f"poll_interval={poll_interval} must be positive")
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

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent(await self._watch())

    async def _watch(self) -> dict[str, str]:
        """Poll until a verdict; any failure becomes an "error" event the task can raise."""
        key: str | None = None
        try:
            endpoint = await _load_endpoint(self.conn_id)
            key = endpoint.key
            timeout = aiohttp.ClientTimeout(
                total=endpoint.settings.timeout, sock_connect=endpoint.settings.connect_timeout
            )
            async with aiohttp.ClientSession(
                timeout=timeout, headers={"Accept": "application/json"}
            ) as session:
                return await self._poll(session, endpoint)
        except Exception as err:  # the task must hear of it: the triggerer's log alone goes unread
            return {"status": "error", "message": redact(f"{type(err).__name__}: {err}", key)}

    async def _poll(self, session: aiohttp.ClientSession, endpoint: _Endpoint) -> dict[str, str]:
        label = window_label(self.params)
        while True:
            now = availability.utcnow()
            if self.rule.should_ask(now, self.window_end):
                verdict = self.rule.judge(now, self.window_end, await self._probe(session, endpoint))
                if verdict is Verdict.AVAILABLE:
                    return {"status": "available", "message": f"CDR records are in for {label}."}
                if verdict is Verdict.EMPTY:
                    grace = self.rule.grace_period
                    return {"status": "empty", "message": empty_message(label, grace, self.on_empty)}
            delay = self.rule.seconds_to_next_check(now, self.window_end, self.poll_interval)
            self.log.info("No CDR record yet for %s; next check in %.0fs", label, delay)
            await asyncio.sleep(delay)

    async def _probe(self, session: aiohttp.ClientSession, endpoint: _Endpoint) -> bool:
        """The rule's request (and a search_token it must follow): is there at least one record?"""
        request: dict[str, str] | None = probe_params(self.params)
        found = False
        for _ in range(MAX_PROBE_REQUESTS):
            if request is None:
                break
            found, request = probe_step(request, await self._get(session, endpoint, request))
        return found

    async def _get(self, session: aiohttp.ClientSession, endpoint: _Endpoint, request: dict[str, str]) -> Any:
        """One GET, retried on 429 (Retry-After honoured), 5xx, transport errors and timeouts."""
        policy = RetryPolicy(endpoint.settings.max_retries, max_total_wait=endpoint.settings.max_retry_wait)
        budget = RetryBudget(policy, RECORDS_PATH)
        params = {**request, "key": endpoint.key}
        while True:
            retry_after: float | None = None
            try:
                async with session.get(endpoint.url, params=params) as response:
                    answer = read_answer(
                        response.status,
                        await response.read(),
                        response.headers.get("Retry-After"),
                        orjson.loads,
                        RECORDS_PATH,
                        endpoint.key,
                    )
                if answer.problem is None:
                    return answer.body
                problem, retry_after = answer.problem, answer.retry_after
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                problem = f"{type(err).__name__}: {redact(str(err), endpoint.key)[:300]}"
            delay = budget.next_delay(problem, retry_after)
            self.log.warning("GET %s: %s; retry %d in %.1fs", RECORDS_PATH, problem, budget.attempts, delay)
            await asyncio.sleep(delay)
