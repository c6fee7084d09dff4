"""CDRHook: the CDR API v2 connection, its requests, retries and paging."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import requests
import urllib3.exceptions
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.log import mask_secret
from requests.adapters import HTTPAdapter

from airflow_provider_cdr.errors import (
    CDRAPIError,
    CDRPagingError,
    CDRQueryError,
    redact,
)
from airflow_provider_cdr.extraction import Extraction, ExtractionStats
from airflow_provider_cdr.paging import MAX_PER_PAGE
from airflow_provider_cdr.query import CDRQuery, build_query
from airflow_provider_cdr.ratelimit import RequestGate, shared_gate
from airflow_provider_cdr.retry import RetryBudget, RetryPolicy, read_answer
from airflow_provider_cdr.settings import CDRConnectionSettings, foreign_extras

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

RECORDS_PATH = "/api/v2/cdr"
LOOKUP_PATHS = {
    "agents": "/api/v2/cdr/agents",
    "queues": "/api/v2/cdr/queues",
    "teams": "/api/v2/cdr/teams",
    "wrapup_codes": "/api/v2/cdr/wrapup_codes",
    "campaigns": "/api/v2/cdr/campaigns",
    "deleted_agents": "/api/v2/cdr/deleted_agents",
}
MAX_LOOKUP_PAGES = 1000
_TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,  # from reading a streamed body: a reset, a stall, a short body
)


def _whole_body(response: requests.Response) -> bytes:
    """The body in one read into one buffer; requests' ``.content`` joins 10 KB chunks (twice the memory).

    A body read to its end hands the connection back to the pool; one that breaks off closes it.
    """
    try:
        body: bytes = response.raw.read(decode_content=True)
        return body
    finally:
        response.close()


class _RedactKeyFilter(logging.Filter):
    """urllib3 logs request lines, query string included, at DEBUG: scrub `key=` from them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = redact(str(record.msg))
        return True


def _protect_urllib3_logs() -> None:
    target = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactKeyFilter) for f in target.filters):
        target.addFilter(_RedactKeyFilter())


