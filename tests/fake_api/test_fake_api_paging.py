"""Paging, the 10,000-record search window, search_token continuation, availability and time zones."""

from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime, timedelta
from typing import Any

import pytest
import requests

from airflow_provider_cdr.fake_api.server import StandIn

NINE_DAYS = {"start_date": "2024-03-01", "end_date": "2024-03-09"}  # 22,500 records: three windows


def get(server: StandIn, **params: Any) -> dict:
    response = requests.get(server.url + "/api/v2/cdr", params={"key": server.api_key, **params}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def follow_tokens(server: StandIn, **params: Any) -> list[dict]:
    """One list per window (page 1 only, per_page 10000), following search_token until null."""
    windows, token = [], None
    for _ in range(20):
        body = get(server, per_page=10000, **params, **({"search_token": token} if token else {}))
        windows.append(body)
        token = body["search_token"]
        if token is None:
            return windows
    raise AssertionError("search_token never became null")


def test_pages_partition_the_window(api: StandIn) -> None:
    day = {"start_date": "2024-03-05", "end_date": "2024-03-05"}
    whole = get(api, per_page=10000, **day)["records"]
    pages = [get(api, per_page=300, page=page, **day) for page in range(1, 10)]
    assert [r for body in pages for r in body["records"]] == whole
    assert [len(body["records"]) for body in pages] == [300] * 8 + [100]
    assert {body["total"] for body in pages} == {math.ceil(2500 / 300)}
    assert [body["page"] for body in pages] == list(range(1, 10))
    assert get(api, per_page=300, page=10, **day)["records"] == []
    assert get(api, **day)["records"] == whole[:1000]  # per_page defaults to 1000


def test_token_continuation_collects_exactly_the_range(api: StandIn) -> None:
    windows = follow_tokens(api, **NINE_DAYS)
    assert len(windows) == 3
    assert [len(w["records"]) for w in windows] == [10000, 10000, 2500]
    assert [w["total"] for w in windows] == [1, 1, 1]
    collected = [r["uuid"] for w in windows for r in w["records"]]
    assert len(collected) == len(set(collected)) == 22500
    assert set(collected) == api.truth(**NINE_DAYS)
    stamps = [datetime.fromisoformat(r["timestamp"]) for w in windows for r in w["records"]]
    assert stamps == sorted(stamps, reverse=True)


def test_token_encodes_the_windows_last_record(api: StandIn) -> None:
    body = get(api, per_page=10000, **NINE_DAYS)
    token = body["search_token"]
    decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    last = body["records"][-1]
    assert decoded == [
        int(datetime.fromisoformat(last["timestamp"]).timestamp() * 1000),
        f"cdr_item#{last['uuid']}",
    ]


def test_token_is_on_every_page_of_a_window_and_page_after_token_is_allowed(api: StandIn) -> None:
    first_pages = [get(api, per_page=2500, page=page, **NINE_DAYS) for page in range(1, 6)]
    tokens = {body["search_token"] for body in first_pages}
    assert len(tokens) == 1 and None not in tokens
    assert first_pages[4]["records"] == [] and first_pages[0]["total"] == 4
    token = tokens.pop()
    second_window = get(api, per_page=10000, search_token=token, **NINE_DAYS)["records"]
    page_two = get(api, per_page=2500, page=2, search_token=token, **NINE_DAYS)["records"]
    assert page_two == second_window[2500:5000]


def test_a_window_edge_inside_a_shared_millisecond_loses_nothing(make_stand_in: Any) -> None:
    """Seed 7 at 2,511 records a day puts the first window's edge inside a group sharing one ms."""
    server = make_stand_in(records_per_day=2511)
    windows = follow_tokens(server, **NINE_DAYS)
    edge, after = windows[0]["records"][-1], windows[1]["records"][0]
    assert edge["timestamp"] == after["timestamp"], "premise lost (dataset changed?): re-pick records_per_day"
    collected = [r["uuid"] for w in windows for r in w["records"]]
    assert len(collected) == len(set(collected)) == 9 * 2511


def test_availability_follows_the_frozen_clock(api: StandIn) -> None:
    today = get(api, per_page=10000, start_date="2024-03-20", end_date="2024-03-20")["records"]
    now = datetime.fromisoformat("2024-03-20T12:00:00+00:00")
    expected = [
        r
        for r in api.dataset.records_for_day(date(2024, 3, 20))
        if datetime.fromisoformat(r["timestamp"]) <= now
    ]
    assert today == expected and 0 < len(today) < 2500
    assert get(api, start_date="2024-03-21")["records"] == []
    newest = get(api, per_page=1)["records"][0]
    assert datetime.fromisoformat(newest["timestamp"]) <= now


def test_ingest_lag_hides_recent_records(make_stand_in: Any) -> None:
    lagging = make_stand_in(ingest_lag_s=3600)
    records = get(lagging, per_page=10000, start_date="2024-03-20")["records"]
    cutoff = datetime.fromisoformat("2024-03-20T11:00:00+00:00")
    assert records and datetime.fromisoformat(records[0]["timestamp"]) <= cutoff
    assert datetime.fromisoformat(records[0]["timestamp"]) > cutoff - timedelta(minutes=10)


def test_day_profiles_over_http(make_stand_in: Any) -> None:
    profiles = {"2024-03-06": "empty", "2024-03-05": "sms_only", "2024-03-04": 40}
    server = make_stand_in(day_profiles=profiles)
    assert get(server, start_date="2024-03-06", end_date="2024-03-06")["records"] == []
    sms = get(server, per_page=10000, start_date="2024-03-05", end_date="2024-03-05")["records"]
    assert len(sms) == 2500 and {r["type"] for r in sms} <= {"outbound_sms", "outbound SMS", "whatsapp"}
    assert len(get(server, per_page=10000, start_date="2024-03-04", end_date="2024-03-04")["records"]) == 40


@pytest.mark.parametrize(("day", "hours"), [("2024-03-10", 23), ("2024-11-03", 25)])
def test_dst_days_in_new_york_over_http(make_stand_in: Any, day: str, hours: int) -> None:
    server = make_stand_in(timezone="America/New_York", now="2024-12-01T00:00:00Z", records_per_day=1500)
    records = get(server, per_page=10000, start_date=day, end_date=day)["records"]
    assert len(records) == 1500
    newest, oldest = (datetime.fromisoformat(records[i]["timestamp"]) for i in (0, -1))
    assert newest - oldest == timedelta(hours=hours, milliseconds=-1)
    assert oldest.isoformat(timespec="milliseconds").endswith("T00:00:00.000" + oldest.isoformat()[-6:])
    if hours == 25:
        # fold=0: 01:30 local is the first (EDT) occurrence; the EST 01:xx records are after it.
        early = get(server, per_page=10000, start_date=day, end_datetime=f"{day}T01:30:00")["records"]
        assert early and all(r["timestamp"][-6:] == "-04:00" for r in early)
        assert {r["timestamp"][-6:] for r in records if r["timestamp"][11:13] == "01"} == {"-04:00", "-05:00"}
