"""Each records filter over real HTTP, checked against expectations computed here, independently.

Visible fields are checked on the returned records; hidden attributes (queue id,
events, call-phase times...) against the dataset's columns, with plain Python.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
import requests

from airflow_provider_cdr.fake_api.dataset import END_REASONS, EVENTS, LEAD_SOURCES, CDRDataset
from airflow_provider_cdr.fake_api.filters import truth
from airflow_provider_cdr.fake_api.server import StandIn

DAY = date(2024, 3, 5)
ONE_DAY = {"start_date": "2024-03-05", "end_date": "2024-03-05"}


def fetch(server: StandIn, **params: Any) -> list[dict]:
    """Every record for the params (one day fits one window), newest first."""
    response = requests.get(
        server.url + "/api/v2/cdr", params={"key": server.api_key, "per_page": 10000, **params}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["search_token"] is None
    return body["records"]


def uuids(records: list[dict]) -> list[str]:
    return [r["uuid"] for r in records]


@pytest.fixture(scope="module")
def day_records(stand_in: StandIn) -> list[dict]:
    return stand_in.dataset.records_for_day(DAY)


@pytest.fixture(scope="module")
def hidden(stand_in: StandIn) -> dict[str, list]:
    """The day's hidden attributes as plain lists, aligned with day_records."""
    table = stand_in.dataset.day_table(DAY)
    return {name: column.tolist() for name, column in table.columns.items()} | {"related": table.related}


def expect(day_records: list[dict], keep: list[bool]) -> list[str]:
    return [r["uuid"] for r, wanted in zip(day_records, keep, strict=True) if wanted]


def seconds(hms: str) -> int:
    hours, minutes, secs = (int(part) for part in hms.split(":"))
    return hours * 3600 + minutes * 60 + secs


def test_date_range_is_the_local_calendar_day(api: StandIn, day_records: list[dict]) -> None:
    records = fetch(api, **ONE_DAY)
    assert uuids(records) == uuids(day_records)
    assert all(r["timestamp"].startswith("2024-03-05T") for r in records)
    assert records[-1]["timestamp"] == "2024-03-05T00:00:00.000-03:00"
    assert records[0]["timestamp"] == "2024-03-05T23:59:59.999-03:00"
    two_days = fetch(api, start_date="2024-03-04", end_date="2024-03-05")
    assert len(two_days) == 5000 and two_days[:2500] == records
    assert fetch(api, start_date="2024-03-06", end_date="2024-03-05") == []


def test_datetime_bounds_are_inclusive_at_second_precision(api: StandIn, day_records: list[dict]) -> None:
    # A record at hh:mm:ss.7xx matches both bounds set to hh:mm:ss, and not a start at the next second.
    target = next(r for r in day_records if r["timestamp"][20] == "7" and r["timestamp"][17:19] < "59")
    second = target["timestamp"][:19]  # local YYYY-MM-DDTHH:MM:SS
    assert target["uuid"] in uuids(fetch(api, start_datetime=second, end_datetime=second))
    later = datetime.fromisoformat(second) + timedelta(seconds=1)
    assert target["uuid"] not in uuids(fetch(api, start_datetime=later.isoformat(), end_date="2024-03-05"))
    assert target["uuid"] in uuids(fetch(api, **ONE_DAY, end_datetime=later.isoformat()))
    window = fetch(api, start_datetime="2024-03-05T10:00:00", end_datetime="2024-03-05T10:59:59")
    assert window and all("T10:" in r["timestamp"] for r in window)
    assert uuids(window) == [
        u for r, u in zip(day_records, uuids(day_records), strict=True) if "T10:" in r["timestamp"]
    ]


def test_date_and_datetime_together_take_the_narrower_bound(api: StandIn) -> None:
    records = fetch(api, **ONE_DAY, start_datetime="2024-03-05T22:00:00")
    assert records and all(r["timestamp"][11:13] in ("22", "23") for r in records)


