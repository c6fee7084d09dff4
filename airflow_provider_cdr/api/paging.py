"""Paging through CDR searches: which request comes next, and when a search has provably ended.

The API pages with `page`/`per_page` inside a search and continues with `search_token` across
searches. What its reference leaves open (``NOTES.md``, "Unknowns") is settled from what comes
back, never assumed:

* **Page size.** A server may serve fewer records than `per_page` asks (a cap, or a size that
  varies from page to page, down to one record), so a short page never ends a search. A search
  has ended when (a) a page comes back empty, (b) it has delivered 10,000 records and a token
  to go on with, or (c) `total` says so, once what `total` counts (pages or records) has been
  learned from a search whose end an empty page proved. Otherwise one more page is asked.
* **Where page k starts** when pages are short: after what earlier pages held ("served"), or at
  (k-1) x per_page as asked ("asked": then only asking the server's cap is exact). The first
  time a first page comes back short, one extra request settles it for the whole extraction:
  page 2 asked at the short page's size and at the asked size start with the same record
  exactly when offsets are served. Until then only the short page's size is asked (exact
  under both readings).
* **Tokens** on every page or only on a search's last, pointing past the page or past the
  search: a search is paged by number until it has ended, and only then is its latest token
  followed; both readings resume at the same place there. A server that refuses `page` > 1
  with a token is walked token by token, which is exact only when its tokens point past the
  page: when they are known to point past the search, that fails loudly instead.
* **Ties**: records re-sent at a search's edge are expected (the caller drops them by uuid);
  only a page identical to the previous page of the same search is "stale" and asked again.

Guards that fail loudly rather than land a partial day: a page larger than asked, a token that
points back in time (into records already received) or comes a second time, searches that bring
nothing new, a `total` (of a learned reading) that any ended search falls short of, and a
short page followed by more records when offsets count in asked pages (records were skipped).

`ServerPaging` holds what an extraction has learned (shared by its concurrent searches);
`SearchPager` is one query's state machine: `request_params()` for the next request, `update()`
with what came back. Neither does I/O, so every stop condition is testable without a server.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NoReturn

import orjson

from airflow_provider_cdr.api.errors import CDRPagingError

log = logging.getLogger(__name__)

MAX_PER_PAGE = 10_000
SEARCH_WINDOW = 10_000
# Searches in a row that bring no record not already seen before the pager gives up (a loop).
MAX_IDLE_SEARCHES = 3
# How long a search waits for another one to finish the offset test before running its own.
OFFSET_TEST_WAIT_S = 600.0
Waiting = Callable[[], AbstractContextManager[object]]
"""Entered while a search waits for another search (see ServerPaging.claim_offset_test)."""

# Records of a page's edges kept by identity: enough to see where a page starts after the ties a
# token may send again (records sharing the millisecond it resumes at).
EDGE_KEYS = 64

SERVED, ASKED = "served", "asked"
PAGES, RECORDS = "pages", "records"
PAST_PAGE, PAST_SEARCH = "page", "search"


class StalePageError(CDRPagingError):
    """The answer repeated the previous page (or the token it was sent): ask again, never skip it."""


@dataclass(frozen=True)
class PageFacts:
    """What one answer said, as far as paging cares."""

    received: int
    token: str | None
    total: int | None = None
    new: int = 0
    """Records not seen in this search or the previous one (for the loop guard)."""
    fingerprint: bytes | None = None
    """Identity of the page's records in order: equal only for a repeated page."""
    head: tuple[bytes, ...] = ()
    """Identities of the page's first records (up to EDGE_KEYS): where the page starts."""
    tail: tuple[bytes, ...] = ()
    """Identities of the page's last records (up to EDGE_KEYS): where the page ends."""
    first_seen: bool = False
    """Whether the page's first record came on an earlier page of the same search (the page overlaps)."""
    span_ms: tuple[int, int] | None = None
    """Instants (epoch ms) of the page's first and last record, when they could be read."""

    @property
    def first_key(self) -> bytes | None:
        return self.head[0] if self.head else None


def token_instant(token: str) -> int | None:
    """The epoch ms a token resumes at, for tokens of the documented form (base64 of [ms, "cdr_item#id"])."""
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None
    if isinstance(decoded, list) and len(decoded) == 2 and type(decoded[0]) is int:
        return int(decoded[0])
    return None


