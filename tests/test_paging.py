"""Every stop condition of the pager, without a server."""

from __future__ import annotations

import pytest

from airflow_provider_cdr.errors import CDRPagingError
from airflow_provider_cdr.paging import SearchPager, StalePageError


def test_pages_inside_a_window_then_follows_the_token_then_stops_on_null() -> None:
    pager = SearchPager(per_page=5000)
    assert pager.request_params() == {"page": "1", "per_page": "5000"}
    pager.update(received=5000, new=5000, token="t1")
    assert pager.request_params() == {"page": "2", "per_page": "5000"}
    pager.update(received=5000, new=5000, token="t1")  # 10,000 reached: next window
    assert pager.request_params() == {"page": "1", "per_page": "5000", "search_token": "t1"}
    pager.update(received=1234, new=1234, token=None)
    assert not pager.has_next
    assert pager.pages == 3 and pager.windows == 2


def test_a_short_page_ends_the_window_whatever_total_says() -> None:
    pager = SearchPager(per_page=1000)
    pager.update(received=999, new=999, token=None)
    assert not pager.has_next


def test_a_full_last_page_costs_one_empty_request() -> None:
    pager = SearchPager(per_page=1000)
    pager.update(received=1000, new=1000, token=None)
    assert pager.has_next and pager.page == 2
    pager.update(received=0, new=0, token=None)
    assert not pager.has_next


def test_per_page_that_does_not_divide_the_window() -> None:
    pager = SearchPager(per_page=3000)
    for _ in range(3):
        pager.update(received=3000, new=3000, token="a")
    pager.update(received=1000, new=1000, token="a")
    assert pager.search_token == "a" and pager.page == 1


def test_a_repeated_token_fails_loudly() -> None:
    pager = SearchPager(per_page=10000)
    pager.update(received=10000, new=10000, token="same")
    with pytest.raises(CDRPagingError, match="a second time"):
        pager.update(received=10000, new=10000, token="same")


def test_a_full_page_of_known_records_is_stale() -> None:
    pager = SearchPager(per_page=100)
    pager.update(received=100, new=100, token=None)
    with pytest.raises(StalePageError):
        pager.update(received=100, new=0, token=None)
    assert pager.page == 2  # the same request is asked again


def test_an_empty_page_that_hands_back_the_same_token_is_asked_again() -> None:
    pager = SearchPager(per_page=10000)
    pager.update(received=10000, new=10000, token="t1")
    with pytest.raises(StalePageError, match="empty with the same search_token"):
        pager.update(received=0, new=0, token="t1")
    assert pager.request_params() == {"page": "1", "per_page": "10000", "search_token": "t1"}
    pager.update(received=10, new=10, token=None)
    assert not pager.has_next


def test_empty_windows_with_tokens_stop_after_a_few() -> None:
    pager = SearchPager(per_page=100)
    with pytest.raises(CDRPagingError, match="no new record"):
        for n in range(10):
            pager.update(received=0, new=0, token=f"t{n}")


@pytest.mark.parametrize("per_page", [0, 10001])
def test_per_page_bounds(per_page: int) -> None:
    with pytest.raises(ValueError):
        SearchPager(per_page=per_page)