@pytest.mark.parametrize(
    ("value", "spellings"),
    [
        ("inbound", {"inbound"}),
        ("web_chat", {"web_chat", "chat"}),
        ("outbound_sms,whatsapp", {"outbound_sms", "outbound SMS", "whatsapp"}),
        ("click_to_call", {"click_to_call", "click-to-call"}),
        ("HLR_lookup", {"HLR_lookup", "hlr_ookup"}),
        ("queue_callback, dialer", {"queue_callback", "dialer"}),
    ],
)
def test_type_maps_record_spellings(
    api: StandIn, day_records: list[dict], value: str, spellings: set
) -> None:
    records = fetch(api, **ONE_DAY, type=value)
    assert records
    assert uuids(records) == expect(day_records, [r["type"] in spellings for r in day_records])


def test_disposition_list(api: StandIn, day_records: list[dict]) -> None:
    records = fetch(api, **ONE_DAY, disposition="busy,delivered")
    assert uuids(records) == expect(
        day_records, [r["disposition"] in ("busy", "delivered") for r in day_records]
    )


@pytest.mark.parametrize(
    ("param", "field", "test"),
    [
        ("cli", "from", str.startswith),
        ("number", "to", str.startswith),
        ("wildcard_cli", "from", lambda text, part: part in text),
        ("wildcard_number", "to", lambda text, part: part in text),
    ],
)
def test_number_searches(api: StandIn, day_records: list[dict], param: str, field: str, test: Any) -> None:
    value = "55" if param in ("cli", "number") else "123"
    records = fetch(api, **ONE_DAY, **{param: value})
    assert records and all(test(r[field], value) for r in records)
    assert uuids(records) == expect(day_records, [test(r[field], value) for r in day_records])


def test_agent_and_deleted_agent_ids(api: StandIn, day_records: list[dict]) -> None:
    lookups = api.dataset.lookups()
    active = [a["id"] for a in lookups["agents"][:3]]
    records = fetch(api, **ONE_DAY, agent_ids=",".join(map(str, active)))
    assert records and uuids(records) == expect(day_records, [r["agent_id"] in active for r in day_records])
    gone = [a["id"] for a in lookups["deleted_agents"]]
    records = fetch(api, **ONE_DAY, deleted_agent_ids=", ".join(map(str, gone)))
    assert records and uuids(records) == expect(day_records, [r["agent_id"] in gone for r in day_records])


def test_team_ids_follow_the_agents_team(api: StandIn, day_records: list[dict], hidden: dict) -> None:
    lookups = api.dataset.lookups()
    team = lookups["teams"][0]["id"]
    members = {a["id"] for a in lookups["agents"] if a["team_id"] == team}
    records = fetch(api, **ONE_DAY, team_ids=str(team))
    assert records and uuids(records) == expect(day_records, [t == team for t in hidden["team_id"]])
    assert {r["agent_id"] for r in records} >= {
        r["agent_id"] for r in day_records if r["agent_id"] in members
    }


def test_queue_and_campaign_ids(api: StandIn, day_records: list[dict], hidden: dict) -> None:
    queue = api.dataset.lookups()["queues"][1]
    records = fetch(api, **ONE_DAY, queue_ids=f"{queue['id']}, 1")
    assert uuids(records) == expect(day_records, [q == queue["id"] for q in hidden["queue_id"]])
    assert {r["queue"] for r in records if r["type"] == "inbound"} == {queue["name"]}
    campaigns = [c["id"] for c in api.dataset.lookups()["campaigns"][:2]]
    records = fetch(api, **ONE_DAY, campaign_ids=",".join(map(str, campaigns)))
    assert records and {r["type"] for r in records} == {"dialer"}
    assert uuids(records) == expect(day_records, [c in campaigns for c in hidden["campaign_id"]])


def test_wrapup_codes(api: StandIn, day_records: list[dict]) -> None:
    records = fetch(api, **ONE_DAY, wrapup_codes="0101, 1007, 9999")
    assert records and uuids(records) == expect(
        day_records, [r["wrapup_code"] in ("0101", "1007") for r in day_records]
    )