def _instant_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class PagingCounts:
    """Requests the paging made, by why it made them (for the manifest and the benchmark)."""

    pages: int = 0
    """Answers that held records: the least any client needs for the same data."""
    empty: int = 0
    """Answers without records."""
    proofs: int = 0
    """Empty answers asked only to prove that a search had ended."""
    offset_tests: int = 0
    """Extra requests that learned where a page starts when pages come back short."""
    ends_on_the_servers_word: int = 0
    """Searches ended by a null token without proof (the server refuses page > 1 with a token)."""
    token_tests: int = 0
    """Extra requests that learned where tokens point (only for a server that refuses page > 1 with one)."""


class ServerPaging:
    """What an extraction has learned about the server's paging; shared by its concurrent searches.

    Everything is learned from answers: the most records the server serves on a page (when asked
    for more), where a page starts when pages are short, what `total` counts, and whether tokens
    point past the page or past the search. Thread-safe.
    """

    def __init__(self, per_page: int) -> None:
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, got {per_page}")
        self.asked = per_page
        self.served: int | None = None
        """The most records a page held when more were asked and more followed: the server's page size."""
        self.offsets: str | None = None
        self.total_reading: str | None = None
        self.token_reading: str | None = None
        self.varying = False
        self.honours_per_page = False
        """A page came back exactly as full as asked: the server fills pages up to per_page."""
        self.counts = PagingCounts()
        self._lock = threading.Lock()
        self._offset_test_running = False
        self._offset_test_done = threading.Condition(self._lock)
        self._told: set[str] = set()
        self._ended: list[EndedSearch] = []
        self.total_counts_own_search = False
        """`total` shown to count a search's own records or pages, not everything from it on."""

    # -- what a new search asks ------------------------------------------------------------------

    def first_per_page(self) -> int:
        """per_page for the first page of a search: the server's page size once offsets count in asked pages."""
        with self._lock:
            if self.offsets == ASKED and self.served:
                return min(self.asked, self.served)
            return self.asked

    # -- learning --------------------------------------------------------------------------------

    def count(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self.counts, name, getattr(self.counts, name) + value)

    def saw_capped_page(self, asked: int, served: int) -> None:
        """A page held `served` < `asked` records and more records followed it: the server caps pages."""
        with self._lock:
            self.served = max(self.served or 0, served)
            self._tell_once(
                "capped",
                "The CDR API returns fewer records per page than asked (%d for per_page=%d); paging on "
                "until a page comes back empty",
                served,
                asked,
            )

    def saw_varying_sizes(self, page: int, held: int, per_page: int) -> None:
        with self._lock:
            self.varying = True
            self._tell_once(
                "varying",
                "The CDR API's page sizes vary (page %d held %d records for per_page=%d, and more followed)",
                page,
                held,
                per_page,
            )

    def saw_tokens(self, previous: str | None, current: str | None) -> None:
        """Two consecutive pages of one search carried these tokens. The same token on both cannot point
        past each page: it points past the search. Different ones prove nothing (a token may carry a
        nonce): only `learn_token_aim` says they point past the page."""
        if previous is not None and previous == current:
            self.learn_token_aim(PAST_SEARCH)

    def learn_token_aim(self, aim: str) -> None:
        with self._lock:
            if self.token_reading is None:
                self.token_reading = aim
                log.info("The CDR API's search tokens point past the %s", aim)

    def search_ended(self, ended: EndedSearch) -> None:
        """A search has ended: learn what `total` counts, and hold every search that ended with all it
        held to it (the one that teaches the reading may come after one that fell short).

        `total` may count the search's own records (or pages), everything that matches from the search
        on, or the whole query: all agree on a query's only search, which therefore teaches nothing;
        the first two agree on the last search of a longer query, so a reading learned there is held
        only against last searches, until a search that was followed by another shows that it counts
        the search's own.
        """
        with self._lock:
            if ended.whole:
                self._ended.append(ended)
            learned = ended.total_reading()
            own = ended.continued and learned is not None and learned == (self.total_reading or learned)
            if self.total_reading is None and learned is not None:
                self.total_reading = learned
                log.info("The CDR API's `total` counts %s; a search ends when it says so", learned)
            elif not own:
                if self.total_reading is not None and ended.whole:
                    self._check([ended])
                return
            self.total_counts_own_search = self.total_counts_own_search or own
            self._check(self._ended)

    def _check(self, searches: list[EndedSearch]) -> None:
        reading = self.total_reading
        for search in searches:
            if (
                reading is not None
                and search.whole
                and (self.total_counts_own_search or not search.continued)
            ):
                search.check(reading)

    # -- the offset test ---------------------------------------------------------------------------

    def claim_offset_test(self, waiting: Waiting = nullcontext) -> bool:
        """True: the caller runs the test (none is running). False: offsets are known.

        While another search's test runs, the caller waits for its answer inside `waiting()` (e.g.
        giving up its turn to ask the server, so that another query's requests go out meanwhile);
        a test that ended without one leaves the next caller to run its own."""
        while True:
            with self._lock:
                if self.offsets is not None:
                    return False
                if not self._offset_test_running:
                    self._offset_test_running = True
                    return True
            with waiting(), self._lock:
                while self._offset_test_running and self.offsets is None:
                    if not self._offset_test_done.wait(OFFSET_TEST_WAIT_S):
                        self._offset_test_running = False  # taken as lost: the caller runs its own

    def end_offset_test(self, offsets: str | None) -> None:
        """Record the test's answer (None: it ended without one, e.g. the search ended)."""
        with self._lock:
            self._offset_test_running = False
            if offsets is not None and self.offsets is None:
                self.offsets = offsets
                log.info("The CDR API counts page offsets in %s records", offsets)
            self._offset_test_done.notify_all()

    def _tell_once(self, topic: str, message: str, *args: object) -> None:
        if topic not in self._told:
            self._told.add(topic)
            log.info(message, *args)

    def summary(self) -> dict[str, object]:
        """What was learned and what it cost, for the manifest."""
        with self._lock:
            return {
                "per_page_asked": self.asked,
                "per_page_served": self.served or self.asked,
                "page_sizes_vary": self.varying,
                "offsets": self.offsets,
                "total_counts": self.total_reading,
                "tokens_point_past": self.token_reading,
                "pages": self.counts.pages,
                "empty_answers": self.counts.empty,
                "proof_requests": self.counts.proofs,
                "offset_test_requests": self.counts.offset_tests,
                "token_test_requests": self.counts.token_tests,
                "ends_on_the_servers_word": self.counts.ends_on_the_servers_word,
            }


