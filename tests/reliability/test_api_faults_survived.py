"""Every API fault the stand-in can inject, through real Airflow runs: the exact day, or a clear failure.

A fault the retries can absorb must land exactly the day (every record once, nothing else). A fault
that outlasts them must fail the task with an error that says what happened, and leave the
previously landed version of the day as it was.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cdr.fake_api.server import StandIn
from tests.airflow_db import ensure_airflow_db
from tests.conftest import STAND_IN_DEFAULTS
from tests.reliability.reliability_support import (
    assert_exact_day,
    day_files,
    day_table,
    land,
    point_connection,
    task_error,
    visible_rows,
)

DAY = "2024-03-05"
BIG_DAY = "2024-03-12"  # 22,000 records: three 10,000-record searches, so search tokens are in play


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


@pytest.fixture
def big(make_stand_in: Any) -> StandIn:
    """A stand-in whose BIG_DAY needs search tokens even in one slice."""
    return make_stand_in(day_profiles={BIG_DAY: 22000})


SURVIVABLE = {
    "429 storm": {"rate_429": 0.4, "rate_429_retry_after": 0.2, "retry_after_s": 1},
    "long 5xx runs": {"rate_5xx": 0.1, "burst_5xx": 4},
    "dropped connections": {"rate_drop": 0.2},
    "reset mid-body": {"rate_reset_mid_body": 0.3},
    "truncated JSON": {"rate_truncate": 0.3},
    "invalid JSON": {"rate_bad_json": 0.3},
    "stalls": {"rate_stall": 0.2, "stall_s": 3},
    "repeated page": {"rate_repeat_page": 0.3},
    "everything at once": {
        "rate_429": 0.05,
        "rate_5xx": 0.03,
        "burst_5xx": 2,
        "rate_drop": 0.05,
        "rate_reset_mid_body": 0.05,
        "rate_truncate": 0.05,
        "rate_bad_json": 0.05,
        "rate_repeat_page": 0.05,
        "edge_repeat": True,
    },
}


# The stand-in draws each fault from the request's number. With several slices the numbers a slice
# gets depend on thread timing, so a fault whose survival needs a short run of bad draws (a stale page
# is asked again at most MAX_STALE_RETRIES times) runs in one slice: the same requests every run.
ONE_SLICE = {"repeated page"}


@pytest.mark.parametrize("name", SURVIVABLE)
def test_a_survivable_fault_lands_the_exact_day(
    name: str, api: StandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A wider retry budget than the default's 8: a 429 storm must not fail on an unlucky long run.
    point_connection(monkeypatch, api, timeout=1, max_retries=12, max_retry_wait=120)
    api.set_faults(**SURVIVABLE[name])
    run = land(tmp_path, DAY, "fault_ok", slices=1 if name in ONE_SLICE else 4, per_page=300)
    assert run.state == "success"
    assert_exact_day(tmp_path, DAY, api.truth(start_date=DAY, end_date=DAY))
    facts = json.loads((tmp_path / f"date={DAY}" / "_manifest.json").read_text())["extraction"]
    assert facts["retries"] > 0, "the fault fired and was retried"


def test_a_retry_after_pauses_every_slice_not_only_the_one_that_got_it(
    api: StandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Four slices in flight; each 429 with Retry-After: 2 holds all of them, seen from the stand-in.

    With seed 7, requests 1, 5, 9, 10 and 12 draw the fault, so every run meets it. A request may
    reach the stand-in just after a 429 was sent (it passed the gate before the client read the
    429), hence the first half second of each pause is not checked.
    """
    point_connection(monkeypatch, api)
    # 50 ms a request, so that the slices' requests overlap (fast ones may happen never to).
    api.set_faults(rate_429_retry_after=0.2, retry_after_s=2, latency_ms=50)
    run = land(tmp_path, DAY, "shared_pause", slices=4, concurrency=4, per_page=300)
    assert run.state == "success"
    assert_exact_day(tmp_path, DAY, api.truth(start_date=DAY, end_date=DAY))
    assert api.stats()["max_in_flight"] > 1, "the slices ran concurrently"
    timeline = api.timeline()
    pauses = timeline["retry_afters"]
    assert len(pauses) >= 3
    for asked_at, seconds in pauses:
        during = [t for t in timeline["arrivals"] if asked_at + 0.5 < t < asked_at + seconds]
        assert not during, f"{len(during)} requests went out while a Retry-After of {seconds}s was running"


