"""One initialised Airflow metadata DB (SQLite, in the test session's temp AIRFLOW_HOME)."""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_ready = False


def ensure_airflow_db() -> None:
    """Create the metadata tables once per test session; dag.test() needs them."""
    global _ready
    with _lock:
        if _ready:
            return
        from airflow.utils import db

        db.initdb()
        _ready = True


def register_dag(dag: Any) -> Any:
    """Serialise a DAG into the metadata DB, as the dag-processor would, under the default bundle.

    Airflow 3.3's dag.test() only runs DAGs that a bundle has serialised, and a DAG defined in a
    test module belongs to no bundle; Airflow 3.1's dag.test() stores a DAG only while it has no
    version yet, so a DAG parsed again with other settings must be stored again.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    ensure_airflow_db()
    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )
    return dag