class CDRHook(HttpHook):
    """
    Read Call Detail Records from the CDR API v2.

    The connection's host is the base URL (``https://cc-ams03.voiso.com``) and its password the
    API key, which travels as the ``key`` query parameter and never in a log or an error. Extras:
    ``timezone`` (IANA, the account's; default UTC), ``per_page`` (what is asked, default 10000; the
    server may serve fewer, see :mod:`airflow_provider_cdr.paging`), ``timeout``,
    ``max_retries``, ``max_retry_wait``, ``rate_limit`` (requests/s), ``concurrency``.

    :param cdr_conn_id: the Airflow connection of type ``cdr``.
    """

    conn_name_attr = "cdr_conn_id"
    default_conn_name = "cdr_default"
    conn_type = "cdr"
    hook_name = "CDR API (v2)"

    def __init__(self, cdr_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(method="GET", http_conn_id=cdr_conn_id, **kwargs)
        self.cdr_conn_id = cdr_conn_id
        self._connection: Any = None
        self._settings: CDRConnectionSettings | None = None
        self._api_key: str = ""
        _protect_urllib3_logs()

    # -- connection --------------------------------------------------------------------------

    def _load_connection(self) -> Any:
        """Look the connection up once per hook and check it before anything is sent."""
        if self._connection is None:
            connection = self.get_connection(self.cdr_conn_id)
            settings = CDRConnectionSettings.from_extras(connection.extra_dejson)
            if not connection.password:
                raise CDRQueryError(f"Connection {self.cdr_conn_id!r} has no API key in its password field")
            mask_secret(connection.password)
            self._set_base_url(connection)
            settings.check_base_url(self.base_url)
            self._api_key = connection.password
            self._settings = settings
            self._connection = connection
        return self._connection

    @property
    def settings(self) -> CDRConnectionSettings:
        self._load_connection()
        assert self._settings is not None
        return self._settings

    @property
    def timezone(self) -> str:
        """The account's time zone: the API reads dates and datetimes in it."""
        return self.settings.timezone

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """A keep-alive session without the key, without our own extras turned into headers."""
        connection = self._load_connection()
        session = requests.Session()
        visible = SimpleNamespace(host=connection.host, extra_dejson=foreign_extras(connection.extra_dejson))
        session = self._configure_session_from_extra(session, visible, extra_options or {})
        pool = max(self.settings.concurrency, 1) * 2
        adapter = self.adapter or HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"Accept": "application/json"})
        if headers:
            session.headers.update(headers)
        return session

    # -- one request ---------------------------------------------------------------------------

    def _get_json(
        self,
        session: requests.Session,
        path: str,
        params: Mapping[str, str],
        gate: RequestGate,
        stats: ExtractionStats,
        decode: Callable[[bytes], Any] = orjson.loads,
    ) -> Any:
        """GET `path` and decode its body, retrying 429, 5xx, transport errors and broken JSON.

        Errors never show the key.
        """
        settings = self.settings
        budget = RetryBudget(RetryPolicy(settings.max_retries, max_total_wait=settings.max_retry_wait), path)
        url = self.base_url.rstrip("/") + path
        while True:
            gate.wait()
            stats.add(requests=1)
            retry_after: float | None = None
            try:
                response = session.get(
                    url,
                    params={**params, "key": self._api_key},
                    timeout=(settings.connect_timeout, settings.timeout),
                    # Else requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override the connection's `verify`.
                    verify=session.verify,
                    stream=True,
                )
                answer = read_answer(
                    response.status_code,
                    _whole_body(response),
                    response.headers.get("Retry-After"),
                    decode,
                    path,
                    self._api_key,
                )
                if answer.problem is None:
                    return answer.body
                problem, retry_after = answer.problem, answer.retry_after
            except requests.exceptions.SSLError as err:
                # A certificate that does not verify will not verify on retry either: say so at once.
                raise CDRAPIError(
                    f"GET {path}: TLS verification of {self.base_url} failed (no retry): "
                    f"{redact(str(err), self._api_key)[:300]}",
                    path=path,
                ) from None
            except _TRANSPORT_ERRORS as err:
                problem = f"{type(err).__name__}: {redact(str(err), self._api_key)[:300]}"
            except requests.RequestException as err:  # not worth retrying; its text holds the URL
                raise CDRAPIError(f"GET {path}: {redact(str(err), self._api_key)}", path=path) from None
            delay = budget.next_delay(problem, retry_after)
            if problem.startswith("HTTP 429"):
                gate.pause(delay)  # every concurrent request backs off, not only this one
            self.log.warning("GET %s: %s; retry %d in %.1fs", path, problem, budget.attempts, delay)
            stats.add(retries=1)
            time.sleep(delay)

    # -- records ---------------------------------------------------------------------------------

    def build_query(self, **filters: Any) -> CDRQuery:
        """Validate filters (API parameter names) in the account's time zone, before any request."""
        return build_query(filters, self.timezone)

    def extraction(
        self,
        transform: Any = None,
        select: Any = None,
        *,
        uuids: Any = None,
        read_body: Any = None,
        per_page: int | None = None,
        concurrency: int | None = None,
    ) -> Extraction[Any]:
        """An Extraction bound to this connection: one session, one rate gate, one dedupe set."""
        settings = self.settings
        session = self.get_conn()
        gate = shared_gate(self.base_url, settings.rate_limit)
        stats = ExtractionStats()

        def fetch(params: Mapping[str, str], decode: Callable[[bytes], Any]) -> Any:
            return self._get_json(session, RECORDS_PATH, params, gate, stats, decode)

        options: dict[str, Any] = {"uuids": uuids} if uuids else {}
        if read_body:
            options["read_body"] = read_body
        return Extraction(
            fetch=fetch,
            per_page=per_page or settings.per_page,
            transform=transform or (lambda records: records),
            select=select or (lambda records, keep: [r for r, k in zip(records, keep) if k]),
            concurrency=concurrency or 1,
            stats=stats,
            close=session.close,
            **options,
        )

    def iter_pages(self, per_page: int | None = None, **filters: Any) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of records (lists of dicts, as the API sent them), each record once."""
        query = self.build_query(**filters)
        yield from self.extraction(per_page=per_page).run([query.as_params()])

    def iter_records(self, per_page: int | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Yield records one by one, each once; filters named as the API's parameters."""
        for page in self.iter_pages(per_page=per_page, **filters):
            yield from page

    def get_records_df(self, per_page: int | None = None, **filters: Any) -> pd.DataFrame:
        """Records as a pandas DataFrame with the same typed columns as the Parquet files."""
        import pyarrow as pa

        from airflow_provider_cdr.records import RecordConverter
        from airflow_provider_cdr.schema import CDR_SCHEMA

        converter = RecordConverter()
        batches = [converter.to_batch(page) for page in self.iter_pages(per_page=per_page, **filters)]
        table = pa.Table.from_batches(batches, schema=CDR_SCHEMA)
        return table.to_pandas(types_mapper=_pandas_types)

    # -- lookups ---------------------------------------------------------------------------------

    def _get_once(self, path: str, params: Mapping[str, str]) -> Any:
        """One request (with its retries) on a session of its own."""
        with self.get_conn() as session:
            return self._get_json(
                session, path, params, shared_gate(self.base_url, self.settings.rate_limit), ExtractionStats()
            )

    def fetch_page(self, params: Mapping[str, str]) -> Any:
        """One records request as the API answers it (API parameters, paging included, key added here)."""
        return self._get_once(RECORDS_PATH, params)

    def _lookup(self, name: str) -> list[dict[str, Any]]:
        """Every row of a lookup, page by page: whether these endpoints page is not documented.

        Pages are asked until one comes back empty, or the same as the one before (a server that
        ignores `page`); a server that refuses the paging parameters is asked once without them.
        """
        path = LOOKUP_PATHS[name]
        rows: list[dict[str, Any]] = []
        previous: list[Any] | None = None
        for page in range(1, MAX_LOOKUP_PAGES + 1):
            try:
                body = self._get_once(path, {"page": str(page), "per_page": str(MAX_PER_PAGE)})
            except CDRAPIError as err:
                if page == 1 and err.status in (400, 422):
                    return _lookup_rows(self._get_once(path, {}), path)
                raise
            items = _lookup_rows(body, path)
            if not items or items == previous:
                return rows
            rows.extend(items)
            previous = items
        raise CDRPagingError(f"GET {path} still had rows after {MAX_LOOKUP_PAGES} pages; stopping")

    def list_agents(self) -> list[dict[str, Any]]:
        return self._lookup("agents")

    def list_queues(self) -> list[dict[str, Any]]:
        return self._lookup("queues")

    def list_teams(self) -> list[dict[str, Any]]:
        return self._lookup("teams")

    def list_wrapup_codes(self) -> list[dict[str, Any]]:
        return self._lookup("wrapup_codes")

    def list_campaigns(self) -> list[dict[str, Any]]:
        return self._lookup("campaigns")

    def list_deleted_agents(self) -> list[dict[str, Any]]:
        return self._lookup("deleted_agents")

    # -- UI ----------------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """One cheap request (a page of one record) to prove the URL and the key work."""
        try:
            self._get_once(RECORDS_PATH, {"per_page": "1", "page": "1"})
        except Exception as err:
            return False, redact(str(err), self._api_key)
        return True, "Connection to the CDR API works."


def _lookup_rows(body: Any, path: str) -> list[Any]:
    """A lookup answer's rows: a bare list, or the one list inside an object ({"agents": [...]})."""
    if isinstance(body, dict):
        body = next((v for v in body.values() if isinstance(v, list)), [])
    if not isinstance(body, list):
        raise CDRAPIError(f"GET {path} did not answer with a list", path=path)
    return body


def _pandas_types(arrow_type: Any) -> Any:
    """Nullable pandas dtypes, so an integer column with nulls stays integer."""
    import pandas as pd
    import pyarrow as pa

    mapping = {
        pa.int64(): pd.Int64Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.string(): pd.StringDtype(),
        pa.float64(): pd.Float64Dtype(),
    }
    return mapping.get(arrow_type)
