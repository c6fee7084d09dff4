"""CDRHook: the CDR API v2 connection, its requests, retries and paging.

Its async twin for the triggerer, on the same connection reading and retry policy, is
:mod:`airflow_provider_cdr.hooks.cdr_async`; what cuts a request short (its deadline, a failed
slice) is :mod:`airflow_provider_cdr.api.cutoff`.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import requests
import urllib3.exceptions
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.log import mask_secret
from requests.adapters import HTTPAdapter

from airflow_provider_cdr.api.availability import Probe
from airflow_provider_cdr.api.cutoff import Attempt, Cutoff
from airflow_provider_cdr.api.diagnosis import failure_message
from airflow_provider_cdr.api.endpoints import LOOKUP_PATHS, RECORDS_PATH
from airflow_provider_cdr.api.errors import (
    CDRAPIError,
    CDRCancelled,
    CDRError,
    CDRPagingError,
    CDRQueryError,
    redact,
    tls_error,
)
from airflow_provider_cdr.api.extraction import Extraction, ExtractionStats
from airflow_provider_cdr.api.extras import EXTRAS, ui_field_behaviour
from airflow_provider_cdr.api.page import Page, PageFormat, read_json
from airflow_provider_cdr.api.paging import MAX_PER_PAGE
from airflow_provider_cdr.api.query import CDRQuery, build_query
from airflow_provider_cdr.api.ratelimit import RequestGate, shared_gate
from airflow_provider_cdr.api.retry import Answer, RetryBudget, read_answer
from airflow_provider_cdr.api.settings import CDRConnectionSettings, CDREndpoint, endpoint_from_connection
from airflow_provider_cdr.api.shared_ratelimit import RedisRequestGate, shared_redis_gate
from airflow_provider_cdr.days.zone_check import offset_hint

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

MAX_LOOKUP_PAGES = 1000
TEST_TIMEOUT_S = 10.0
"""The longest the UI's connection test waits for a connection, and then for the answer."""
_TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,  # from reading a streamed body: a reset, a stall, a short body, a cut-off
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
    API key, which travels as the ``key`` query parameter and never in a log or an error. The
    connection is read by :func:`~airflow_provider_cdr.api.settings.endpoint_from_connection`, as
    :class:`~airflow_provider_cdr.hooks.cdr_async.CDRAsyncHook` reads it. Its extras (the provider's
    own and HttpHook's ``verify``, ``cert``, ``proxies``, ``trust_env``) are declared, with their
    types, defaults and meaning, once: :data:`airflow_provider_cdr.api.extras.EXTRAS`. Any other
    extra is a header.

    :param cdr_conn_id: the Airflow connection of type ``cdr``.
    """

    conn_name_attr = "cdr_conn_id"
    default_conn_name = "cdr_default"
    conn_type = "cdr"
    hook_name = "CDR API (v2)"

    def __init__(self, cdr_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(method="GET", http_conn_id=cdr_conn_id, **kwargs)
        self.cdr_conn_id = cdr_conn_id
        self._endpoint: CDREndpoint | None = None
        _protect_urllib3_logs()

    # -- connection --------------------------------------------------------------------------

    @property
    def endpoint(self) -> CDREndpoint:
        """The connection, looked up and checked once per hook; its key is masked from then on."""
        if self._endpoint is None:
            connection = self.get_connection(self.cdr_conn_id)
            endpoint = endpoint_from_connection(self.cdr_conn_id, connection, connection.extra_dejson)
            for form in endpoint.secrets:
                mask_secret(form)
            self.base_url = endpoint.base_url
            self._endpoint = endpoint
        return self._endpoint

    @property
    def settings(self) -> CDRConnectionSettings:
        return self.endpoint.settings

    def request_gate(self) -> RequestGate | RedisRequestGate:
        """The gate every request to this account passes: this process's, or with `rate_limit_redis`
        the deployment's (every worker's requests under one `rate_limit`, Retry-After pauses shared).
        The account is told apart by its base URL and a digest of its key, never the key."""
        settings = self.settings
        if not settings.rate_limit_redis:
            return shared_gate(self.base_url, settings.rate_limit)
        account = hashlib.sha256(self.endpoint.api_key.encode()).hexdigest()[:16]
        return shared_redis_gate(settings.rate_limit_redis, f"{self.base_url} {account}", settings.rate_limit)

    @property
    def timezone(self) -> str:
        """The account's time zone: the API reads dates and datetimes in it."""
        return self.settings.timezone

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """A keep-alive session on the connection's terms (TLS trust, proxies, headers), without the key."""
        endpoint = self.endpoint
        session = requests.Session()
        session.verify = endpoint.verify
        session.cert = endpoint.cert
        session.proxies.update(endpoint.proxies)
        # What requests reads from the environment on every request when trust_env is on (proxies
        # for the API's host, .netrc credentials) is read once here: os.environ does not change under
        # a running task, and reading it cost about a millisecond of CPU per page. As in requests,
        # the environment's proxies win over the connection's. (`verify` is already resolved.)
        session.trust_env = False
        if endpoint.trust_env:
            session.proxies.update(requests.utils.get_environ_proxies(endpoint.base_url))
            session.auth = requests.utils.get_netrc_auth(endpoint.base_url)
        pool = max(endpoint.settings.concurrency, 1) * 2
        adapter = self.adapter or HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"Accept": "application/json", **endpoint.headers, **(headers or {})})
        return session

    # -- one request ---------------------------------------------------------------------------

    def _get(
        self,
        session: requests.Session,
        path: str,
        params: Mapping[str, str],
        gate: RequestGate | RedisRequestGate,
        stats: ExtractionStats,
        read: Callable[[bytes], T] = read_json,
        cutoff: Cutoff | None = None,
        terms: CDRConnectionSettings | None = None,
    ) -> T:
        """GET `path` and `read` its body, retrying 429, 5xx, transport errors, deadlines and unreadable pages.

        Stops at once (CDRCancelled) when `cutoff` is cancelled. Errors never show the key.
        `terms` replaces the connection's timeouts and retries (the UI's test: one quick try).
        """
        cutoff = cutoff or Cutoff()
        terms = terms or self.settings
        budget = RetryBudget(terms.retry_policy(), path)
        while True:
            cutoff.check()
            gate.wait(cutoff.stop)
            cutoff.check()
            stats.add(requests=1)
            answer = self._attempt(session, path, params, read, cutoff, terms)
            if answer.problem is None:
                return cast(T, answer.body)
            delay = budget.next_delay(answer)
            if answer.throttled:
                gate.pause(delay)  # every concurrent request backs off, not only this one
            stats.add(retries=1)
            cutoff.sleep(delay)

    def _attempt(
        self,
        session: requests.Session,
        path: str,
        params: Mapping[str, str],
        read: Callable[[bytes], Any],
        cutoff: Cutoff,
        terms: CDRConnectionSettings,
    ) -> Answer:
        """One GET within the request deadline: an answer, or the final error.

        Final errors are raised after the ``except`` block, so that requests' exception (its text
        holds the URL, key included) is not kept as their ``__context__``.
        """
        endpoint = self.endpoint
        attempt = cutoff.attempt(terms.request_deadline)
        failure: CDRError
        try:
            response = session.get(
                endpoint.url(path),
                params=endpoint.query(params),
                timeout=(terms.connect_timeout, attempt.time_left(terms.timeout)),
                # Else requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override the connection's `verify`.
                verify=endpoint.verify,
                stream=True,
                allow_redirects=False,
            )
            with attempt.guard(response):
                content = _whole_body(response)
            return read_answer(response.status_code, response.headers, content, read, path, endpoint.api_key)
        except requests.exceptions.SSLError as err:
            failure = tls_error(path, endpoint.base_url, endpoint.redact(str(err)))
        except _TRANSPORT_ERRORS as err:
            if not cutoff.cancelled:
                return Answer(
                    problem=attempt.problem(err, endpoint.api_key),
                    unreachable=_why_no_answer(err, attempt, terms),
                )
            failure = CDRCancelled(f"GET {path} was stopped: another slice of the extraction failed")
        except requests.RequestException as err:  # not worth retrying
            failure = CDRAPIError(f"GET {path}: {endpoint.redact(str(err))}", path=path)
        raise failure

    # -- records ---------------------------------------------------------------------------------

    def build_query(self, **filters: Any) -> CDRQuery:
        """Validate filters (API parameter names) in the account's time zone, before any request."""
        return build_query(filters, self.timezone)

    def extraction(
        self, page_format: PageFormat[T], *, per_page: int | None = None, concurrency: int | None = None
    ) -> Extraction[T]:
        """An Extraction bound to this connection: one session, one rate gate, one dedupe set.

        :param page_format: how a page is read (``RecordDicts``, ``CDRBatches`` from
            :mod:`airflow_provider_cdr.convert.formats`, or your own). A page read ahead is
            scanned by the format's own ``scan(body)`` when it has one (``CDRBatches``: its read
            then reuses what the scan found), else by ``page_scan.scan_page``.
        :param per_page: records asked per page (default: the connection's ``per_page``).
        :param concurrency: queries run at once (default 1).
        """
        from airflow_provider_cdr.convert.page_scan import scan_page

        session = self.get_conn()
        gate = self.request_gate()
        stats = ExtractionStats()
        cutoff = Cutoff()

        def fetch(params: Mapping[str, str], read: Callable[[bytes], Page[T]]) -> Page[T]:
            return self._get(session, RECORDS_PATH, params, gate, stats, read, cutoff)

        return Extraction(
            fetch=fetch,
            format=page_format,
            per_page=per_page or self.settings.per_page,
            concurrency=concurrency or 1,
            stats=stats,
            close=session.close,
            cancel=cutoff.cancel,
            scan=getattr(page_format, "scan", scan_page),  # a format may scan its own (CDRBatches)
        )

    def iter_pages(self, per_page: int | None = None, **filters: Any) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of records (lists of dicts, as the API sent them), each record once."""
        from airflow_provider_cdr.convert.formats import RecordDicts

        query = self.build_query(**filters)
        yield from self.extraction(RecordDicts(), per_page=per_page).run([query.as_params()])

    def iter_records(self, per_page: int | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Yield records one by one, each once; filters named as the API's parameters."""
        for page in self.iter_pages(per_page=per_page, **filters):
            yield from page

    def get_records_df(self, per_page: int | None = None, **filters: Any) -> pd.DataFrame:
        """Records as a pandas DataFrame with the same typed columns as the Parquet files."""
        import pyarrow as pa

        from airflow_provider_cdr.convert.formats import CDRBatches
        from airflow_provider_cdr.convert.schema import CDR_SCHEMA

        query = self.build_query(**filters)
        batches = list(self.extraction(CDRBatches(), per_page=per_page).run([query.as_params()]))
        table = pa.Table.from_batches(batches, schema=CDR_SCHEMA)
        return table.to_pandas(types_mapper=_pandas_types)

    # -- lookups ---------------------------------------------------------------------------------

    def _get_once(self, path: str, params: Mapping[str, str]) -> Any:
        """One request (with its retries) on a session of its own."""
        with self.get_conn() as session:
            return self._get(session, path, params, self.request_gate(), ExtractionStats())

    def fetch_page(self, params: Mapping[str, str]) -> Any:
        """One records request as the API answers it (API parameters, paging included, key added here)."""
        return self._get_once(RECORDS_PATH, params)

    def records_exist(self, params: Mapping[str, str]) -> bool:
        """The availability rule's probe (:class:`~airflow_provider_cdr.api.availability.Probe`) for `params`."""
        probe = Probe(params)
        while probe.request is not None:
            probe.read(self.fetch_page(probe.request))
        return probe.found

    def lookup(self, name: str) -> list[dict[str, Any]]:
        """Every row of the lookup `name` (a key of ``LOOKUP_PATHS``: agents, queues, teams,
        wrapup_codes, campaigns, deleted_agents), page by page: whether these endpoints page is
        not documented.

        Pages are asked until one comes back empty, or the same as the one before (a server that
        ignores `page`); a server that refuses the paging parameters is asked once without them.
        """
        if name not in LOOKUP_PATHS:
            raise CDRQueryError(f"unknown lookup {name!r}; one of: {', '.join(LOOKUP_PATHS)}")
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

    # -- UI ----------------------------------------------------------------------------------------

    # The connection form. Airflow 3.2+ builds it from the provider info (``conn-fields``,
    # ``ui-field-behaviour``) and does not call these two when those are declared; Airflow 3.1
    # builds it from these alone. Both are derived from ``api.extras``, so every release shows
    # the same fields, labels and help texts.

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """One form field per extra of ``EXTRAS``: its label, and its help (and default) as description.

        WTForms is imported here, not with the module: Airflow 3.1's UI calls this with stand-ins
        for WTForms' field classes, so WTForms need not be installed (without it, Airflow calls
        this nowhere else). An integer extra is an IntegerField, a boolean one a BooleanField, any
        other a StringField (the text is read as the JSON value would be). No validators and no
        Flask-AppBuilder widgets: the UI takes only the field's type, label and description.
        """
        from wtforms import BooleanField, IntegerField, StringField

        classes: dict[tuple[str, ...], Any] = {("integer",): IntegerField, ("boolean",): BooleanField}
        return {
            spec.name: classes.get(spec.types, StringField)(spec.label, description=spec.description())
            for spec in EXTRAS
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The provider info's ``ui-field-behaviour``, with the keys Airflow's hook interface uses."""
        return {key.replace("-", "_"): value for key, value in ui_field_behaviour().items()}

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: one request (a page of one record), no retry, at most
        ``TEST_TIMEOUT_S`` per wait, and a message that says what is wrong, never the key.

        A person waits for the answer, so a dead API must not hold them for the retry budget.
        """
        try:
            endpoint = self.endpoint
            with self.get_conn() as session:
                body: Any = self._get(
                    session,
                    RECORDS_PATH,
                    {"per_page": "1", "page": "1"},
                    RequestGate(),  # one request: no cap to keep, and no other task's pause to wait out
                    ExtractionStats(),
                    terms=endpoint.settings.quick(TEST_TIMEOUT_S),
                )
        except Exception as err:
            message = failure_message(
                err, self._endpoint.base_url if self._endpoint else None, TEST_TIMEOUT_S
            )
            return False, redact(message, self._endpoint.api_key if self._endpoint else None)
        message = f"Connection to the CDR API works: {endpoint.base_url} accepted the key."
        hint = offset_hint(_first_timestamp(body), endpoint.settings.timezone)
        return True, endpoint.redact(f"{message} {hint}" if hint else message)


def _first_timestamp(body: Any) -> Any:
    """The first record's ``timestamp`` of a records answer, if there is one."""
    records = body.get("records") if isinstance(body, dict) else None
    if isinstance(records, list) and records and isinstance(records[0], dict):
        return records[0].get("timestamp")
    return None


def _causes(error: BaseException) -> list[BaseException]:
    """`error` and what it wraps: causes, contexts, and urllib3's ``reason``/``args`` chain."""
    found: list[BaseException] = []
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or any(current is seen for seen in found):
            continue
        found.append(current)
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
    return found


def _why_no_answer(error: BaseException, attempt: Attempt, terms: CDRConnectionSettings) -> str:
    """Why a request got no answer, in the words a person fixing the connection needs."""
    if attempt.expired:
        return f"no whole answer within {attempt.deadline:g}s (the request deadline)"
    causes = _causes(error)
    if any(isinstance(c, (socket.gaierror, urllib3.exceptions.NameResolutionError)) for c in causes):
        return "its host name does not resolve (DNS)"
    if isinstance(error, requests.exceptions.ProxyError):
        return "the proxy of the connection (or of the environment) failed"
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection refused: nothing listens on that host and port"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return f"connecting timed out after {terms.connect_timeout:g}s"
    if isinstance(error, requests.exceptions.ReadTimeout):
        return (
            f"it accepted the connection but sent no answer within {min(terms.timeout, attempt.deadline):g}s"
        )
    if any(isinstance(c, (ConnectionResetError, http.client.RemoteDisconnected)) for c in causes):
        return "the server closed the connection without an answer"
    return f"the connection failed ({type(error).__name__})"


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
