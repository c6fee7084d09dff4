"""Exceptions of the provider, and the one place that scrubs the API key from text.

The key travels in the query string, so it shows up percent-encoded as often as plain: requests
encodes it as ``quote_plus`` does, aiohttp (yarl) keeps ``/``, and hex digits may come back in
either case. Every one of those forms is scrubbed, and every one is what the hooks register with
Airflow's secrets masker.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote, quote_plus, urlsplit

_KEY_PARAM = re.compile(r"([?&;]key=)[^&\s'\"#]*", re.IGNORECASE)
_PERCENT_HEX = re.compile(r"%[0-9A-Fa-f]{2}")


def secret_forms(secret: str) -> frozenset[str]:
    """`secret` as written and as a URL may carry it: quote / quote_plus, '/' kept or not, either hex case."""
    encoded = {encode(secret, safe=safe) for encode in (quote, quote_plus) for safe in ("", "/")}
    lower_hex = {_PERCENT_HEX.sub(lambda m: m.group().lower(), form) for form in encoded}
    return frozenset({secret} | encoded | lower_hex)


@functools.lru_cache(maxsize=8)
def _secret_pattern(secret: str) -> re.Pattern[str]:
    forms = sorted(secret_forms(secret), key=len, reverse=True)  # the longest form first
    return re.compile("|".join(re.escape(form) for form in forms), re.IGNORECASE)


def redact(text: str, secret: str | None = None) -> str:
    """Return `text` with the `key=` query parameter, and `secret` in any of its forms, masked."""
    text = _KEY_PARAM.sub(r"\1***", text)
    if secret:
        text = _secret_pattern(secret).sub("***", text)
    return text


class CDRError(Exception):
    """Base class: every error this provider raises on purpose."""


class CDRQueryError(CDRError, ValueError):
    """Bad input, refused before any request is sent: what is asked (a filter, a day, a window)
    cannot be asked; or, as the subclass CDRConfigError, the configuration cannot work."""


class CDRConfigError(CDRQueryError):
    """A connection, an output location or a task setting cannot work; raised before any request is sent.

    A CDRQueryError too, so that code catching bad input before the first request catches it.
    """


class CDRAPIError(CDRError):
    """The API answered with an error, or never answered properly, after the allowed retries."""

    def __init__(
        self, message: str, *, status: int | None = None, path: str | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.path = path
        self.detail = detail
        """The API's own words (its answer's body, scrubbed and cut short) for a final HTTP error."""


class CDRRetriesExhaustedError(CDRAPIError):
    """A request that kept failing in ways worth a retry (429, 5xx, no answer) until its budget ran out.

    Carries what went wrong the last time, for a caller that explains it (the UI's connection test).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        attempts: int = 0,
        last_problem: str | None = None,
        last_status: int | None = None,
        unreachable: str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.attempts = attempts
        self.last_problem = last_problem
        """What went wrong the last time, as logged (no key)."""
        self.last_status = last_status
        """The HTTP status of the last answer (429, 5xx...), or None when none came."""
        self.unreachable = unreachable
        """Why no answer came, in plain words (refused, a name that does not resolve...), when known."""


class CDRTLSError(CDRAPIError):
    """The server's certificate did not verify: it will not on a retry either."""


class CDRSearchTokenExpired(CDRAPIError):
    """The API refused a search_token as expired: the extraction must restart, not splice."""


class CDRPagingError(CDRError):
    """The API's paging made no progress (a repeated token, stale pages): stop instead of looping."""


class CDRCancelled(CDRError):
    """A request stopped because another slice of its extraction failed first; that failure is the news."""


def api_error(status: int, content: bytes, path: str, secret: str) -> CDRAPIError:
    """A final (non-retryable) answer as an error naming the status and endpoint, never the key."""
    body = redact(content[:500].decode("utf-8", "replace"), secret)
    if status == 422 and "search_token" in body and "expire" in body:
        return CDRSearchTokenExpired(
            f"GET {path}: the search_token expired: {body}", status=status, path=path, detail=body
        )
    return CDRAPIError(f"GET {path} answered HTTP {status}: {body}", status=status, path=path, detail=body)


def redirect_error(status: int, location: str | None, path: str) -> CDRAPIError:
    """A redirect, refused: following it could send the key elsewhere, or in clear. Names only the origin."""
    target = urlsplit(location or "")
    origin = f"{target.scheme}://{target.netloc.rpartition('@')[2]}" if target.netloc else "the same server"
    return CDRAPIError(
        f"GET {path} answered HTTP {status}, a redirect to {origin}; redirects are not followed, as the "
        "API key would go with them. Set the connection's host to the URL the API is served from.",
        status=status,
        path=path,
    )


def tls_error(path: str, base_url: str, detail: str) -> CDRTLSError:
    """A certificate that does not verify: it will not verify on retry either, so the task fails at once."""
    return CDRTLSError(
        f"GET {path}: TLS verification of {base_url} failed (no retry): {detail[:300]}. "
        "For a private CA, give its bundle's path in the connection extra `verify`."
    )
