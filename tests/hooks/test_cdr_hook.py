"""CDRHook over real HTTP to the stand-in: filters, paging across windows, faults, secrets."""

from __future__ import annotations

import json
import logging
import socket
import traceback
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from airflow_provider_cdr.errors import CDRAPIError, CDRPagingError, CDRQueryError
from airflow_provider_cdr.hooks.cdr import CDRHook

DAY = "2024-03-05"
TEN_DAYS = {"start_date": "2024-03-01", "end_date": "2024-03-10"}  # 25,000 records: three search windows


def use_connection(
    monkeypatch: pytest.MonkeyPatch, conn_id: str, host: str, key: str, **extra: Any
) -> CDRHook:
    """Register a `cdr` connection through the environment, as a deployment would."""
    extra.setdefault("timezone", "America/Sao_Paulo")
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "cdr", "host": host, "password": key, "extra": extra}),
    )
    return CDRHook(cdr_conn_id=conn_id)


@pytest.fixture
def hook(api: Any, monkeypatch: pytest.MonkeyPatch) -> CDRHook:
    return use_connection(monkeypatch, "cdr_hook_test", api.url, api.api_key, max_retry_wait=60)


def uuids(records: Iterator[dict[str, Any]]) -> list[str]:
    return [record["uuid"] for record in records]


@pytest.mark.parametrize("per_page", [1000, 3000, 10000])
def test_three_search_windows_match_ground_truth_exactly(hook: CDRHook, api: Any, per_page: int) -> None:
    got = uuids(hook.iter_records(per_page=per_page, **TEN_DAYS))
    truth = api.truth(**TEN_DAYS)
    assert len(truth) > 20_000
    assert len(got) == len(set(got)) == len(truth)
    assert set(got) == truth


def test_pages_are_lists_of_api_records(hook: CDRHook) -> None:
    pages = list(hook.iter_pages(per_page=500, start_date=DAY, end_date=DAY))
    assert all(isinstance(page, list) and page for page in pages)
    assert all(len(page) <= 500 for page in pages)
    assert {"uuid", "timestamp", "type"} <= set(pages[0][0])


FILTER_CASES: list[tuple[dict[str, Any], Any]] = [
    ({"cli": "55"}, lambda r: r["from"].startswith("55")),
    ({"number": "1"}, lambda r: r["to"].startswith("1")),
    ({"wildcard_cli": "12"}, lambda r: "12" in r["from"]),
    ({"wildcard_number": "34"}, lambda r: "34" in r["to"]),
    ({"type": "outbound"}, lambda r: r["type"] == "outbound"),
    ({"type": ["inbound", "dialer"]}, lambda r: r["type"] in {"inbound", "dialer"}),
    ({"disposition": "answered"}, lambda r: r["disposition"] == "answered"),
    ({"duration_from": 120}, None),
    ({"duration_to": 30}, None),
    ({"talk_time_from": 60}, None),
    ({"dialing_time_to": 10}, None),
    ({"hold_time_from": 5}, None),
    ({"ivr_time_to": 20}, None),
    ({"queue_time_from": 30}, None),
    ({"end_reason": "customer_disconnect"}, None),
    ({"first_seen": True}, None),
]


@pytest.mark.parametrize(("filters", "check"), FILTER_CASES, ids=[str(c[0]) for c in FILTER_CASES])
def test_each_filter_narrows_the_day_as_documented(
    hook: CDRHook, api: Any, filters: dict, check: Any
) -> None:
    window = {"start_date": DAY, "end_date": DAY}
    records = list(hook.iter_records(**window, **filters))
    day_total = len(api.truth(**window))
    assert 0 < len(records) < day_total, "the filter should keep some records and drop others"
    assert set(uuids(iter(records))) == api.truth(**window, **hook.build_query(**filters).as_params())
    if check is not None:
        assert all(check(record) for record in records)


