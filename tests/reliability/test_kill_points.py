"""SIGKILL of the task process at each point of a day's rewrite: the previous version survives.

Each test lands a day, starts a second run of that day in a child process (real dag.test()),
kills it with SIGKILL where kill_child.py pauses it, then checks what a reader sees, and that a
rerun lands exactly the day again and leaves nothing behind. (Mid-write: see
tests/operators/test_cdr_to_parquet.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk import DAG

from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from tests.airflow_db import ensure_airflow_db, register_dag
from tests.reliability.reliability_support import point_connection, visible_rows

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("kill_child.py")
DAY = "2024-03-09"


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


def land(out: Path, dag_id: str, day: str = DAY) -> Any:
    with DAG(dag_id, schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        CDRToParquetOperator(task_id="land", output_path=str(out), day=day, slices=2, per_page=500)
    register_dag(dag)
    return dag.test(logical_date=datetime.now(timezone.utc))


def committed(out: Path, day: str = DAY) -> tuple[set[str], Any]:
    """File names and content of the day as a reader finds it at `date=DAY`."""
    partition = out / f"date={day}"
    names = {path.name for path in partition.iterdir()}
    return names, pq.read_table(partition).sort_by("uuid")


def kill_at(point: str, out: Path, tmp_path: Path, dag_id: str) -> None:
    """Start the child, wait for its marker, SIGKILL it there."""
    marker = tmp_path / f"{point}.marker"
    from airflow import settings

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # The metadata DB this process uses, whatever other tests did to the environment meanwhile.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.SQL_ALCHEMY_CONN,
    }
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(out), DAY, dag_id, point, str(marker)], env=env, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, f"the child ended (rc {child.returncode}) before reaching {point}"
            assert time.monotonic() < deadline, f"the child never reached {point}"
            time.sleep(0.05)  # polling for the marker, not waiting for time to pass
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL


def assert_rerun_lands_the_exact_day(out: Path, api: Any, dag_id: str) -> None:
    run = land(out, dag_id)
    assert run.state == "success"
    names, table = committed(out)
    uuids = table.column("uuid").to_pylist()
    assert len(uuids) == len(set(uuids))
    assert set(uuids) == api.truth(start_date=DAY, end_date=DAY)
    manifest = json.loads((out / f"date={DAY}" / "_manifest.json").read_text())
    assert {entry["name"] for entry in manifest["files"]} | {"_manifest.json"} == names
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")], "leftovers removed"
    assert visible_rows(out) == table.num_rows


@pytest.mark.parametrize("point", ["mid_download", "files_before_manifest", "before_swap"])
def test_a_kill_before_the_swap_leaves_the_previous_version_where_readers_look(
    point: str, cdr_conn: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert land(out, f"kill_{point}_first").state == "success"
    before_names, before = committed(out)

    kill_at(point, out, tmp_path, f"kill_{point}_child")

    names, table = committed(out)
    assert names == before_names and table.equals(before), "the previous version is untouched"
    assert visible_rows(out) == before.num_rows, "no file of the killed run is visible to readers"
    leftovers = [path for path in out.iterdir() if path.name.startswith(".")]
    assert leftovers, "the killed run's staging is there (hidden), for the next run to remove"
    assert_rerun_lands_the_exact_day(out, cdr_conn, f"kill_{point}_rerun")


def test_a_kill_right_after_the_swap_leaves_the_new_complete_version(cdr_conn: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert land(out, "kill_after_swap_first").state == "success"
    before_names, before = committed(out)

    kill_at("after_swap", out, tmp_path, "kill_after_swap_child")

    names, table = committed(out)
    assert names.isdisjoint(before_names - {"_manifest.json"}), "the new version is the one in place"
    assert table.equals(before), "and it is the complete day (the same records)"
    assert visible_rows(out) == before.num_rows, "the old version, now hidden, is not double counted"
    assert_rerun_lands_the_exact_day(out, cdr_conn, "kill_after_swap_rerun")


def test_a_kill_between_the_two_renames_of_the_fallback_swap_is_repaired(
    cdr_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without renameat2 the swap is two renames; a kill between them leaves the old version aside."""
    out = tmp_path / "out"
    assert land(out, "kill_renames_first").state == "success"
    before_names, before = committed(out)

    kill_at("between_renames", out, tmp_path, "kill_renames_child")

    [aside] = out.glob(f".cdr-staging/.date={DAY}.previous-*")
    assert {path.name for path in aside.iterdir()} == before_names
    assert pq.read_table(aside).sort_by("uuid").equals(before), "the previous version is intact, set aside"
    # Even a rerun that fails at its first request puts the previous version back.
    monkeypatch.setenv(
        "AIRFLOW_CONN_CDR_DEFAULT",
        json.dumps(
            {
                "conn_type": "cdr",
                "host": "http://127.0.0.1:9",
                "password": "kill-test-key",
                "extra": {"max_retries": 0},
            }
        ),
    )
    assert land(out, "kill_renames_failed_rerun").state == "failed"
    names, table = committed(out)
    assert names == before_names and table.equals(before)
    assert visible_rows(out) == before.num_rows
    point_connection(monkeypatch, cdr_conn)
    assert_rerun_lands_the_exact_day(out, cdr_conn, "kill_renames_rerun")
