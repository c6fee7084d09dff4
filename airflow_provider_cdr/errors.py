"""Exceptions of the provider, and the one place that scrubs the API key from text."""

from __future__ import annotations

import re

_KEY_PARAM = re.compile(r"([?&;]key=)[^&\s'\"#]*", re.IGNORECASE)


def redact(text: str, secret: str | None = None) -> str:
    """Return `text` with the `key=` query parameter, and `secret` wherever it stands, masked."""
    text = _KEY_PARAM.sub(r"\1***", text)
    if secret:
        text = text.replace(secret, "***")
    return text


class CDRError(Exception):
    """Base class: every error this provider raises on purpose."""


class CDRQueryError(CDRError, ValueError):
    """A filter or argument is invalid; raised before any request is sent."""


class CDRAPIError(CDRError):
    """The API answered with an error, or never answered properly, after the allowed retries."""

    def __init__(self, message: str, *, status: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.path = path


class CDRSearchTokenExpired(CDRAPIError):
    """The API refused a search_token as expired: the extraction must restart, not splice."""


class CDRPagingError(CDRError):
    """The API's paging made no progress (a repeated token, stale pages): stop instead of looping."""


def api_error(status: int, content: bytes, path: str, secret: str) -> CDRAPIError:
    """A final (non-retryable) answer as an error naming the status and endpoint, never the key."""
    body = redact(content[:500].decode("utf-8", "replace"), secret)
    if status == 422 and "search_token" in body and "expire" in body:
        return CDRSearchTokenExpired(
            f"GET {path}: the search_token expired: {body}", status=status, path=path
        )
    return CDRAPIError(f"GET {path} answered HTTP {status}: {body}", status=status, path=path)