def test_id_list_filters_use_lookup_ids(hook: CDRHook, api: Any) -> None:
    window = {"start_date": DAY, "end_date": DAY}
    agent_ids = [agent["id"] for agent in hook.list_agents()[:3]]
    records = list(hook.iter_records(agent_ids=agent_ids, **window))
    assert records and {r["agent_id"] for r in records} <= set(agent_ids)
    queue = hook.list_queues()[0]
    in_queue = list(hook.iter_records(queue_ids=str(queue["id"]), **window))
    assert set(uuids(iter(in_queue))) == api.truth(queue_ids=str(queue["id"]), **window)
    assert {r["queue"] for r in in_queue} - {None} == {queue["name"]}  # only inbound records name a queue
    code = hook.list_wrapup_codes()[0]["id"]
    assert {r["wrapup_code"] for r in hook.iter_records(wrapup_codes=[code], **window)} == {code}
    for name in ("team_ids", "campaign_ids"):
        lookup = hook.list_teams() if name == "team_ids" else hook.list_campaigns()
        some = list(hook.iter_records(**{name: lookup[0]["id"]}, **window))
        assert set(uuids(iter(some))) == api.truth(**{name: str(lookup[0]["id"])}, **window)


def test_datetime_window_is_inclusive_at_second_precision(hook: CDRHook, api: Any) -> None:
    window = {"start_datetime": f"{DAY}T10:00:00", "end_datetime": f"{DAY}T10:59:59"}
    records = list(hook.iter_records(**window))
    assert records
    assert {r["timestamp"][11:13] for r in records} == {"10"}
    assert set(uuids(iter(records))) == api.truth(**window)


def test_uuid_filter_returns_that_record(hook: CDRHook) -> None:
    some = next(hook.iter_records(start_date=DAY, end_date=DAY))
    assert uuids(hook.iter_records(uuid=some["uuid"])) == [some["uuid"]]


@pytest.mark.parametrize(
    "faults",
    [
        {"rate_429": 0.3},
        {"rate_429_retry_after": 0.3, "retry_after_s": 1},
        {"rate_5xx": 0.2, "burst_5xx": 3},
        {"rate_drop": 0.2},
        {"rate_reset_mid_body": 0.2},
        {"rate_truncate": 0.2},
        {"rate_bad_json": 0.2},
        {"edge_repeat": True},
        {"rate_repeat_page": 0.2},
    ],
    ids=lambda f: ",".join(f),
)
def test_every_fault_is_survived_with_the_exact_result(hook: CDRHook, api: Any, faults: dict) -> None:
    api.set_faults(**faults)
    got = uuids(hook.iter_records(per_page=2000, **TEN_DAYS))
    assert len(got) == len(set(got))
    assert set(got) == api.truth(**TEN_DAYS)
    stats = api.stats()
    if "edge_repeat" not in faults:  # 13 requests without faults: the retries really happened
        assert stats["requests"] > 13
    statuses = set(stats["by_status"])
    if "rate_429" in faults or "rate_429_retry_after" in faults:
        assert "429" in statuses
    if "rate_5xx" in faults:
        assert statuses & {"500", "502", "503"}
    if "rate_drop" in faults:
        assert "dropped" in statuses


