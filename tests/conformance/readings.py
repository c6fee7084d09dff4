"""The readings of the API the conformance tests play, the days they land, and what the client owes.

A reading is a `ServerProfile` (how the stand-in pages); the days are the record counts where
paging decisions change (around a page, around a 10,000-record search) and two DST days.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from airflow_provider_cdr.api.errors import CDRPagingError
from airflow_provider_cdr.fake_api.profile import ServerProfile

TIMEZONE = "America/New_York"
NOW = "2024-12-01T00:00:00Z"
SEED = 11
# Record counts where the paging's decisions change, and the two DST days of New York (23 h, 25 h).
DAYS: dict[str, int | str] = {
    "2024-03-01": "empty",
    "2024-03-02": 1,
    "2024-03-03": 999,
    "2024-03-04": 1000,
    "2024-03-05": 1001,
    "2024-03-06": 9999,
    "2024-03-07": 10_000,
    "2024-03-08": 10_001,
    "2024-03-09": 25_000,
    "2024-03-10": 10_001,  # spring forward: 23 hours
    "2024-11-03": 25_000,  # fall back: 25 hours
}
DAY_SIZES = {day: 0 if size == "empty" else int(size) for day, size in DAYS.items()}
# The day of the issue that started this suite: 100,000 records, of which 16,000 landed.
BIG_DAY, BIG_DAY_SIZE = "2024-03-12", 100_000

# How pages are cut: honoured per_page, a cap that divides 10,000 and one that does not, sizes that
# vary down to one record, and a careless server whose offsets count asked pages.
PAGE_CUTS: dict[str, dict[str, Any]] = {
    "honoured": {},
    "cap 1000": {"page_cap": 1000},
    "cap 333": {"page_cap": 333},
    "varying": {"page_cap": 1000, "page_sizes": "varying"},
    "cap 1000, asked offsets": {"page_cap": 1000, "page_offset": "asked"},
}
TOKENS: dict[str, dict[str, Any]] = {
    "every page, past the search": {},
    "every page, past the page": {"token_points": "page"},
    "last page": {"token_on": "last"},
}


def _matrix() -> list[tuple[str, dict[str, Any]]]:
    """Every page cut with every token reading, the other switches rotated so that each value of
    each one meets every page cut: 15 readings that cover the pairs that change a decision."""
    rotations: list[dict[str, Any]] = [
        {"total": "pages"},
        {"total": "records", "edge_ties": "resend"},
        {"total": "absent", "search_size": None},
        {"total": "matches", "page_with_token": "refuse", "token_nonce": "on"},
        {"total": "absent", "edge_ties": "resend", "page_with_token": "refuse"},
        {"total": "records", "search_size": None, "edge_ties": "resend"},
    ]
    readings = []
    for i, (cut, cut_fields) in enumerate(PAGE_CUTS.items()):
        for j, (tokens, token_fields) in enumerate(TOKENS.items()):
            rest = rotations[(i + j) % len(rotations)]
            fields = {**cut_fields, **token_fields, **rest}
            label = ", ".join([cut, tokens, *(f"{k}={v}" for k, v in rest.items())])
            readings.append((label, fields))
    return readings


READINGS = _matrix()


def can_be_exact(fields: Mapping[str, Any], per_page: int) -> bool:
    """False where no client can read every record, and must fail clearly instead: page > 1 with a
    token refused while a page at `per_page` is shorter than a search, and the tokens do not point
    past the page (the rest of each further search is unreachable) or resume at their whole
    millisecond (a page no larger than the records sharing it never gets past them)."""
    profile = ServerProfile.from_mapping(fields)
    if profile.page_with_token != "refuse":
        return True
    if profile.edge_ties == "resend":
        # Walking tokens (the only way past a search then) re-reads the ties at each token's edge: a
        # page no larger than them never gets further. (With an unbounded search, paging on by number
        # past 10,000 records would; the client follows the token there, and then fails loudly.)
        return False
    if profile.search_size is None:
        return True
    walkable = profile.token_on == "every" and profile.token_points == "page" and profile.edge_ties == "skip"
    whole_search_a_page = (
        profile.page_cap is None and profile.page_sizes == "constant" and per_page >= profile.search_size
    )
    return walkable or whole_search_a_page


@contextmanager
def exact_or_clear_failure(fields: Mapping[str, Any], per_page: int) -> Iterator[list[bool]]:
    """Run a landing that must be exact; where `can_be_exact` is False it may instead fail with a
    CDRPagingError that says the records cannot be reached. Yields [failed]."""
    outcome = [False]
    try:
        yield outcome
    except CDRPagingError as err:
        if can_be_exact(fields, per_page) or "cannot be" not in str(err):
            raise
        outcome[0] = True


def request_bound(pages_with_records: int, queries: int, token_tests: int = 0) -> int:
    """The most requests the client may make without faults: every page that held records (which
    any client needs), one empty answer per query to prove its end, one offset test, and (only from a
    server that refuses page > 1 with a token) one test per query of where its tokens point."""
    assert token_tests <= queries
    return pages_with_records + queries + 1 + token_tests
