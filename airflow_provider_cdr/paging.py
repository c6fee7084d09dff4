"""Paging through one CDR search as a small state machine, separate from transport.

The API pages with `page`/`per_page` inside a search of at most 10,000 records, then
continues with `search_token` until the response says `"search_token": null`. `total` is
ambiguous in the docs (pages? records?), so no stop condition here relies on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_provider_cdr.errors import CDRPagingError

MAX_PER_PAGE = 10_000
SEARCH_WINDOW = 10_000
# A window that brings no new record, followed by a token, is tolerated this many times in a row.
MAX_IDLE_WINDOWS = 3


@dataclass
class SearchPager:
    """Which request comes next, given what the previous responses held.

    Verbs: `request_params()` for the next request, `update(...)` with what came back;
    `has_next` says whether to go on. Every stop condition lives in `update`.
    """

    per_page: int
    page: int = 1
    search_token: str | None = None
    has_next: bool = True
    windows: int = 1
    pages: int = 0
    _seen_tokens: set[str] = field(default_factory=set)
    _window_new_records: int = 0
    _idle_windows: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, got {self.per_page}")

    def request_params(self) -> dict[str, str]:
        params = {"page": str(self.page), "per_page": str(self.per_page)}
        if self.search_token is not None:
            params["search_token"] = self.search_token
        return params

    def update(self, received: int, new: int, token: str | None) -> None:
        """Advance after a page that held `received` records, `new` of them not seen before.

        A full page made only of records already seen is "stale" (a server repeating a page):
        the caller should retry the same request rather than skip ahead and lose a page.
        """
        if received and not new and received == self.per_page:
            raise StalePageError(f"page {self.page} of search window {self.windows} repeated known records")
        if not received and token is not None and token == self.search_token:
            # No records, and the token we sent: no progress yet. Following it is asking again (bounded
            # by the caller), not a token loop; records may still come.
            raise StalePageError(
                f"page {self.page} of search window {self.windows} came back empty with the same search_token"
            )
        self.pages += 1
        self._window_new_records += new
        window_full = self.page * self.per_page >= SEARCH_WINDOW
        if received == self.per_page and not window_full:
            self.page += 1
            return
        self._next_window(token)

    def _next_window(self, token: str | None) -> None:
        if token is None:
            self.has_next = False
            return
        if token in self._seen_tokens or token == self.search_token:
            raise CDRPagingError(
                f"the API returned search_token {token[:12]}... a second time (window {self.windows}); "
                "stopping instead of looping"
            )
        self._idle_windows = 0 if self._window_new_records else self._idle_windows + 1
        if self._idle_windows > MAX_IDLE_WINDOWS:
            raise CDRPagingError(
                f"{self._idle_windows} search windows in a row brought no new record; stopping instead of looping"
            )
        self._seen_tokens.add(token)
        self.search_token = token
        self.page = 1
        self.windows += 1
        self._window_new_records = 0


class StalePageError(CDRPagingError):
    """A page repeated records already received: retry the request, never skip it."""
