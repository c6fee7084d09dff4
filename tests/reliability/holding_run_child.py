"""A real Airflow run (dag.test()) of CDRToParquetOperator that pauses while it holds the day.

Run as ``python holding_run_child.py OUTPUT_PATH DAY DAG_ID MARKER [OUTPUT_CONN_ID]``. When the
operator hands its writer the first batch (the writer then holds the day's lock or lease), the
process writes MARKER and blocks reading stdin; a line lets it finish. Exit 0 when the run
succeeded. The pause is a wrapper installed here, in the child only: production code has no test
hooks.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_provider_cdr.landing.writer import DayPartitionWriter


def pause_at_first_batch(marker: str) -> None:
    original = DayPartitionWriter.write_batch
    paused: list[bool] = []

    def write_batch(self: DayPartitionWriter, batch: Any) -> None:
        if not paused:
            paused.append(True)
            Path(marker).write_text("holding")
            sys.stdin.readline()
        original(self, batch)

    DayPartitionWriter.write_batch = write_batch  # type: ignore[method-assign]


def main(output_path: str, day: str, dag_id: str, marker: str, conn_id: str | None = None) -> int:
    from airflow.sdk import DAG

    from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
    from tests import airflow_db

    pause_at_first_batch(marker)
    airflow_db._ready = True  # the parent test initialised the shared metadata DB
    with DAG(dag_id, schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        CDRToParquetOperator(
            task_id="land", output_path=output_path, output_conn_id=conn_id, day=day, slices=2, per_page=500
        )
    airflow_db.register_dag(dag)
    run = dag.test(logical_date=datetime.now(timezone.utc))
    return 0 if run.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
