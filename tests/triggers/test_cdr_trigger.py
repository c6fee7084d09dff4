"""CDRRecordsTrigger on an event loop, against the stand-in: verdicts, faults, secrets, no blocking."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cdr.api import availability
from airflow_provider_cdr.api.errors import CDRQueryError
from airflow_provider_cdr.fake_api.faults import FaultConfig, FaultInjector
from airflow_provider_cdr.triggers.cdr import CDRRecordsTrigger
from tests.airflow_compat import import_string, serde
from tests.tls_stand_in import TLSStandIn, private_ca, server_certificate

# 2024-03-19 in São Paulo (UTC-3): complete on the stand-in frozen at 2024-03-20T12:00Z.
DAY = {"start_datetime": "2024-03-19T00:00:00", "end_datetime": "2024-03-19T23:59:59"}
DAY_END = "2024-03-20T03:00:00+00:00"
# Before the stand-in's first day: a window that never gets a record.
QUIET = {"start_datetime": "2023-12-31T00:00:00", "end_datetime": "2023-12-31T23:59:59"}
QUIET_END = "2024-01-01T03:00:00+00:00"


def first_event(trigger: CDRRecordsTrigger) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        event = await anext(trigger.run())
        return dict(event.payload)

    return asyncio.run(run())


def use_connection(monkeypatch: pytest.MonkeyPatch, stand_in: Any, conn_id: str, **extra: Any) -> str:
    password = extra.pop("password", stand_in.api_key)
    extra.setdefault("timezone", stand_in.timezone)
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "cdr", "host": stand_in.url, "password": password, "extra": extra}),
    )
    return conn_id


@pytest.fixture
def clean_api(api: Any) -> Iterator[Any]:
    """The shared stand-in with zeroed counters, and no fault left behind for the next test."""
    api.reset_stats()
    yield api
    api.clear_faults()
    api.reset_stats()


def test_serialize_round_trips_exactly() -> None:
    serialize, deserialize = serde()
    trigger = CDRRecordsTrigger(
        conn_id="cdr_x",
        params={**DAY, "type": "inbound,outbound"},
        window_end="2024-03-20T03:00:00Z",
        settle_seconds=600,
        grace_seconds=3600,
        poll_interval=30,
        on_empty="skip",
    )
    classpath, kwargs = trigger.serialize()
    assert import_string(classpath) is CDRRecordsTrigger
    assert CDRRecordsTrigger(**kwargs).serialize() == (classpath, kwargs)
    # What the scheduler stores and the triggerer reads back (dag.test() does the same).
    assert deserialize(serialize(kwargs)) == kwargs
    assert kwargs["window_end"] == DAY_END
    assert json.loads(json.dumps(kwargs)) == kwargs


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"params": {**DAY, "key": "sk-live"}}, "without the key"),
        ({"params": {**DAY, "per_page": 1}}, "string parameters"),
        ({"window_end": "2024-03-20T03:00:00"}, "no UTC offset"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"on_empty": "ignore"}, "on_empty"),
    ],
)
def test_bad_kwargs_are_refused(overrides: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {"conn_id": "cdr_default", "params": DAY, "window_end": DAY_END, **overrides}
    with pytest.raises(CDRQueryError, match=message):
        CDRRecordsTrigger(**kwargs)


def test_a_past_day_with_records_is_available(clean_api: Any, cdr_conn: Any) -> None:
    event = first_event(CDRRecordsTrigger(conn_id="cdr_default", params=DAY, window_end=DAY_END))
    assert event["status"] == "available", event
    assert clean_api.stats()["requests"] == 1


def test_a_quiet_day_after_its_grace_period_is_empty(clean_api: Any, cdr_conn: Any) -> None:
    trigger = CDRRecordsTrigger(
        conn_id="cdr_default", params=QUIET, window_end=QUIET_END, grace_seconds=3600, on_empty="fail"
    )
    event = first_event(trigger)
    assert event["status"] == "empty", event
    assert "on_empty='fail'" in event["message"]
    assert "2023-12-31T00:00:00" in event["message"]


def test_it_waits_for_the_window_to_end_then_polls(
    clean_api: Any, cdr_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the window ends no request goes out; the next poll, after the end, finds records."""
    moments = iter([datetime(2024, 3, 20, 2, 0, tzinfo=timezone.utc)])
    late = datetime(2024, 3, 20, 12, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(availability, "utcnow", lambda: next(moments, late))
    trigger = CDRRecordsTrigger(conn_id="cdr_default", params=DAY, window_end=DAY_END, poll_interval=0.2)
    started = time.monotonic()
    event = first_event(trigger)
    assert event["status"] == "available", event
    assert time.monotonic() - started >= 0.2  # it slept one poll interval before asking
    assert clean_api.stats()["requests"] == 1


def _fault(decision: Any) -> int | str:
    return "drop" if decision.drop else "stall" if decision.stall_s else decision.status or 200


def _skip_to(stand_in: Any, config: FaultConfig, wanted: list[int | str]) -> int:
    """Make the next requests meet exactly the faults `wanted` (a status, "drop", "stall"; 200 = none).

    The stand-in decides a request's faults from (seed, request number) alone, so the test
    finds a request number where the config yields `wanted`, and spends the numbers before it
    on unauthorised requests (counted, but refused before any fault is drawn). Returns how
    many requests were spent.
    """
    for skip in range(500):
        injector = FaultInjector(stand_in.seed, config)
        if [_fault(injector.decide(n, 0)) for n in range(skip + 1, skip + 1 + len(wanted))] == wanted:
            break
    else:
        pytest.fail(f"no request number of the stand-in meets {wanted} with {config}")
    stand_in.set_faults(**{k: v for k, v in config.to_dict().items() if v != getattr(FaultConfig(), k)})
    stand_in.reset_stats()
    for _ in range(skip):
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{stand_in.url}/api/v2/cdr?key=not-the-key", timeout=10)
    assert stand_in.stats()["requests"] == skip
    return skip


def test_it_survives_a_5xx_and_a_429_with_retry_after(clean_api: Any, cdr_conn: Any) -> None:
    config = FaultConfig(rate_429_retry_after=0.5, rate_5xx=0.5, burst_5xx=1, retry_after_s=1)
    skipped = _skip_to(clean_api, config, [503, 429, 200])
    started = time.monotonic()
    event = first_event(CDRRecordsTrigger(conn_id="cdr_default", params=DAY, window_end=DAY_END))
    elapsed = time.monotonic() - started
    assert event["status"] == "available", event
    stats = clean_api.stats()
    assert stats["requests"] - skipped == 3
    assert stats["by_status"].get("503") == 1 and stats["by_status"].get("429") == 1
    # The 429 said "Retry-After: 1": the trigger waited that second, not its shorter first backoff.
    assert elapsed >= 1.0


def test_it_survives_a_dropped_connection_and_a_timeout(
    clean_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = use_connection(monkeypatch, clean_api, "cdr_trigger_timeout", timeout=0.5)
    config = FaultConfig(rate_drop=0.3, rate_stall=0.3, stall_s=2)
    skipped = _skip_to(clean_api, config, ["drop", "stall", 200])
    event = first_event(CDRRecordsTrigger(conn_id=conn_id, params=DAY, window_end=DAY_END))
    assert event["status"] == "available", event
    assert clean_api.stats()["requests"] - skipped == 3


def test_failures_become_an_error_event_without_the_key(
    clean_api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: Any
) -> None:
    secret = clean_api.api_key
    conn_id = use_connection(monkeypatch, clean_api, "cdr_trigger_flaky", max_retries=1, max_retry_wait=5)
    clean_api.set_faults(rate_bad_json=1.0)
    with caplog.at_level(logging.DEBUG):
        event = first_event(CDRRecordsTrigger(conn_id=conn_id, params=DAY, window_end=DAY_END))
    assert event["status"] == "error"
    assert "failed after 2 attempts" in event["message"]
    assert "unreadable JSON" in event["message"]

    wrong = use_connection(monkeypatch, clean_api, "cdr_trigger_wrong", password="sk-wrong-5d1e0b")
    refused = first_event(CDRRecordsTrigger(conn_id=wrong, params=DAY, window_end=DAY_END))
    assert refused["status"] == "error"
    assert "HTTP 401" in refused["message"]

    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert "unreadable JSON body" in logged and "retry 1" in logged  # the logs were captured
    for text in (json.dumps(event), json.dumps(refused), caplog.text, captured.out, captured.err):
        assert secret not in text
        assert "sk-wrong-5d1e0b" not in text


def test_a_missing_key_is_an_error_event(clean_api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = use_connection(monkeypatch, clean_api, "cdr_trigger_keyless", password="")
    event = first_event(CDRRecordsTrigger(conn_id=conn_id, params=DAY, window_end=DAY_END))
    assert event["status"] == "error"
    assert "no API key" in event["message"]


def test_an_unknown_connection_is_an_error_event() -> None:
    event = first_event(CDRRecordsTrigger(conn_id="cdr_nowhere", params=DAY, window_end=DAY_END))
    assert event["status"] == "error"
    assert "cdr_nowhere" in event["message"]


def test_it_never_blocks_the_event_loop(clean_api: Any, cdr_conn: Any) -> None:
    """A slow API (300 ms a request) must not stall other coroutines of the triggerer."""
    clean_api.set_faults(latency_ms=300)
    trigger = CDRRecordsTrigger(conn_id="cdr_default", params=DAY, window_end=DAY_END)

    async def run_beside_a_ticker() -> tuple[dict[str, Any], float]:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def tick() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        event = await anext(trigger.run())
        stop.set()
        await ticker
        return dict(event.payload), max(gaps)

    started = time.monotonic()
    event, longest_gap = asyncio.run(run_beside_a_ticker())
    assert event["status"] == "available", event
    assert time.monotonic() - started >= 0.3
    assert longest_gap < 0.2


def test_the_poll_interval_and_edges_bound_each_sleep() -> None:
    trigger = CDRRecordsTrigger(
        conn_id="cdr_default", params=DAY, window_end=DAY_END, settle_seconds=60, poll_interval=600
    )
    end = datetime.fromisoformat(DAY_END)
    assert trigger.rule.seconds_to_next_check(end, end, trigger.poll_interval) == 60
    assert trigger.rule.seconds_to_next_check(end - timedelta(hours=1), end, trigger.poll_interval) == 600


# -- the connection's TLS trust and the request deadline, as the sync hook has them ----------------------


@pytest.fixture
def private_tls(tmp_path: Path) -> Iterator[tuple[Path, TLSStandIn]]:
    """A private CA's bundle, and the stand-in behind TLS with a certificate that CA signed."""
    ca = private_ca(tmp_path)
    with TLSStandIn(*server_certificate(ca, tmp_path)) as server:
        yield ca.cert_path, server


def test_a_private_ca_named_in_verify_is_trusted(
    private_tls: tuple[Path, TLSStandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_bundle, server = private_tls
    conn_id = use_connection(monkeypatch, server, "cdr_trigger_private_ca", verify=str(ca_bundle))
    event = first_event(CDRRecordsTrigger(conn_id=conn_id, params=DAY, window_end=DAY_END))
    assert event["status"] == "available", event
    assert server.requests() == 1 and server.connections == 1


def test_an_untrusted_certificate_is_an_error_event_at_once(
    private_tls: tuple[Path, TLSStandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = private_tls
    conn_id = use_connection(
        monkeypatch, server, "cdr_trigger_untrusted"
    )  # the default bundle: no private CA
    started = time.monotonic()
    event = first_event(CDRRecordsTrigger(conn_id=conn_id, params=DAY, window_end=DAY_END))
    assert event["status"] == "error"
    assert "TLS verification of https://127.0.0.1" in event["message"] and "(no retry)" in event["message"]
    assert "certificate verify failed" in event["message"].lower()
    assert server.connections == 1 and server.requests() == 0  # not retried; the key never went out
    assert time.monotonic() - started < 2.0  # the default budget's first backoffs alone would be longer
    assert server.api_key not in json.dumps(event)


def test_a_trickling_answer_is_cut_at_the_request_deadline(
    clean_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = use_connection(monkeypatch, clean_api, "cdr_trigger_drip", request_deadline=0.5, max_retries=1)
    clean_api.set_faults(rate_slow_body=1.0, drip_bytes_per_s=100)
    started = time.monotonic()
    event = first_event(CDRRecordsTrigger(conn_id=conn_id, params=DAY, window_end=DAY_END))
    assert event["status"] == "error"
    assert "failed after 2 attempts" in event["message"]
    assert "no whole answer within the request deadline (0.5s)" in event["message"]
    assert clean_api.stats()["requests"] == 2
    assert time.monotonic() - started < 3.0