@dataclass(frozen=True)
class EndedSearch:
    """What a search held once it had ended, and the `total` its pages said."""

    name: str
    totals: frozenset[int]
    records: int
    pages: int
    whole: bool
    """Everything the search holds came (an empty page proved it); else it ended at 10,000 records
    with a token to go on with, which a search without a 10,000-record cap may continue."""
    continued: bool
    """A token led to a next search: records matched beyond this one."""
    first: bool
    """The query's first search (no token started it)."""

    def total_reading(self) -> str | None:
        """What `total` counted in this search, when it said one thing and that tells what it counts.

        A query's only search tells nothing: the search's own count, what matches from it on and the
        whole query's count are then all the same number.
        """
        if len(self.totals) != 1 or self.records == self.pages or (self.first and not self.continued):
            return None
        (total,) = self.totals
        return PAGES if total == self.pages else RECORDS if total == self.records else None

    def check(self, reading: str) -> None:
        """Fail if `total`, read as `reading`, promised more than the search held."""
        if len(self.totals) != 1:
            return
        (total,) = self.totals
        held = self.pages if reading == PAGES else self.records
        if held < total:
            raise CDRPagingError(
                f"{self.name} ended after {held} {reading}, but the API said it holds {total} {reading}: "
                f"{total - held} {reading} were not sent. Nothing was landed."
            )


@dataclass
class _Search:
    """One search (a query, and the token it was started with) as paged so far."""

    token: str | None = None
    """The token that started the search (None for the first)."""
    per_page: int = 0
    page: int = 1
    received: int = 0
    new: int = 0
    pages: int = 0
    latest_token: str | None = None
    """The token the latest page carried: where the next search starts once this one has ended."""
    totals: set[int] = field(default_factory=set)
    fingerprint: bytes | None = None
    last_held: int = 0
    """Records on the latest page."""
    short_page: tuple[int, int] | None = None
    """A page that held fewer records than asked (0: none yet)."""


@dataclass
class _OffsetTest:
    """The two page-2 requests that tell served offsets from asked ones."""

    short: int
    """What page 1 held (fewer than asked)."""
    at_short: PageFacts | None = None


