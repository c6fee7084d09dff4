"""What the API client asks of a page format, and the pieces every format shares.

A records body goes from bytes to a :class:`Page` by a :class:`PageFormat` (the records as
dicts, or as Arrow batches of the declared schema: see :mod:`airflow_provider_cdr.convert.formats`).
The HTTP layer hands the format bytes and retries the request when the format raises
:class:`UnreadablePage`; it never sees how a body is parsed. The pager and the extraction only
read the page's paging facts and its keys, never its payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import orjson

from airflow_provider_cdr.api.errors import CDRAPIError

T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)


class UnreadablePage(Exception):
    """A 200 whose body is not readable as an answer (cut short, not JSON): the request is retried."""


@dataclass
class Page(Generic[T]):
    """One read page: its payload (records or a batch), one uuid key per row, and the paging facts."""

    payload: T
    keys: np.ndarray
    """One 128-bit key per row (see :func:`~airflow_provider_cdr.api.dedupe.uuid_keys`)."""
    received: int
    token: str | None
    total: int | None = None
    span_ms: tuple[int, int] | None = None
    """Instants of the first and last record (epoch ms), for the token guard; None when unknown."""


class PageFormat(Protocol[T]):
    """Turns a records body into a Page, and keeps the rows of a payload that are new."""

    def read(self, body: bytes) -> Page[T]:
        """The page in `body`; UnreadablePage when it is not JSON, CDRAPIError when not a page."""
        ...

    def select(self, payload: T, keep: np.ndarray) -> T:
        """The rows of `payload` where `keep` (a bool per row) is true, in order."""
        ...


def read_json(body: bytes) -> Any:
    """A JSON body; UnreadablePage (so the request is retried) when it does not parse."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UnreadablePage(f"an unreadable JSON body ({len(body)} bytes)") from None


def page_parts(body: Any) -> tuple[list[Any], str | None, int | None]:
    """A decoded records answer's records, search_token and total; a wrong shape is an API error."""
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise CDRAPIError("the CDR API answered without a 'records' list")
    token = body.get("search_token")
    if token is not None and (not isinstance(token, str) or not token):
        raise CDRAPIError(
            f"the CDR API answered with an unusable search_token of type {type(token).__name__}"
        )
    return body["records"], token, page_total(body.get("total"))


def page_total(value: Any) -> int | None:
    """`total` when it is a count (whatever it counts), else None."""
    return value if type(value) is int and value >= 0 else None


def _instant_ms(record: Any) -> int | None:
    stamp = record.get("timestamp") if isinstance(record, dict) else None
    return instant_ms(stamp) if isinstance(stamp, str) else None


def instant_ms(stamp: str) -> int | None:
    """Epoch ms of an ISO 8601 instant with an offset, rounded down as Arrow's cast rounds it."""
    try:
        moment = datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp.endswith("Z") else stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return (moment - _EPOCH) // _MILLISECOND


def records_span(records: Sequence[Any]) -> tuple[int, int] | None:
    """Instants (epoch ms) of a page's first and last record, when both can be read."""
    if not records:
        return None
    first, last = _instant_ms(records[0]), _instant_ms(records[-1])
    return None if first is None or last is None else (first, last)
