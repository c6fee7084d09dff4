"""The core (api, convert, days, landing) works with Airflow absent: the boundary `make lint` draws, run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORE_WITHOUT_AIRFLOW = textwrap.dedent(
    """
    import importlib, pkgutil, sys, tempfile
    from datetime import date
    from zoneinfo import ZoneInfo

    class NoAirflow:
        def find_spec(self, name, path=None, target=None):
            if name == "airflow" or name.startswith("airflow."):
                raise ImportError(f"{name} is blocked: the core must not import Airflow")
            return None

    sys.meta_path.insert(0, NoAirflow())
    import airflow_provider_cdr
    for package in ("api", "convert", "days", "landing"):
        module = importlib.import_module(f"airflow_provider_cdr.{package}")
        for info in pkgutil.iter_modules(module.__path__):
            importlib.import_module(f"airflow_provider_cdr.{package}.{info.name}")

    from airflow_provider_cdr.api.query import build_query
    from airflow_provider_cdr.convert.formats import CDRBatches
    from airflow_provider_cdr.days.day_window import DayWindow
    from airflow_provider_cdr.landing.writer import DayPartitionWriter, read_manifest

    body = b'{"records": [{"uuid": "00000000-0000-4000-8000-000000000001", "timestamp": "2024-03-01T10:00:00Z"}]}'
    page = CDRBatches().read(body)
    window = DayWindow(date(2024, 3, 1), ZoneInfo("UTC"))
    query = build_query({"type": "inbound"}, "UTC").with_window(**window.slices(1)[0])
    with tempfile.TemporaryDirectory() as base:
        with DayPartitionWriter(base, window.day) as writer:
            writer.write_batch(page.payload)
            writer.commit({"query": query.as_params()})
        manifest = read_manifest(f"{base}/date=2024-03-01")
    assert manifest["rows"] == 1, manifest
    assert not [name for name in sys.modules if name == "airflow" or name.startswith("airflow.")]
    print("core ok")
    """
)


def test_the_core_reads_converts_and_lands_a_page_with_airflow_unimportable() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CORE_WITHOUT_AIRFLOW], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("core ok")
