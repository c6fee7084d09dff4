"""The one reading of a `cdr` connection both hooks share: extras, TLS trust, proxies, headers, the key."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import certifi
import pytest

from airflow_provider_cdr.api.errors import CDRQueryError, redact, secret_forms
from airflow_provider_cdr.api.settings import (
    HTTP_OPTION_EXTRAS,
    OWN_EXTRAS,
    CDRConnectionSettings,
    endpoint_from_connection,
)
from airflow_provider_cdr.get_provider_info import get_provider_info
from tests.secret_support import KEY_WITH_URL_CHARACTERS, leak_forms

NO_ENV: dict[str, str] = {}


def connection(host: str = "https://cc-ams03.voiso.com", password: str = "k3y", **fields: Any) -> Any:
    return SimpleNamespace(host=host, schema=fields.get("schema"), port=fields.get("port"), password=password)


def test_every_own_extra_is_parsed_and_request_deadline_defaults_to_five_minutes() -> None:
    assert CDRConnectionSettings().request_deadline == 300.0
    settings = CDRConnectionSettings.from_extras({"request_deadline": "2.5", "extra__cdr__timeout": "7"})
    assert (settings.request_deadline, settings.timeout) == (2.5, 7.0)
    with pytest.raises(CDRQueryError, match=r"request_deadline=0\.0 must be positive"):
        CDRConnectionSettings.from_extras({"request_deadline": 0})
    with pytest.raises(CDRQueryError, match="request_deadline='soon'"):
        CDRConnectionSettings.from_extras({"request_deadline": "soon"})


def test_the_connection_forms_fields_are_own_extras() -> None:
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    assert set(fields) <= set(OWN_EXTRAS)
    assert "request_deadline" in fields


def test_headers_are_the_extras_left_once_ours_and_httphooks_options_are_out() -> None:
    extras = {
        **dict.fromkeys(OWN_EXTRAS, "1"),
        **{f"extra__cdr__{name}": "1" for name in OWN_EXTRAS},
        **dict.fromkeys(HTTP_OPTION_EXTRAS, "true"),
        "timezone": "UTC",
        "per_page": 10,
        "verify": "true",
        "proxies": {"https": "http://proxy:3128"},
        "cert": None,
        "X-Team": "cc",
        "X-Shard": 3,
    }
    endpoint = endpoint_from_connection("cdr", connection(), extras, NO_ENV)
    assert endpoint.headers == {"X-Team": "cc", "X-Shard": "3"}
    assert endpoint.proxies == {"https": "http://proxy:3128"} and endpoint.proxy() == "http://proxy:3128"


def test_tls_trust_resolves_as_requests_does(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    env = {"REQUESTS_CA_BUNDLE": str(bundle)}
    assert endpoint_from_connection("cdr", connection(), {}, NO_ENV).verify == certifi.where()
    assert endpoint_from_connection("cdr", connection(), {}, env).verify == str(bundle)
    assert (
        endpoint_from_connection("cdr", connection(), {"trust_env": "false"}, env).verify == certifi.where()
    )
    assert endpoint_from_connection("cdr", connection(), {"verify": False}, env).verify is False
    assert endpoint_from_connection("cdr", connection(), {"verify_ssl": "no"}, env).verify is False
    other = tmp_path / "other.pem"
    other.write_text("")
    assert endpoint_from_connection("cdr", connection(), {"verify": str(other)}, env).verify == str(other)


@pytest.mark.parametrize(
    ("extras", "message"),
    [
        ({"verify": "/nowhere/ca.pem"}, "existing CA bundle"),
        ({"proxies": ["http://proxy"]}, "proxies must be"),
        ({"cert": ["only-one"]}, "cert must be"),
        ({"trust_env": "perhaps"}, "trust_env='perhaps'"),
        ({"X-Nested": {"a": 1}}, "X-Nested cannot be sent as headers"),
    ],
)
def test_unusable_request_options_are_refused_by_name(extras: dict[str, Any], message: str) -> None:
    with pytest.raises(CDRQueryError, match=message):
        endpoint_from_connection("cdr", connection(), extras, NO_ENV)


def test_the_base_url_is_httphooks_and_plain_http_off_loopback_is_refused() -> None:
    endpoint = endpoint_from_connection(
        "cdr", connection("cdr.example.com", schema="https", port=8443), {}, NO_ENV
    )
    assert endpoint.base_url == "https://cdr.example.com:8443"
    assert endpoint.url("/api/v2/cdr") == "https://cdr.example.com:8443/api/v2/cdr"
    with pytest.raises(CDRQueryError, match="allow_insecure_http"):
        endpoint_from_connection("cdr", connection("http://cdr.example.com"), {}, NO_ENV)
    with pytest.raises(CDRQueryError, match="no API key"):
        endpoint_from_connection("cdr", connection(password=""), {}, NO_ENV)


def test_the_key_is_added_only_to_the_query_and_redacted_in_every_form() -> None:
    endpoint = endpoint_from_connection("cdr", connection(password=KEY_WITH_URL_CHARACTERS), {}, NO_ENV)
    assert endpoint.query({"page": "1"}) == {"page": "1", "key": KEY_WITH_URL_CHARACTERS}
    assert KEY_WITH_URL_CHARACTERS not in repr(endpoint)
    assert endpoint.secrets == secret_forms(KEY_WITH_URL_CHARACTERS) >= leak_forms(KEY_WITH_URL_CHARACTERS)
    for form in leak_forms(KEY_WITH_URL_CHARACTERS):
        assert endpoint.redact(f"failed: {form} (retry)") == "failed: *** (retry)"
    assert (
        redact("GET /api/v2/cdr?page=1&key=anything+at%2Fall HTTP/1.1")
        == "GET /api/v2/cdr?page=1&key=*** HTTP/1.1"
    )
