"""The `cdr-fake-api` command line: arguments, the ready line, clean shutdown on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import requests

from airflow_provider_cdr.fake_api.cli import build_parser, build_server
from airflow_provider_cdr.fake_api.server import StandIn

ROOT = Path(__file__).resolve().parents[2]


def test_arguments_map_onto_the_server() -> None:
    args = build_parser().parse_args(
        [
            "--port", "0", "--seed", "3", "--records-per-day", "10", "--timezone", "Asia/Tokyo",
            "--day-profile", "2024-01-06=empty", "--day-profile", "2024-01-05=sms_only",
            "--day-profile", "2024-01-04=12", "--faults", "rate_429=0.05,edge_repeat=1",
            "--latency-ms", "7", "--latency-per-record-us", "2", "--now", "2024-02-01T00:00:00",
            "--ingest-lag-s", "60", "--api-key", "k",
        ]
    )  # fmt: skip
    server = build_server(args)
    try:
        app = server.app
        assert app.api_key == "k" and app.dataset.seed == 3 and app.dataset.timezone == "Asia/Tokyo"
        assert app.dataset.day_profiles == {
            date(2024, 1, 6): "empty",
            date(2024, 1, 5): "sms_only",
            date(2024, 1, 4): 12,
        }
        config = app.faults.config
        assert (config.rate_429, config.edge_repeat, config.latency_ms, config.latency_per_record_us) == (
            0.05,
            True,
            7.0,
            2.0,
        )
        assert app.dataset.now == datetime(2024, 2, 1, tzinfo=timezone.utc) and app.dataset.ingest_lag_s == 60
        assert server.url.startswith("http://127.0.0.1:")
    finally:
        server.server_close()


@pytest.mark.parametrize(
    "argv",
    [["--faults", "rate_429=7"], ["--day-profile", "2024-01-06"], ["--day-profile", "2024-01-06=weekend"]],
)
def test_bad_arguments_exit_with_status_2(argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_cdr.fake_api.cli", "--port", "0", *argv],
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2 and done.stderr


def test_module_prints_one_ready_line_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_cdr.fake_api.cli", "--port", "0", "--records-per-day", "10"],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        match = re.fullmatch(r"CDR stand-in listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match
        assert requests.get(match.group(1) + "/_admin/health", timeout=10).json() == {"ok": True}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == b""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_stand_in_helper_lifecycle() -> None:
    with StandIn(records_per_day=5, api_key="secret", now="2024-01-02T00:00:00Z") as server:
        assert server.running and server.api_key == "secret"
        params = {"key": "secret", "start_date": "2024-01-01", "end_date": "2024-01-01"}
        response = requests.get(server.url + "/api/v2/cdr", params=params, timeout=10)
        assert [r["uuid"] for r in response.json()["records"]] == [
            r["uuid"] for r in server.dataset.records_for_day(date(2024, 1, 1))
        ]
    assert not server.running
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/_admin/health", timeout=5)
