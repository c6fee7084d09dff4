"""A CDR connection read once, the same way for every request: the sync hook's and the async hook's.

`CDRConnectionSettings` holds the provider's own extras (time zone, paging, timeouts, retries,
rate, deadline), cast, defaulted and checked as their specs in `airflow_provider_cdr.api.extras`
say. `endpoint_from_connection` turns a whole connection into a `CDREndpoint`: the
base URL, the key, the TLS trust, proxies and extra headers, with those settings. Both hooks build
their sessions from that one object, so the deferrable path cannot drift from the sync one.

HttpHook turns every extra it does not know into an HTTP header; the provider's own extras and
the request options HttpHook reads (``verify``, ``proxies``...) are never sent as headers.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from airflow_provider_cdr.api.errors import CDRConfigError, redact, secret_forms
from airflow_provider_cdr.api.extras import (
    DOCUMENTED_HTTP_OPTIONS,
    FALSE_WORDS,
    OWN_EXTRA_SPECS,
    OWN_EXTRAS,
    SPECS,
    TRUE_WORDS,
)
from airflow_provider_cdr.api.query import time_zone
from airflow_provider_cdr.api.retry import RetryPolicy
from airflow_provider_cdr.api.shared_ratelimit import check_redis_url

# Extras HttpHook reads as request options: never headers. The documented ones (verify, cert,
# proxies, trust_env: see `extras.EXTRAS`) are honoured (see CDREndpoint), as are their aliases
# verify_ssl and proxy; the others do not apply (bodies are always streamed, redirects never
# followed).
HTTP_OPTION_EXTRAS = (
    *DOCUMENTED_HTTP_OPTIONS,
    "verify_ssl",
    "proxy",
    "stream",
    "allow_redirects",
    "max_redirects",
    "check_response",
    "srv_lookup",
)


def _lookup(extras: Mapping[str, Any], name: str) -> Any:
    """An extra under its plain name or the UI's prefixed `extra__cdr__<name>`; blanks count as unset."""
    for key in (name, f"extra__cdr__{name}"):
        value = extras.get(key)
        if value not in (None, ""):
            return value
    return None


def foreign_extras(extras: Mapping[str, Any]) -> dict[str, Any]:
    """The extras that are not ours: what HttpHook may turn into headers or session options."""
    own = set(OWN_EXTRAS) | {f"extra__cdr__{name}" for name in OWN_EXTRAS}
    return {key: value for key, value in extras.items() if key not in own}


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class CDRConnectionSettings:
    """The provider's own extras, parsed and checked.

    One field per own extra of `extras.EXTRAS`, in its order, with the spec's default: the specs
    say what each means and how it is cast and bounded (tests check the two agree).
    """

    timezone: str = SPECS["timezone"].default
    per_page: int = SPECS["per_page"].default
    timeout: float = SPECS["timeout"].default
    connect_timeout: float = SPECS["connect_timeout"].default
    request_deadline: float = SPECS["request_deadline"].default
    """Seconds one attempt may take from sending to the last byte; a trickling body counts too."""
    max_retries: int = SPECS["max_retries"].default
    max_retry_wait: float = SPECS["max_retry_wait"].default
    rate_limit: float | None = SPECS["rate_limit"].default
    rate_limit_redis: str | None = SPECS["rate_limit_redis"].default
    concurrency: int = SPECS["concurrency"].default
    allow_insecure_http: bool = SPECS["allow_insecure_http"].default

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> CDRConnectionSettings:
        """Parse and check the extras; a wrong value is named in the error."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for spec in OWN_EXTRA_SPECS:
            raw = _lookup(extras, spec.name)
            if raw is None:
                continue
            try:
                values[spec.name] = spec.cast(raw)
            except (TypeError, ValueError):
                problems.append(f"{spec.name}={raw!r}")
        settings = cls(**values)
        problems.extend(settings._problems())
        if problems:
            raise CDRConfigError("Invalid CDR connection extras: " + "; ".join(problems))
        return settings

    def _problems(self) -> list[str]:
        problems = []
        try:
            time_zone(self.timezone)
        except CDRConfigError as err:
            problems.append(str(err))
        for spec in OWN_EXTRA_SPECS:
            problem = spec.problem(getattr(self, spec.name))
            if problem:
                problems.append(problem)
        if self.rate_limit_redis and (problem := check_redis_url(self.rate_limit_redis)):
            problems.append(problem)
        return problems

    def retry_policy(self) -> RetryPolicy:
        """The one retry policy of every request to this connection."""
        return RetryPolicy(self.max_retries, max_total_wait=self.max_retry_wait)

    def quick(self, seconds: float) -> CDRConnectionSettings:
        """These terms for one quick look (the UI's Test button): no retry, and no wait beyond `seconds`.

        A person is waiting for the answer: the full retry budget would keep them for minutes.
        """
        return replace(
            self,
            max_retries=0,
            max_retry_wait=0.0,
            connect_timeout=min(self.connect_timeout, seconds),
            timeout=min(self.timeout, seconds),
            request_deadline=min(self.request_deadline, seconds),
        )

    def check_base_url(self, base_url: str) -> None:
        """Refuse plain http to anything but loopback unless explicitly allowed: the key is in the URL."""
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https"):
            raise CDRConfigError(f"The CDR base URL must be http(s)://..., got scheme {parsed.scheme!r}")
        if parsed.scheme == "http" and not _is_loopback(parsed.hostname) and not self.allow_insecure_http:
            raise CDRConfigError(
                f"Refusing plain http:// to {parsed.hostname}: the API key would travel unencrypted. "
                "Use https, or set the connection extra allow_insecure_http=true."
            )


@dataclass(frozen=True)
class CDREndpoint:
    """Everything a request to one connection needs: where, with which key, through which TLS trust,
    proxies and headers, on which terms. Built by `endpoint_from_connection`; both hooks use it."""

    base_url: str
    api_key: str = field(repr=False)
    settings: CDRConnectionSettings
    verify: bool | str
    """False, or the CA bundle (a file or a directory) every request trusts."""
    cert: str | tuple[str, str] | None
    """A client certificate (and its key), for servers that ask for one."""
    proxies: Mapping[str, str]
    """Proxy URL by scheme ("http", "https", "all"), as requests takes them."""
    trust_env: bool
    """Whether HTTP(S)_PROXY / NO_PROXY of the environment apply (as in requests and aiohttp)."""
    headers: Mapping[str, str]
    """The connection's other extras, sent as headers (HttpHook's convention)."""

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def query(self, params: Mapping[str, str]) -> dict[str, str]:
        """A request's query string: the API parameters and the key, which only the hooks ever add."""
        return {**params, "key": self.api_key}

    @property
    def secrets(self) -> frozenset[str]:
        """The key in every form a URL, a log line or an error may show it, and the password of the
        `rate_limit_redis` URL: what the masker must know."""
        redis_password = urlparse(self.settings.rate_limit_redis or "").password
        return secret_forms(self.api_key) | (secret_forms(redis_password) if redis_password else frozenset())

    def redact(self, text: str) -> str:
        return redact(text, self.api_key)

    def proxy(self) -> str | None:
        """The proxy for the base URL's scheme, for clients that take one proxy URL (aiohttp)."""
        scheme = urlparse(self.base_url).scheme
        return self.proxies.get(scheme) or self.proxies.get("all")


