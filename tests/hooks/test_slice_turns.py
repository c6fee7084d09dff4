"""Turns to ask the server: at most `concurrency` slices send requests, and a slice that is not
asking (its query needs no more requests, or it waits for another slice's offset test) lets
the next slice ask meanwhile.

Real HTTP to the stand-in. Each test holds one step back until a request that can only go out
if a turn was given up; without that, the hold would last its timeout and the test fail.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from airflow_provider_cdr.api.extraction import Extraction
from airflow_provider_cdr.api.page import Page
from airflow_provider_cdr.api.paging import PAGES
from airflow_provider_cdr.convert.formats import RecordDicts
from airflow_provider_cdr.hooks.cdr import CDRHook
from tests.hooks.test_cdr_hook import use_connection

DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")  # 2,500 records each
HOLD_S = 30.0  # only a failing test waits this long


@pytest.fixture
def hook(api: Any, monkeypatch: pytest.MonkeyPatch) -> CDRHook:
    return use_connection(monkeypatch, "cdr_turns", api.url, api.api_key)


def one_query_per_day(hook: CDRHook) -> list[dict[str, str]]:
    return [hook.build_query(start_date=day, end_date=day).as_params() for day in DAYS]


class FirstRequests:
    """Set once every query has sent its first request: the third can only do so on a turn given up."""

    def __init__(self, extraction: Extraction[Any], queries: int) -> None:
        self.all_sent = threading.Event()
        self._started: set[str] = set()
        self._lock = threading.Lock()
        self._queries = queries
        self._fetch = extraction.fetch
        extraction.fetch = self.fetch

    def fetch(self, params: Mapping[str, str], read: Any) -> Page[Any]:
        with self._lock:
            self._started.add(params["start_date"])
            if len(self._started) == self._queries:
                self.all_sent.set()
        return self._fetch(params, read)


def landed(extraction: Extraction[Any], queries: list[dict[str, str]]) -> list[str]:
    return [record["uuid"] for page in extraction.run(queries) for record in page]


def truth(api: Any) -> list[str]:
    return sorted(uuid for day in DAYS for uuid in api.truth(start_date=day, end_date=day))


def test_a_slice_that_asked_all_it_needs_lets_the_next_ask_while_its_last_page_is_read(
    hook: CDRHook, api: Any
) -> None:
    waited: list[bool] = []

    class LastPagesHeld(RecordDicts):
        def read(self, body: bytes) -> Page[list[Any]]:
            page = super().read(body)
            if page.received == 500:  # a query's last page (1,000 + 1,000 + 500)
                waited.append(first.all_sent.wait(HOLD_S))
            return page

    extraction = hook.extraction(LastPagesHeld(), per_page=1000, concurrency=2)
    # What `total` counts is known (as a two-search query teaches it), so each query is over at its
    # last page: no empty page is asked, and the page is still being read when the query is over.
    extraction.paging.total_reading = PAGES
    first = FirstRequests(extraction, len(DAYS))
    queries = one_query_per_day(hook)
    assert sorted(landed(extraction, queries)) == truth(api)
    assert waited == [True] * len(DAYS)
    assert extraction.stats.requests == 3 * len(DAYS)  # no page asked to prove an end


@pytest.mark.parametrize("page_offset", ["served", "asked"])
def test_a_slice_waiting_for_another_slices_offset_test_lets_the_next_ask(
    hook: CDRHook, api: Any, page_offset: str
) -> None:
    # Page 1 comes back short: one slice tests where page 2 starts, under either reading.
    api.set_profile(page_cap=100, page_offset=page_offset)
    extraction = hook.extraction(RecordDicts(), per_page=500, concurrency=2)
    first = FirstRequests(extraction, len(DAYS))
    fetch, waited = extraction.fetch, []

    def held_test(params: Mapping[str, str], read: Any) -> Page[Any]:
        if params["page"] == "2" and params["per_page"] == "500":  # the test's second request
            waited.append(first.all_sent.wait(HOLD_S))
        return fetch(params, read)

    extraction.fetch = held_test
    queries = one_query_per_day(hook)
    assert sorted(landed(extraction, queries)) == truth(api)
    assert waited and all(waited)
    assert extraction.paging.counts.offset_tests == 1
