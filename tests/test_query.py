"""The query model refuses bad filters with a clear message and normalises good ones."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from airflow_provider_cdr.api.errors import CDRQueryError
from airflow_provider_cdr.api.query import FILTER_NAMES, build_query


def test_every_documented_filter_is_known() -> None:
    documented = {
        "start_date", "end_date", "cli", "number", "wildcard_cli", "wildcard_number", "type",
        "disposition", "queue_ids", "agent_ids", "team_ids", "wrapup_codes", "event", "end_reason",
        "campaign_ids", "duration_from", "duration_to", "dialing_time_from", "dialing_time_to",
        "talk_time_from", "talk_time_to", "hold_time_from", "hold_time_to", "ivr_time_from",
        "ivr_time_to", "queue_time_from", "queue_time_to", "deleted_agent_ids", "first_seen",
        "lead_source", "start_datetime", "end_datetime", "uuid", "related_call_uuid",
        "destination_name",
    }  # fmt: skip
    assert documented == set(FILTER_NAMES)


def test_values_are_normalised_to_the_api_spelling() -> None:
    query = build_query(
        {
            "start_date": date(2024, 3, 1),
            "end_date": "2024-03-02",
            "type": ["Outbound", "click-to-call", "chat"],
            "disposition": "answered_by_vm, no answer",
            "queue_ids": [199, "201"],
            "agent_ids": "1, 2,3",
            "wrapup_codes": ["0001", "1002"],
            "first_seen": True,
            "duration_from": "5",
            "duration_to": 60,
            "uuid": "A6C74840-574B-4E6E-BAAD-6B69BC38CCFC",
            "lead_source": None,
        }
    )
    assert query.as_params() == {
        "start_date": "2024-03-01",
        "end_date": "2024-03-02",
        "type": "outbound,click_to_call,web_chat",
        "disposition": "answered_by_VM,no_answer",
        "queue_ids": "199,201",
        "agent_ids": "1,2,3",
        "wrapup_codes": "0001,1002",
        "first_seen": "required",
        "duration_from": "5",
        "duration_to": "60",
        "uuid": "a6c74840-574b-4e6e-baad-6b69bc38ccfc",
    }


def test_aware_datetimes_are_converted_to_the_account_time_zone() -> None:
    query = build_query(
        {"start_datetime": datetime(2024, 3, 1, 3, 0, tzinfo=timezone.utc)}, timezone="America/Sao_Paulo"
    )
    assert query.as_params() == {"start_datetime": "2024-03-01T00:00:00"}


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"start_dat": "2024-01-01"}, "did you mean 'start_date'"),
        ({"agent_id": 5}, "did you mean 'agent_ids'"),
        ({"start_date": "2024-13-01"}, "start_date: '2024-13-01' is not a date"),
        ({"start_date": "01/02/2024"}, "YYYY-MM-DD"),
        ({"start_datetime": "2024-01-01 10:00"}, "YYYY-MM-DDTHH:MM:SS"),
        ({"type": "outbond"}, "did you mean 'outbound'"),
        ({"disposition": "answerd"}, "did you mean 'answered'"),
        ({"end_reason": "hangup"}, "end_reason: unknown value 'hangup'"),
        ({"duration_from": -1}, "negative"),
        ({"duration_from": "ten"}, "not a whole number"),
        ({"duration_from": True}, "not an integer"),
        ({"duration_from": 30, "duration_to": 10}, "duration_from=30 is after duration_to=10"),
        ({"start_date": "2024-02-02", "end_date": "2024-02-01"}, "is after end_date"),
        ({"agent_ids": "1,x"}, "agent_ids: 'x' is not a whole number"),
        ({"wrapup_codes": [101]}, "leading zeros"),
        ({"uuid": "not-a-uuid"}, "is not a UUID"),
        ({"first_seen": "yes"}, "'required'"),
        ({"key": "secret"}, "managed by the hook"),
        ({"per_page": 10}, "managed by the hook"),
        ({"cli": ""}, "cli: is empty"),
    ],
)
def test_bad_filters_are_refused_with_a_clear_message(filters: dict, message: str) -> None:
    with pytest.raises(CDRQueryError, match="Invalid CDR filters") as err:
        build_query(filters)
    assert message in str(err.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(CDRQueryError) as err:
        build_query({"typo": 1, "type": "nope", "duration_to": "x"})
    text = str(err.value)
    assert "typo" in text and "type:" in text and "duration_to:" in text


def test_with_window_replaces_only_the_window() -> None:
    query = build_query({"start_date": "2024-01-01", "type": "inbound"})
    sliced = query.with_window(start_datetime="2024-01-01T00:00:00", end_datetime="2024-01-01T06:00:00")
    assert sliced.as_params() == {
        "type": "inbound",
        "start_datetime": "2024-01-01T00:00:00",
        "end_datetime": "2024-01-01T06:00:00",
    }
