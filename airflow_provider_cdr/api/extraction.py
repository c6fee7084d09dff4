"""Running queries: one query through all its pages and searches, or several concurrently.

`search_pages` drives one query with a SearchPager (paging.py). `Extraction` runs one per query
(e.g. per time slice of a day) on worker threads, hands pages to the caller in arrival
order, and drops every uuid already handed over, so the caller sees each record once. At most
`concurrency` queries ask the server at once (``_Turn``); one that is not asking (done asking,
or waiting for another query) lets the next one ask.
Pages are read by a :class:`~airflow_provider_cdr.api.page.PageFormat`. With more than one
worker, reading runs on a pool of parser threads, one per core: a format that parses without the
GIL (Arrow's JSON reader) then parses on every core, and the big transient buffers of parsing
stay in few threads, hence in few of glibc's per-thread malloc arenas (parsing on every download
thread held ~15 MiB more at the peak of a 1,000,000-record day). Small pages are read one at a
time (``Extraction._small_reads``). Only compact pages wait at the handoff.

Small pages are read ahead: the paging facts of a body (its uuids, token, total) are scanned from
its bytes (``Extraction.scan``), the slice sends its next request at once, and the page is read
on the pool meanwhile; before the page is handed on, its full read must show the same facts, or
the run fails (the paging acted on them). Pages the scan cannot vouch for are read first. Large
ones (over LARGE_PAGE_BYTES) are read ahead only while the server keeps the slice waiting longer
than reading such a page takes (READ_AHEAD_WAIT_RATIO): then the read hides in the wait; when the
server answers at once, reading ahead is no faster and holds more pages in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from airflow_provider_cdr.api.dedupe import SeenUUIDs, contains, merge_sorted, probe_order, sort_keys
from airflow_provider_cdr.api.errors import CDRAPIError, CDRCancelled, CDRPagingError, CDRSearchTokenExpired
from airflow_provider_cdr.api.page import Page, PageFormat, UnreadablePage
from airflow_provider_cdr.api.paging import (
    EDGE_KEYS,
    PageFacts,
    SearchPager,
    ServerPaging,
    StalePageError,
    Waiting,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Read = Callable[[bytes], Page[Any]]
FetchPage = Callable[[Mapping[str, str], Read], Page[Any]]
"""Send one records request (paging params included, key excluded); return read(body).

The fetcher retries the request when `read` raises UnreadablePage.
"""

MAX_STALE_RETRIES = 3
LARGE_PAGE_BYTES = 1 << 20
"""Pages up to this size are always read ahead; larger ones only when the server is slow to answer
(READ_AHEAD_WAIT_RATIO). Measured on 2 cores, 1,000,000 drifted records (benchmarks/results.md):
pages of 1,000 records (~0.3 MB) spend most of a slice's cycle waiting for the server, which
reading ahead hides (b/c 0.79 -> 0.88). Reading pages of 10,000 (~3.4 MB) ahead always took b/c
from 0.77 to 0.86 with latency, and without latency was no faster, with 0.3 s more CPU and about
10 MiB more at the peak."""
READ_AHEAD_WAIT_RATIO = 1.0
"""A large page is read ahead when its slice waited this many times longer for it than reading
a large page has been taking."""
ASSUMED_READ_BYTES_PER_S = 50e6
"""Until a large page has been read, reading one is taken to go at this rate: a page of 10,000
records (3.4 MB) in 68 ms, slower than measured on 2 cores (35-65 ms), so that a server answering
at once is not mistaken for a slow one."""
PROGRESS_EVERY_S = 10.0
IDLE_AFTER_S = 0.05
"""How long the consumer waits for a page before it calls ``Extraction.run``'s `idle`: short against
a server's answer (80 ms and more), longer than pages arriving back to back usually leave it waiting."""


