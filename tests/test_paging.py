"""Every stop condition and guard of the pager, answer by answer, without a server.

The conformance matrix (tests/conformance) runs the same pager against the stand-in playing
each reading of the API; these tests pin down the decisions one answer at a time.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest

from airflow_provider_cdr.api.errors import CDRPagingError
from airflow_provider_cdr.api.paging import (
    ASKED,
    PAGES,
    PAST_PAGE,
    PAST_SEARCH,
    RECORDS,
    SERVED,
    PageFacts,
    SearchPager,
    ServerPaging,
    StalePageError,
    token_instant,
)

DAY_MS = 1_709_251_200_000  # 2024-03-01T00:00:00Z


def token(ms: int, uuid: str = "x") -> str:
    return base64.urlsafe_b64encode(orjson.dumps([ms, f"cdr_item#{uuid}"])).decode().rstrip("=")


def facts(
    received: int,
    token: str | None = None,
    *,
    total: int | None = None,
    start: int = 0,
    span: tuple[int, int] | None = None,
) -> PageFacts:
    """An answer holding records [start, start + received) of some search (newest first)."""
    return PageFacts(
        received=received,
        token=token,
        total=total,
        new=received,
        fingerprint=f"{start}:{received}".encode() if received else None,
        head=tuple(str(n).encode() for n in range(start, start + min(received, 64))),
        tail=tuple(str(n).encode() for n in range(max(start, start + received - 64), start + received)),
        span_ms=span,
    )


def pager(per_page: int = 10_000, server: ServerPaging | None = None) -> SearchPager:
    return SearchPager(server or ServerPaging(per_page))


def test_full_searches_follow_the_token_without_another_request() -> None:
    p = pager(10_000)
    assert p.request_params() == {"page": "1", "per_page": "10000"}
    p.update(facts(10_000, "t1"))
    assert p.request_params() == {"page": "1", "per_page": "10000", "search_token": "t1"}
    p.update(facts(10_000, "t2"))
    assert p.request_params()["search_token"] == "t2"
    assert p.server.counts.proofs == 0


def test_a_short_page_is_no_proof_one_more_page_is_asked() -> None:
    p = pager(10_000)
    p.update(facts(10_000, "t1"))
    p.update(facts(10_000, "t2"))  # the server honours per_page: page 2 needs no offset test
    p.update(facts(5_000))
    assert p.has_next and p.request_params() == {"page": "2", "per_page": "10000", "search_token": "t2"}
    p.update(facts(0))
    assert not p.has_next
    assert p.server.counts.proofs == 1 and p.server.counts.pages == 3


def test_a_server_capping_pages_is_paged_to_the_end_and_its_size_learned() -> None:
    server = ServerPaging(10_000)
    p = pager(server=server)
    p.update(facts(1000, "t1", start=0))
    # Offsets unknown: page 2 at the short page's size (exact either way), then at the asked size.
    assert p.request_params() == {"page": "2", "per_page": "1000"}
    p.update(facts(1000, "t1", start=1000))
    assert p.request_params() == {"page": "2", "per_page": "10000"}
    p.update(facts(1000, "t1", start=1000))  # starts with the same record: offsets are served
    assert server.offsets == SERVED and server.served == 1000 and server.counts.offset_tests == 1
    for k in range(3, 11):
        assert p.request_params() == {"page": str(k), "per_page": "10000"}
        p.update(facts(1000, "t1", start=(k - 1) * 1000))
    assert p.request_params() == {"page": "1", "per_page": "10000", "search_token": "t1"}
    p.update(facts(1000, start=10_000))
    p.update(facts(300, start=11_000))
    p.update(facts(0))
    assert not p.has_next and server.counts.pages == 12 and server.counts.proofs == 1


def test_asked_offsets_switch_to_the_servers_page_size_for_good() -> None:
    server = ServerPaging(10_000)
    p = pager(server=server)
    p.update(facts(1000, start=0))
    p.update(facts(1000, start=1000))  # page 2 at per_page=1000
    p.update(facts(1000, start=10_000))  # page 2 at per_page=10000 starts elsewhere: a gap
    assert server.offsets == ASKED
    assert p.request_params() == {"page": "3", "per_page": "1000"}
    p.update(facts(1000, "t1", start=2000))
    for k in range(4, 11):
        p.update(facts(1000, "t1", start=(k - 1) * 1000))
    # A new search (and any other query of the extraction) asks the server's size from page 1.
    assert p.request_params() == {"page": "1", "per_page": "1000", "search_token": "t1"}
    assert SearchPager(server).request_params() == {"page": "1", "per_page": "1000"}


def test_asked_offsets_with_a_short_page_followed_by_more_fail_loudly() -> None:
    server = ServerPaging(10_000)
    server.offsets, server.served = ASKED, 1000
    p = pager(server=server)
    p.update(facts(1000, start=0))
    p.update(facts(950, start=1000))
    with pytest.raises(CDRPagingError, match="skipped by the server"):
        p.update(facts(1000, start=2000))


def test_a_short_first_page_that_was_the_whole_search_costs_one_request() -> None:
    server = ServerPaging(10_000)
    p = pager(server=server)
    p.update(facts(2500))
    p.update(facts(0))
    assert not p.has_next and server.offsets is None and server.counts.offset_tests == 0
    assert server.counts.proofs == 1


def test_varying_sizes_under_served_offsets_keep_the_asked_size() -> None:
    server = ServerPaging(1000)
    server.offsets = SERVED
    p = pager(server=server)
    start = 0
    for held in (1000, 1, 700, 1000, 3):
        p.update(facts(held, start=start))
        start += held
        assert p.request_params()["per_page"] == "1000"
    p.update(facts(0))
    assert not p.has_next and server.varying


@pytest.mark.parametrize("reading", ["last", "every page, past the search", "every page, past the page"])
def test_tokens_are_followed_only_once_the_search_has_ended(reading: str) -> None:
    p = pager(1000)
    for k in range(1, 11):
        if reading == "last":
            tok = "end" if k == 10 else None
        elif reading == "every page, past the search":
            tok = "end"
        else:
            tok = "end" if k == 10 else f"after-page-{k}"
        p.update(facts(1000, tok, start=(k - 1) * 1000))
        if k < 10:
            assert p.request_params() == {"page": str(k + 1), "per_page": "1000"}
    assert p.request_params() == {"page": "1", "per_page": "1000", "search_token": "end"}
    expected = {"last": None, "every page, past the search": PAST_SEARCH, "every page, past the page": None}
    assert p.server.token_reading == expected[reading]


def test_an_empty_page_past_the_search_hands_over_the_latest_token() -> None:
    p = pager(3000)
    p.update(facts(3000, None))
    p.update(facts(3000, "t1", start=3000))
    p.update(facts(3000, "t1", start=6000))
    p.update(facts(1000, "t1", start=9000))  # 10,000 with a token: over without asking page 5
    assert p.request_params()["search_token"] == "t1"
    p = pager(3000)
    p.update(facts(3000, None))
    p.update(facts(500, None, start=3000))
    p.update(facts(0, None))  # an empty page that carries no token: the latest one, if any
    assert not p.has_next


def test_an_unbounded_search_pages_past_ten_thousand_without_a_token() -> None:
    p = pager(1000)
    for k in range(1, 13):
        p.update(facts(1000, start=(k - 1) * 1000))
    assert p.request_params() == {"page": "13", "per_page": "1000"}


@pytest.mark.parametrize(("total", "reading"), [(3, PAGES), (2500, RECORDS)])
def test_a_learned_total_ends_later_searches_without_a_proof(total: int, reading: str) -> None:
    server = ServerPaging(1000)
    first = pager(server=server)  # a query of two searches: 10,000 records, then 2,500
    for k in range(10):
        first.update(facts(1000, "t1", total=10 if reading == PAGES else 10_000, start=k * 1000))
    for k in range(3):
        first.update(facts(1000 if k < 2 else 500, total=total, start=10_000 + k * 1000))
    assert server.total_reading == reading and server.counts.proofs == 0
    second = pager(server=server)
    for k in range(3):
        second.update(facts(1000 if k < 2 else 500, total=total, start=k * 1000))
    assert not second.has_next and server.counts.proofs == 0


def test_a_querys_only_search_does_not_teach_what_total_counts() -> None:
    """The search's own count, what matches from it on, and the whole query's are then one number."""
    server = ServerPaging(1000)
    p = pager(server=server)
    p.update(facts(1000, total=1500))
    p.update(facts(500, total=1500, start=1000))
    p.update(facts(0, total=1500))
    assert server.total_reading is None


def test_a_total_of_the_whole_query_is_never_taken_for_a_searchs() -> None:
    server = ServerPaging(1000)
    p = pager(server=server)
    for k in range(6):  # searches of 6,000 records, total = the query's 14,532
        p.update(facts(1000, "t1", total=14_532, start=k * 1000))
    p.update(facts(0, "t1", total=14_532))
    for k in range(6):
        p.update(facts(1000, "t2", total=14_532, start=6000 + k * 1000))
    p.update(facts(0, "t2", total=14_532))
    for k in range(3):
        p.update(facts(1000 if k < 2 else 532, total=14_532, start=12_000 + k * 1000))
    p.update(facts(0, total=14_532))
    assert not p.has_next and server.total_reading is None


def test_a_total_of_no_known_reading_is_never_relied_on() -> None:
    server = ServerPaging(1000)
    p = pager(server=server)
    p.update(facts(1000, total=2632))
    p.update(facts(500, total=2632, start=1000))
    p.update(facts(0, total=2632))
    assert server.total_reading is None and not p.has_next


def test_records_missing_against_a_learned_total_fail_loudly() -> None:
    server = ServerPaging(1000)
    server.total_reading = RECORDS
    p = pager(server=server)
    p.update(facts(1000, total=2500))
    p.update(facts(999, total=2500, start=1000))
    p.update(facts(500, total=2500, start=2000))
    with pytest.raises(CDRPagingError, match="ended after 2499 records, but the API said it holds 2500"):
        p.update(facts(0, total=2500))


def test_a_search_that_fell_short_fails_once_a_later_one_teaches_what_total_counts() -> None:
    server = ServerPaging(1000)
    short = pager(server=server)
    short.update(facts(1000, total=2000))
    short.update(facts(999, total=2000, start=1000))  # one record missing: no reading fits yet
    short.update(facts(0, total=2000))
    assert server.total_reading is None
    clean = pager(server=server)  # 10,000 records and a token, in which total counts the search's
    for k in range(9):
        clean.update(facts(1000, "t1", total=10_000, start=k * 1000))
    with pytest.raises(
        CDRPagingError, match="search 1 ended after 1999 records, but the API said it holds 2000"
    ):
        clean.update(facts(1000, "t1", total=10_000, start=9000))


def test_a_total_that_changes_within_a_search_is_not_relied_on() -> None:
    server = ServerPaging(1000)
    server.total_reading = PAGES
    p = pager(server=server)
    p.update(facts(1000, total=3))
    p.update(facts(1000, total=2, start=1000))
    p.update(facts(1000, total=2, start=2000))
    assert p.request_params() == {"page": "4", "per_page": "1000"}


def test_a_page_larger_than_asked_fails_loudly() -> None:
    with pytest.raises(CDRPagingError, match="1200 records for per_page=1000"):
        pager(1000).update(facts(1200))


def test_a_repeated_page_is_asked_again_but_ties_at_a_search_edge_are_not_stale() -> None:
    p = pager(100)
    p.update(facts(100, start=0))
    with pytest.raises(StalePageError, match="repeated the previous page"):
        p.update(facts(100, start=0))
    assert p.request_params() == {"page": "2", "per_page": "100"}
    p = pager(100)
    for k in range(100):
        p.update(facts(100, "t1", start=k * 100))
    assert p.search_token == "t1"
    p.update(facts(100, "t2", start=9_900))  # the next search re-sends the edge's ties: no retry
    assert p.page == 2


def test_an_empty_page_with_the_token_it_was_sent_is_asked_again() -> None:
    p = pager(10_000)
    p.update(facts(10_000, "t1"))
    with pytest.raises(StalePageError, match="empty with the search_token it was sent"):
        p.update(facts(0, "t1"))
    assert p.request_params() == {"page": "1", "per_page": "10000", "search_token": "t1"}


def test_a_repeated_token_fails_loudly() -> None:
    p = pager(10_000)
    p.update(facts(10_000, "same"))
    with pytest.raises(CDRPagingError, match="a second time"):
        p.update(facts(10_000, "same"))


def test_searches_that_bring_nothing_new_stop_after_a_few() -> None:
    p = pager(100)
    with pytest.raises(CDRPagingError, match="no new record"):
        for n in range(10):
            p.update(PageFacts(received=0, token=f"t{n}"))


def test_a_token_pointing_back_in_time_fails_loudly() -> None:
    p = pager(10_000)
    p.update(facts(10_000, token(DAY_MS + 3_600_000), span=(DAY_MS + 7_200_000, DAY_MS + 3_600_000)))
    p.update(facts(10_000, token(DAY_MS), span=(DAY_MS + 3_600_000, DAY_MS)))
    with pytest.raises(CDRPagingError, match="points back in time"):
        p.update(facts(5000, token(DAY_MS + 7_000_000), span=(DAY_MS, DAY_MS - 100)))


def test_a_token_at_the_last_records_millisecond_is_not_backwards() -> None:
    p = pager(10_000)
    p.update(facts(10_000, token(DAY_MS), span=(DAY_MS + 10, DAY_MS)))
    assert p.search_token == token(DAY_MS)
    assert token_instant(token(DAY_MS)) == DAY_MS and token_instant("not-a-token") is None


def test_a_refused_page_with_a_token_walks_tokens_once_they_prove_to_point_past_the_page() -> None:
    server = ServerPaging(1000)
    p = pager(server=server)
    p.update(facts(1000, "p1"))
    p.update(facts(1000, "p2", start=1000))
    assert server.token_reading is None  # different tokens prove nothing: a token may carry a nonce
    for k in range(3, 11):
        p.update(facts(1000, f"p{k}", start=(k - 1) * 1000))
    p.update(facts(1000, "p11", start=10_000))  # search 2, page 1
    p.refused_page_with_token("HTTP 422")
    # The test: page 1's token of the first search must lead to where its page 2 started.
    assert p.request_params() == {"page": "1", "per_page": "1000", "search_token": "p1"}
    p.update(facts(1000, "p2", start=1000))
    assert server.token_reading == PAST_PAGE and server.counts.token_tests == 1
    assert p.request_params() == {"page": "1", "per_page": "1000", "search_token": "p11"}
    p.update(facts(1000, "p12", start=11_000))
    p.update(facts(10, None, start=12_000))
    assert not p.has_next and server.counts.ends_on_the_servers_word == 1


def test_a_refused_page_with_a_token_that_points_past_the_search_fails_loudly() -> None:
    p = pager(1000)
    for k in range(1, 11):
        p.update(facts(1000, "s1", start=(k - 1) * 1000))
    p.update(facts(1000, "s2", start=10_000))
    with pytest.raises(CDRPagingError, match="cannot be reached"):
        p.refused_page_with_token("HTTP 422")


def test_the_token_test_sees_past_ties_sent_again() -> None:
    """A token past page 1 that resumes at its last record's millisecond sends that record again first."""
    p = pager(1000)
    for k in range(1, 11):
        p.update(facts(1000, f"p{k}", start=(k - 1) * 1000))
    p.update(facts(1000, "p11", start=10_000))
    p.refused_page_with_token("HTTP 422")
    p.update(facts(1000, "p2'", start=998))  # records 998 and 999 again, then page 2's from 1000 on
    assert p.server.token_reading == PAST_PAGE


