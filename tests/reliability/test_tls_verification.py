"""TLS is verified by default, the same way by both hooks: an untrusted server is refused at once, without
the key leaking; a private CA named in the connection's `verify` is trusted, by the sync hook (poke, the
operator) and by the async hook (the deferrable sensor's trigger) alike.

The server is the CDR stand-in behind TLS (tests/tls_stand_in.py) with a certificate signed by a private
CA made here. Plain http:// to a host that is not loopback is refused unless the connection says
allow_insecure_http (the refusal itself is also tested in tests/hooks).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest

from airflow_provider_cdr.api.errors import CDRAPIError, CDRQueryError
from airflow_provider_cdr.hooks.cdr import CDRHook
from airflow_provider_cdr.hooks.cdr_async import CDRAsyncHook, tls_context
from tests.hook_clients import BOTH_HOOKS, Fetch, set_connection
from tests.tls_stand_in import TLSStandIn, private_ca, server_certificate

SECRET = "tls-secret-5b8e1d"
DAY = {"start_date": "2024-03-05", "end_date": "2024-03-05", "per_page": "10", "page": "1"}


@pytest.fixture
def ca_and_server(tmp_path: Path) -> Iterator[tuple[Path, TLSStandIn]]:
    """A private CA's bundle, and the stand-in serving a certificate that CA signed."""
    ca = private_ca(tmp_path)
    with TLSStandIn(*server_certificate(ca, tmp_path), api_key=SECRET) as server:
        yield ca.cert_path, server


def use_connection(monkeypatch: pytest.MonkeyPatch, host: str, **extra: Any) -> str:
    return set_connection(monkeypatch, "cdr_tls", host, SECRET, **{"timezone": "UTC", **extra})


def test_both_hooks_verify_certificates_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    hook = CDRHook(cdr_conn_id=use_connection(monkeypatch, "https://cc-ams03.voiso.com"))
    assert hook.endpoint.verify == certifi.where()  # requests' own default bundle: the same for both hooks
    assert hook.get_conn().verify == certifi.where()
    context = tls_context(hook.endpoint)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    assert CDRHook(cdr_conn_id="cdr_tls").endpoint.verify == ssl.get_default_verify_paths().openssl_cafile
    off = CDRHook(cdr_conn_id=use_connection(monkeypatch, "https://cc-ams03.voiso.com", verify="false"))
    assert off.endpoint.verify is False and tls_context(off.endpoint).verify_mode == ssl.CERT_NONE


def test_a_ca_bundle_that_does_not_exist_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conn_id = use_connection(monkeypatch, "https://cc-ams03.voiso.com", verify=str(tmp_path / "nope.pem"))
    with pytest.raises(CDRQueryError, match=r"verify=.*existing CA bundle"):
        CDRHook(cdr_conn_id=conn_id).get_conn()
    with pytest.raises(CDRQueryError, match=r"verify=.*existing CA bundle"):
        asyncio.run(CDRAsyncHook(cdr_conn_id=conn_id).endpoint())


@BOTH_HOOKS
def test_an_untrusted_certificate_is_refused_at_once_without_the_key(
    fetch: Fetch, ca_and_server: tuple[Path, TLSStandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = ca_and_server
    conn_id = use_connection(monkeypatch, server.url)  # the default bundle does not know the private CA
    with pytest.raises(
        CDRAPIError, match=r"TLS verification of https://127\.0\.0\.1:\d+ failed \(no retry\)"
    ) as raised:
        fetch(conn_id, DAY)
    message = str(raised.value)
    assert "certificate verify failed" in message.lower() or "CERTIFICATE_VERIFY_FAILED" in message
    assert "connection extra `verify`" in message  # says what to do about it
    assert SECRET not in message
    assert server.requests() == 0, "no request (and no key) went over the unverified connection"
    assert server.connections == 1, "a certificate error is not retried"


@BOTH_HOOKS
def test_a_private_ca_named_in_verify_is_trusted(
    fetch: Fetch, ca_and_server: tuple[Path, TLSStandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_bundle, server = ca_and_server
    # A worker image's CA bundle variable must not override the connection's own `verify`.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    body = fetch(use_connection(monkeypatch, server.url, verify=str(ca_bundle)), DAY)
    assert len(body["records"]) == 10
    assert server.requests() == 1 and server.connections == 1


@pytest.mark.parametrize("host", ["http://cdr.example.com", "http://10.1.2.3:8080", "http://[2001:db8::1]"])
def test_plain_http_off_loopback_needs_allow_insecure_http(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = use_connection(monkeypatch, host)
    with pytest.raises(CDRQueryError, match="allow_insecure_http"):
        CDRHook(cdr_conn_id=conn_id).get_conn()
    with pytest.raises(CDRQueryError, match="allow_insecure_http"):
        asyncio.run(CDRAsyncHook(cdr_conn_id=conn_id).endpoint())
    session = CDRHook(cdr_conn_id=use_connection(monkeypatch, host, allow_insecure_http=True)).get_conn()
    assert session.verify and "allow_insecure_http" not in session.headers


@pytest.mark.parametrize("host", ["http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"])
def test_plain_http_on_loopback_is_allowed(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = use_connection(monkeypatch, host)
    assert CDRHook(cdr_conn_id=conn_id).get_conn() is not None
    assert asyncio.run(CDRAsyncHook(cdr_conn_id=conn_id).endpoint()).base_url == host
