"""CDRAsyncHook beside CDRHook: every request on the same terms, proven over real HTTP for both.

Headers and proxies from the connection, the request deadline against a trickling body, redirects
refused (another host, or https to http), and no error that carries the key anywhere in its
chain. Servers: the stand-in, and small recording servers on loopback (127.0.0.2 is "another host").
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from airflow_provider_cdr.api.errors import CDRAPIError
from airflow_provider_cdr.api.settings import HTTP_OPTION_EXTRAS, OWN_EXTRAS
from airflow_provider_cdr.fake_api.faults import FaultConfig, FaultInjector
from tests.hook_clients import BOTH_HOOKS, Fetch, set_connection, sync_fetch
from tests.secret_support import (
    KEY_WITH_URL_CHARACTERS,
    assert_secret_absent,
    chain_length,
    exception_chain_text,
)
from tests.tls_stand_in import TLSStandIn, private_ca, server_certificate, tls_server_context

KEY = KEY_WITH_URL_CHARACTERS
PAGE = {"start_date": "2024-03-05", "end_date": "2024-03-05", "per_page": "100", "page": "1"}
ONE_RECORD = orjson.dumps({"records": [{"uuid": "u-1"}], "search_token": None})
Reply = Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def do_GET(self) -> None:
        self.server.seen.append((self.requestline, dict(self.headers)))
        status, headers, body = self.server.reply(self)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Recorder(ThreadingHTTPServer):
    """A loopback HTTP(S) server that records each request line and its headers, and answers `reply`."""

    daemon_threads = True

    def __init__(self, host: str, reply: Reply, tls: Any = None) -> None:
        super().__init__((host, 0), _Handler)
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.reply = reply
        self.scheme = "https" if tls else "http"
        if tls:
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def __enter__(self) -> Recorder:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"{self.scheme}://{host}:{port}"


def one_record(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, ONE_RECORD


def redirect_to(target: str) -> Reply:
    """Answer 302 to the same path and query (key included) on `target`: the worst a proxy can do."""
    return lambda handler: (302, {"Location": target + handler.path}, b"")


@BOTH_HOOKS
def test_the_connections_headers_are_sent_and_its_options_never(
    fetch: Fetch, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Recorder("127.0.0.1", one_record) as server:
        options = {"verify": "true", "trust_env": "true", "stream": "true", "check_response": "false"}
        conn_id = set_connection(
            monkeypatch,
            "cdr_headers",
            server.url,
            KEY,
            per_page=500,
            request_deadline=30,
            **options,
            **{"X-Team": "contact-centre", "extra__cdr__rate_limit": 50},
        )
        assert fetch(conn_id, PAGE)["records"] == [{"uuid": "u-1"}]
    [(_, headers)] = server.seen
    assert headers["X-Team"] == "contact-centre" and headers["Accept"] == "application/json"
    sent = {name.lower() for name in headers}
    for extra in (*OWN_EXTRAS, *HTTP_OPTION_EXTRAS, "extra__cdr__rate_limit"):
        assert extra.lower() not in sent


@BOTH_HOOKS
def test_the_connections_proxy_carries_the_requests(fetch: Fetch, monkeypatch: pytest.MonkeyPatch) -> None:
    with Recorder("127.0.0.1", one_record) as proxy:
        conn_id = set_connection(
            monkeypatch,
            "cdr_proxied",
            "http://cdr.invalid",
            KEY,
            allow_insecure_http=True,
            proxies={"http": proxy.url},
        )
        assert fetch(conn_id, PAGE)["records"] == [{"uuid": "u-1"}]
    [(request_line, _)] = proxy.seen
    assert request_line.startswith("GET http://cdr.invalid/api/v2/cdr?")  # a proxy's absolute form


@BOTH_HOOKS
@pytest.mark.parametrize("trust_env", [True, False], ids=["trusted environment", "untrusted environment"])
def test_the_environments_proxy_carries_the_requests_only_when_trusted(
    fetch: Fetch, monkeypatch: pytest.MonkeyPatch, trust_env: bool
) -> None:
    """CDRHook reads HTTP_PROXY / NO_PROXY once per session instead of on every request: still
    honoured with trust_env on, ignored with it off, and NO_PROXY still bypasses the proxy."""
    with Recorder("127.0.0.1", one_record) as proxy, Recorder("127.0.0.1", one_record) as server:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.setenv(name, "bypassed.invalid")
        conn_id = set_connection(
            monkeypatch, "cdr_env_proxy", server.url, KEY, trust_env=str(trust_env).lower()
        )
        assert fetch(conn_id, PAGE)["records"] == [{"uuid": "u-1"}]
        assert (len(proxy.seen), len(server.seen)) == ((1, 0) if trust_env else (0, 1))
        if trust_env:
            assert proxy.seen[0][0].startswith(f"GET {server.url}/api/v2/cdr?")  # a proxy's absolute form
            for name in ("NO_PROXY", "no_proxy"):
                monkeypatch.setenv(name, "127.0.0.1")
            assert fetch(conn_id, PAGE)["records"] == [{"uuid": "u-1"}]
            assert (len(proxy.seen), len(server.seen)) == (1, 1)  # NO_PROXY: straight to the server


@pytest.fixture
def dripping(make_stand_in: Callable[..., Any]) -> Iterator[Any]:
    """A stand-in whose every 200 trickles out at 1,000 bytes/s (a 100-record page: about a minute)."""
    server = make_stand_in(api_key=KEY)
    server.set_faults(rate_slow_body=1.0, drip_bytes_per_s=1000)
    yield server
    server.clear_faults()


def _fetch_in_child(conn_id: str, answer: Any) -> None:
    started = time.monotonic()
    try:
        sync_fetch(conn_id, PAGE)
        answer.put(("answered", time.monotonic() - started))
    except CDRAPIError as err:
        answer.put((str(err), time.monotonic() - started))


def test_request_deadlines_hold_in_a_forked_task_process(
    dripping: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deadlines are kept by one watchdog thread per process; a task process forked after the
    parent started it (as Airflow forks) must start its own, or a trickling body would hang it."""
    conn_id = set_connection(
        monkeypatch, "cdr_drip_fork", dripping.url, KEY, request_deadline=1, max_retries=0
    )
    with pytest.raises(CDRAPIError):  # the parent's watchdog runs from here on
        sync_fetch(conn_id, PAGE)
    context = multiprocessing.get_context("fork")
    answer = context.Queue()
    child = context.Process(target=_fetch_in_child, args=(conn_id, answer))
    child.start()
    try:
        message, elapsed = answer.get(timeout=30)
    finally:
        child.kill()
        child.join(timeout=30)
    assert "no whole answer within the request deadline (1s)" in message
    assert elapsed < 3.0


