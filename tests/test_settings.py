"""The one reading of a `cdr` connection both hooks share: extras, TLS trust, proxies, headers, the key."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import certifi
import pytest

from airflow_provider_cdr.api.errors import CDRConfigError, redact, secret_forms
from airflow_provider_cdr.api.extras import EXTRAS, OWN_EXTRA_SPECS, SPECS, ExtraSpec
from airflow_provider_cdr.api.paging import MAX_PER_PAGE
from airflow_provider_cdr.api.settings import (
    HTTP_OPTION_EXTRAS,
    OWN_EXTRAS,
    CDRConnectionSettings,
    endpoint_from_connection,
)
from tests.secret_support import KEY_WITH_URL_CHARACTERS, leak_forms

NO_ENV: dict[str, str] = {}
README = Path(__file__).resolve().parents[1] / "README.md"


def connection(host: str = "https://cc-ams03.voiso.com", password: str = "k3y", **fields: Any) -> Any:
    return SimpleNamespace(host=host, schema=fields.get("schema"), port=fields.get("port"), password=password)


def test_every_own_extra_is_parsed_and_request_deadline_defaults_to_five_minutes() -> None:
    assert CDRConnectionSettings().request_deadline == 300.0
    settings = CDRConnectionSettings.from_extras({"request_deadline": "2.5", "extra__cdr__timeout": "7"})
    assert (settings.request_deadline, settings.timeout) == (2.5, 7.0)
    with pytest.raises(CDRConfigError, match=r"request_deadline=0\.0 must be positive"):
        CDRConnectionSettings.from_extras({"request_deadline": 0})
    with pytest.raises(CDRConfigError, match="request_deadline='soon'"):
        CDRConnectionSettings.from_extras({"request_deadline": "soon"})


# -- the extras' specs (api/extras.py) and what is derived from them ------------------------------

# Values of an extra of each type, as text (as extras often hold them) and as JSON (as the form
# writes them), and the setting each becomes.
SAMPLES: dict[str, list[tuple[Any, Any]]] = {
    "string": [("Europe/Lisbon", "Europe/Lisbon")],
    "integer": [("3", 3), (3, 3)],
    "number": [("2.5", 2.5), (2.5, 2.5), (7, 7.0)],
    "boolean": [("yes", True), ("TRUE", True), (True, True)],
}
# Strings with a form of their own.
SAMPLES_BY_NAME: dict[str, list[tuple[Any, Any]]] = {
    "rate_limit_redis": [("redis://redis:6379/0", "redis://redis:6379/0")],
}


def spec_id(spec: ExtraSpec) -> str:
    return spec.name


def test_the_settings_fields_are_the_own_extras_with_their_specs_defaults() -> None:
    assert [f.name for f in fields(CDRConnectionSettings)] == list(OWN_EXTRAS)
    assert [spec.name for spec in EXTRAS if not spec.http_option] == list(OWN_EXTRAS)
    assert {f.name: f.default for f in fields(CDRConnectionSettings)} == {
        spec.name: spec.default for spec in OWN_EXTRA_SPECS
    }
    assert SPECS["per_page"].default == SPECS["per_page"].bounds["maximum"] == MAX_PER_PAGE


@pytest.mark.parametrize("spec", OWN_EXTRA_SPECS, ids=spec_id)
def test_from_extras_casts_each_extra_with_its_specs_type_and_applies_its_default(spec: ExtraSpec) -> None:
    (json_type,) = spec.types
    assert getattr(CDRConnectionSettings.from_extras({}), spec.name) == spec.default
    assert getattr(CDRConnectionSettings.from_extras({spec.name: ""}), spec.name) == spec.default
    assert getattr(CDRConnectionSettings.from_extras({spec.name: None}), spec.name) == spec.default
    for raw, expected in SAMPLES_BY_NAME.get(spec.name, SAMPLES[json_type]):
        assert expected != spec.default
        for name in (spec.name, f"extra__cdr__{spec.name}"):
            value = getattr(CDRConnectionSettings.from_extras({name: raw}), spec.name)
            assert value == expected and type(value) is type(expected), (name, raw)
    if json_type in ("integer", "number"):
        with pytest.raises(CDRConfigError, match=f"{spec.name}='many'"):
            CDRConnectionSettings.from_extras({spec.name: "many"})


def outside_and_edge(spec: ExtraSpec) -> list[tuple[Any, bool]]:
    """Values at and just past each numeric bound of a spec, and whether each is accepted."""
    cases: list[tuple[Any, bool]] = []
    if "minimum" in spec.bounds:
        cases += [(spec.bounds["minimum"], True), (spec.bounds["minimum"] - 1, False)]
    if "maximum" in spec.bounds:
        cases += [(spec.bounds["maximum"], True), (spec.bounds["maximum"] + 1, False)]
    if "exclusiveMinimum" in spec.bounds:
        cases += [(spec.bounds["exclusiveMinimum"] + 0.5, True), (spec.bounds["exclusiveMinimum"], False)]
    return cases


@pytest.mark.parametrize("spec", [spec for spec in OWN_EXTRA_SPECS if outside_and_edge(spec)], ids=spec_id)
def test_from_extras_checks_the_specs_bounds_and_names_the_extra(spec: ExtraSpec) -> None:
    for value, accepted in outside_and_edge(spec):
        if accepted:
            CDRConnectionSettings.from_extras({spec.name: value})
        else:
            with pytest.raises(CDRConfigError, match=f"{spec.name}="):
                CDRConnectionSettings.from_extras({spec.name: value})


def test_the_http_options_defaults_are_what_endpoint_from_connection_reads_when_unset() -> None:
    options = [spec for spec in EXTRAS if spec.http_option]
    assert {spec.name for spec in options} <= set(HTTP_OPTION_EXTRAS)
    assert not set(OWN_EXTRAS) & set(HTTP_OPTION_EXTRAS)
    endpoint = endpoint_from_connection("cdr", connection(), {}, NO_ENV)
    assert SPECS["verify"].default is True and endpoint.verify == certifi.where()
    assert SPECS["trust_env"].default is endpoint.trust_env is True
    assert SPECS["cert"].default is endpoint.cert is None
    assert SPECS["proxies"].default is None and endpoint.proxies == {}


def readme_extras() -> dict[str, str]:
    """The README's table of connection extras: default (as written) by name, in its order."""
    section = README.read_text().split("\n## The connection\n", 1)[1].split("\n## ", 1)[0]
    lines = iter(section.splitlines())
    for line in lines:
        if [cell.strip() for cell in line.strip().strip("|").split("|")] == ["extra", "meaning", "default"]:
            break
    else:
        raise AssertionError("README.md: no | extra | meaning | default | table under 'The connection'")
    next(lines)  # | --- | --- | --- |
    table: dict[str, str] = {}
    for line in lines:
        if not line.startswith("|"):
            break
        name, _meaning, default = (cell.strip() for cell in line.strip().strip("|").split("|"))
        assert name not in table, f"README.md lists the extra {name} twice"
        table[name.strip("`")] = default.strip("`")
    return table


