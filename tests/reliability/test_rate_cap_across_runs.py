"""The connection's rate cap holds across extractions that follow each other in one process.

Each extraction used to start with a fresh gate, so the next day's first requests (dag.test() runs
mapped tasks back to back) came on top of the previous day's last second: 14 requests in a second
against a cap of 10 in the load run. Found by tests/reliability/test_load_backfill_range.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_cdr.api.ratelimit import RequestGate, shared_gate
from airflow_provider_cdr.hooks.cdr import CDRHook
from tests.reliability.reliability_support import point_connection


def test_one_gate_per_api_and_rate() -> None:
    gate = shared_gate("https://a.example", 5)
    assert isinstance(gate, RequestGate) and gate.rate == 5
    assert shared_gate("https://a.example", 5) is gate
    assert shared_gate("https://a.example", 6) is not gate
    assert shared_gate("https://b.example", 5) is not gate


def test_back_to_back_extractions_stay_under_the_cap(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    point_connection(monkeypatch, api, rate_limit=4, concurrency=4)
    for day in ("2024-03-05", "2024-03-06", "2024-03-07"):
        hook = CDRHook()  # a new hook per day, as each task instance makes its own
        records = list(hook.iter_records(per_page=800, start_date=day, end_date=day))
        assert {r["uuid"] for r in records} == api.truth(start_date=day, end_date=day)
    stats = api.stats()
    assert stats["requests"] >= 12
    assert stats["max_per_second"] <= 4
