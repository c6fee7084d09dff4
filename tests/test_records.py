"""RecordConverter: JSON drift is coerced, kept raw, or kept as extra, and always counted."""

from __future__ import annotations

import copy
import json
import logging
from datetime import datetime, timezone
from typing import Any

import orjson
import pyarrow as pa
import pytest

from airflow_provider_cdr.convert.records import RecordConverter
from airflow_provider_cdr.convert.schema import API_FIELDS, CDR_SCHEMA

# The three records of the reference's sample response, decoded as the API sends them.
SAMPLE_RESPONSE = b"""{"records": [
  {"agent": "Mike A", "from": "15557571011", "disposition": "answered", "duration": "00:01:19",
   "queue": null, "to": "31208112500", "timestamp": "2024-07-31T12:43:09.000-03:00",
   "uuid": "5d73e973-4103-48ac-84ad-4861155f86db", "wrapup_code": "0101", "type": "outbound",
   "agent_id": 56215, "cpc": 0.3972},
  {"agent": "Chandra Agarwal", "from": "155535189249", "disposition": "answered", "duration": "00:00:30",
   "queue": null, "to": "155555554236", "timestamp": "2024-07-31T11:14:30.000-03:00",
   "uuid": "c61c6ebb-d216-4caa-927a-461c8c8cc705", "wrapup_code": "1007", "type": "click_to_call",
   "agent_id": 52715, "cpc": 0.0032},
  {"agent": null, "from": "Guest", "disposition": "archived", "duration": "00:00:00", "to": "Olek's test",
   "timestamp": "2024-07-24T06:15:40.407-03:00", "uuid": "7a221595-6dcd-483a-b37f-65e12317756d",
   "wrapup_code": null, "type": "chat", "agent_id": null, "cpc": 0.0,
   "sla": {"time_to_first_response": "00:01:45", "time_to_resolution": "48:16:27", "time_to_reply": "00:00:23"},
   "queue": null}
], "total": 2632, "page": 1, "search_token": null}"""


def sample_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = orjson.loads(SAMPLE_RESPONSE)["records"]
    return records


def call(number: int, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "uuid": f"uuid-{number}",
        "timestamp": "2024-07-31T12:43:09.000-03:00",
        "type": "outbound",
        "disposition": "answered",
        "agent": "Mike A",
        "agent_id": 56215,
        "from": "15557571011",
        "to": "31208112500",
        "queue": None,
        "wrapup_code": "0101",
        "duration": "00:01:19",
        "cpc": 0.3972,
    }
    record.update(fields)
    return record


def convert(records: list[Any]) -> tuple[list[dict[str, Any]], RecordConverter]:
    converter = RecordConverter()
    batch = converter.to_batch(records)
    assert batch.schema.equals(CDR_SCHEMA, check_metadata=True)
    return batch.to_pylist(), converter


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def test_sample_response_converts_exactly() -> None:
    rows, converter = convert(sample_records())
    first, _, chat = rows
    assert first["uuid"] == "5d73e973-4103-48ac-84ad-4861155f86db"
    assert first["timestamp"] == utc("2024-07-31T15:43:09+00:00")
    assert first["utc_offset_minutes"] == -180
    assert first["duration"] == 79
    assert first["wrapup_code"] == "0101"
    assert first["agent_id"] == 56215
    assert first["cpc"] == pytest.approx(0.3972)
    assert first["sla"] is None
    assert first["num_segments"] is None  # missing field
    assert first["extra_fields"] is None and first["raw_values"] is None
    assert chat["agent"] is None and chat["agent_id"] is None
    assert chat["timestamp"] == utc("2024-07-24T09:15:40.407+00:00")
    assert chat["sla"] == {"time_to_first_response": 105, "time_to_resolution": 173787, "time_to_reply": 23}
    assert converter.counts() == {
        "rows": 3,
        "coerced": 0,
        "uncoercible": 0,
        "unknown_fields": {},
        "coerced_by_field": {},
        "uncoercible_by_field": {},
    }