def test_the_readme_lists_exactly_the_specs_extras_with_their_defaults() -> None:
    assert readme_extras() == {spec.name: spec.default_text for spec in EXTRAS}


def test_a_prefixed_http_option_is_read_and_not_sent_as_a_header(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    extras = {"extra__cdr__verify": str(bundle), "extra__cdr__trust_env": "false", "X-Team": "cc"}
    endpoint = endpoint_from_connection("cdr", connection(), extras, NO_ENV)
    assert (endpoint.verify, endpoint.trust_env) == (str(bundle), False)
    assert endpoint.headers == {"X-Team": "cc"}


def test_headers_are_the_extras_left_once_ours_and_httphooks_options_are_out() -> None:
    extras = {
        **dict.fromkeys(OWN_EXTRAS, "1"),
        **{f"extra__cdr__{name}": "1" for name in OWN_EXTRAS},
        **dict.fromkeys(HTTP_OPTION_EXTRAS, "true"),
        "timezone": "UTC",
        "per_page": 10,
        "rate_limit_redis": "redis://redis:6379/0",
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
    with pytest.raises(CDRConfigError, match=message):
        endpoint_from_connection("cdr", connection(), extras, NO_ENV)


def test_the_base_url_is_httphooks_and_plain_http_off_loopback_is_refused() -> None:
    endpoint = endpoint_from_connection(
        "cdr", connection("cdr.example.com", schema="https", port=8443), {}, NO_ENV
    )
    assert endpoint.base_url == "https://cdr.example.com:8443"
    assert endpoint.url("/api/v2/cdr") == "https://cdr.example.com:8443/api/v2/cdr"
    with pytest.raises(CDRConfigError, match="allow_insecure_http"):
        endpoint_from_connection("cdr", connection("http://cdr.example.com"), {}, NO_ENV)
    with pytest.raises(CDRConfigError, match="no API key"):
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