class SearchPager:
    """One query's paging: `request_params()` for the next request, `update()` with what came back.

    `has_next` says whether to go on. Raises StalePageError (ask the same request again) or
    CDRPagingError (stop: the answers do not add up). See the module docstring.
    """

    def __init__(self, server: ServerPaging, waiting: Waiting = nullcontext) -> None:
        self.server = server
        self._waiting = waiting
        self.has_next = True
        self.searches = 1
        self._search = _Search(per_page=server.first_per_page())
        self._followed: set[str] = set()
        self._idle = 0
        self._test: _OffsetTest | None = None
        self._walk = False
        self._first_search_aim: tuple[str, tuple[bytes, ...], bytes] | None = None
        """In the query's first search: page 1's token, its last records, page 2's first record."""
        self._page_1_tail: tuple[bytes, ...] = ()
        self._aim_test: str | None = None
        """Set while testing where tokens point: the refusal that asked for it."""
        self._direction = 0
        """+1 when records come oldest first, -1 newest first, 0 not known yet."""
        self._last_ms: int | None = None

    @property
    def page(self) -> int:
        return self._search.page

    @property
    def per_page(self) -> int:
        return self._search.per_page

    @property
    def search_token(self) -> str | None:
        return self._search.token

    def request_params(self) -> dict[str, str]:
        """The paging parameters of the next request (the caller adds the query and the key)."""
        search = self._search
        if self._aim_test is not None and self._first_search_aim is not None:
            return {"page": "1", "per_page": str(search.per_page), "search_token": self._first_search_aim[0]}
        if self._test is not None:
            # Page 2 at the short page's size first (exact either way), then at the asked size.
            per_page = self._test.short if self._test.at_short is None else search.per_page
            params = {"page": "2", "per_page": str(per_page)}
        else:
            params = {"page": str(search.page), "per_page": str(search.per_page)}
        if search.token is not None:
            params["search_token"] = search.token
        return params

    def update(self, facts: PageFacts) -> None:
        """Advance after an answer; every stop condition lives here and in the methods it calls."""
        asked = int(self.request_params()["per_page"])
        if facts.received > asked:
            raise CDRPagingError(
                f"the API sent {facts.received} records for per_page={asked} (page {self.page} of search "
                f"{self.searches}): the pages cannot be followed"
            )
        if self._aim_test is not None:
            self._token_aim_answer(facts)
            return
        self._check_token_direction(facts)
        if self._test is not None:
            self._offset_test_answer(facts)
        elif self._walk:
            self._walk_answer(facts)
        elif facts.received == 0:
            self._empty_answer(facts)
        else:
            self._records_answer(facts)

    def close(self) -> None:
        """The query ends (also by an error): an offset test still running must not keep others waiting."""
        if self._test is not None:
            self._test = None
            self.server.end_offset_test(None)

    def refused_page_with_token(self, message: str) -> None:
        """The API refused page > 1 together with a search_token: walk the tokens, if that is exact.

        Walking is exact only when tokens point past their page. Unless that is known, it is tested
        once, on the query's first search (where page 2 needed no token): page 1's token, followed,
        must give the page that starts where page 2 started.
        """
        if self.server.token_reading is None and self._first_search_aim is not None:
            self._aim_test = message
            return
        search = self._search
        if search.latest_token is None:
            # Nothing follows when tokens point past the page, or when a server that fills pages of a
            # whole search (10,000) as asked sent a short one. Else there is no telling.
            said_last = self.server.token_reading == PAST_PAGE or (
                self.server.honours_per_page
                and not self.server.varying
                and search.per_page >= SEARCH_WINDOW
                and search.last_held < search.per_page
            )
            if not said_last:
                raise CDRPagingError(
                    f"The CDR API refuses page={search.page} together with a search_token ({message}), and the "
                    f"pages of search {self.searches} carry no token to go on with: whether records follow "
                    f"the first {search.received} cannot be asked. Nothing was landed."
                )
            self.server.count(ends_on_the_servers_word=1)
            self.has_next = False
            return
        if self.server.token_reading != PAST_PAGE:
            aim = (
                "point past the whole search"
                if self.server.token_reading == PAST_SEARCH
                else "may point past the whole search (where they point could not be tested)"
            )
            raise CDRPagingError(
                f"The CDR API refuses page={self.page} together with a search_token ({message}), and its "
                f"tokens {aim}: the records after the first {self._search.received} of each further search "
                "cannot be reached by any request. Nothing was landed."
            )
        log.warning(
            "The CDR API refuses page > 1 together with a search_token (%s): following each page's token",
            message,
        )
        self._walk = True
        self._next_search(search.latest_token)

    # -- answers -----------------------------------------------------------------------------------

    def _records_answer(self, facts: PageFacts) -> None:
        search = self._search
        if search.page > 1 and facts.fingerprint is not None and facts.fingerprint == search.fingerprint:
            raise StalePageError(f"page {search.page} of search {self.searches} repeated the previous page")
        if search.short_page is not None and self.server.offsets == ASKED:
            raise CDRPagingError(
                f"page {search.short_page[0]} of search {self.searches} held fewer records than the "
                f"{search.per_page} asked, and more followed; this API counts page offsets in asked pages, "
                "so the records between were skipped by the server"
            )
        if search.short_page is not None:
            self.server.saw_varying_sizes(*search.short_page, search.per_page)
            search.short_page = None
        self.server.saw_tokens(search.latest_token if search.pages else None, facts.token)
        self._take(facts)
        if over := self._search_is_over():
            self._ended(whole=over == "total", next_token=search.latest_token)
            self._next_search(search.latest_token)
        elif facts.received < search.per_page and search.page == 1:
            self._first_page_short(facts.received)
        else:
            if facts.received < min(search.per_page, self.server.served or search.per_page):
                search.short_page = (search.page, facts.received)  # the end, or page sizes vary
            search.page += 1

    def _empty_answer(self, facts: PageFacts) -> None:
        search = self._search
        if facts.token is not None and facts.token == search.token:
            raise StalePageError(
                f"page {search.page} of search {self.searches} came back empty with the search_token it was sent"
            )
        # A token the search's pages did not carry continues the search (a server that yields an empty
        # page mid-search); otherwise the search has ended here, and `total` can be held against it.
        continued = facts.token is not None and facts.token != search.latest_token
        self.server.count(empty=1, proofs=int(not continued and (search.pages > 0 or self.searches > 1)))
        if not continued:
            self._ended(whole=True, next_token=facts.token or search.latest_token)
        self._next_search(facts.token or search.latest_token)

    def _token_aim_answer(self, facts: PageFacts) -> None:
        """Page 1's token, followed: it points past the page iff this page starts where page 2 did."""
        assert self._aim_test is not None and self._first_search_aim is not None
        message, self._aim_test = self._aim_test, None
        self.server.count(token_tests=1)
        _, page_1_tail, page_2_start = self._first_search_aim
        # Past the page: the followed page starts where page 2 did, maybe after ties of page 1's end
        # sent again.
        head = list(facts.head)
        past_page = page_2_start in head and set(head[: head.index(page_2_start)]) <= set(page_1_tail)
        self.server.learn_token_aim(PAST_PAGE if past_page else PAST_SEARCH)
        self._first_search_aim = None
        self.refused_page_with_token(message)

    def _walk_answer(self, facts: PageFacts) -> None:
        """Token by token, page 1 each time: the end is an empty page or a page without a token."""
        if facts.received == 0:
            self._empty_answer(facts)
            return
        self._take(facts)
        if facts.token is None:
            self.server.count(ends_on_the_servers_word=1)
        self._next_search(facts.token)

    def _take(self, facts: PageFacts) -> None:
        search = self._search
        if search.token is None and search.pages == 1 and search.latest_token and facts.first_key:
            self._first_search_aim = (search.latest_token, self._page_1_tail, facts.first_key)
        if search.token is None and search.pages == 0:
            self._page_1_tail = facts.tail
        search.received += facts.received
        search.new += facts.new
        search.pages += 1
        search.last_held = facts.received
        search.fingerprint = facts.fingerprint
        if facts.received == search.per_page == self.server.asked:
            self.server.honours_per_page = True
        search.latest_token = facts.token
        if facts.total is not None:
            search.totals.add(facts.total)
        if facts.span_ms is not None:
            self._last_ms = facts.span_ms[1]
        self.server.count(pages=1)

    def _search_is_over(self) -> str | None:
        """Over without another request: "window" (10,000 records and a token), "total" (a learned
        `total` says so), or None."""
        search = self._search
        if search.received >= SEARCH_WINDOW and search.latest_token is not None:
            return "window"
        if len(search.totals) != 1:
            return None
        (total,) = search.totals
        held = {PAGES: search.page, RECORDS: search.received}.get(self.server.total_reading or "")
        return "total" if held is not None and held >= total else None

    def _ended(self, *, whole: bool, next_token: str | None) -> None:
        search = self._search
        self.server.search_ended(
            EndedSearch(
                name=f"search {self.searches}",
                totals=frozenset(search.totals),
                records=search.received,
                pages=search.pages,
                whole=whole,
                continued=next_token is not None,
                first=search.token is None,
            )
        )

    # -- short first pages and the offset test ------------------------------------------------------

    def _first_page_short(self, held: int) -> None:
        """Page 1 held fewer records than asked: ask page 2 in a way that is exact whatever the offsets."""
        search = self._search
        search.page = 2
        if self.server.offsets == ASKED:
            search.per_page = held
        elif self.server.offsets == SERVED or self.server.honours_per_page:
            # A server that fills pages as asked puts page 2 right after page 1 whichever way it counts.
            pass
        elif self.server.claim_offset_test(self._waiting):
            self._test = _OffsetTest(short=held)
        elif self.server.offsets != SERVED:  # another search's test ended without an answer: the safe way
            search.per_page = held

    def _offset_test_answer(self, facts: PageFacts) -> None:
        test, search = self._test, self._search
        assert test is not None
        if facts.received and facts.fingerprint == search.fingerprint:
            raise StalePageError(f"page 2 of search {self.searches} repeated page 1")
        if test.at_short is None:
            test.at_short = facts
            if facts.received == 0:  # page 1 was the whole search: no answer, and the end is proven
                self._test = None
                self.server.end_offset_test(None)
                self._empty_answer(facts)
            return
        # Both page-2 answers are in: the second one cost a request only to learn the offsets.
        self.server.count(offset_tests=1)
        self._test = None
        at_short, at_asked = test.at_short, facts
        # Served: both start at the same record, or the short-size page 2 overlaps page 1 (page sizes that
        # depend on per_page; under asked offsets it would start right after page 1).
        served = at_short.first_seen or (at_asked.received > 0 and at_asked.first_key == at_short.first_key)
        self.server.end_offset_test(SERVED if served else ASKED)
        asked = search.per_page
        if not served:
            search.per_page = test.short
        search.page = 2
        chosen = at_asked if served else at_short
        if chosen.received:
            self.server.saw_capped_page(asked, test.short)
            self._records_answer(chosen)
        else:
            self._empty_answer(chosen)

    # -- between searches --------------------------------------------------------------------------

    def _next_search(self, token: str | None) -> None:
        search = self._search
        if token is None:
            self.has_next = False
            return
        if token == search.token or token in self._followed:
            self._stuck(
                f"the API returned search_token {token[:12]}... a second time (search {self.searches})"
            )
        self._idle = 0 if search.new else self._idle + 1
        if self._idle > MAX_IDLE_SEARCHES:
            self._stuck(f"{self._idle} searches in a row brought no new record")
        self._followed.add(token)
        self.searches += 1
        self._search = _Search(token=token, per_page=self.server.first_per_page())

    def _stuck(self, what: str) -> NoReturn:
        """The paging goes round in circles: say so, and why when the tokens are walked."""
        if self._walk:
            raise CDRPagingError(
                f"{what}: the API refuses page > 1 together with a search_token, and walking its tokens a page "
                "at a time gets no further (the records it sends again at a token's edge fill a whole page), "
                "so the records after them cannot be reached. Nothing was landed."
            )
        raise CDRPagingError(f"{what}; stopping instead of looping")

    def _check_token_direction(self, facts: PageFacts) -> None:
        """A token must resume at or beyond the last record received, in the order records come."""
        if facts.span_ms is not None:
            first, last = facts.span_ms
            if not self._direction and first != last:
                self._direction = 1 if last > first else -1
        reference = facts.span_ms[1] if facts.span_ms is not None else self._last_ms
        repeated = facts.token == self._search.token or facts.token in self._followed  # named elsewhere
        if facts.token is not None and not repeated and reference is not None and self._direction:
            resumes = token_instant(facts.token)
            if resumes is not None and (resumes - reference) * self._direction < 0:
                raise CDRPagingError(
                    f"the API's search_token points back in time: it resumes at {_instant_text(resumes)}, but "
                    f"records up to {_instant_text(reference)} were already received (page {self.page} of "
                    f"search {self.searches}); following it would page through them again. Nothing was landed."
                )