def test_unique_tokens_that_point_past_the_search_are_found_out_and_fail_loudly() -> None:
    """Tokens with a nonce differ on every page although they all point past the search."""
    p = pager(1000)
    for k in range(1, 11):
        p.update(facts(1000, f"s1-nonce{k}", start=(k - 1) * 1000))
    p.update(facts(1000, "s2-nonce1", start=10_000))
    p.refused_page_with_token("HTTP 422")
    assert p.request_params()["search_token"] == "s1-nonce1"
    with pytest.raises(CDRPagingError, match="point past the whole search"):
        p.update(facts(1000, "s2-nonce2", start=10_000))  # page 1's token led past the search


def test_searches_wait_for_one_offset_test_instead_of_each_running_their_own() -> None:
    server = ServerPaging(10_000)
    first, second = pager(server=server), pager(server=server)
    first.update(facts(1000))
    assert first.request_params() == {"page": "2", "per_page": "1000"}  # first runs the test
    decided = threading.Event()

    def other() -> None:
        second.update(facts(1000, start=50_000))  # waits until the first test ends
        decided.set()

    waiter = threading.Thread(target=other)
    waiter.start()
    assert not decided.wait(0.2)
    first.update(facts(1000, start=1000))
    first.update(facts(1000, start=1000))
    waiter.join(5)
    assert decided.is_set() and server.offsets == SERVED and server.counts.offset_tests == 1
    assert second.request_params() == {"page": "2", "per_page": "10000"}


