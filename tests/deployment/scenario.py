"""The deployment tests' scenario: account, caps, and the days they land."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

TIMEZONE = "America/Sao_Paulo"
RATE_LIMIT = 4  # requests per second for one extraction (the connection's `rate_limit` extra)
MAX_API_TASKS = 2  # CDR_MAX_API_TASKS: land_day instances in flight at once


def midnight(day: date) -> datetime:
    """The account-local start of `day`."""
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(TIMEZONE))


@dataclass(frozen=True)
class Scenario:
    """The days the tests land and where the DAGs write them."""

    days: list[date]
    output: Path

    @property
    def records(self) -> Path:
        return self.output / "cdr"
