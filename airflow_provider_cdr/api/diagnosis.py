"""What a failed connection test means, in the words a person fixing the connection needs.

The UI's Test button sends one request; its error says which part is wrong: the network (refused,
DNS, a timeout), TLS, the key (401/403), the base URL (404), the request (422, in the API's own
words), the server (5xx), or a setting (plain http, a missing key). The caller scrubs the key.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_cdr.api.endpoints import RECORDS_PATH
from airflow_provider_cdr.api.errors import (
    CDRAPIError,
    CDRConfigError,
    CDRError,
    CDRRetriesExhaustedError,
    CDRTLSError,
)

_SERVER_BUSY = frozenset({408, 425, 429})


def api_words(detail: str | None) -> str:
    """The API's error from its answer's body (``{"error": ...}``, ``{"errors": {field: [...]}}``)."""
    if not detail:
        return "no explanation in its answer"
    try:
        body = json.loads(detail)
    except ValueError:
        return detail.strip()[:200]
    if isinstance(body, dict):
        for name in ("errors", "error", "message", "detail"):
            if name in body:
                return _words(body[name])
    return _words(body)


def _words(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{name} {_words(item)}" for name, item in value.items())
    if isinstance(value, list):
        return ", ".join(_words(item) for item in value)
    return str(value)[:200]


def failure_message(error: BaseException, base_url: str | None, timeout: float) -> str:
    """Why the connection test failed and what to change; `base_url` is None when the connection
    could not even be read. The caller scrubs the key from the result."""
    where = base_url or "the CDR API"
    one_try = f"The test sends one request, with no retry and at most {timeout:g}s per wait."
    if isinstance(error, CDRConfigError):
        return f"The connection's settings cannot work: {error}"
    if isinstance(error, CDRTLSError):
        return f"TLS: {error}"
    if isinstance(error, CDRRetriesExhaustedError):
        return _no_usable_answer(error, where, one_try)
    if isinstance(error, CDRAPIError) and error.status is not None:
        return _refused(error, error.status, where, base_url)
    if isinstance(error, CDRError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _no_usable_answer(error: CDRRetriesExhaustedError, where: str, one_try: str) -> str:
    status = error.last_status
    if error.unreachable:
        return (
            f"Cannot reach {where}: {error.unreachable}. Check the host (and port), and that the API "
            f"is reachable from here (firewall, proxy). {one_try}"
        )
    if status in _SERVER_BUSY:
        return (
            f"{where} answered HTTP {status}: it is busy or throttling this key. {one_try} "
            "Tasks retry this (connection extra `max_retries`); try the test again in a moment."
        )
    if status is not None:
        return (
            f"{where} answered HTTP {status}, a server error. {one_try} Tasks retry such errors "
            "(connection extra `max_retries`), so this may pass on its own; try again later."
        )
    return f"{where} answered, but not with a page of CDRs: {error.last_problem}. {one_try}"


def _refused(error: CDRAPIError, status: int, where: str, base_url: str | None) -> str:
    words = api_words(error.detail)
    if status in (401, 403):
        return (
            f"{where} refused the API key (HTTP {status}: {words}). Check the connection's password: "
            "it must be a contact-centre or user API key of this cluster."
        )
    if status == 404:
        path = urlsplit(base_url or "").path.rstrip("/")
        fix = (
            f"Remove the path {path!r} from the host: give the cluster's base URL only"
            if path
            else "Give the cluster's base URL as the host"
        )
        return (
            f"HTTP 404 for {where}{RECORDS_PATH}: no CDR API there. {fix}, e.g. https://<cluster>.voiso.com."
        )
    if status == 422:
        return f"{where} refused the test request (HTTP 422): {words}."
    if 300 <= status < 400:
        return str(error)
    return f"{where} answered HTTP {status}: {words}."
