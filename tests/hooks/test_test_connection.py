"""CDRHook.test_connection, the UI's Test button: one request, a short timeout, a message that says what
is wrong, never the key. Against the stand-in over real HTTP (and over TLS), a closed port, a stalled
server and a name that does not resolve."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cdr.api.diagnosis import failure_message
from airflow_provider_cdr.api.errors import api_error
from airflow_provider_cdr.fake_api.server import StandIn
from airflow_provider_cdr.hooks.cdr import TEST_TIMEOUT_S, CDRHook
from tests.secret_support import KEY_WITH_URL_CHARACTERS, assert_secret_absent
from tests.tls_stand_in import TLSStandIn, private_ca, server_certificate

KEY = KEY_WITH_URL_CHARACTERS  # every URL form of it differs from it: all are looked for


def press_test(monkeypatch: pytest.MonkeyPatch, host: str, key: str = KEY, **extra: Any) -> tuple[bool, str]:
    """Point a `cdr` connection at `host` and press Test; no form of the key may be in the message."""
    extra.setdefault("timezone", "America/Sao_Paulo")
    monkeypatch.setenv(
        "AIRFLOW_CONN_CDR_UI_TEST",
        json.dumps({"conn_type": "cdr", "host": host, "password": key, "extra": extra}),
    )
    ok, message = CDRHook(cdr_conn_id="cdr_ui_test").test_connection()
    if key:
        assert_secret_absent(message, "the Test button's message", key)
    return ok, message


@pytest.fixture
def keyed(make_stand_in: Callable[..., StandIn]) -> StandIn:
    """A stand-in whose key has URL-special characters: the key really travels, in every request."""
    return make_stand_in(api_key=KEY)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_working_connection_says_so_in_one_request(keyed: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = press_test(monkeypatch, keyed.url)
    assert ok, message
    assert message == f"Connection to the CDR API works: {keyed.url} accepted the key."
    assert keyed.stats()["requests"] == 1


def test_a_time_zone_the_records_contradict_gets_a_hint(
    keyed: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in stamps records in São Paulo time (-03:00 in March 2024); the connection says UTC."""
    ok, message = press_test(monkeypatch, keyed.url, timezone="UTC")
    assert ok, message
    assert "stamped -03:00" in message and "`timezone` UTC" in message and "(+00:00)" in message
    assert "America/" in message  # zones that fit are named
    assert keyed.stats()["requests"] == 1


def test_a_wrong_key_is_named_as_the_problem(api: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = press_test(monkeypatch, api.url)  # the stand-in's key is another one
    assert not ok
    assert message.startswith(f"{api.url} refused the API key (HTTP 401: Invalid api_key)")
    assert "password" in message
    assert api.stats()["requests"] == 1


@pytest.fixture(params=["closed port", "stopped stand-in"])
def nothing_listening(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "closed port":
        yield f"http://127.0.0.1:{closed_port()}"
        return
    server = StandIn(in_process=True, api_key=KEY).start()
    url = server.url
    server.stop()
    yield url


def test_an_unreachable_api_is_reported_within_seconds(
    nothing_listening: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    ok, message = press_test(monkeypatch, nothing_listening)
    assert time.monotonic() - began < 3
    assert not ok
    assert message.startswith(f"Cannot reach {nothing_listening}: connection refused")
    assert "no retry" in message


def test_a_host_name_that_does_not_resolve_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = press_test(monkeypatch, "https://cdr-api.invalid")  # .invalid never resolves
    assert not ok
    assert message.startswith("Cannot reach https://cdr-api.invalid: its host name does not resolve (DNS)")


def test_a_server_error_is_one_request_and_says_it_was_not_retried(
    keyed: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyed.set_faults(rate_5xx=1.0, burst_5xx=20)
    ok, message = press_test(monkeypatch, keyed.url)
    assert not ok
    stats = keyed.stats()
    assert stats["requests"] == 1, "the test retried"
    [status] = stats["by_status"]
    assert message.startswith(f"{keyed.url} answered HTTP {status}, a server error.")
    assert "one request, with no retry" in message


def test_a_stalled_server_is_given_up_on_after_the_short_timeout(
    keyed: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The connection's own timeouts (60 s a read, 300 s in all, 8 retries) do not apply to the test.
    keyed.set_faults(rate_stall=1.0, stall_s=TEST_TIMEOUT_S + 10)
    began = time.monotonic()
    ok, message = press_test(monkeypatch, keyed.url)
    took = time.monotonic() - began
    keyed.clear_faults()
    assert not ok
    assert TEST_TIMEOUT_S - 1 < took < TEST_TIMEOUT_S + 3
    assert message.startswith(f"Cannot reach {keyed.url}: ")
    assert f"within {TEST_TIMEOUT_S:g}s" in message
    assert keyed.stats()["requests"] == 1


def test_an_answer_that_is_not_a_cdr_page_is_named(keyed: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    keyed.set_faults(rate_bad_json=1.0)
    ok, message = press_test(monkeypatch, keyed.url)
    assert not ok
    assert message.startswith(f"{keyed.url} answered, but not with a page of CDRs: an unreadable JSON body")
    assert keyed.stats()["requests"] == 1


def test_a_base_url_with_a_wrong_path_is_a_404_that_names_the_path(
    keyed: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok, message = press_test(monkeypatch, f"{keyed.url}/cdr-proxy")
    assert not ok
    assert message.startswith(f"HTTP 404 for {keyed.url}/cdr-proxy/api/v2/cdr: no CDR API there.")
    assert "Remove the path '/cdr-proxy'" in message


def test_plain_http_off_loopback_names_the_setting_without_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = press_test(monkeypatch, "http://cdr.example.com")
    assert not ok
    assert message.startswith("The connection's settings cannot work: Refusing plain http://")
    assert "allow_insecure_http=true" in message


def test_a_missing_key_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = press_test(monkeypatch, "https://cc-ams03.voiso.com", key="")
    assert not ok and "no API key in its password field" in message


def test_an_untrusted_certificate_is_a_tls_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = private_ca(tmp_path)
    with TLSStandIn(*server_certificate(ca, tmp_path), api_key=KEY) as server:
        ok, message = press_test(monkeypatch, server.url)
        assert not ok
        assert message.startswith("TLS: ") and "verify" in message
        assert server.requests() == 0 and server.connections == 1
        trusted, works = press_test(monkeypatch, server.url, verify=str(ca.cert_path))
        assert trusted, works


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            422,
            b'{"errors": {"start_date": ["is invalid"], "per_page": ["is too big"]}}',
            "start_date is invalid",
        ),
        (403, b'{"error": "Key disabled"}', "refused the API key (HTTP 403: Key disabled)"),
        (400, b"<html>Bad request</html>", "answered HTTP 400: <html>Bad request</html>."),
    ],
)
def test_other_refusals_name_the_apis_error(status: int, body: bytes, expected: str) -> None:
    """Statuses the stand-in has no reason to send for this request: the wording of the API's error."""
    error = api_error(status, body, "/api/v2/cdr", KEY)
    message = failure_message(error, "https://cc-ams03.voiso.com", TEST_TIMEOUT_S)
    assert expected in message
    if status == 422:
        assert message == (
            "https://cc-ams03.voiso.com refused the test request (HTTP 422): "
            "start_date is invalid; per_page is too big."
        )
