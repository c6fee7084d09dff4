"""A task process to be killed: lands one day with dag.test(), pausing at a named point first.

Run as ``python kill_child.py OUT DAY DAG_ID POINT MARKER``. At POINT the process writes MARKER
and blocks forever, so the test can SIGKILL it exactly there without sleeps. The pause is a
wrapper installed here, in the child only: production code has no test hooks.
"""

from __future__ import annotations

import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_provider_cdr.hooks.cdr import CDRHook
from airflow_provider_cdr.landing import local_store
from airflow_provider_cdr.landing.local_store import LocalStore


def pause_forever(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    threading.Event().wait()


def install(point: str, marker: str) -> None:
    """Wrap the method the point names so that the process pauses when it gets there."""
    if point == "mid_download":
        original_get = CDRHook._get
        calls = {"n": 0}
        lock = threading.Lock()

        def get(self: CDRHook, *args: Any, **kwargs: Any) -> Any:
            with lock:
                calls["n"] += 1
                seen = calls["n"]
            if seen >= 3:  # two pages arrived (and were written); the rest of the day is in flight
                pause_forever(marker)
            return original_get(self, *args, **kwargs)

        CDRHook._get = get  # type: ignore[method-assign]
        return
    if point == "between_renames":
        # The two-rename swap of platforms without renameat2: stop with the old version set aside.
        local_store._exchange = lambda first, second: False
        original_rename = os.rename

        def rename(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
            original_rename(source, target, *args, **kwargs)
            if ".previous-" in str(target):
                pause_forever(marker)

        os.rename = rename  # type: ignore[assignment]
        return
    method = {"files_before_manifest": "commit", "before_swap": "_swap", "after_swap": "clean_up"}[point]
    original = getattr(LocalStore, method)

    def paused(self: LocalStore, *args: Any, **kwargs: Any) -> Any:
        pause_forever(marker)
        return original(self, *args, **kwargs)

    setattr(LocalStore, method, paused)


def main(out: str, day: str, dag_id: str, point: str, marker: str) -> None:
    from airflow.sdk import DAG

    from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
    from tests import airflow_db

    install(point, marker)
    airflow_db._ready = True  # the parent test initialised the shared metadata DB
    with DAG(dag_id, schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        CDRToParquetOperator(
            task_id="land",
            output_path=out,
            day=day,
            slices=2,
            concurrency=2,
            per_page=200,
            row_group_rows=200,
        )
    airflow_db.register_dag(dag)
    dag.test(logical_date=datetime.now(timezone.utc))
    sys.exit("the run ended without reaching its pause point")


if __name__ == "__main__":
    main(*sys.argv[1:6])