def test_duration_bounds_are_strict(api: StandIn, day_records: list[dict]) -> None:
    longer = fetch(api, **ONE_DAY, duration_from=120)
    assert uuids(longer) == expect(day_records, [seconds(r["duration"]) > 120 for r in day_records])
    shorter = fetch(api, **ONE_DAY, duration_to=5)
    assert uuids(shorter) == expect(day_records, [seconds(r["duration"]) < 5 for r in day_records])
    assert fetch(api, **ONE_DAY, duration_from=60, duration_to=61) == []
    exactly = fetch(api, **ONE_DAY, duration_from=60, duration_to=62)
    assert exactly and {r["duration"] for r in exactly} == {"00:01:01"}


@pytest.mark.parametrize("phase", ["dialing_time", "talk_time", "hold_time", "ivr_time", "queue_time"])
def test_call_phase_times(api: StandIn, day_records: list[dict], hidden: dict, phase: str) -> None:
    values = hidden[phase]
    assert any(values)
    records = fetch(api, **ONE_DAY, **{f"{phase}_from": 10})
    assert records and uuids(records) == expect(day_records, [v > 10 for v in values])
    records = fetch(api, **ONE_DAY, **{f"{phase}_from": 0, f"{phase}_to": 30})
    assert uuids(records) == expect(day_records, [0 < v < 30 for v in values])


def test_event_and_end_reason(api: StandIn, day_records: list[dict], hidden: dict) -> None:
    wanted = EVENTS.index("transfer"), EVENTS.index("voicemail")
    records = fetch(api, **ONE_DAY, event="transfer,voicemail")
    assert records and uuids(records) == expect(
        day_records, [any(bits >> k & 1 for k in wanted) for bits in hidden["events"]]
    )
    records = fetch(api, **ONE_DAY, end_reason="timeout,manager_terminate")
    codes = {END_REASONS.index("timeout"), END_REASONS.index("manager_terminate")}
    assert records and uuids(records) == expect(day_records, [c in codes for c in hidden["end_reason"]])


def test_first_seen_lead_source_and_destination(api: StandIn, day_records: list[dict], hidden: dict) -> None:
    first = fetch(api, **ONE_DAY, first_seen="Required")
    assert first and uuids(first) == expect(day_records, hidden["first_seen"])
    assert {r["type"] for r in first} <= {"outbound", "dialer", "click_to_call", "click-to-call"}
    source = fetch(api, **ONE_DAY, lead_source="Google ADS")
    assert source and uuids(source) == expect(
        day_records, [s == LEAD_SOURCES.index("Google ADS") for s in hidden["lead_source"]]
    )
    assert fetch(api, **ONE_DAY, lead_source="google ads") == []
    germany = fetch(api, **ONE_DAY, destination_name="Germany - Other")
    assert germany and uuids(germany) == expect(
        day_records, [r.get("destination_name") == "Germany - Other" for r in day_records]
    )


def test_uuid_and_related_call_uuid(api: StandIn, day_records: list[dict], hidden: dict) -> None:
    target = day_records[1234]
    assert uuids(fetch(api, uuid=target["uuid"], start_date="2024-03-01")) == [target["uuid"]]
    sms = next(r for r in day_records if r.get("related_call"))
    related = fetch(api, **ONE_DAY, related_call_uuid=sms["related_call"])
    assert sms["uuid"] in uuids(related)
    callback = next(
        i for i, r in enumerate(day_records) if r["type"] == "queue_callback" and hidden["related"][i]
    )
    parent = hidden["related"][callback]
    assert parent in {r["uuid"] for r in day_records if r["type"] == "inbound"}
    assert day_records[callback]["uuid"] in uuids(fetch(api, **ONE_DAY, related_call_uuid=parent))


def test_filters_combine_with_and(api: StandIn, day_records: list[dict]) -> None:
    records = fetch(api, **ONE_DAY, type="inbound", disposition="answered", cli="55")
    keep = [
        r["type"] == "inbound" and r["disposition"] == "answered" and r["from"].startswith("55")
        for r in day_records
    ]
    assert records and uuids(records) == expect(day_records, keep)


def test_truth_is_independent_of_http(stand_in: StandIn) -> None:
    """The in-process dataset and the server agree (same seed, same params)."""
    fresh = CDRDataset(7, 2500, "America/Sao_Paulo", now=stand_in.now)
    assert set(truth(fresh, **ONE_DAY, type="telegram")) == stand_in.truth(**ONE_DAY, type="telegram")
