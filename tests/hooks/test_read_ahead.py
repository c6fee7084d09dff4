"""Read-ahead: a slice asks for its next page while the last one is still being read, and never
lands a page whose full read disagrees with the facts the paging acted on.

Real HTTP to the stand-in; the page formats are the real ones, wrapped to hold a read back or
to misread a page on purpose.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from airflow_provider_cdr.api import extraction as extraction_module
from airflow_provider_cdr.api.errors import CDRPagingError
from airflow_provider_cdr.api.extraction import Extraction
from airflow_provider_cdr.api.page import Page, UnreadablePage
from airflow_provider_cdr.convert.formats import RecordDicts
from airflow_provider_cdr.convert.page_scan import scan_page
from airflow_provider_cdr.hooks.cdr import CDRHook
from tests.hooks.test_cdr_hook import DAY, use_connection


@pytest.fixture
def hook(api: Any, monkeypatch: pytest.MonkeyPatch) -> CDRHook:
    return use_connection(monkeypatch, "cdr_read_ahead", api.url, api.api_key)


class Wrapped(RecordDicts):
    """RecordDicts, with a hook run before each read (`before`) and one applied to its page (`after`)."""

    def __init__(self) -> None:
        self.reads = 0

    def before(self, number: int) -> None:
        pass

    def after(self, number: int, page: Page[list[Any]]) -> Page[list[Any]]:
        return page

    def read(self, body: bytes) -> Page[list[Any]]:
        self.reads += 1
        number = self.reads
        self.before(number)
        return self.after(number, super().read(body))


def day_extraction(hook: CDRHook, page_format: RecordDicts) -> tuple[Extraction[Any], list[dict[str, str]]]:
    """One query for the day in pages of 500 (2,500 records: five pages), with a parser pool."""
    extraction = hook.extraction(page_format, per_page=500, concurrency=2)
    return extraction, [hook.build_query(start_date=DAY, end_date=DAY).as_params()]


@dataclass
class Requests:
    """An extraction's requests as it sends them: how many so far, and an event set when the
    request of each number in `events` goes out."""

    events: dict[int, threading.Event]
    sent: int = 0


def watch_requests(extraction: Extraction[Any], *numbers: int) -> Requests:
    requests, fetch = Requests({number: threading.Event() for number in numbers}), extraction.fetch

    def counting(params: Mapping[str, str], read: Any) -> Page[Any]:
        requests.sent += 1
        if requests.sent in requests.events:
            requests.events[requests.sent].set()
        return fetch(params, read)

    extraction.fetch = counting
    return requests


def landed_uuids(extraction: Extraction[Any], queries: list[dict[str, str]]) -> list[str]:
    return [record["uuid"] for page in extraction.run(queries) for record in page]


def test_the_next_request_goes_out_while_the_page_is_read(hook: CDRHook, api: Any) -> None:
    seen_second: list[bool] = []

    class HeldBack(Wrapped):
        def before(self, number: int) -> None:
            if number == 1:  # page 1's read waits for the request of page 2 (the timeout only fails the test)
                seen_second.append(requests.events[2].wait(timeout=30))

    extraction, queries = day_extraction(hook, HeldBack())
    requests = watch_requests(extraction, 2)
    uuids = landed_uuids(extraction, queries)
    assert seen_second == [True]
    assert sorted(uuids) == sorted(api.truth(start_date=DAY, end_date=DAY))


def test_large_pages_from_a_server_answering_at_once_are_read_before_the_next_request(
    hook: CDRHook, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every page is large here, and reading one takes longer than the server takes to answer:
    # reading ahead would only hold more pages in memory.
    monkeypatch.setattr(extraction_module, "LARGE_PAGE_BYTES", 1000)
    monkeypatch.setattr(extraction_module, "ASSUMED_READ_BYTES_PER_S", 1e5)  # ~2 s for a page here
    sent_after_read: list[int] = []

    class Slow(Wrapped):
        def before(self, number: int) -> None:
            time.sleep(0.5)  # a read that takes this long, as a large page's parse does
            sent_after_read.append(requests.sent)

    extraction, queries = day_extraction(hook, Slow())
    requests = watch_requests(extraction)
    assert len(landed_uuids(extraction, queries)) == len(api.truth(start_date=DAY, end_date=DAY))
    assert len(sent_after_read) >= 5
    # While page n was read, no request beyond the n-th went out.
    assert sent_after_read == list(range(1, len(sent_after_read) + 1))


def test_large_pages_from_a_slow_server_are_read_ahead_from_the_first(
    hook: CDRHook, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extraction_module, "LARGE_PAGE_BYTES", 1000)
    api.set_faults(latency_ms=300)  # each answer takes longer than reading it
    seen_next: list[bool] = []

    class HeldBack(Wrapped):
        def before(self, number: int) -> None:
            if number <= 2:  # page n's read waits for request n + 1 (the timeout only fails the test)
                seen_next.append(requests.events[number + 1].wait(timeout=30))

    extraction, queries = day_extraction(hook, HeldBack())
    requests = watch_requests(extraction, 2, 3)
    assert len(landed_uuids(extraction, queries)) == len(api.truth(start_date=DAY, end_date=DAY))
    # Page 1 on how long a read is assumed to take, page 2 on how long page 1's took: both were
    # read while the next request was out.
    assert seen_next == [True, True]


def test_a_page_whose_full_read_disagrees_fails_the_run(hook: CDRHook, api: Any) -> None:
    class Misread(Wrapped):
        def after(self, number: int, page: Page[list[Any]]) -> Page[list[Any]]:
            if number == 2:  # the full read loses the page's last record
                return Page(page.payload[:-1], page.keys[:-1], page.received - 1, page.token, page.total)
            return page

    extraction, queries = day_extraction(hook, Misread())
    landed: list[str] = []
    with pytest.raises(CDRPagingError, match="differ from what its bytes were first read to say"):
        for page in extraction.run(queries):
            landed += [record["uuid"] for record in page]
    assert len(landed) == 500  # page 1 only: the misread page is never handed on


def test_a_page_read_ahead_that_turns_out_unreadable_is_asked_again(hook: CDRHook, api: Any) -> None:
    class OnceUnreadable(Wrapped):
        def before(self, number: int) -> None:
            if number == 2:
                raise UnreadablePage("cut short")

    page_format = OnceUnreadable()
    extraction, queries = day_extraction(hook, page_format)
    uuids = landed_uuids(extraction, queries)
    assert sorted(uuids) == sorted(api.truth(start_date=DAY, end_date=DAY))
    assert extraction.stats.retries == 1
    assert np.unique(uuids).size == len(uuids)


class HeldUntil(Wrapped):
    """Each read waits for `release` (the timeout only fails the test); `waits` says whether it came.
    `scanned` is set once `first_pages` pages were scanned to be read ahead."""

    def __init__(self, first_pages: int) -> None:
        super().__init__()
        self.release = threading.Event()
        self.waits: list[bool] = []
        self.scanned = threading.Event()
        self._scans = 0
        self._first_pages = first_pages
        self._lock = threading.Lock()

    def before(self, number: int) -> None:
        self.waits.append(self.release.wait(timeout=30))

    def scan(self, body: bytes) -> Page[Any] | None:
        facts = scan_page(body)  # what the hook scans with when the format has no scan of its own
        with self._lock:
            self._scans += 1
            if self._scans == self._first_pages:
                self.scanned.set()
        return facts


def second_requests_wait_for(extraction: Extraction[Any], event: threading.Event) -> None:
    """Each slice's second request goes out only once `event` is set (the timeout only fails the test)."""
    fetch, sent = extraction.fetch, threading.local()

    def gated(params: Mapping[str, str], read: Any) -> Page[Any]:
        sent.count = getattr(sent, "count", 0) + 1
        if sent.count == 2:
            event.wait(timeout=30)
        return fetch(params, read)

    extraction.fetch = gated