@dataclass
class ExtractionStats:
    """Counters for the task log and the XCom summary; updated from worker threads."""

    requests: int = 0
    retries: int = 0
    records: int = 0
    duplicates: int = 0
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last_log: float = field(default_factory=time.monotonic, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def log_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_log < PROGRESS_EVERY_S:
            return
        self._last_log = now
        elapsed = max(now - self.started, 1e-9)
        log.info(
            "CDR extraction: %d records, %d requests, %d retries, %d duplicates dropped, %.0f records/s",
            self.records,
            self.requests,
            self.retries,
            self.duplicates,
            self.records / elapsed,
        )


class _SearchMemory:
    """Keys of the current and previous search: enough to tell whether a page brought new records.

    Each search's keys are kept sorted (a page merged in linearly), so a page is searched in them
    without sorting the whole search again: with pages capped at 1,000 that re-sorting cost more
    than converting the page."""

    def __init__(self) -> None:
        self._search = 0
        self._current = sort_keys(np.empty((0, 2), dtype=np.uint64))
        self._previous = self._current

    def remember(self, search: int, keys: np.ndarray) -> tuple[int, bool]:
        """How many of `keys` are new, and whether the first was already on a page of this search."""
        if search != self._search:
            self._search, self._previous = search, self._current
            self._current = sort_keys(np.empty((0, 2), dtype=np.uint64))
        if not len(keys):
            return 0, False
        order = probe_order(keys)
        in_current = contains(self._current, keys, order)
        known = in_current | contains(self._previous, keys, order)
        first_seen = bool(in_current[0])
        self._current = merge_sorted(self._current, np.asfortranarray(keys[order]))
        return len(keys) - int(known.sum()), first_seen


def _page_facts(page: Page[Any], new: int, first_seen: bool) -> PageFacts:
    keys = page.keys
    return PageFacts(
        received=page.received,
        token=page.token,
        total=page.total,
        new=new,
        first_seen=first_seen,
        fingerprint=hashlib.blake2b(keys.tobytes(), digest_size=16).digest() if len(keys) else None,
        head=tuple(key.tobytes() for key in keys[:EDGE_KEYS]),
        tail=tuple(key.tobytes() for key in keys[-EDGE_KEYS:]),
        span_ms=page.span_ms,
    )


def _refused_page_with_token(err: CDRAPIError, request: Mapping[str, str]) -> bool:
    """A 400/422 to page > 1 with a token: page 1 with it worked, so the combination is refused."""
    return (
        not isinstance(err, CDRSearchTokenExpired)
        and err.status in (400, 422)
        and "search_token" in request
        and request.get("page", "1") != "1"
    )


def search_pages(
    fetch: FetchPage,
    read: Read,
    params: Mapping[str, str],
    paging: ServerPaging,
    stats: ExtractionStats,
    stop: threading.Event | None = None,
    read_ahead: Read | None = None,
    asked_all: Callable[[], None] = lambda: None,
    while_waiting: Waiting = nullcontext,
) -> Iterator[Page[Any]]:
    """Yield every non-empty page of one query, through all its searches (see paging.py).

    With `read_ahead`, a page may come back with its facts only and its read still running (a
    Future as payload): the next request is sent at once, and the page is settled after it.
    `asked_all` is called once the query needs no more requests, before its last page is settled;
    `while_waiting` is entered while the query waits for another one (see ``SearchPager``).
    """
    pager = SearchPager(paging, while_waiting)
    memory = _SearchMemory()
    stale = 0
    waiting: tuple[Page[Any], Mapping[str, str]] | None = None  # read ahead, not yet settled
    try:
        while pager.has_next and not (stop and stop.is_set()):
            request = {**params, **pager.request_params()}
            try:
                page = fetch(request, read_ahead or read)
            except CDRAPIError as err:
                if not _refused_page_with_token(err, request):
                    raise
                pager.refused_page_with_token(str(err))
                continue
            if waiting is not None:
                yield _settled(*waiting, fetch, read, stats)
                waiting = None
            try:
                pager.update(_page_facts(page, *memory.remember(pager.searches, page.keys)))
            except StalePageError as err:
                stale += 1
                if stale > MAX_STALE_RETRIES:
                    raise CDRPagingError(f"{err}, {stale} times in a row; stopping") from None
                log.warning("%s; asking for it again", err)
                stats.add(retries=1)
                continue
            stale = 0
            if not page.received:
                continue
            if isinstance(page.payload, Future):
                waiting = page, request
            else:
                yield page
        asked_all()
        if waiting is not None and not (stop and stop.is_set()):
            yield _settled(*waiting, fetch, read, stats)
    finally:
        if waiting is not None:
            waiting[0].payload.cancel()
        pager.close()


def _settled(
    ahead: Page[Any], request: Mapping[str, str], fetch: FetchPage, read: Read, stats: ExtractionStats
) -> Page[Any]:
    """The whole page whose facts were read ahead, once they are proven to be the page's own.

    The paging already acted on the facts, so a page whose full read says otherwise fails the
    run. A body that turns out unreadable (the scan reads little of it) is asked for again, and
    the answer must carry the same facts.
    """
    try:
        page = ahead.payload.result()
    except UnreadablePage as err:
        log.warning("A page read ahead is unreadable (%s); asking for it again", err)
        stats.add(retries=1)
        page = fetch(request, read)
    same = (
        page.received == ahead.received
        and page.token == ahead.token
        and page.total == ahead.total
        and page.span_ms == ahead.span_ms
        and np.array_equal(page.keys, ahead.keys)
    )
    if not same:
        raise CDRPagingError(
            f"a page's records, token or total differ from what its bytes were first read to say "
            f"(page {request.get('page')}, {page.received} records): the paging cannot vouch for what "
            "followed. Nothing was landed; please report this page's layout."
        )
    return page


def _next_item(handoff: queue.Queue[Any], idle: Callable[[], None] | None) -> Any:
    """The next item handed over; `idle` is called first if none comes within IDLE_AFTER_S."""
    if idle is None:
        return handoff.get()
    try:
        return handoff.get(timeout=IDLE_AFTER_S)
    except queue.Empty:
        idle()
        return handoff.get()


class _Turn:
    """A slice's turn to send requests: `concurrency` slices hold one at a time.

    A slice gives its turn up for good once its query needs no more requests, so that the next
    slice asks while its last page is still read and handed over; and for a while when it waits
    for another slice (the offset test, ``ServerPaging.claim_offset_test``), so that the wait
    is spent on another slice's requests. With latency, a 100,000-record drifted day went from b/c
    0.83 to 0.85 (pages of 10,000) and from 0.84 to 0.89 (capped at 1,000; 3 of the 4 first slices
    waited two requests for the offset test), interleaved A/B of 5 to 7 runs each.
    """

    def __init__(self, turns: threading.Semaphore) -> None:
        self._turns = turns
        turns.acquire()
        self._held = True

    def give_up(self) -> None:
        if self._held:
            self._held = False
            self._turns.release()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The turn given up for the block, if it was held, and taken back (waiting for it) after."""
        held = self._held
        self.give_up()
        try:
            yield
        finally:
            if held:
                self._turns.acquire()
                self._held = True


@dataclass
class _Failed:
    error: BaseException


_DONE = object()


@dataclass
class Extraction(Generic[T]):
    """Run searches, read their pages with `format`, yield each record once. See the module docstring."""

    fetch: FetchPage
    format: PageFormat[T]
    per_page: int
    concurrency: int = 1
    stats: ExtractionStats = field(default_factory=ExtractionStats)
    paging: ServerPaging = field(init=False)
    """What the searches learn about the server's paging, and what proving their ends cost."""
    seen: SeenUUIDs = field(default_factory=SeenUUIDs)
    close: Callable[[], None] = lambda: None
    """Called once the run ends, however it ends (e.g. to close the HTTP session)."""
    cancel: Callable[[], None] = lambda: None
    """Called when a slice fails (or the caller stops reading): the fetcher then stops the other
    slices' requests at once (in flight, retrying or not yet sent) with CDRCancelled, so the run
    ends within about one request instead of after their retry budgets."""
    scan: Callable[[bytes], Page[Any] | None] | None = None
    """Reads a body's paging facts without reading the page (e.g. ``convert.page_scan.scan_page``,
    or ``CDRBatches.scan``, which keeps what it found for the page's read; the payload is not used
    here): with concurrent slices, each sends its next request while its page is read on the pool."""
    _parsers: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _ahead: threading.BoundedSemaphore = field(
        default_factory=threading.BoundedSemaphore, init=False, repr=False
    )
    """Pages read ahead and still being read: as many as there are slices, so pages do not pile up
    in memory. A slice may hold two (the page it waits to settle and the next one, read ahead while
    it fetched), so a slice whose first page comes late can find none free and read it in full
    before asking on: slower, never wrong. One per parser (2 here) made a slice whose page came
    while two others were read wait for that page's read before its next request; with latency, a
    100,000-record day in pages of 10,000 landed at b/c 0.79 instead of 0.83 (interleaved A/B, 7
    runs each). The memory that costs at the peak is paid for by the writer encoding while idle
    (``landing/writer.py``, flush_idle)."""
    _small_reads: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    """Held while a small page (LARGE_PAGE_BYTES at most) is read. Most of a small page's read is
    Python between short native calls, and each of those calls hands the GIL over when another
    parser waits for it: two parsers reading pages of 1,000 at once spent more time handing it
    over than they gained (a drifted 100,000-record day from a server that caps pages at 1,000,
    no latency: 1.46 -> 1.29 s wall and 1.82 -> 1.50 s CPU with one at a time, interleaved A/B
    of 5 runs each; with latency, and in pages of 10,000, no difference). Large pages are
    mostly Arrow's parse, with the GIL released: they still read side by side."""
    _sent: threading.local = field(default_factory=threading.local, init=False, repr=False)
    """Per slice thread: when its current request was sent (`at`, time.monotonic())."""
    _large_read_s: float | None = field(default=None, init=False, repr=False)
    """How long reading a large page has been taking (a moving average); None until one was read
    (ASSUMED_READ_BYTES_PER_S stands in)."""

    def __post_init__(self) -> None:
        self.paging = ServerPaging(self.per_page)

    def read(self, body: bytes) -> Page[T]:
        """Bytes -> page by the format, on the parser pool when there is one."""
        parsers = self._parsers
        return self._timed_read(body) if parsers is None else parsers.submit(self._timed_read, body).result()

    def _timed_read(self, body: bytes) -> Page[T]:
        """format.read, keeping the moving average of how long large pages take; small pages one
        at a time (see _small_reads)."""
        if len(body) <= LARGE_PAGE_BYTES:
            with self._small_reads:
                return self.format.read(body)
        started = time.monotonic()
        page = self.format.read(body)
        took = time.monotonic() - started
        last = self._large_read_s
        self._large_read_s = took if last is None else 0.8 * last + 0.2 * took
        return page

    def _timed_fetch(self, request: Mapping[str, str], read: Read) -> Page[Any]:
        """fetch, noting when this slice's request was sent (for _worth_reading_ahead)."""
        self._sent.at = time.monotonic()
        return self.fetch(request, read)

    def _worth_reading_ahead(self, body: bytes) -> bool:
        """A small page always; a large one when the server kept this slice waiting for it longer
        than reading it will take (READ_AHEAD_WAIT_RATIO), so the read hides in the next wait."""
        if len(body) <= LARGE_PAGE_BYTES:
            return True
        sent, reading = getattr(self._sent, "at", None), self._large_read_s
        if sent is None:
            return False
        if reading is None:
            reading = len(body) / ASSUMED_READ_BYTES_PER_S
        return time.monotonic() - sent > READ_AHEAD_WAIT_RATIO * reading

    def read_ahead(self, body: bytes) -> Page[Any]:
        """The page's facts with its read still running on the parser pool (a Future as payload),
        or the page read in full when the facts cannot be scanned from the bytes."""
        parsers = self._parsers
        if (
            parsers is None
            or self.scan is None
            or not self._worth_reading_ahead(body)
            or not self._ahead.acquire(blocking=False)
        ):
            return self.read(body)
        facts = self.scan(body)
        if facts is None:
            self._ahead.release()
            return self.read(body)
        future = parsers.submit(self._timed_read, body)
        future.add_done_callback(lambda _: self._ahead.release())
        return Page(future, facts.keys, facts.received, facts.token, facts.total, facts.span_ms)

    def run(
        self, queries: Sequence[Mapping[str, str]], idle: Callable[[], None] | None = None
    ) -> Iterator[T]:
        """Every record of `queries` once. With concurrent slices, `idle` is called when no page has
        come for IDLE_AFTER_S (once per such wait), for work that would otherwise wait for the end."""
        pages = self._sequential(queries) if self.concurrency <= 1 else self._concurrent(queries, idle)
        if self.concurrency > 1:
            cores = min(self.concurrency, os.cpu_count() or 1)
            self._parsers = ThreadPoolExecutor(max_workers=cores, thread_name_prefix="cdr-parse")
            self._ahead = threading.BoundedSemaphore(self.concurrency)
        try:
            for page in pages:
                yield from self._fresh(page)
        finally:
            pages.close()
            if self._parsers is not None:
                self._parsers.shutdown(wait=True, cancel_futures=True)
                self._parsers = None
            self.close()
        self.stats.log_progress(force=True)

    def _fresh(self, page: Page[T]) -> Iterator[T]:
        fresh = self.seen.add_new(page.keys)
        kept = int(fresh.sum())
        self.stats.add(records=kept, duplicates=len(fresh) - kept)
        self.stats.log_progress()
        if kept == len(fresh):
            yield page.payload
        elif kept:
            yield self.format.select(page.payload, fresh)

    def _sequential(self, queries: Sequence[Mapping[str, str]]) -> Generator[Page[T]]:
        for params in queries:
            yield from search_pages(self.fetch, self.read, params, self.paging, self.stats)

    def _concurrent(
        self, queries: Sequence[Mapping[str, str]], idle: Callable[[], None] | None
    ) -> Generator[Page[T]]:
        # One page waits here; a worker with the next one waits to hand it over: about a page per worker.
        handoff: queue.Queue[Any] = queue.Queue(maxsize=1)
        stop = threading.Event()  # no slice starts another request
        gone = threading.Event()  # the consumer reads no more: nothing is handed over

        def stop_all() -> None:
            stop.set()
            self.cancel()

        def put(item: Any) -> None:
            while not gone.is_set():
                try:
                    handoff.put(item, timeout=0.2)
                    return
                except queue.Full:
                    continue

        turns = threading.Semaphore(self.concurrency)

        def work(params: Mapping[str, str]) -> None:
            turn = _Turn(turns)
            try:
                pages = search_pages(
                    self._timed_fetch,
                    self.read,
                    params,
                    self.paging,
                    self.stats,
                    stop,
                    self.read_ahead,
                    asked_all=turn.give_up,
                    while_waiting=turn.paused,
                )
                for page in pages:
                    put(page)
            except CDRCancelled:
                pass  # another slice failed first: its error is the one the consumer raises
            except BaseException as err:  # handed to the consumer, which re-raises it
                stop_all()
                put(_Failed(err))
            finally:
                turn.give_up()
                put(_DONE)

        # Slices in progress: twice the turns at most. One that gave its turn up (waiting for another,
        # or reading its last page) still holds pages: the pool, not the turns, bounds them.
        pool = ThreadPoolExecutor(max_workers=2 * self.concurrency, thread_name_prefix="cdr-slice")
        try:
            for params in queries:
                pool.submit(work, params)
            done = 0
            while done < len(queries):
                item = _next_item(handoff, idle)
                if item is _DONE:
                    done += 1
                elif isinstance(item, _Failed):
                    raise item.error
                else:
                    yield item
        finally:
            gone.set()
            stop_all()
            pool.shutdown(wait=True, cancel_futures=True)
