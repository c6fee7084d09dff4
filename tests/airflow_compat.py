"""Airflow internals the tests reach into that moved between the releases the provider supports.

The tests run on the oldest release the pyproject allows (``make test-oldest``) and on the newest
(``make test``); what they read of Airflow beyond its public API (DAG bags, serialization, the
listener manager, the task runtime's providers manager) is imported here, from where each release
keeps it, so that the tests themselves say the same on every release.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import airflow
from packaging.version import Version

AIRFLOW_VERSION = Version(Version(airflow.__version__).base_version)
READS_PROVIDER_FORM_METADATA = AIRFLOW_VERSION.release >= (3, 2)
"""From 3.2 the connection form comes from the provider info (``conn-fields``, ``ui-field-behaviour``);
before, from the hook's ``get_connection_form_widgets`` / ``get_ui_field_behaviour``."""


def dag_bag(folder: Path) -> Any:
    """``folder`` parsed as the dag processor parses a bundle: its root importable, no examples."""
    try:
        from airflow.dag_processing.dagbag import BundleDagBag
    except ImportError:  # Airflow 3.1: a plain DagBag; the dag processor puts the bundle on sys.path
        from airflow.models.dagbag import DagBag

        if str(folder) not in sys.path:
            sys.path.append(str(folder))
        return DagBag(dag_folder=str(folder), bundle_path=folder, include_examples=False)
    return BundleDagBag(dag_folder=str(folder), bundle_path=folder, bundle_name="dags-folder")


def serialized_round_trip(dag: Any) -> Any:
    """The DAG as the scheduler reads it back from what the dag processor stored."""
    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization
    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))


def asset_triggered_timetable() -> type:
    """The class of the timetable of a DAG scheduled on Assets."""
    try:
        from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable
    except ImportError:  # Airflow 3.1: the core's timetable
        from airflow.timetables.simple import AssetTriggeredTimetable
    return AssetTriggeredTimetable


def listener_manager() -> Any:
    try:
        from airflow.sdk.listener import get_listener_manager
    except ImportError:  # Airflow 3.1
        from airflow.listeners.listener import get_listener_manager
    return get_listener_manager()


def task_runtime_hooks() -> Any:
    """Connection type -> HookInfo, as a task (and ``Connection.test_connection``) finds its hook."""
    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:  # Airflow 3.1: the one providers manager
        from airflow.providers_manager import ProvidersManager

        return ProvidersManager().hooks
    return ProvidersManagerTaskRuntime().hooks


def asset_events_have_partition_keys() -> bool:
    """Whether Asset events carry a ``partition_key`` (partitioned Assets: Airflow 3.2+)."""
    from airflow.models.asset import AssetEvent

    return hasattr(AssetEvent, "partition_key")


def import_string(path: str) -> Any:
    try:
        from airflow.sdk._shared.module_loading import import_string
    except ImportError:  # Airflow 3.1
        from airflow.utils.module_loading import import_string
    return import_string(path)


def serde() -> tuple[Any, Any]:
    """(serialize, deserialize) of what the scheduler stores for a trigger and the triggerer reads."""
    try:
        from airflow.sdk.serde import deserialize, serialize
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serde import deserialize, serialize
    return serialize, deserialize
