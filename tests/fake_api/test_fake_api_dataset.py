"""The synthetic dataset on its own (no HTTP): determinism, record shapes, time, profiles, drift."""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from airflow_provider_cdr.fake_api.dataset import DISPOSITIONS, KINDS, CDRDataset
from airflow_provider_cdr.fake_api.filters import truth

DAY = date(2024, 3, 5)
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}")
HMS = re.compile(r"\d{2,}:[0-5]\d:[0-5]\d")
VOICE_KEYS = [
    "agent", "from", "disposition", "duration", "queue", "to", "timestamp", "uuid", "wrapup_code", "type",
    "agent_id", "cpc",
]  # fmt: skip
SMS_KEYS = [*VOICE_KEYS, "sid", "text", "template", "num_segments", "related_call"]
CHAT_KEYS = [
    "agent", "from", "disposition", "duration", "to", "timestamp", "uuid", "wrapup_code", "type", "agent_id",
    "cpc", "sla", "queue",
]  # fmt: skip
ALL_TYPES = set(KINDS) | {"chat", "outbound SMS", "click-to-call", "hlr_ookup"}


def instant(record: dict) -> datetime:
    return datetime.fromisoformat(record["timestamp"])


@pytest.fixture(scope="module")
def dataset() -> CDRDataset:
    return CDRDataset(7, 3000, "America/Sao_Paulo")


@pytest.fixture(scope="module")
def records(dataset: CDRDataset) -> list[dict]:
    return dataset.records_for_day(DAY)


def test_same_seed_same_records_and_other_seed_differs(records: list[dict]) -> None:
    again = CDRDataset(7, 3000, "America/Sao_Paulo").records_for_day(DAY)
    other = CDRDataset(8, 3000, "America/Sao_Paulo").records_for_day(DAY)
    assert again == records
    assert {r["uuid"] for r in other}.isdisjoint({r["uuid"] for r in records})


def test_exact_count_unique_uuids_and_newest_first(dataset: CDRDataset, records: list[dict]) -> None:
    assert len(records) == 3000
    uuids = [r["uuid"] for r in records]
    assert all(UUID4.fullmatch(u) for u in uuids)
    next_day = {r["uuid"] for r in dataset.records_for_day(DAY + timedelta(days=1))}
    assert len(set(uuids)) == 3000 and next_day.isdisjoint(uuids)
    keys = [(instant(r), r["uuid"]) for r in records]
    assert keys == sorted(keys, reverse=True)


def test_day_edges_and_shared_milliseconds(records: list[dict]) -> None:
    stamps = [r["timestamp"] for r in records]
    assert stamps[0] == "2024-03-05T23:59:59.999-03:00"
    assert stamps[-1] == "2024-03-05T00:00:00.000-03:00"
    groups = Counter(stamps)
    assert any(size >= 2 for size in groups.values())
    assert max(groups.values()) <= 4
    assert all(STAMP.fullmatch(s) for s in stamps)


def test_record_shapes_follow_the_reference(records: list[dict]) -> None:
    assert {r["type"] for r in records} <= ALL_TYPES
    assert {r["disposition"] for r in records} <= set(DISPOSITIONS)
    for record in records:
        kind = record["type"]
        assert HMS.fullmatch(record["duration"])
        if kind in ("outbound_sms", "outbound SMS", "whatsapp"):
            assert list(record) == SMS_KEYS
            assert record["num_segments"] == math.ceil(len(record["text"]) / 160)
            assert record["sid"] == record["from"]
        elif kind in ("web_chat", "chat", "facebook", "instagram", "telegram", "viber"):
            assert list(record) == CHAT_KEYS
            assert record["cpc"] == 0.0 and isinstance(record["cpc"], float)
            assert set(record["sla"]) == {"time_to_first_response", "time_to_resolution", "time_to_reply"}
            assert all(HMS.fullmatch(v) for v in record["sla"].values())
        else:
            expected = [*VOICE_KEYS, "destination_name"] if kind == "outbound" else VOICE_KEYS
            assert list(record) == expected
            assert (record["queue"] is not None) == (kind == "inbound")
            assert isinstance(record["cpc"], float)
    assert any(int(r["sla"]["time_to_resolution"].split(":")[0]) >= 24 for r in records if "sla" in r)
    assert {"chat", "click-to-call"} <= {r["type"] for r in records}
    assert any(not (r["agent"] or "").isascii() for r in records)
    assert any(not r["text"].isascii() for r in records if "text" in r)
    assert any(r["related_call"] for r in records if "related_call" in r)


def test_timestamps_carry_the_offset_in_force(records: list[dict]) -> None:
    zone = ZoneInfo("America/Sao_Paulo")
    for record in records[:200]:
        moment = instant(record)
        assert moment.utcoffset() == moment.astimezone(zone).utcoffset()
        assert moment.astimezone(zone).date() == DAY


