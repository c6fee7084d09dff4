"""The availability rule, edge by edge, without a server or Airflow: `now` is an argument."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_cdr.api import availability
from airflow_provider_cdr.api.availability import (
    MAX_PROBE_REQUESTS,
    AvailabilityRule,
    Probe,
    Verdict,
    Window,
    as_timedelta,
    check_on_empty,
    probe_params,
    probe_step,
)
from airflow_provider_cdr.api.errors import CDRAPIError, CDRQueryError
from airflow_provider_cdr.days.day_window import DayWindow

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
END = datetime(2024, 3, 20, 3, 0, tzinfo=timezone.utc)  # 2024-03-19 ends here in São Paulo
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("now", "found", "verdict"),
    [
        (END - timedelta(seconds=1), True, Verdict.WAIT),  # not over: records so far prove nothing
        (END, True, Verdict.AVAILABLE),
        (END, False, Verdict.WAIT),
        (END + 6 * H - timedelta(seconds=1), False, Verdict.WAIT),
        (END + 6 * H, False, Verdict.EMPTY),  # the grace edge itself counts
        (END + 30 * H, True, Verdict.AVAILABLE),
    ],
)
def test_default_rule(now: datetime, found: bool, verdict: Verdict) -> None:
    assert AvailabilityRule().judge(now, END, found) is verdict


def test_settle_period_holds_back_even_found_records() -> None:
    rule = AvailabilityRule(settle_period=2 * H)
    assert not rule.should_ask(END + H, END)
    assert rule.judge(END + H, END, found=True) is Verdict.WAIT
    assert rule.should_ask(END + 2 * H, END)
    assert rule.judge(END + 2 * H, END, found=True) is Verdict.AVAILABLE


def test_settle_longer_than_grace_decides_at_the_first_request() -> None:
    rule = AvailabilityRule(settle_period=8 * H, grace_period=H)
    assert rule.judge(END + 7 * H, END, found=False) is Verdict.WAIT  # not asked yet
    assert rule.judge(END + 8 * H, END, found=False) is Verdict.EMPTY


def test_next_check_wakes_at_the_settle_and_grace_edges() -> None:
    rule = AvailabilityRule(settle_period=timedelta(minutes=10), grace_period=H)
    assert rule.seconds_to_next_check(END, END, poll_interval=3600) == 600
    assert rule.seconds_to_next_check(END + timedelta(minutes=50), END, poll_interval=3600) == 600
    assert rule.seconds_to_next_check(END + 2 * H, END, poll_interval=300) == 300
    assert rule.seconds_to_next_check(END - H, END, poll_interval=30) == 30


def test_window_params_are_account_local_and_end_inclusive() -> None:
    day = DayWindow(date(2024, 3, 19), SAO_PAULO)
    window = Window(day.start, day.end)
    assert window.api_params(SAO_PAULO) == {
        "start_datetime": "2024-03-19T00:00:00",
        "end_datetime": "2024-03-19T23:59:59",
    }


def test_a_23_hour_day_asks_for_its_own_hours() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    day = DayWindow(date(2024, 3, 31), berlin)
    window = Window(day.start, day.end)
    assert window.end - window.start == 23 * H
    assert window.api_params(berlin) == {
        "start_datetime": "2024-03-31T00:00:00",
        "end_datetime": "2024-03-31T23:59:59",
    }


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2024-03-19T09:00:00", "2024-03-19T10:00:00"),  # account-local
        ("2024-03-19T12:00:00+00:00", "2024-03-19T13:00:00Z"),  # ISO with offsets
        (
            datetime(2024, 3, 19, 12, 0, 0, 999_999, tzinfo=timezone.utc),  # sub-second: truncated
            datetime(2024, 3, 19, 10, 0, tzinfo=SAO_PAULO),
        ),
    ],
)
def test_window_between_accepts_local_and_aware_forms(start: object, end: object) -> None:
    window = Window.between(start, end, SAO_PAULO)
    assert window.start == datetime(2024, 3, 19, 12, 0, tzinfo=timezone.utc)
    assert window.end == datetime(2024, 3, 19, 13, 0, tzinfo=timezone.utc)
    assert window.api_params(SAO_PAULO)["end_datetime"] == "2024-03-19T09:59:59"


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2024-03-19", "2024-03-20", "neither YYYY-MM-DDTHH:MM:SS"),
        ("2024-03-19 09:00:00", "2024-03-19T10:00:00", "neither YYYY-MM-DDTHH:MM:SS"),
        ("2024-03-19T10:00:00", "2024-03-19T10:00:00", "window is empty"),
        (17, "2024-03-19T10:00:00", "not a datetime"),
    ],
)
def test_window_between_refuses_what_it_cannot_place(start: object, end: object, message: str) -> None:
    with pytest.raises(CDRQueryError, match=message):
        Window.between(start, end, SAO_PAULO)


def test_probe_asks_for_one_record_and_never_carries_the_key() -> None:
    params = {"start_datetime": "2024-03-19T00:00:00", "end_datetime": "2024-03-19T23:59:59"}
    assert probe_params(params) == {**params, "page": "1", "per_page": "1"}
    with pytest.raises(CDRQueryError, match="key"):
        probe_params({**params, "key": "secret"})


def test_probe_step_reads_found_empty_and_a_token_to_follow() -> None:
    request = {"page": "1", "per_page": "1"}
    assert probe_step(request, {"records": [{"uuid": "a"}], "search_token": "t"}) == (True, None)
    assert probe_step(request, {"records": [], "search_token": None}) == (False, None)
    assert probe_step(request, {"records": [], "search_token": "t1"}) == (
        False,
        {**request, "search_token": "t1"},
    )
    # The same token again would loop: stop.
    assert probe_step({**request, "search_token": "t1"}, {"records": [], "search_token": "t1"}) == (
        False,
        None,
    )
    for body in ({"error": "Too many requests"}, [], {"records": None}):
        with pytest.raises(CDRAPIError, match="records"):
            probe_step(request, body)


def test_the_probe_follows_tokens_of_empty_pages_up_to_its_request_limit() -> None:
    """The one loop both hooks drive: ask, read, ask the token's page, stop on a record or the limit."""
    params = {"start_datetime": "2024-03-19T00:00:00", "end_datetime": "2024-03-19T23:59:59"}
    found = Probe(params)
    asked = []
    for body in ({"records": [], "search_token": "t1"}, {"records": [{"uuid": "a"}], "search_token": None}):
        assert found.request is not None
        asked.append(found.request)
        found.read(body)
    assert found.request is None and found.found
    assert asked == [probe_params(params), {**probe_params(params), "search_token": "t1"}]

    endless = Probe(params)
    for number in range(MAX_PROBE_REQUESTS):
        assert endless.request is not None
        endless.read({"records": [], "search_token": f"t{number}"})
    assert endless.request is None and not endless.found  # a token each time, but the limit holds
    with pytest.raises(RuntimeError, match="already decided"):
        endless.read({"records": []})


def test_periods_and_on_empty_are_checked() -> None:
    assert as_timedelta(90, "grace_period") == timedelta(seconds=90)
    assert as_timedelta(H, "grace_period") == H
    for bad in (-1, timedelta(seconds=-1), True, "6h"):
        with pytest.raises(CDRQueryError, match="grace_period"):
            as_timedelta(bad, "grace_period")  # type: ignore[arg-type]
    assert check_on_empty("skip") == "skip"
    with pytest.raises(CDRQueryError, match="on_empty"):
        check_on_empty("ignore")


def test_the_docstring_states_the_rule() -> None:
    doc = availability.__doc__ or ""
    for phrase in (
        "settle_period",
        "grace_period",
        "per_page=1",
        "end - 1 s",
        '"succeed"',
        '"skip"',
        '"fail"',
    ):
        assert phrase in doc
