"""The CDR connection's own settings, read from its extras, and the extras HttpHook may see.

HttpHook turns every extra it does not know into an HTTP header, so the hook removes the
ones listed here before the session is built.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_provider_cdr.errors import CDRQueryError
from airflow_provider_cdr.paging import MAX_PER_PAGE

OWN_EXTRAS = (
    "timezone",
    "per_page",
    "timeout",
    "connect_timeout",
    "max_retries",
    "max_retry_wait",
    "rate_limit",
    "concurrency",
    "allow_insecure_http",
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


def _to_bool(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class CDRConnectionSettings:
    """Everything the hook needs from the connection besides the base URL and the key."""

    timezone: str = "UTC"
    per_page: int = MAX_PER_PAGE
    timeout: float = 60.0
    connect_timeout: float = 10.0
    max_retries: int = 8
    max_retry_wait: float = 300.0
    rate_limit: float | None = None
    concurrency: int = 4
    allow_insecure_http: bool = False

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> CDRConnectionSettings:
        """Parse and check the extras; a wrong value is named in the error."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        casts: dict[str, Any] = {
            "timezone": str,
            "per_page": int,
            "timeout": float,
            "connect_timeout": float,
            "max_retries": int,
            "max_retry_wait": float,
            "rate_limit": float,
            "concurrency": int,
            "allow_insecure_http": _to_bool,
        }
        for name, cast in casts.items():
            raw = _lookup(extras, name)
            if raw is None:
                continue
            try:
                values[name] = cast(raw)
            except (TypeError, ValueError):
                problems.append(f"{name}={raw!r}")
        settings = cls(**values)
        problems.extend(settings._problems())
        if problems:
            raise CDRQueryError("Invalid CDR connection extras: " + "; ".join(problems))
        return settings

    def _problems(self) -> list[str]:
        problems = []
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone={self.timezone!r} is not an IANA time zone")
        if not 1 <= self.per_page <= MAX_PER_PAGE:
            problems.append(f"per_page={self.per_page} is not between 1 and {MAX_PER_PAGE}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            problems.append(f"rate_limit={self.rate_limit} must be positive")
        if self.concurrency < 1:
            problems.append(f"concurrency={self.concurrency} must be at least 1")
        if self.max_retries < 0 or self.timeout <= 0 or self.max_retry_wait < 0:
            problems.append("timeouts and retry limits must be positive")
        return problems

    def check_base_url(self, base_url: str) -> None:
        """Refuse plain http to anything but loopback unless explicitly allowed: the key is in the URL."""
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https"):
            raise CDRQueryError(f"The CDR base URL must be http(s)://..., got scheme {parsed.scheme!r}")
        if parsed.scheme == "http" and not _is_loopback(parsed.hostname) and not self.allow_insecure_http:
            raise CDRQueryError(
                f"Refusing plain http:// to {parsed.hostname}: the API key would travel unencrypted. "
                "Use https, or set the connection extra allow_insecure_http=true."
            )
