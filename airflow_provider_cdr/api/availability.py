"""When a window of CDRs counts as "in": the one rule the sensor and its trigger share.

A window ``[start, end)`` (UTC instants: a local calendar day, or any ``start_datetime`` /
``end_datetime``) is judged at a moment ``now``:

* **WAIT**, without asking the API, while ``now < end + settle_period`` (default 0): the window
  is not over yet, or its last records may still be on their way into the API.
* Otherwise **one request** (followed by its ``search_token`` only if the API answers with
  an empty page that carries one): ``per_page=1``, ``page=1``, the window as ``start_datetime`` /
  ``end_datetime`` in the account's time zone, plus the user's filters. The API reads
  ``end_datetime`` inclusive at second precision, so the request asks up to ``end - 1 s``: the
  next window's first second is not this window's record.

  * at least one record: **AVAILABLE**;
  * no record while ``now < end + grace_period`` (default 6 h): **WAIT**, records may still
    arrive;
  * no record once ``now >= end + grace_period``: **EMPTY**. The sensor then does what its
    ``on_empty`` says: ``"succeed"`` (default: a genuinely quiet day, such as a holiday),
    ``"skip"`` (``AirflowSkipException``: downstream tasks are skipped) or ``"fail"``
    (``AirflowFailException``: the task fails at once, without retries).

Why two periods: one record proves that a window has started to arrive, not that it is
complete, so ``settle_period`` is how long after its end a window is trusted to be fully
ingested. ``grace_period`` is how long nothing is waited for before it is believed to be
nothing: a broken feed and a quiet day look the same until then. When ``settle_period``
exceeds ``grace_period`` the first request already decides between AVAILABLE and EMPTY.

Everything here is pure (``now`` is an argument), so each edge of the rule is unit-testable.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from airflow_provider_cdr.api.errors import CDRAPIError, CDRConfigError, CDRQueryError
from airflow_provider_cdr.api.query import DATETIME_FORMAT

DEFAULT_SETTLE_PERIOD = timedelta(0)
DEFAULT_GRACE_PERIOD = timedelta(hours=6)
ON_EMPTY_CHOICES = ("succeed", "skip", "fail")
# The probe's own paging: one record is enough to tell "something" from "nothing".
PROBE_PAGING = {"page": "1", "per_page": "1"}
# An empty page that still carries a search_token is not "nothing": follow it, a few times.
MAX_PROBE_REQUESTS = 4

_LOCAL_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def utcnow() -> datetime:
    """The one clock of the sensor and the trigger (tests replace it to move time)."""
    return datetime.now(timezone.utc)


class Verdict(str, enum.Enum):
    """What the rule says about a window at one moment."""

    AVAILABLE = "available"
    WAIT = "wait"
    EMPTY = "empty"


def as_timedelta(value: timedelta | float | int, name: str) -> timedelta:
    """A period given as a timedelta or as seconds; negative periods are refused."""
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise CDRConfigError(f"{name}={value!r} is neither a timedelta nor a number of seconds")
    period = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if period < timedelta(0):
        raise CDRConfigError(f"{name}={value!r} is negative")
    return period


def check_on_empty(value: str) -> str:
    """`on_empty` is one of ON_EMPTY_CHOICES; a typo must not silently mean "succeed"."""
    if value not in ON_EMPTY_CHOICES:
        raise CDRConfigError(f"on_empty={value!r} is not one of {', '.join(ON_EMPTY_CHOICES)}")
    return value


@dataclass(frozen=True)
class AvailabilityRule:
    """The rule of the module docstring, for one settle and one grace period."""

    settle_period: timedelta = DEFAULT_SETTLE_PERIOD
    grace_period: timedelta = DEFAULT_GRACE_PERIOD

    def should_ask(self, now: datetime, window_end: datetime) -> bool:
        """Whether the API is worth a request yet: the window is over and has settled."""
        return now >= window_end + self.settle_period

    def judge(self, now: datetime, window_end: datetime, found: bool) -> Verdict:
        """The verdict at `now`, given whether the probe request found at least one record."""
        if not self.should_ask(now, window_end):
            return Verdict.WAIT
        if found:
            return Verdict.AVAILABLE
        if now >= window_end + self.grace_period:
            return Verdict.EMPTY
        return Verdict.WAIT

    def seconds_to_next_check(self, now: datetime, window_end: datetime, poll_interval: float) -> float:
        """How long to sleep after a WAIT: the poll interval, but no later than the next edge.

        Waking at the settle and grace edges keeps a long poll interval from delaying the
        verdict by up to one interval.
        """
        edges = (window_end + self.settle_period, window_end + self.grace_period)
        upcoming = [(edge - now).total_seconds() for edge in edges if edge > now]
        return max(min([poll_interval, *upcoming]), 0.0)


def _instant(value: Any, tz: ZoneInfo, name: str) -> datetime:
    """An aware datetime, an ISO string with an offset, or account-local YYYY-MM-DDTHH:MM:SS."""
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(re.sub(r"Z$", "+00:00", text))
        except ValueError:
            parsed = None
        if parsed is None or (parsed.tzinfo is None and not _LOCAL_DATETIME.fullmatch(text)):
            raise CDRQueryError(
                f"{name}={value!r} is neither YYYY-MM-DDTHH:MM:SS (account-local) nor ISO 8601 with an offset"
            )
        value = parsed
    if not isinstance(value, datetime):
        raise CDRQueryError(f"{name}={value!r} is not a datetime")
    local = value if value.tzinfo is not None else value.replace(tzinfo=tz)
    # The API knows whole seconds only.
    return local.astimezone(timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class Window:
    """A half-open window ``[start, end)`` of UTC instants, whole seconds."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise CDRQueryError("a window's start and end must be aware datetimes")
        if self.start >= self.end:
            raise CDRQueryError(f"the window is empty: start {self.start} is not before end {self.end}")

    @classmethod
    def between(cls, start: Any, end: Any, tz: ZoneInfo) -> Window:
        """A window from the sensor's `start_datetime` / `end_datetime` arguments."""
        return cls(_instant(start, tz, "start_datetime"), _instant(end, tz, "end_datetime"))

    def api_params(self, tz: ZoneInfo) -> dict[str, str]:
        """The window as the API's account-local datetimes, end inclusive (hence end - 1 s)."""
        last_second = self.end - timedelta(seconds=1)
        return {
            "start_datetime": self.start.astimezone(tz).strftime(DATETIME_FORMAT),
            "end_datetime": last_second.astimezone(tz).strftime(DATETIME_FORMAT),
        }

    def describe(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def probe_params(params: Mapping[str, str]) -> dict[str, str]:
    """The rule's request: the window and filters, first page, one record; never the key."""
    if "key" in params:
        raise CDRQueryError("the API key must not be part of the probe's parameters")
    return {**params, **PROBE_PAGING}


def probe_step(request: Mapping[str, str], body: Any) -> tuple[bool, dict[str, str] | None]:
    """Read one probe answer: (found a record?, the request to send next, or None to stop).

    A page without records but with a ``search_token`` means the search goes on, so the
    token is followed (up to MAX_PROBE_REQUESTS in all, counted by the caller) before the
    window is called empty. A wrong shape is an API error, never a silent "no record".
    """
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise CDRAPIError("the CDR API answered without a 'records' list")
    if body["records"]:
        return True, None
    token = body.get("search_token")
    if isinstance(token, str) and token and token != request.get("search_token"):
        return False, {**request, "search_token": token}
    return False, None


class Probe:
    """The rule's requests for one window, as a small state machine both hooks drive.

    ``CDRHook.records_exist`` (the sensor's poke) and ``CDRAsyncHook.records_exist`` (the
    trigger) each send ``request`` and hand the answer to ``read`` until ``request`` is None;
    what to ask, when to follow a token and when to stop is decided here, once.
    """

    def __init__(self, params: Mapping[str, str]) -> None:
        self.request: dict[str, str] | None = probe_params(params)
        self.found = False
        self._requests_left = MAX_PROBE_REQUESTS

    def read(self, body: Any) -> None:
        """Take the answer to ``request``; sets ``found`` and the next request, or None when done."""
        if self.request is None:
            raise RuntimeError("the probe has already decided")
        self.found, following = probe_step(self.request, body)
        self._requests_left -= 1
        self.request = following if self._requests_left > 0 else None


def window_label(params: Mapping[str, str]) -> str:
    """The window of a probe's parameters as people read it in a log line or an event."""
    return (
        f"{params.get('start_datetime', '?')}..{params.get('end_datetime', '?')} "
        "(account time, end inclusive)"
    )


def empty_message(window: str, grace_period: timedelta, on_empty: str) -> str:
    """The one wording of an EMPTY verdict, for the sensor's log and the trigger's event."""
    return (
        f"No CDR record for {window} {grace_period} after its end (the grace period): "
        f"a quiet window, or records that never arrived; on_empty={on_empty!r}."
    )
