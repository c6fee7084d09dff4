"""Every fault is observable over real HTTP, and fault decisions are deterministic."""

from __future__ import annotations

import socket
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
import requests

from airflow_provider_cdr.fake_api.faults import FaultConfig, FaultInjector
from airflow_provider_cdr.fake_api.server import StandIn

DAY = {"start_date": "2024-03-05", "end_date": "2024-03-05"}
NINE_DAYS = {"start_date": "2024-03-01", "end_date": "2024-03-09"}


def get(server: StandIn, path: str = "/api/v2/cdr", timeout: float = 30, **params: Any) -> requests.Response:
    return requests.get(server.url + path, params={"key": server.api_key, **params}, timeout=timeout)


def test_429_without_and_with_retry_after(api: StandIn) -> None:
    api.set_faults(rate_429=1.0)
    response = get(api, **DAY)
    assert response.status_code == 429 and "Retry-After" not in response.headers
    assert response.json() == {"error": "Too many requests"}
    api.set_faults(rate_429_retry_after=1.0, retry_after_s=2)
    response = get(api, "/api/v2/cdr/agents")
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"


def test_5xx_over_http_and_bursts_in_process(api: StandIn) -> None:
    api.set_faults(rate_5xx=1.0)
    assert {get(api, **DAY).status_code for _ in range(6)} <= {500, 502, 503}
    injector = FaultInjector(7, FaultConfig(rate_5xx=0.05, burst_5xx=4))
    failed = [injector.decide(n, 0).status is not None for n in range(1, 2001)]
    runs = "".join("x" if f else "." for f in failed).split(".")
    lengths = [len(run) for run in runs if run]
    assert lengths and min(lengths) >= 4


def test_drop_closes_without_a_response(api: StandIn) -> None:
    api.set_faults(rate_drop=1.0)
    with pytest.raises(requests.ConnectionError):
        get(api, **DAY)
    assert api.stats()["by_status"] == {"dropped": 1}


def raw_get(server: StandIn, target: str) -> tuple[bytes, bytes]:
    """Send one GET on a raw socket; return (head, body as received until the server closed)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


def test_reset_mid_body_sends_half_of_the_announced_length(api: StandIn) -> None:
    api.set_faults(rate_reset_mid_body=1.0)
    with pytest.raises(requests.RequestException):
        get(api, **DAY, per_page=2000).json()
    head, body = raw_get(api, f"/api/v2/cdr?key={api.api_key}&start_date=2024-03-05&per_page=2000")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    assert head.startswith(b"HTTP/1.1 200") and 0 < len(body) < length


def test_truncated_and_bad_json_bodies(api: StandIn) -> None:
    api.set_faults(rate_truncate=1.0)
    response = get(api, **DAY, per_page=50)
    assert response.status_code == 200 and int(response.headers["Content-Length"]) == len(response.content)
    with pytest.raises(ValueError):
        response.json()
    api.set_faults(rate_bad_json=1.0)
    response = get(api, "/api/v2/cdr/queues")
    assert response.status_code == 200 and response.text.startswith("<html>")
    with pytest.raises(ValueError):
        response.json()


def test_latency_fixed_and_per_record(api: StandIn) -> None:
    api.set_faults(latency_ms=300)
    started = time.monotonic()
    get(api, **DAY, per_page=1)
    assert time.monotonic() - started >= 0.3
    api.set_faults(latency_per_record_us=200)
    started = time.monotonic()
    get(api, **DAY, per_page=1500)
    assert time.monotonic() - started >= 0.3


def test_stall_outlasts_a_short_client_timeout(api: StandIn) -> None:
    api.set_faults(rate_stall=1.0, stall_s=0.6)
    with pytest.raises(requests.Timeout):
        get(api, timeout=0.2, **DAY, per_page=1)


def body_pieces(server: StandIn, target: str) -> tuple[bytes, list[tuple[float, int]]]:
    """GET on a raw socket; the body, and (seconds since the headers, bytes) of each read that brought some."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(
            next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(
                b":"
            )[1]
        )
        headers_at, pieces = time.monotonic(), []
        while len(body) < length:
            chunk = sock.recv(65536)
            pieces.append((time.monotonic() - headers_at, len(chunk)))
            body += chunk
    return body, pieces


def test_a_slow_body_trickles_at_the_configured_rate(api: StandIn) -> None:
    target = f"/api/v2/cdr?key={api.api_key}&start_date=2024-03-05&end_date=2024-03-05&per_page=4"
    whole = get(api, **DAY, per_page=4).content
    api.set_faults(rate_slow_body=1.0, drip_bytes_per_s=4000)  # 200 bytes every 50 ms
    body, pieces = body_pieces(api, target)
    assert body == whole  # the same answer, only slower
    assert len(pieces) >= len(whole) // 200 and max(size for _, size in pieces) <= 200
    assert pieces[-1][0] >= (len(whole) / 4000) * 0.8  # the whole body takes its time...
    assert pieces[0][0] < 0.2  # ...though bytes keep coming, so no per-read timeout would fire
    api.set_faults(rate_slow_body=1.0, drip_bytes_per_s=1)  # a byte a second: a page would take hours
    started = time.monotonic()
    refused = get(api, start_date="2024-13-01", end_date="2024-13-01")
    assert refused.status_code == 422 and time.monotonic() - started < 1.0  # only 200s trickle


