"""CDRAsyncHook: the CDR API v2 from an event loop (the triggerer), on the same terms as CDRHook.

The connection is read by the same function (:func:`~airflow_provider_cdr.api.settings.endpoint_from_connection`),
so base URL, key, TLS trust (``verify``, CA bundle, client certificate), proxies, extra headers,
timeouts and the plain-http check are CDRHook's; requests follow the same retry policy and
answer reading (:mod:`airflow_provider_cdr.api.retry`); errors are scrubbed of the key the same way.

Nothing here blocks the event loop: the connection is read with Airflow's async connection API,
the TLS context (which reads CA files) is built in a worker thread, and every wait is awaited.
A module of its own, so a worker that only lands records never imports aiohttp.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from airflow.sdk import BaseHook

from airflow_provider_cdr.api.availability import Probe
from airflow_provider_cdr.api.endpoints import RECORDS_PATH
from airflow_provider_cdr.api.errors import CDRError, redact, tls_error
from airflow_provider_cdr.api.page import read_json
from airflow_provider_cdr.api.retry import (
    Answer,
    RetryBudget,
    deadline_problem,
    read_answer,
    transport_problem,
)
from airflow_provider_cdr.api.settings import CDREndpoint, endpoint_from_connection
from airflow_provider_cdr.hooks.cdr import CDRHook


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
    from asgiref.sync import sync_to_async

    from airflow_provider_cdr.compat import AirflowNotFoundException

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


async def _mask(secrets: frozenset[str]) -> None:
    """Register the key's forms with the secrets masker, with the async call where there is one."""
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:
        from airflow.sdk.log import mask_secret

        for secret in secrets:
            mask_secret(secret)
        return
    for secret in secrets:
        await amask_secret(secret)


def tls_context(endpoint: CDREndpoint) -> ssl.SSLContext:
    """The endpoint's TLS trust for aiohttp: exactly its CA bundle (or none), and its client certificate.

    Reads files: call it in a worker thread.
    """
    if endpoint.verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(endpoint.verify, str) and Path(endpoint.verify).is_dir():
        context = ssl.create_default_context(capath=endpoint.verify)
    elif isinstance(endpoint.verify, str):
        context = ssl.create_default_context(cafile=endpoint.verify)
    else:
        context = ssl.create_default_context()
    if endpoint.cert:
        context.load_cert_chain(*((endpoint.cert,) if isinstance(endpoint.cert, str) else endpoint.cert))
    return context


@dataclass
class _Session:
    """One aiohttp session with the endpoint's TLS context and proxy, for the requests of one check."""

    client: aiohttp.ClientSession
    ssl: ssl.SSLContext
    proxy: str | None


class CDRAsyncHook(BaseHook):
    """
    Ask the CDR API v2 from the triggerer: the async twin of :class:`~airflow_provider_cdr.hooks.cdr.CDRHook`.

    :param cdr_conn_id: the Airflow connection of type ``cdr``; read (and its key masked) once,
        on first use.
    """

    conn_name_attr = "cdr_conn_id"
    default_conn_name = CDRHook.default_conn_name
    conn_type = CDRHook.conn_type
    hook_name = CDRHook.hook_name

    def __init__(self, cdr_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.cdr_conn_id = cdr_conn_id
        self._endpoint: CDREndpoint | None = None

    async def endpoint(self) -> CDREndpoint:
        """The connection, read and checked once per hook; its key is masked from then on."""
        if self._endpoint is None:
            connection, extras = await _get_connection(self.cdr_conn_id)
            endpoint = endpoint_from_connection(self.cdr_conn_id, connection, extras)
            await _mask(endpoint.secrets)
            self._endpoint = endpoint
        return self._endpoint

    def redact(self, text: str) -> str:
        """`text` without the key (any form of it), as far as the connection was read."""
        return self._endpoint.redact(text) if self._endpoint else redact(text)

    # -- sessions and requests ---------------------------------------------------------------

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        endpoint = await self.endpoint()
        settings = endpoint.settings
        timeout = aiohttp.ClientTimeout(
            total=settings.request_deadline, sock_connect=settings.connect_timeout, sock_read=settings.timeout
        )
        context = await asyncio.to_thread(tls_context, endpoint)
        headers = {"Accept": "application/json", **endpoint.headers}
        async with aiohttp.ClientSession(
            timeout=timeout, headers=headers, trust_env=endpoint.trust_env
        ) as client:
            yield _Session(client, context, endpoint.proxy())

    async def _get(self, session: _Session, path: str, params: Mapping[str, str]) -> Any:
        """GET `path` and decode its body, retrying as CDRHook does; errors never show the key."""
        endpoint = await self.endpoint()
        budget = RetryBudget(endpoint.settings.retry_policy(), path)
        while True:
            answer = await self._attempt(session, endpoint, path, params)
            if answer.problem is None:
                return answer.body
            await asyncio.sleep(budget.next_delay(answer))

    async def _attempt(
        self, session: _Session, endpoint: CDREndpoint, path: str, params: Mapping[str, str]
    ) -> Answer:
        """One GET within the request deadline (the session's total timeout): an answer, or the final error.

        Final errors are raised after the ``except`` block, so that aiohttp's exception is not kept
        as their ``__context__``.
        """
        failure: CDRError
        try:
            async with session.client.get(
                endpoint.url(path),
                params=endpoint.query(params),
                ssl=session.ssl,
                proxy=session.proxy,
                allow_redirects=False,
            ) as response:
                content = await response.read()
                return read_answer(
                    response.status, response.headers, content, read_json, path, endpoint.api_key
                )
        except aiohttp.ClientSSLError as err:
            failure = tls_error(path, endpoint.base_url, endpoint.redact(str(err)))
        except aiohttp.ServerTimeoutError as err:  # a connect or per-read timeout
            return Answer(problem=transport_problem(err, endpoint.api_key))
        except asyncio.TimeoutError:  # the session's total: the request deadline
            return Answer(problem=deadline_problem(endpoint.settings.request_deadline))
        except aiohttp.ClientError as err:
            return Answer(problem=transport_problem(err, endpoint.api_key))
        raise failure

    # -- what the trigger asks -----------------------------------------------------------------

    async def fetch_page(self, params: Mapping[str, str]) -> Any:
        """One records request as the API answers it (API parameters, paging included, key added here)."""
        async with self._session() as session:
            return await self._get(session, RECORDS_PATH, params)

    async def records_exist(self, params: Mapping[str, str]) -> bool:
        """The availability rule's probe (:class:`~airflow_provider_cdr.api.availability.Probe`) for `params`."""
        probe = Probe(params)
        async with self._session() as session:
            while probe.request is not None:
                probe.read(await self._get(session, RECORDS_PATH, probe.request))
        return probe.found
