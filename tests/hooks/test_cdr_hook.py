"""CDRHook over real HTTP to the stand-in: filters, paging across windows, faults, secrets."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pytest

from airflow_provider_cdr.api.errors import CDRAPIError, CDRCancelled, CDRError, CDRPagingError, CDRQueryError
from airflow_provider_cdr.convert.formats import RecordDicts
from airflow_provider_cdr.hooks.cdr import CDRHook
from tests.secret_support import KEY_WITH_URL_CHARACTERS, assert_secret_absent, exception_chain_text

DAY = "2024-03-05"
KEY = KEY_WITH_URL_CHARACTERS  # a key whose every URL form differs from it: all of them are looked for
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
    agent_ids = [agent["id"] for agent in hook.lookup("agents")[:3]]
    records = list(hook.iter_records(agent_ids=agent_ids, **window))
    assert records and {r["agent_id"] for r in records} <= set(agent_ids)
    queue = hook.lookup("queues")[0]
    in_queue = list(hook.iter_records(queue_ids=str(queue["id"]), **window))
    assert set(uuids(iter(in_queue))) == api.truth(queue_ids=str(queue["id"]), **window)
    assert {r["queue"] for r in in_queue} - {None} == {queue["name"]}  # only inbound records name a queue
    code = hook.lookup("wrapup_codes")[0]["id"]
    assert {r["wrapup_code"] for r in hook.iter_records(wrapup_codes=[code], **window)} == {code}
    for name in ("team_ids", "campaign_ids"):
        lookup = hook.lookup("teams" if name == "team_ids" else "campaigns")
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
    hook = use_connection(monkeypatch, "cdr_bad_key", api.url, KEY)
    with caplog.at_level(logging.DEBUG), pytest.raises(CDRAPIError) as err:
        list(hook.iter_records(start_date=DAY, end_date=DAY))
    assert err.value.status == 401 and "/api/v2/cdr" in str(err.value)
    assert_secret_absent(exception_chain_text(err.value), "the error", KEY)
    assert_secret_absent("\n".join(record.getMessage() for record in caplog.records), "a log record", KEY)


def test_the_key_stays_out_of_logs_and_errors_when_requests_fail_and_retry(
    make_stand_in: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
) -> None:
    keyed = make_stand_in(api_key=KEY)
    hook = use_connection(monkeypatch, "cdr_faulty", keyed.url, KEY, max_retries=12, max_retry_wait=60)
    keyed.set_faults(rate_5xx=0.1, burst_5xx=2, rate_drop=0.1, rate_429_retry_after=0.1, retry_after_s=1)
    with caplog.at_level(logging.DEBUG):
        list(hook.iter_records(per_page=1000, start_date=DAY, end_date=DAY))
    keyed.clear_faults()
    printed = capfd.readouterr()
    everything = printed.out + printed.err + "\n".join(record.getMessage() for record in caplog.records)
    assert "retry" in everything  # the retries were logged ...
    assert "GET /api/v2/cdr?" in everything  # ... and so was urllib3's request line (key encoded), scrubbed
    assert_secret_absent(everything, "the logs", KEY)


def test_an_unreachable_api_fails_cleanly_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hook = use_connection(
        monkeypatch, "cdr_closed", f"http://127.0.0.1:{port}", KEY, max_retries=2, max_retry_wait=3
    )
    with pytest.raises(CDRAPIError) as err:
        list(hook.iter_records(start_date=DAY, end_date=DAY))
    assert "ConnectionError" in str(err.value)
    chain = exception_chain_text(err.value)  # causes and contexts included, suppressed or not
    assert "ConnectionError" in chain
    assert_secret_absent(chain, "the error or its chain", KEY)


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
        rows = hook.lookup(name)
        assert rows and all("id" in row for row in rows)


def test_an_unknown_lookup_is_refused_before_any_request(hook: CDRHook, api: Any) -> None:
    before = api.stats()["requests"]
    with pytest.raises(CDRQueryError, match="unknown lookup 'agent'; one of: agents, queues"):
        hook.lookup("agent")
    assert api.stats()["requests"] == before


def test_get_records_df_has_typed_columns(hook: CDRHook, api: Any) -> None:
    frame = hook.get_records_df(start_date=DAY, end_date=DAY)
    assert len(frame) == len(api.truth(start_date=DAY, end_date=DAY))
    assert isinstance(frame["timestamp"].dtype, pd.DatetimeTZDtype)
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["agent_id"].dtype == pd.Int64Dtype()
    assert frame["duration"].dtype == pd.Int64Dtype()
    assert frame["uuid"].is_unique


# -- one slice fails: the others stop --------------------------------------------------------------

GOOD_SLICES = [{"start_date": day, "end_date": day} for day in ("2024-03-05", "2024-03-06", "2024-03-07")]
FATAL_SLICE = {"start_date": "2024-13-01", "end_date": "2024-13-01"}  # the stand-in answers 422: final


def note_final_failures(extraction: Any) -> list[float]:
    """When (wall clock, as the stand-in's) a request of `extraction` failed for good; not cancellations."""
    failed_at: list[float] = []
    fetch = extraction.fetch

    def noted(params: Any, decode: Any) -> Any:
        try:
            return fetch(params, decode)
        except CDRCancelled:
            raise
        except CDRError:
            failed_at.append(time.time())
            raise

    extraction.fetch = noted
    return failed_at


def test_the_first_failing_slice_cuts_the_others_in_flight(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The others trickle (1 KB/s, a 60 s deadline): without cancellation the run would last a minute."""
    # Every answer waits a second, so the three good slices are surely in flight when the 422 comes.
    api.set_faults(rate_slow_body=1.0, drip_bytes_per_s=1000, rate_stall=1.0, stall_s=1.0)
    hook = use_connection(monkeypatch, "cdr_cancel", api.url, api.api_key, request_deadline=60)
    extraction = hook.extraction(RecordDicts(), concurrency=4, per_page=1000)
    failed_at = note_final_failures(extraction)
    with pytest.raises(CDRAPIError) as raised:
        list(extraction.run([*GOOD_SLICES, FATAL_SLICE]))
    ended = time.time()
    assert raised.value.status == 422  # the first failure is the one the task reports
    [failure] = failed_at
    stats = api.stats()
    assert stats["max_in_flight"] == 4 and stats["requests"] == 4  # the others were in flight; no retry
    assert max(api.timeline()["arrivals"]) < failure
    assert ended - failure < 1.0, "the slices in flight were not cut"


def test_the_first_failing_slice_stops_the_others_retrying(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every slice meets 5xx and backs off; then the API heals, except for the one slice it refuses (422).

    Without cancellation the others would finish their budgets (8 retries, about a minute of waits).
    """
    api.set_faults(rate_5xx=1.0, burst_5xx=1)
    hook = use_connection(monkeypatch, "cdr_cancel", api.url, api.api_key, request_deadline=60)
    extraction = hook.extraction(RecordDicts(), concurrency=4, per_page=1000)
    failed_at = note_final_failures(extraction)
    with ThreadPoolExecutor(max_workers=1) as runner:
        run = runner.submit(lambda: list(extraction.run([*GOOD_SLICES, FATAL_SLICE])))
        give_up = time.monotonic() + 60
        while api.stats()["requests"] < 12:  # every slice is in its retries (4 first tries + 8 retries)
            assert time.monotonic() < give_up and not run.done(), "the slices never started retrying"
            time.sleep(0.02)
        api.set_faults(rate_slow_body=1.0, drip_bytes_per_s=1000)  # good slices would now trickle for minutes
        with pytest.raises(CDRAPIError) as raised:
            run.result(timeout=60)
    ended = time.time()
    assert raised.value.status == 422
    [failure] = failed_at
    arrivals = api.timeline()["arrivals"]
    assert max(arrivals) < failure + 0.1, "a request reached the API after the failure"
    assert ended - failure < 1.0, "the other slices went on with their retries"
