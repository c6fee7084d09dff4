"""When to retry a request, and how long to wait: exponential backoff with full jitter, capped."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from airflow_provider_cdr.errors import CDRAPIError, api_error

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
    """What one HTTP answer means to a retry loop: a decoded body, or a problem worth a retry."""

    body: Any = None
    problem: str | None = None
    retry_after: float | None = None


def read_answer(
    status: int,
    content: bytes,
    retry_after: str | None,
    decode: Callable[[bytes], Any],
    path: str,
    secret: str,
) -> Answer:
    """Decode a 200, name a retryable failure, or raise the final error (never showing `secret`)."""
    if status == 200:
        try:
            return Answer(body=decode(content))
        except orjson.JSONDecodeError:
            return Answer(problem=f"an unreadable JSON body ({len(content)} bytes)")
    if status in RETRYABLE_STATUSES:
        return Answer(problem=f"HTTP {status}", retry_after=parse_retry_after(retry_after))
    raise api_error(status, content, path, secret)


@dataclass
class RetryBudget:
    """The attempts and the waiting one request may still spend; gives up with an error that says why."""

    policy: RetryPolicy
    path: str
    attempts: int = 0
    waited: float = 0.0

    def next_delay(self, problem: str, retry_after: float | None = None) -> float:
        self.attempts += 1
        delay = self.policy.delay(self.attempts, retry_after)
        if self.attempts > self.policy.max_retries or self.waited + delay > self.policy.max_total_wait:
            raise CDRAPIError(
                f"GET {self.path} failed after {self.attempts} attempts ({self.waited:.0f}s waited); "
                f"last: {problem}",
                path=self.path,
            )
        self.waited += delay
        return delay
