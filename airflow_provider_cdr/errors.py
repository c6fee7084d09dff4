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