TOKEN_FAULTS = {
    "empty page with a token": {"rate_empty_token_page": 0.3},
    "records repeated at a token's edge": {"edge_repeat": True},
}


@pytest.mark.parametrize("faults", TOKEN_FAULTS.values(), ids=TOKEN_FAULTS.keys())
def test_search_token_faults_land_the_exact_day(
    faults: dict[str, Any], big: StandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point_connection(monkeypatch, big)
    big.set_faults(**faults)
    run = land(tmp_path, BIG_DAY, "token_ok", slices=1, per_page=5000, max_restarts=6)
    assert run.state == "success"
    assert_exact_day(tmp_path, BIG_DAY, big.truth(start_date=BIG_DAY, end_date=BIG_DAY))
    facts = json.loads((tmp_path / f"date={BIG_DAY}" / "_manifest.json").read_text())["extraction"]
    # Without faults this day takes 5 requests (two 10,000-record windows, then 2,001 records).
    assert facts["requests"] > 5 or facts["duplicates_dropped"] > 0, "the fault fired"


def test_an_expired_token_restarts_the_day_instead_of_splicing(
    big: StandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    point_connection(monkeypatch, big)
    big.set_faults(rate_expired_token=0.25)
    capfd.readouterr()
    run = land(tmp_path, BIG_DAY, "token_restart", slices=1, per_page=5000, max_restarts=8)
    assert run.state == "success"
    assert "restarting the day from scratch" in "".join(capfd.readouterr())
    assert "422" in big.stats()["by_status"]
    assert_exact_day(tmp_path, BIG_DAY, big.truth(start_date=BIG_DAY, end_date=BIG_DAY))


def test_huge_text_fields_and_non_ascii_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny API of our own: records whose every text is non-ASCII, one text of 5 MB."""
    from tests.reliability.odd_records_api import OddRecordsAPI

    with OddRecordsAPI(DAY) as odd:
        point_connection(monkeypatch, odd)
        run = land(tmp_path, DAY, "odd_records", slices=2)
        assert run.state == "success"
        table = assert_exact_day(tmp_path, DAY, {record["uuid"] for record in odd.records})
    by_uuid = {row["uuid"]: row for row in table.to_pylist()}
    for record in odd.records:
        row = by_uuid[record["uuid"]]
        for name in ("agent", "text", "destination_name", "queue", "from", "to"):
            assert row[name] == record[name]
    assert max(len(row["text"]) for row in by_uuid.values()) == 5_000_000
    assert all(
        re.fullmatch(r"part-[0-9a-f]+-[0-9a-f]{8}-\d{5}\.parquet|_manifest\.json", name)
        for name in day_files(tmp_path, DAY)
    )


def test_the_api_restarting_mid_extraction_is_survived(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The API process goes away and comes back on the same address (a deploy); requests in flight fail."""
    with StandIn(**STAND_IN_DEFAULTS) as first:
        port = first.url.rsplit(":", 1)[1]
        first.set_faults(latency_ms=100)
        point_connection(monkeypatch, first, max_retries=8, max_retry_wait=120)
        restarted: list[StandIn] = []

        def restart_after_some_requests() -> None:
            while first.stats()["requests"] < 4:
                time.sleep(0.02)  # polling the stand-in's counter, not waiting for time to pass
            first.stop()
            again = StandIn(**STAND_IN_DEFAULTS, extra_args=["--port", port])
            restarted.append(again.start())
            again.set_faults(latency_ms=100)

        restarter = threading.Thread(target=restart_after_some_requests)
        restarter.start()
        try:
            run = land(tmp_path, DAY, "api_restart", slices=4, per_page=100, concurrency=2)
        finally:
            restarter.join()
        try:
            [again] = restarted
            assert run.state == "success"
            assert again.stats()["requests"] > 0, "the second half came from the restarted API"
            assert_exact_day(tmp_path, DAY, again.truth(start_date=DAY, end_date=DAY))
        finally:
            for server in restarted:
                server.stop()


FATAL = {
    "5xx forever": (
        {"rate_5xx": 1.0, "burst_5xx": 1},
        {"max_retries": 2},
        r"failed after 3 attempts.*HTTP 50",
    ),
    "429 forever": ({"rate_429": 1.0}, {"max_retries": 2}, r"failed after 3 attempts.*HTTP 429"),
    "invalid JSON forever": ({"rate_bad_json": 1.0}, {"max_retries": 1}, "unreadable JSON body"),
    "stalls forever": ({"rate_stall": 1.0, "stall_s": 3}, {"max_retries": 1, "timeout": 0.5}, "Timeout"),
    "resets forever": ({"rate_reset_mid_body": 1.0}, {"max_retries": 1}, "failed after 2 attempts"),
    "the same page forever": ({"rate_repeat_page": 1.0}, {}, "times in a row; stopping"),
    "a token that repeats itself": ({"repeat_token": True}, {}, "search_token"),
    "tokens always expired": ({"rate_expired_token": 1.0}, {}, "search_token expired"),
    "a token that points back in time": ({"rate_backward_token": 1.0}, {}, "points back in time"),
    "a page holding more records than asked": (
        {"rate_oversized_page": 1.0},
        {},
        "5001 records for per_page=5000",
    ),
}
# Paging that cannot add up, from servers playing a reading of the API (a ServerProfile) with a fault.
FATAL_READINGS = {
    "records missing while total counts records": (
        {"rate_drop_record": 0.7},  # seed 7: a record goes missing in search 1, search 2 is whole
        {"total": "records"},
        r"ended after \d+ records, but the API said it holds \d+ records",
    ),
    "page > 1 with a token refused, tokens past the search": (
        {},
        {"page_with_token": "refuse", "page_cap": 1000},
        "cannot be reached",
    ),
}
FATAL_CASES = [(*case, {}) for case in FATAL.values()] + [
    (faults, {}, message, profile) for faults, profile, message in FATAL_READINGS.values()
]


@pytest.mark.parametrize(
    ("faults", "extra", "message", "profile"), FATAL_CASES, ids=[*FATAL.keys(), *FATAL_READINGS.keys()]
)
def test_an_unsurvivable_fault_fails_clearly_and_keeps_the_previous_version(
    faults: dict[str, Any],
    extra: dict[str, Any],
    message: str,
    profile: dict[str, Any],
    big: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    point_connection(monkeypatch, big)
    assert land(tmp_path, BIG_DAY, "fatal_before", slices=1, per_page=5000).state == "success"
    files, before = day_files(tmp_path, BIG_DAY), day_table(tmp_path, BIG_DAY)

    point_connection(monkeypatch, big, **extra)
    big.set_faults(**faults)
    big.set_profile(**profile)
    capfd.readouterr()
    run = land(tmp_path, BIG_DAY, "fatal", slices=1, per_page=5000, max_restarts=1)
    assert run.state == "failed"
    failure = task_error(capfd.readouterr())
    assert re.search(message, failure), failure
    assert day_files(tmp_path, BIG_DAY) == files and day_table(tmp_path, BIG_DAY).equals(before)
    assert visible_rows(tmp_path) == before.num_rows
    assert not list(tmp_path.glob(".*")), "the failed attempt removed what it staged"