def test_slow_bodies_are_drawn_per_request_without_moving_older_faults() -> None:
    old = FaultConfig(rate_429=0.2, rate_drop=0.1, rate_truncate=0.2, rate_drop_record=0.1)
    with_drip = old.merged(rate_slow_body=0.3, drip_bytes_per_s=500)
    decisions = [FaultInjector(7, with_drip).decide(n, 0) for n in range(1, 400)]
    assert decisions == [FaultInjector(7, with_drip).decide(n, 0) for n in range(1, 400)]
    before = [FaultInjector(7, old).decide(n, 0) for n in range(1, 400)]
    assert [replace(d, drip_bytes_per_s=0) for d in decisions] == before
    dripped = sum(1 for d in decisions if d.drip_bytes_per_s == 500)
    assert 60 < dripped < 140  # about 30 % of the requests that reach the body faults


def test_expired_token_only_hits_requests_with_a_token(api: StandIn) -> None:
    token = get(api, per_page=10000, **NINE_DAYS).json()["search_token"]
    api.set_faults(rate_expired_token=1.0)
    assert get(api, per_page=10, **NINE_DAYS).status_code == 200
    expired = get(api, per_page=10, search_token=token, **NINE_DAYS)
    assert expired.status_code == 422 and expired.json() == {"errors": {"search_token": ["is expired"]}}


def test_repeat_page_serves_the_previous_page_of_the_window(api: StandIn) -> None:
    pages = [get(api, per_page=2500, page=p, **NINE_DAYS).json() for p in (1, 2, 3)]
    api.set_faults(rate_repeat_page=1.0)
    repeated = get(api, per_page=2500, page=3, **NINE_DAYS).json()
    assert repeated["records"] == pages[1]["records"]
    assert repeated["search_token"] == pages[2]["search_token"] is not None
    assert get(api, per_page=2500, page=1, **NINE_DAYS).json() == pages[0]  # no previous page to repeat


def test_repeat_token_answers_with_the_token_it_was_sent(api: StandIn) -> None:
    token = get(api, per_page=10000, **NINE_DAYS).json()["search_token"]
    api.set_faults(repeat_token=True)
    assert get(api, per_page=10000, **NINE_DAYS).json()["search_token"] == token  # no token sent: normal
    looped = get(api, per_page=10000, search_token=token, **NINE_DAYS).json()
    assert looped["search_token"] == token and len(looped["records"]) == 10000


def test_empty_page_with_a_token_that_resumes_after_the_pages_before_it(api: StandIn) -> None:
    normal = get(api, per_page=10000, **NINE_DAYS).json()
    api.set_faults(rate_empty_token_page=1.0)
    empty = get(api, per_page=10000, **NINE_DAYS).json()  # page 1: nothing before it, the top
    third = get(api, per_page=1000, page=3, **NINE_DAYS).json()
    assert empty["records"] == third["records"] == [] and empty["search_token"] and third["search_token"]
    api.clear_faults()
    resumed = get(api, per_page=10000, search_token=empty["search_token"], **NINE_DAYS).json()
    assert resumed["records"] == normal["records"]
    after_two_pages = get(api, per_page=1000, search_token=third["search_token"], **NINE_DAYS).json()
    assert after_two_pages["records"] == normal["records"][2000:3000]


def test_edge_repeat_sends_the_edge_millisecond_again(make_stand_in: Any) -> None:
    server = make_stand_in(records_per_day=2511)  # window edge inside a shared millisecond
    server.set_faults(edge_repeat=True)
    collected, token = [], None
    while True:
        body = get(server, per_page=10000, **NINE_DAYS, **({"search_token": token} if token else {})).json()
        collected += body["records"]
        token = body["search_token"]
        if not token:
            break
    uuids = [r["uuid"] for r in collected]
    assert set(uuids) == server.truth(**NINE_DAYS)
    repeated = {u for u, count in Counter(uuids).items() if count > 1}
    edge = collected[9999]
    assert edge["uuid"] in repeated
    assert any(
        r["uuid"] in repeated and r["uuid"] != edge["uuid"] for r in collected[:10000]
    )  # group members
    assert {r["timestamp"] for r in collected if r["uuid"] in repeated} >= {edge["timestamp"]}


def test_requests_per_second_limit(api: StandIn) -> None:
    api.set_faults(rate_limit_rps=2)
    with requests.Session() as session:
        responses = [
            session.get(api.url + "/api/v2/cdr/teams", params={"key": api.api_key}, timeout=30)
            for _ in range(10)
        ]
    limited = [r for r in responses if r.status_code == 429]
    assert limited and all(r.headers["Retry-After"] == "1" for r in limited)
    assert any(r.status_code == 200 for r in responses)


def test_decisions_repeat_for_the_same_request_numbers(api: StandIn) -> None:
    api.set_faults(rate_429=0.3, rate_5xx=0.1, rate_truncate=0.2)
    first = [get(api, "/api/v2/cdr/teams").status_code for _ in range(25)]
    api.reset_stats()
    second = [get(api, "/api/v2/cdr/teams").status_code for _ in range(25)]
    assert first == second and len(set(first)) > 1


def test_faults_leave_admin_routes_alone_and_apply_at_startup(make_stand_in: Any) -> None:
    server = make_stand_in(faults={"rate_429": 1.0, "latency_ms": 1})
    assert server.faults_config()["latency_ms"] == 1.0
    assert get(server, **DAY).status_code == 429
    assert requests.get(server.url + "/_admin/health", timeout=30).json() == {"ok": True}


def test_fault_config_parsing() -> None:
    config = FaultConfig.parse("rate_429=0.05, rate_5xx=0.02,edge_repeat=1,rate_limit_rps=5")
    assert (config.rate_429, config.rate_5xx, config.edge_repeat, config.rate_limit_rps) == (
        0.05,
        0.02,
        True,
        5,
    )
    for spec in ("rate_429", "nope=1", "rate_429=2", "edge_repeat=maybe"):
        with pytest.raises(ValueError):
            FaultConfig.parse(spec)