@BOTH_HOOKS
def test_a_trickling_body_is_cut_at_the_request_deadline_retried_then_a_clear_error(
    fetch: Fetch, dripping: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = set_connection(monkeypatch, "cdr_drip", dripping.url, KEY, request_deadline=1, max_retries=1)
    started = time.monotonic()
    with pytest.raises(CDRAPIError) as raised:
        fetch(conn_id, PAGE)
    elapsed = time.monotonic() - started
    assert "failed after 2 attempts" in str(raised.value)
    assert "no whole answer within the request deadline (1s)" in str(raised.value)
    assert dripping.stats()["requests"] == 2  # the deadline counted as a failed attempt, and was retried
    # Two attempts of one second each and one backoff (at most 0.5 s); per-read timeouts never fire.
    assert 2.0 <= elapsed < 4.0


@BOTH_HOOKS
def test_a_trickle_within_the_retry_budget_is_survived(
    fetch: Fetch, dripping: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = FaultConfig(rate_slow_body=0.6, drip_bytes_per_s=1000)
    dripping.set_faults(**faults.to_dict())
    injector = FaultInjector(dripping.seed, faults)  # the stand-in's own decisions, request by request
    first_whole = next(n for n in range(1, 50) if not injector.decide(n, 0).drip_bytes_per_s)
    assert first_whole == 3, "the seed's first two answers trickle"
    conn_id = set_connection(monkeypatch, "cdr_drip_ok", dripping.url, KEY, request_deadline=0.5)
    assert len(fetch(conn_id, PAGE)["records"]) == 100
    assert dripping.stats()["requests"] == first_whole


@BOTH_HOOKS
def test_the_deadline_cuts_a_trickle_over_tls_too(
    fetch: Fetch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = private_ca(tmp_path)
    trickle = {"rate_slow_body": 1.0, "drip_bytes_per_s": 500}
    with TLSStandIn(*server_certificate(ca, tmp_path), api_key=KEY, faults=trickle) as server:
        conn_id = set_connection(
            monkeypatch,
            "cdr_tls_drip",
            server.url,
            KEY,
            verify=str(ca.cert_path),
            request_deadline=1,
            max_retries=0,
        )
        started = time.monotonic()
        with pytest.raises(CDRAPIError, match=r"request deadline \(1s\)"):
            fetch(conn_id, PAGE)
        assert time.monotonic() - started < 2.0 and server.requests() == 1


@pytest.fixture
def elsewhere() -> Iterator[Recorder]:
    """Another host (127.0.0.2) that would gladly take the key."""
    with Recorder("127.0.0.2", one_record) as server:
        yield server


@BOTH_HOOKS
def test_a_redirect_to_another_host_is_refused_and_the_key_goes_nowhere(
    fetch: Fetch, elsewhere: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Recorder("127.0.0.1", redirect_to(elsewhere.url)) as api:
        conn_id = set_connection(monkeypatch, "cdr_redirected", api.url, KEY)
        with pytest.raises(CDRAPIError, match="redirects are not followed") as raised:
            fetch(conn_id, PAGE)
    assert f"a redirect to {elsewhere.url}" in str(raised.value)
    assert raised.value.status == 302
    assert elsewhere.seen == [], "the redirect was followed"
    assert len(api.seen) == 1, "a refused redirect is not retried"
    assert_secret_absent(exception_chain_text(raised.value), "the error", KEY)


@BOTH_HOOKS
def test_a_redirect_from_https_to_http_is_refused(
    fetch: Fetch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = private_ca(tmp_path)
    tls = tls_server_context(*server_certificate(ca, tmp_path))
    with (
        Recorder("127.0.0.1", one_record) as plain,
        Recorder("127.0.0.1", redirect_to(plain.url), tls) as api,
    ):
        conn_id = set_connection(monkeypatch, "cdr_downgraded", api.url, KEY, verify=str(ca.cert_path))
        with pytest.raises(CDRAPIError, match=f"a redirect to {plain.url}; redirects are not followed"):
            fetch(conn_id, PAGE)
    assert plain.seen == [], "the key went out in clear"
    assert len(api.seen) == 1


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


FAILURES = ["untrusted certificate", "unreachable", "5xx to the end", "refused key", "redirect"]


@pytest.fixture
def failing_connection(
    request: pytest.FixtureRequest,
    make_stand_in: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[str]:
    """A connection holding KEY on which every request fails in the named way."""
    failure = request.param
    quick = {"max_retries": 1, "max_retry_wait": 5}
    if failure == "untrusted certificate":
        with TLSStandIn(*server_certificate(private_ca(tmp_path), tmp_path), api_key=KEY) as server:
            yield set_connection(monkeypatch, "cdr_fails", server.url, KEY, **quick)
    elif failure == "unreachable":
        yield set_connection(monkeypatch, "cdr_fails", _closed_port(), KEY, **quick)
    elif failure == "redirect":
        with Recorder("127.0.0.1", redirect_to("http://127.0.0.2:9")) as server:
            yield set_connection(monkeypatch, "cdr_fails", server.url, KEY, **quick)
    else:
        server = make_stand_in(api_key=KEY if failure == "5xx to the end" else "another-key")
        server.set_faults(rate_5xx=1.0, burst_5xx=1)
        yield set_connection(monkeypatch, "cdr_fails", server.url, KEY, **quick)
        server.clear_faults()


@BOTH_HOOKS
@pytest.mark.parametrize("failing_connection", FAILURES, indirect=True)
def test_no_error_carries_the_key_anywhere_in_its_chain(fetch: Fetch, failing_connection: str) -> None:
    """str, repr, args and the formatted traceback of the error, its __cause__ and its __context__."""
    with pytest.raises(CDRAPIError) as raised:
        fetch(failing_connection, PAGE)
    assert_secret_absent(exception_chain_text(raised.value), "the error or its chain", KEY)
    assert chain_length(raised.value) == 1, "the HTTP client's exception (URL and key) is still attached"
