"""What landing a day leaves in its process: no pandas, Arrow's allocator as it was before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

LAND_A_DAY = """
import json, sys
import pyarrow as pa
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator

before = pa.default_memory_pool().backend_name
result = CDRToParquetOperator(task_id="land", output_path=sys.argv[1], day="2024-03-05").execute({})
print(json.dumps({"rows": result["rows"], "pandas": "pandas" in sys.modules,
                  "pool_before": before, "pool_after": pa.default_memory_pool().backend_name}))
"""


@pytest.mark.parametrize("drift", [0.0, 0.05], ids=["regular pages", "drifted pages"])
def test_landing_a_day_imports_no_pandas_and_restores_arrows_allocator(
    drift: float, api: Any, make_stand_in: Callable[..., Any], tmp_path: Path
) -> None:
    """Regular pages take the Arrow path; drifted ones (numbers as strings, unknown fields, missing
    fields) the record-by-record one: neither may import pandas."""
    if drift:
        api = make_stand_in(type_drift=drift)
    connection = {
        "conn_type": "cdr",
        "host": api.url,
        "password": api.api_key,
        "extra": {"timezone": api.timezone},
    }
    env = {**os.environ, "AIRFLOW_CONN_CDR_DEFAULT": json.dumps(connection)}
    done = subprocess.run(
        [sys.executable, "-c", LAND_A_DAY, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["rows"] == len(api.truth(start_date="2024-03-05", end_date="2024-03-05")) > 0
    manifest = json.loads((tmp_path / "date=2024-03-05" / "_manifest.json").read_text())
    assert (manifest["extraction"]["coerced_values"] > 0) == bool(
        drift
    )  # the drifted day took the drift path
    assert facts["pandas"] is False, "the operator's path imported pandas (~30 MiB)"
    assert facts["pool_after"] == facts["pool_before"], "Arrow's default allocator was not put back"