def test_every_slice_reads_ahead_while_the_parsers_are_busy(hook: CDRHook, api: Any) -> None:
    # One slice more than there are parsers (one per core); every read is held until each slice
    # has sent its second request. A slice that had to read its first page before asking on
    # would never send it, and the held reads would time out. A fast slice may hold two
    # read-ahead permits (see Extraction._ahead) and leave a late one none: second requests wait
    # until every slice's first page was scanned for read-ahead, the case this test is about.
    slices = (os.cpu_count() or 1) + 1
    held = HeldUntil(first_pages=slices)
    extraction = hook.extraction(held, per_page=500, concurrency=slices)
    held.release = watch_requests(extraction, 2 * slices).events[2 * slices]
    second_requests_wait_for(extraction, held.scanned)  # outside the count: counted when sent
    query = hook.build_query(start_date=DAY, end_date=DAY).as_params()
    uuids = landed_uuids(extraction, [query] * slices)  # the same pages: each lands once
    assert held.waits and all(held.waits)
    assert sorted(uuids) == sorted(api.truth(start_date=DAY, end_date=DAY))


def test_the_consumer_is_told_when_it_waits_for_a_page(hook: CDRHook, api: Any) -> None:
    idle_threads: list[threading.Thread] = []
    told = threading.Event()

    class HeldBack(Wrapped):
        def before(self, number: int) -> None:
            if number == 1:  # no page can come before the consumer was told it waits
                told.wait(timeout=30)

    def idle() -> None:
        idle_threads.append(threading.current_thread())
        told.set()

    extraction, queries = day_extraction(hook, HeldBack())
    uuids = [record["uuid"] for page in extraction.run(queries, idle=idle) for record in page]
    assert idle_threads and set(idle_threads) == {threading.current_thread()}
    assert sorted(uuids) == sorted(api.truth(start_date=DAY, end_date=DAY))


class Meeting(Wrapped):
    """The first two reads each wait for the other to start, at most `patience` seconds: `met`
    says, per read, whether the two ran at once."""

    def __init__(self, patience: float) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=patience)
        self.met: list[bool] = []

    def before(self, number: int) -> None:
        if number <= 2:
            try:
                self.barrier.wait()
                self.met.append(True)
            except threading.BrokenBarrierError:
                self.met.append(False)


def two_slices_reading(hook: CDRHook, meeting: Meeting) -> list[str]:
    """Two slices over the same day (each page lands once), two parsers."""
    extraction = hook.extraction(meeting, per_page=500, concurrency=2)
    query = hook.build_query(start_date=DAY, end_date=DAY).as_params()
    return landed_uuids(extraction, [query, query])


def test_large_pages_are_read_side_by_side(hook: CDRHook, api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extraction_module, "LARGE_PAGE_BYTES", 1000)
    meeting = Meeting(patience=30)  # the timeout only fails the test
    uuids = two_slices_reading(hook, meeting)
    assert meeting.met == [True, True]
    assert sorted(uuids) == sorted(api.truth(start_date=DAY, end_date=DAY))


def test_small_pages_are_read_one_at_a_time(hook: CDRHook, api: Any) -> None:
    # Two parsers on small pages hand the GIL to each other more than they gain (Extraction._small_reads):
    # the first read waits in vain for a second one to start beside it.
    meeting = Meeting(patience=1)
    uuids = two_slices_reading(hook, meeting)
    assert meeting.met == [False, False]
    assert sorted(uuids) == sorted(api.truth(start_date=DAY, end_date=DAY))