@pytest.mark.parametrize(
    ("text", "instant", "offset"),
    [
        ("2024-07-31T12:43:09.000-03:00", "2024-07-31T15:43:09+00:00", -180),
        ("2024-07-31T06:15:40.407+05:30", "2024-07-31T00:45:40.407+00:00", 330),
        ("2024-07-31T12:43:09.123456+00:00", "2024-07-31T12:43:09.123456+00:00", 0),
        ("2024-07-31T12:43:09Z", "2024-07-31T12:43:09+00:00", 0),
        ("2024-07-31T12:43:09+0530", "2024-07-31T07:13:09+00:00", 330),
        ("2024-07-31T12:43:09-03", "2024-07-31T15:43:09+00:00", -180),
        ("2024-07-31T00:30:00.000+14:00", "2024-07-30T10:30:00+00:00", 840),
    ],
)
def test_timestamps_become_utc_instants_with_the_offset_kept(text: str, instant: str, offset: int) -> None:
    # Each alone (one suffix style per column) and next to an unparseable one (the slow path).
    for records in ([call(1, timestamp=text)], [call(1, timestamp=text), call(2, timestamp="soon")]):
        rows, _ = convert(records)
        assert rows[0]["timestamp"] == utc(instant)
        assert rows[0]["utc_offset_minutes"] == offset


def test_mixed_offset_styles_in_one_page() -> None:
    texts = ["2024-07-31T12:43:09.000-03:00", "2024-07-31T12:43:09Z", "2024-07-31T12:43:09+0530"]
    rows, converter = convert([call(number, timestamp=text) for number, text in enumerate(texts)])
    assert [row["utc_offset_minutes"] for row in rows] == [-180, 0, 330]
    assert [row["timestamp"] for row in rows] == [utc(text) for text in texts]
    assert converter.uncoercible == 0


def test_timestamp_without_offset_is_kept_raw_not_guessed() -> None:
    rows, converter = convert([call(1, timestamp="2024-07-31T12:43:09"), call(2)])
    assert rows[0]["timestamp"] is None and rows[0]["utc_offset_minutes"] is None
    assert json.loads(rows[0]["raw_values"]) == {"timestamp": "2024-07-31T12:43:09"}
    assert rows[1]["timestamp"] == utc("2024-07-31T15:43:09+00:00")
    assert converter.uncoercible_by_field == {"timestamp": 1}


def test_type_drift_is_coerced_and_counted() -> None:
    records = [
        call(1, cpc=0),
        call(2, cpc=0.0),
        call(3, cpc="0.1", agent_id="56215", num_segments=2.0),
        call(4, wrapup_code=101, duration=79, **{"from": 15557571011.0}),
    ]
    rows, converter = convert(records)
    assert [row["cpc"] for row in rows[:3]] == [0.0, 0.0, 0.1]
    assert rows[2]["agent_id"] == 56215
    assert rows[2]["num_segments"] == 2
    assert rows[3]["wrapup_code"] == "101"
    assert rows[3]["from"] == "15557571011"
    assert rows[3]["duration"] == 79
    assert all(row["raw_values"] is None for row in rows)
    assert converter.coerced_by_field == {
        "cpc": 1,  # "0.1"; 0 and 0.0 are both JSON numbers
        "agent_id": 1,
        "num_segments": 1,
        "wrapup_code": 1,
        "from": 1,
        "duration": 1,
    }
    assert converter.coerced == 6
    assert converter.uncoercible == 0


def test_uncoercible_values_are_kept_raw_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    records = [
        call(1, agent_id="abc", cpc=True),
        call(2, num_segments=2.5, duration="n/a"),
        call(3, agent={"name": "Mike"}, sla="soon"),
        call(4, sla={"time_to_first_response": "later", "time_to_resolution": "00:00:01"}),
        call(5, agent_id=2**70),
    ]
    with caplog.at_level(logging.WARNING, logger="airflow_provider_cdr.convert.records"):
        rows, converter = convert(records)
    assert [json.loads(row["raw_values"]) for row in rows] == [
        {"agent_id": "abc", "cpc": True},
        {"num_segments": 2.5, "duration": "n/a"},
        {"agent": {"name": "Mike"}, "sla": "soon"},
        {"sla.time_to_first_response": "later"},
        {"agent_id": 2**70},
    ]
    assert rows[0]["agent_id"] is None and rows[0]["cpc"] is None
    assert rows[1]["num_segments"] is None and rows[1]["duration"] is None
    assert rows[2]["agent"] is None and rows[2]["sla"] is None
    assert rows[3]["sla"] == {"time_to_first_response": None, "time_to_resolution": 1, "time_to_reply": None}
    assert converter.uncoercible == 8
    assert converter.uncoercible_by_field["agent_id"] == 2
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 8
    assert any("'agent_id'" in message and "uuid=uuid-1" in message for message in warnings)
    assert any("'sla.time_to_first_response'" in message and "uuid=uuid-4" in message for message in warnings)
    # The value and the record never reach the log.
    assert not any("abc" in message or "Mike" in message or "later" in message for message in warnings)


