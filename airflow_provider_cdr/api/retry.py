"""When to retry a request, and how long to wait: exponential backoff with full jitter, capped.

The one retry policy of both hooks. What they share, beyond the policy: `read_answer` tells what
an HTTP answer means (a body, a problem worth a retry, or a final error), and `RetryBudget` says
how long to wait before the next attempt, or gives up with an error that says why. A transport
failure is described by `transport_problem` or `deadline_problem`, whichever client saw it.

Final errors are raised outside of any ``except`` block, so none of them carries the HTTP
client's exception (whose text holds the URL, key included) as its ``__context__``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from airflow_provider_cdr.api.errors import CDRRetriesExhaustedError, api_error, redact, redirect_error
from airflow_provider_cdr.api.page import UnreadablePage

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How many times one request is tried again, and the longest it may wait in total."""

    max_retries: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_wait: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based); a server's Retry-After wins."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay * 4)
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


@dataclass
class Answer:
    """What one HTTP attempt means to a retry loop: a decoded body, or a problem worth a retry."""

    body: Any = None
    problem: str | None = None
    retry_after: float | None = None
    status: int | None = None
    """The HTTP status of an answer worth a retry (429, 5xx...); None for a body or no answer at all."""
    unreachable: str | None = None
    """Why no answer came, in plain words (refused, a name that does not resolve, a timeout), when known."""

    @property
    def throttled(self) -> bool:
        """A 429: every concurrent request should back off, not only this one."""
        return (self.problem or "").startswith("HTTP 429")


def read_answer(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    read: Callable[[bytes], Any],
    path: str,
    secret: str,
) -> Answer:
    """Read a 200 with `read`, name a retryable failure, or raise the final error (never showing `secret`).

    A 200 that `read` finds unreadable (UnreadablePage) is retried. A redirect is final:
    following it could send the key to another host, or in clear.
    """
    if status == 200:
        try:
            return Answer(body=read(content))
        except UnreadablePage as err:
            return Answer(problem=str(err))
    if status in RETRYABLE_STATUSES:
        return Answer(
            problem=f"HTTP {status}", retry_after=parse_retry_after(headers.get("Retry-After")), status=status
        )
    if 300 <= status < 400:
        raise redirect_error(status, headers.get("Location"), path)
    raise api_error(status, content, path, secret)


def transport_problem(error: BaseException, secret: str) -> str:
    """A connection error, timeout or broken body as one line for the log, without the key."""
    return f"{type(error).__name__}: {redact(str(error), secret)[:300]}"


def deadline_problem(deadline: float) -> str:
    """An attempt cut off at its deadline (a stalled or trickling answer): retried like a timeout."""
    return f"no whole answer within the request deadline ({deadline:g}s)"


@dataclass
class RetryBudget:
    """The attempts and the waiting one request may still spend; gives up with an error that says why."""

    policy: RetryPolicy
    path: str
    attempts: int = 0
    waited: float = 0.0

    def next_delay(self, failed: Answer) -> float:
        """Seconds to wait after a failed attempt (logged with its problem), or the final error."""
        problem = failed.problem or "no answer"
        self.attempts += 1
        delay = self.policy.delay(self.attempts, failed.retry_after)
        if self.attempts > self.policy.max_retries or self.waited + delay > self.policy.max_total_wait:
            raise CDRRetriesExhaustedError(
                f"GET {self.path} failed after {self.attempts} attempts ({self.waited:.0f}s waited); "
                f"last: {problem}",
                path=self.path,
                attempts=self.attempts,
                last_problem=problem,
                last_status=failed.status,
                unreachable=failed.unreachable,
            )
        self.waited += delay
        log.warning("GET %s: %s; retry %d in %.1fs", self.path, problem, self.attempts, delay)
        return delay
