"""Two real Airflow runs of CDRToParquetOperator landing the same day at once (a zombie task and its
retry, a cleared run, a backfill redo over the daily run), on local disk and on S3 (moto).

The first run is a child process (holding_run_child.py) paused while its writer holds the day; the
second runs here meanwhile. The second must fail, saying another writer holds the day, and change
nothing; the first must then finish and leave the day exact (every record of the stand-in's ground
truth once), with nothing beside it and the manifest's history naming only the runs that committed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_cdr.landing.writer import read_manifest
from tests.airflow_db import ensure_airflow_db
from tests.reliability.reliability_support import land, task_error
from tests.s3_local import aws_connection_json, create_bucket

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("holding_run_child.py")
DAY = "2024-03-09"
CONN_ID = "aws_two_runs"


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


@pytest.fixture
def output(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, str | None]]:
    """Where the day lands: a local directory, or s3://cdr-two-runs/<test> through `aws_two_runs`."""
    if request.param == "local":
        yield tmp_path / "out", None
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    create_bucket(endpoint, "cdr-two-runs")
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", aws_connection_json(endpoint))
    yield f"s3://cdr-two-runs/{tmp_path.name}", CONN_ID


def start_holding_run(output_path: str, conn_id: str | None, tmp_path: Path) -> subprocess.Popen[str]:
    from airflow import settings

    marker = tmp_path / "holding.marker"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": str(settings.SQL_ALCHEMY_CONN),
    }
    arguments = [
        output_path,
        DAY,
        f"two_runs_holder_{tmp_path.name}",
        str(marker),
        *([conn_id] if conn_id else []),
    ]
    child = subprocess.Popen(
        [sys.executable, str(CHILD), *arguments], stdin=subprocess.PIPE, env=env, cwd=ROOT, text=True
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, f"the first run ended (rc {child.returncode}) before holding the day"
        assert time.monotonic() < deadline, "the first run never came to hold the day"
        time.sleep(0.05)  # polling for the marker, not waiting for time to pass
    return child


def read_day(output_path: Any, conn_id: str | None) -> tuple[dict[str, Any], set[str], list[str]]:
    """The manifest, the names in the partition, and the uuids of the files the manifest lists."""
    if conn_id is None:
        partition: Any = Path(output_path) / f"date={DAY}"
        names = {path.name for path in partition.iterdir()}
        filesystem, prefix = None, str(partition)
    else:
        partition = ObjectStoragePath(f"{output_path}/date={DAY}", conn_id=conn_id)
        partition.fs.invalidate_cache()
        names = {path.name for path in partition.iterdir()}
        filesystem, prefix = partition.fs, partition.path
    manifest = read_manifest(partition)
    files = [f"{prefix}/{entry['name']}" for entry in manifest["files"]]
    uuids = pq.read_table(files, filesystem=filesystem, columns=["uuid"]).column("uuid").to_pylist()
    return manifest, names, uuids


@pytest.mark.parametrize("output", ["local", "s3"], indirect=True)
def test_a_second_run_of_a_day_being_landed_fails_and_changes_nothing(
    output: tuple[Any, str | None], cdr_conn: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output_path, conn_id = output
    options = {"slices": 2, "per_page": 500, **({"output_conn_id": conn_id} if conn_id else {})}
    assert land(output_path, DAY, "two_runs_first", **options).state == "success"
    first, first_names, _ = read_day(output_path, conn_id)

    holder = start_holding_run(str(output_path), conn_id, tmp_path)
    try:
        capsys.readouterr()
        second = land(output_path, DAY, "two_runs_second", **options)
        assert second.state == "failed"
        error = task_error(capsys.readouterr())
        assert "PartitionBusyError: Another writer is writing" in error and f"date={DAY}" in error, error
        during, during_names, _ = read_day(output_path, conn_id)
        assert during == first, "the refused run committed nothing"
        assert first_names <= during_names, "and deleted nothing"

        holder.communicate("go\n", timeout=300)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert holder.returncode == 0, "the run that held the day finished and succeeded"

    manifest, names, uuids = read_day(output_path, conn_id)
    assert len(uuids) == len(set(uuids)) and set(uuids) == cdr_conn.truth(start_date=DAY, end_date=DAY)
    assert names == {entry["name"] for entry in manifest["files"]} | {"_manifest.json"}
    assert [entry["run_id"] for entry in manifest["versions"]] == [first["run_id"], manifest["run_id"]]
    if conn_id is None:
        assert [path.name for path in Path(output_path).iterdir()] == [f"date={DAY}"], (
            "no staging or lock left"
        )