def test_uncoercible_logging_is_capped_but_counting_is_not(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_provider_cdr.convert.records"):
        _, converter = convert([call(number, cpc="free") for number in range(50)])
    assert converter.uncoercible == 50
    assert len([record for record in caplog.records if "'cpc'" in record.getMessage()]) == 21


def test_unknown_fields_are_kept_in_extra_fields_and_counted() -> None:
    records = [
        call(1, campaign_id=15, lead_source="Google ADS"),
        call(2, campaign_id=16, sla={"time_to_reply": "00:00:05", "time_to_close": "01:00:00"}),
        call(3, raw_values="not ours"),
        call(4),
    ]
    rows, converter = convert(records)
    assert json.loads(rows[0]["extra_fields"]) == {"campaign_id": 15, "lead_source": "Google ADS"}
    assert json.loads(rows[1]["extra_fields"]) == {"campaign_id": 16, "sla": {"time_to_close": "01:00:00"}}
    assert rows[1]["sla"] == {"time_to_first_response": None, "time_to_resolution": None, "time_to_reply": 5}
    assert json.loads(rows[2]["extra_fields"]) == {"raw_values": "not ours"}
    assert rows[2]["raw_values"] is None
    assert rows[3]["extra_fields"] is None
    assert converter.unknown_fields == {
        "campaign_id": 2,
        "lead_source": 1,
        "sla.time_to_close": 1,
        "raw_values": 1,
    }


def test_missing_and_null_fields_become_null() -> None:
    rows, _ = convert([{"uuid": "only-uuid"}, dict.fromkeys(API_FIELDS) | {"uuid": "nulls"}])
    for row in rows:
        assert all(value is None for name, value in row.items() if name != "uuid")


def test_hh_mm_ss_with_hours_over_24() -> None:
    durations = ["48:16:27", "00:00:00", None, "23:59:59"]
    rows, _ = convert([call(number, duration=text) for number, text in enumerate(durations)])
    assert [row["duration"] for row in rows] == [173787, 0, None, 86399]
    # One- and three-digit hours take the regex path; still vectorised, same answers.
    rows, _ = convert(
        [call(1, duration="123:00:01"), call(2, duration="1:02:03"), call(3, duration="00:01:19")]
    )
    assert [row["duration"] for row in rows] == [442801, 3723, 79]


def test_malformed_hh_mm_ss_is_kept_raw() -> None:
    texts = ["00:61:00", "00:00:60", "-01:00:00", "01:00", "1h", "00:00:0x"]
    rows, converter = convert([call(number, duration=text) for number, text in enumerate(texts)])
    assert [row["duration"] for row in rows] == [None] * len(texts)
    assert [json.loads(row["raw_values"])["duration"] for row in rows] == texts
    assert converter.uncoercible == len(texts)


def test_non_ascii_text_round_trips() -> None:
    texts = {
        "agent": "Zoë Łukasz",
        "text": "Привет, ваш заказ готов ✓ 🎉",
        "to": "東京オフィス",
        "template": "ünïcødé",
    }
    rows, _ = convert([call(1, **texts)])
    assert {name: rows[0][name] for name in texts} == texts


def test_lone_surrogate_is_kept_raw_as_escaped_json() -> None:
    rows, converter = convert([call(1, text="broken \ud800 text"), call(2, text="fine")])
    assert rows[0]["text"] is None
    assert json.loads(rows[0]["raw_values"]) == {"text": "broken \ud800 text"}
    assert rows[1]["text"] == "fine"
    assert converter.uncoercible == 1


def test_sla_sent_as_a_one_element_array_is_coerced() -> None:
    sla = {
        "time_to_first_response": "00:01:45",
        "time_to_resolution": "48:16:27",
        "time_to_reply": "00:00:23",
    }
    rows, converter = convert([call(1, sla=[sla]), call(2, sla=sla), call(3)])
    assert (
        rows[0]["sla"]
        == rows[1]["sla"]
        == {
            "time_to_first_response": 105,
            "time_to_resolution": 173787,
            "time_to_reply": 23,
        }
    )
    assert rows[2]["sla"] is None
    assert converter.coerced_by_field == {"sla": 1}


def test_slow_path_gives_the_fast_paths_answers() -> None:
    """One odd value sends a column down the per-value path; the other rows must not change."""
    clean = sample_records() + [call(n, text="Привет", num_segments=1, type="outbound_sms") for n in range(5)]
    fast_rows, _ = convert(copy.deepcopy(clean))
    odd = {
        "uuid": 42,
        "timestamp": 1722440589,
        "duration": 79,
        "agent_id": 2.0,
        "cpc": "0.5",
        "num_segments": "1",
        "sla": [{"time_to_reply": "00:00:01"}],
        "agent": 7,
    }
    slow_rows, converter = convert([*copy.deepcopy(clean), odd])
    assert slow_rows[: len(clean)] == fast_rows
    assert slow_rows[-1]["uuid"] == "42"
    assert json.loads(slow_rows[-1]["raw_values"]) == {"timestamp": 1722440589}
    assert converter.coerced == 7  # all but the timestamp
    assert converter.uncoercible == 1


def test_all_sms_batch_has_the_full_schema() -> None:
    sms = [
        {
            "uuid": f"sms-{number}",
            "timestamp": "2024-07-31T10:00:00.000-03:00",
            "type": "outbound_sms",
            "disposition": "delivered",
            "from": "ACME",
            "to": "15557571011",
            "sid": "ACME",
            "text": "Ваш код: 1234",
            "template": "otp",
            "num_segments": 1,
            "cpc": 0.0075,
        }
        for number in range(3)
    ]
    batch = RecordConverter().to_batch(sms)
    assert batch.schema.equals(CDR_SCHEMA, check_metadata=True)
    assert batch.column("sla").null_count == 3
    assert batch.column("duration").null_count == 3
    assert not any(pa.types.is_null(field.type) for field in batch.schema)


def test_empty_page_is_an_empty_batch() -> None:
    converter = RecordConverter()
    batch = converter.to_batch([])
    assert batch.num_rows == 0
    assert batch.schema.equals(CDR_SCHEMA, check_metadata=True)
    assert converter.rows == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not a record", "record 1 of the page is a JSON string, not an object"),
        (["a", "list"], "record 1 of the page is a JSON array, not an object"),
        (None, "record 1 of the page is a JSON null, not an object"),
        ({"timestamp": "2024-07-31T12:43:09Z"}, "record 1 of the page has no uuid"),
        ({"uuid": None}, "record 1 of the page has no uuid"),
        ({"uuid": ""}, "record 1 of the page has an empty uuid"),
        ({"uuid": ["a"]}, "record 1 of the page has a uuid of JSON type array"),
        ({"uuid": 1.5}, "record 1 of the page has a uuid of JSON type number"),
    ],
)
def test_records_that_cannot_be_stored_raise_and_count_nothing(bad: Any, message: str) -> None:
    converter = RecordConverter()
    with pytest.raises(ValueError, match=message):
        converter.to_batch([call(0), bad])
    assert converter.rows == 0


def test_counters_accumulate_over_pages() -> None:
    converter = RecordConverter()
    converter.to_batch([call(1, cpc="0")])
    converter.to_batch([call(2, cpc="x", extra=1), call(3, extra=2)])
    assert converter.counts() == {
        "rows": 3,
        "coerced": 1,
        "uncoercible": 1,
        "unknown_fields": {"extra": 2},
        "coerced_by_field": {"cpc": 1},
        "uncoercible_by_field": {"cpc": 1},
    }
    json.dumps(converter.counts())  # JSON-ready, e.g. for the manifest