def base_url_of(connection: Any) -> str:
    """The base URL exactly as HttpHook derives it from host, schema and port."""
    host = connection.host or ""
    base_url = host if "://" in host else f"{connection.schema or 'http'}://{host}"
    if connection.port:
        base_url = f"{base_url}:{connection.port}"
    return base_url


def endpoint_from_connection(
    conn_id: str, connection: Any, extras: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> CDREndpoint:
    """The one reading of a `cdr` connection (host, schema, port, password and extras); checks it all.

    No I/O beyond checking that a CA bundle path exists, so the async hook may call it on the loop.
    """
    if not connection.password:
        raise CDRConfigError(f"Connection {conn_id!r} has no API key in its password field")
    settings = CDRConnectionSettings.from_extras(extras)
    base_url = base_url_of(connection)
    settings.check_base_url(base_url)
    trust_env = _flag(_lookup(extras, "trust_env"), "trust_env", default=True)
    return CDREndpoint(
        base_url=base_url,
        api_key=connection.password,
        settings=settings,
        verify=_tls_trust(extras, trust_env, environ),
        cert=_client_cert(_lookup(extras, "cert")),
        proxies=_proxies(_lookup(extras, "proxies") or _lookup(extras, "proxy")),
        trust_env=trust_env,
        headers=_headers(extras),
    )


def _flag(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    text = str(value).strip().lower()
    if text in TRUE_WORDS or text in FALSE_WORDS:
        return text in TRUE_WORDS
    raise CDRConfigError(f"Invalid CDR connection extras: {name}={value!r} is neither true nor false")


def _tls_trust(extras: Mapping[str, Any], trust_env: bool, environ: Mapping[str, str]) -> bool | str:
    """`verify` resolved as requests would: False, a CA bundle path, or the default bundle.

    The default is REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE when the environment is trusted, else
    certifi's bundle (requests' own default), so both hooks trust exactly the same CAs.
    """
    raw = _lookup(extras, "verify")
    raw = _lookup(extras, "verify_ssl") if raw is None else raw
    text = str(raw).strip()
    if raw is None or text.lower() in TRUE_WORDS:
        from_env = (environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE")) if trust_env else None
        return from_env or _default_bundle()
    if text.lower() in FALSE_WORDS:
        return False
    if not Path(text).exists():
        raise CDRConfigError(
            f"Invalid CDR connection extras: verify={text!r} is neither true/false nor an existing CA bundle"
        )
    return text


def _default_bundle() -> str:
    import certifi

    return str(certifi.where())


def _client_cert(raw: Any) -> str | tuple[str, str] | None:
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, (list, tuple)) and len(raw) == 2 and all(isinstance(part, str) for part in raw):
        return (raw[0], raw[1])
    raise CDRConfigError("Invalid CDR connection extras: cert must be a path or [certificate, key] paths")


def _proxies(raw: Any) -> dict[str, str]:
    """`proxies` as requests takes them; a single URL applies to every scheme."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        return {"all": raw}
    if isinstance(raw, Mapping) and all(isinstance(url, str) for url in raw.values()):
        return {str(scheme): url for scheme, url in raw.items()}
    raise CDRConfigError("Invalid CDR connection extras: proxies must be a URL or {scheme: URL}")


def _headers(extras: Mapping[str, Any]) -> dict[str, str]:
    """The extras left once ours and HttpHook's request options are out: headers, as text."""
    options = set(HTTP_OPTION_EXTRAS) | {f"extra__cdr__{name}" for name in HTTP_OPTION_EXTRAS}
    headers = {name: value for name, value in foreign_extras(extras).items() if name not in options}
    bad = sorted(name for name, value in headers.items() if isinstance(value, (Mapping, list, tuple)))
    if bad:
        raise CDRConfigError(f"Invalid CDR connection extras: {', '.join(bad)} cannot be sent as headers")
    return {name: str(value) for name, value in headers.items() if value is not None}