def test_a_search_waits_for_another_offset_test_inside_its_waiting_block() -> None:
    """So that the extraction can give its turn to ask the server to another slice meanwhile."""
    server = ServerPaging(10_000)
    first = pager(server=server)
    first.update(facts(1000))  # first runs the test
    states: list[str] = []
    entered = threading.Event()

    @contextmanager
    def waiting() -> Iterator[None]:
        states.append("waiting")
        entered.set()
        yield
        states.append("done")

    second = SearchPager(server, waiting)
    waiter = threading.Thread(target=lambda: second.update(facts(1000, start=50_000)))
    waiter.start()
    assert entered.wait(5)
    assert states == ["waiting"]
    first.update(facts(1000, start=1000))
    first.update(facts(1000, start=1000))
    waiter.join(5)
    assert not waiter.is_alive() and states == ["waiting", "done"]
    assert second.request_params() == {"page": "2", "per_page": "10000"}  # it used the test's answer


def test_a_search_that_need_not_wait_never_enters_its_waiting_block() -> None:
    entered: list[bool] = []

    @contextmanager
    def waiting() -> Iterator[None]:
        entered.append(True)
        yield

    p = SearchPager(ServerPaging(10_000), waiting)
    p.update(facts(1000))  # it claims the test itself
    assert p.request_params() == {"page": "2", "per_page": "1000"} and entered == []


def test_a_query_that_fails_mid_test_releases_the_others() -> None:
    server = ServerPaging(10_000)
    p = pager(server=server)
    p.update(facts(1000))
    p.close()
    assert server.claim_offset_test()  # not blocked


@pytest.mark.parametrize("per_page", [0, 10001])
def test_per_page_bounds(per_page: int) -> None:
    with pytest.raises(ValueError):
        ServerPaging(per_page)
