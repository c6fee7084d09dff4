"""`rate_limit_redis`: one request rate and one Retry-After pause for every process, in a real Redis.

The gate is tested as several processes use it (gate objects of their own on one Redis), then
end to end: task processes landing days at once against the stand-in, which counts what it
receives in each second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_provider_cdr.api.errors import CDRConfigError
from airflow_provider_cdr.api.settings import CDRConnectionSettings
from airflow_provider_cdr.api.shared_ratelimit import RedisRequestGate
from tests.conftest import connection_json


def test_gates_of_several_processes_share_one_cap(redis_url: str) -> None:
    rate, users, each = 20, 4, 15
    gates = [RedisRequestGate(redis_url, "cap-test", rate) for _ in range(users)]  # one per "process"
    granted: list[float] = []
    lock = threading.Lock()

    def use(gate: RedisRequestGate) -> None:
        for _ in range(each):
            gate.wait()
            with lock:
                granted.append(time.monotonic())

    threads = [threading.Thread(target=use, args=(gate,)) for gate in gates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted.sort()
    busiest = max(sum(1 for t in granted if start <= t < start + 1.0) for start in granted)
    assert busiest <= rate, f"{busiest} requests in one second from gates capped at {rate} together"
    assert granted[-1] - granted[0] >= (users * each - rate) / rate * 0.9, "the cap held them back"


def test_a_pause_one_process_meets_holds_every_process(redis_url: str) -> None:
    met_429 = RedisRequestGate(redis_url, "pause-test", None)
    other = RedisRequestGate(redis_url, "pause-test", None)
    elsewhere = RedisRequestGate(redis_url, "another-account", None)
    other.wait()  # no cap, no pause: at once
    met_429.pause(0.6)
    started = time.monotonic()
    elsewhere.wait()
    assert time.monotonic() - started < 0.3, "another account is not paused"
    other.wait()
    assert time.monotonic() - started >= 0.5, "the other process waited out the pause"


def test_a_stop_ends_the_wait_at_once(redis_url: str) -> None:
    gate = RedisRequestGate(redis_url, "stop-test", None)
    gate.pause(30)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    gate.wait(stop)
    assert time.monotonic() - started < 5


def test_a_bad_redis_url_is_refused_without_repeating_it() -> None:
    with pytest.raises(CDRConfigError) as refused:
        CDRConnectionSettings.from_extras({"rate_limit_redis": "http://:s3cret@redis:6379"})
    assert "redis://" in str(refused.value) and "s3cret" not in str(refused.value)


TASK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
    out, day, ready, go = sys.argv[1:5]
    op = CDRToParquetOperator(task_id="t", output_path=out, day=day, per_page=100, concurrency=4)
    Path(ready).write_text("ready")
    while not Path(go).exists():  # every task starts together
        time.sleep(0.01)
    op.execute({})
    """
)


def land_at_once(tmp_path: Path, days: list[str], env: dict[str, str]) -> None:
    """One task process per day, started together (each waits for a go file once imported)."""
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{day}" for day in days]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", TASK, str(tmp_path / "out"), day, str(mark), str(go)], env=env
        )
        for day, mark in zip(days, ready)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(mark.exists() for mark in ready):
            assert all(worker.poll() is None for worker in workers), "a task process died while starting"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        go.write_text("go")
        for worker in workers:
            assert worker.wait(timeout=300) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


@pytest.mark.parametrize("shared", [True, False], ids=["through-redis", "per-process"])
def test_task_processes_keep_one_rate_together(
    api: Any, redis_url: str, tmp_path: Path, shared: bool
) -> None:
    rate = 12
    extra: dict[str, Any] = {"rate_limit": rate, "concurrency": 4}
    if shared:
        extra["rate_limit_redis"] = redis_url
    env = {**os.environ, "AIRFLOW_CONN_CDR_DEFAULT": connection_json(api, **extra)}
    land_at_once(tmp_path, ["2024-03-05", "2024-03-06", "2024-03-07"], env)
    stats = api.stats()
    assert stats["requests"] >= 3 * 25
    if shared:
        assert stats["max_per_second"] <= rate, json.dumps(stats["per_second"])
    else:  # each process keeps its own cap: together they exceed it (what the shared cap is for)
        assert stats["max_per_second"] > rate, json.dumps(stats["per_second"])


@pytest.mark.parametrize("shared", [True, False], ids=["through-redis", "per-process"])
def test_429s_with_and_without_retry_after_land_exactly_and_the_pause_holds_every_process(
    api: Any, redis_url: str, tmp_path: Path, shared: bool
) -> None:
    """NOTES.md: a 429 may or may not carry Retry-After; this server answers both ways. Task
    processes sharing the gate land exactly, and none sends while a Retry-After pause lasts."""
    extra: dict[str, Any] = (
        {"concurrency": 4, "rate_limit_redis": redis_url} if shared else {"concurrency": 4}
    )
    env = {**os.environ, "AIRFLOW_CONN_CDR_DEFAULT": connection_json(api, **extra)}
    days = ["2024-03-05", "2024-03-06"]
    api.set_faults(rate_429=0.05, rate_429_retry_after=0.05, retry_after_s=1)
    land_at_once(tmp_path, days, env)
    for day in days:
        landed = pq.read_table(tmp_path / "out" / f"date={day}", columns=["uuid"]).column("uuid").to_pylist()
        assert sorted(landed) == sorted(api.truth(start_date=day, end_date=day))
    timeline = api.timeline()
    assert api.stats()["by_status"]["429"] > len(timeline["retry_afters"]) > 0, "both readings fired"
    # Requests that arrived while a pause was on, leaving time for the 429 to reach its process
    # and for a request already past the gate to arrive.
    during_pauses = [
        arrival
        for arrived, seconds in timeline["retry_afters"]
        for arrival in timeline["arrivals"]
        if arrived + 0.3 < arrival < arrived + seconds - 0.05
    ]
    if shared:
        assert not during_pauses, during_pauses
    else:  # each process pauses only itself: the other goes on (what sharing the pause is for)
        assert during_pauses