@pytest.mark.parametrize(
    ("day", "hours", "offsets"),
    [(date(2024, 3, 10), 23, {"-05:00", "-04:00"}), (date(2024, 11, 3), 25, {"-04:00", "-05:00"})],
)
def test_dst_days_in_new_york(day: date, hours: int, offsets: set[str]) -> None:
    records = CDRDataset(7, 2000, "America/New_York").records_for_day(day)
    newest, oldest = instant(records[0]), instant(records[-1])
    assert newest - oldest == timedelta(hours=hours) - timedelta(milliseconds=1)
    assert {r["timestamp"][-6:] for r in records} == offsets
    zone = ZoneInfo("America/New_York")
    for record in records:
        moment = instant(record)
        assert moment.utcoffset() == moment.astimezone(zone).utcoffset()
        assert moment.astimezone(zone).date() == day
    if hours == 25:  # 01:00-01:59 happens twice, once per offset
        repeated = {r["timestamp"][-6:] for r in records if r["timestamp"][11:13] == "01"}
        assert repeated == {"-04:00", "-05:00"}
    else:  # 02:00-02:59 does not exist
        assert not any(r["timestamp"][11:13] == "02" for r in records)


def test_day_profiles() -> None:
    profiles = {date(2024, 3, 1): "empty", date(2024, 3, 2): "sms_only", date(2024, 3, 3): "voice_only"}
    profiles[date(2024, 3, 4)] = 17
    dataset = CDRDataset(7, 400, "UTC", profiles)
    assert dataset.records_for_day(date(2024, 3, 1)) == []
    assert {r["type"] for r in dataset.records_for_day(date(2024, 3, 2))} <= {
        "outbound_sms",
        "outbound SMS",
        "whatsapp",
    }
    voice = {
        "inbound",
        "outbound",
        "dialer",
        "click_to_call",
        "click-to-call",
        "queue_callback",
        "scheduled_callback",
    }
    assert {r["type"] for r in dataset.records_for_day(date(2024, 3, 3))} <= voice
    assert len(dataset.records_for_day(date(2024, 3, 4))) == 17
    assert len(dataset.records_for_day(date(2024, 3, 5))) == 400
    assert dataset.records_for_day(date(2023, 12, 31)) == []  # before first_day


def test_type_drift_variants_and_served_bytes() -> None:
    dataset = CDRDataset(7, 4000, "UTC", type_drift=0.3)
    records = dataset.records_for_day(DAY)
    assert any(r.get("cpc") == 0 and type(r["cpc"]) is int for r in records)
    assert any(isinstance(r.get("cpc"), str) for r in records)
    assert any(isinstance(r.get("agent_id"), str) and r["agent_id"].isdigit() for r in records)
    assert any(isinstance(r.get("num_segments"), float) for r in records)
    assert any("recording_url" in r for r in records)
    assert any(r.get("duration") == "n/a" for r in records)
    assert any(len(r) < 12 for r in records)  # a null field went missing
    table = dataset.day_table(DAY)
    assert orjson.loads(b"[" + table.blob[:-1] + b"]") == records
    plain = CDRDataset(7, 4000, "UTC").records_for_day(DAY)
    assert [r["uuid"] for r in plain] == [r["uuid"] for r in records]


def test_lookups_are_consistent_with_records(dataset: CDRDataset, records: list[dict]) -> None:
    lookups = dataset.lookups()
    assert set(lookups) == {"agents", "queues", "teams", "wrapup_codes", "campaigns", "deleted_agents"}
    agent_ids = {a["id"] for a in lookups["agents"]} | {a["id"] for a in lookups["deleted_agents"]}
    assert {r["agent_id"] for r in records if r["agent_id"] is not None} <= agent_ids
    assert {r["queue"] for r in records if r.get("queue")} <= {q["name"] for q in lookups["queues"]}
    assert {r["wrapup_code"] for r in records if r["wrapup_code"]} <= {
        w["id"] for w in lookups["wrapup_codes"]
    }
    assert {a["team_id"] for a in lookups["agents"]} <= {t["id"] for t in lookups["teams"]}
    assert all(re.fullmatch(r"\d{4}", w["id"]) for w in lookups["wrapup_codes"])
    names = {a["id"]: a["name"] for a in lookups["agents"] + lookups["deleted_agents"]}
    assert all(names[r["agent_id"]] == r["agent"] for r in records if r["agent_id"] is not None)
    deleted = {a["id"]: date.fromisoformat(a["deleted_at"]) for a in lookups["deleted_agents"]}
    assert all(deleted[r["agent_id"]] > DAY for r in records if r["agent_id"] in deleted)


def test_truth_matches_filters_in_process(dataset: CDRDataset, records: list[dict]) -> None:
    inbound = truth(dataset, start_date="2024-03-05", end_date="2024-03-05", type="inbound")
    assert inbound == [r["uuid"] for r in records if r["type"] == "inbound"]