def test_stalled_responses_time_out_and_are_retried(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = use_connection(monkeypatch, "cdr_stall", api.url, api.api_key, timeout=0.5, max_retry_wait=60)
    api.set_faults(rate_stall=0.3, stall_s=2)
    window = {"start_date": DAY, "end_date": DAY}
    assert set(uuids(hook.iter_records(per_page=500, **window))) == api.truth(**window)


def test_bad_filters_are_refused_before_any_request(hook: CDRHook, api: Any) -> None:
    api.reset_stats()
    for filters in (
        {"start_date": "2024-02-30"},
        {"typ": "inbound"},
        {"type": "inbond"},
        {"agent_ids": "a,b"},
    ):
        with pytest.raises(CDRQueryError):
            list(hook.iter_records(**filters))
    assert api.stats()["requests"] == 0


def test_a_wrong_key_fails_with_the_status_and_endpoint_but_never_the_key(
    api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wrong-key-7f3a9c"
    hook = use_connection(monkeypatch, "cdr_bad_key", api.url, secret)
    with caplog.at_level(logging.DEBUG), pytest.raises(CDRAPIError) as err:
        list(hook.iter_records(start_date=DAY, end_date=DAY))
    assert err.value.status == 401 and "/api/v2/cdr" in str(err.value)
    assert secret not in str(err.value) and secret not in repr(err.value)
    assert all(secret not in record.getMessage() for record in caplog.records)


def test_the_key_stays_out_of_logs_and_errors_when_requests_fail_and_retry(
    api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    secret = api.api_key
    hook = use_connection(monkeypatch, "cdr_faulty", api.url, secret, max_retries=12, max_retry_wait=60)
    api.set_faults(rate_5xx=0.1, burst_5xx=2, rate_drop=0.1, rate_429_retry_after=0.1, retry_after_s=1)
    with caplog.at_level(logging.DEBUG):
        list(hook.iter_records(per_page=1000, start_date=DAY, end_date=DAY))
    printed = capfd.readouterr()
    everything = printed.out + printed.err + "\n".join(record.getMessage() for record in caplog.records)
    assert "retry" in everything  # the retries were logged ...
    assert "GET /api/v2/cdr?" in everything  # ... and so was urllib3's request line, scrubbed
    assert secret not in everything


def test_an_unreachable_api_fails_cleanly_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "unreachable-secret-123"
    hook = use_connection(
        monkeypatch, "cdr_closed", f"http://127.0.0.1:{port}", secret, max_retries=2, max_retry_wait=3
    )
    with pytest.raises(CDRAPIError) as err:
        list(hook.iter_records(start_date=DAY, end_date=DAY))
    assert "ConnectionError" in str(err.value) and secret not in str(err.value)
    chain = "".join(traceback.format_exception(err.value))  # causes and contexts included
    assert "ConnectionError" in chain and secret not in chain


def test_plain_http_to_a_remote_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = use_connection(monkeypatch, "cdr_remote", "http://cdr.example.com", "k")
    with pytest.raises(CDRQueryError, match="unencrypted"):
        list(hook.iter_records(start_date=DAY, end_date=DAY))


def test_own_extras_never_become_headers(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = use_connection(
        monkeypatch, "cdr_headers", api.url, api.api_key, per_page=500, rate_limit=50, **{"X-Team": "cc"}
    )
    session = hook.get_conn()
    assert session.headers["X-Team"] == "cc"
    for own in ("timezone", "per_page", "rate_limit"):
        assert own not in session.headers
    assert "key" not in str(session.params)
    assert hook.settings.per_page == 500


def test_a_repeated_search_token_is_caught(hook: CDRHook, api: Any) -> None:
    api.set_faults(repeat_token=True)
    with pytest.raises(CDRPagingError, match="a second time"):
        list(hook.iter_records(per_page=10000, **TEN_DAYS))


def test_lookups(hook: CDRHook) -> None:
    for name in ("agents", "queues", "teams", "wrapup_codes", "campaigns", "deleted_agents"):
        rows = getattr(hook, f"list_{name}")()
        assert rows and all("id" in row for row in rows)


def test_get_records_df_has_typed_columns(hook: CDRHook, api: Any) -> None:
    frame = hook.get_records_df(start_date=DAY, end_date=DAY)
    assert len(frame) == len(api.truth(start_date=DAY, end_date=DAY))
    assert isinstance(frame["timestamp"].dtype, pd.DatetimeTZDtype)
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["agent_id"].dtype == pd.Int64Dtype()
    assert frame["duration"].dtype == pd.Int64Dtype()
    assert frame["uuid"].is_unique


def test_test_connection(hook: CDRHook, api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hook.test_connection() == (True, "Connection to the CDR API works.")
    ok, message = use_connection(monkeypatch, "cdr_wrong", api.url, "nope-secret").test_connection()
    assert not ok and "401" in message and "nope-secret" not in message
