"""OpenLineage of a landing, as the OpenLineage provider emits it from a real dag.test() run.

The provider's listener is registered with its own file transport (openlineage-python's
``FileTransport``), so the events checked are the ones it would send.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk import DAG, Asset

from airflow_provider_cdr.convert.schema import CDR_SCHEMA
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from airflow_provider_cdr.tasks.lineage import operator_lineage, table_dataset
from airflow_provider_cdr.tasks.output import asset_uri
from tests.airflow_compat import asset_events_have_partition_keys, listener_manager
from tests.airflow_db import ensure_airflow_db, register_dag
from tests.operators.test_cdr_to_parquet import set_connection

DAY = "2024-03-05"


def _clear_openlineage_caches() -> None:
    from airflow.providers.openlineage import conf

    for value in vars(conf).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


@pytest.fixture
def ol_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The OpenLineage listener on, writing every event it emits to a file (one JSON a line)."""
    from airflow.providers.openlineage.plugins.listener import OpenLineageListener

    events = tmp_path / "openlineage.jsonl"
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "False")
    monkeypatch.setenv(
        "AIRFLOW__OPENLINEAGE__TRANSPORT",
        json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
    )
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD", "False")
    _clear_openlineage_caches()
    manager = listener_manager()
    # The provider's plugin registers its listener only if OpenLineage was on when plugins loaded.
    registered = any(isinstance(p, OpenLineageListener) for p in manager.pm.get_plugins())
    listener = None if registered else OpenLineageListener()
    if listener is not None:
        manager.add_listener(listener)
    yield events
    if listener is not None:
        manager.pm.unregister(listener)
    _clear_openlineage_caches()


def _task_event(events: Path, event_type: str) -> dict[str, Any]:
    found = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    matching = [e for e in found if e["eventType"] == event_type and e["job"]["name"].endswith(".land")]
    assert len(matching) == 1, [(e["eventType"], e["job"]["name"]) for e in found]
    return matching[0]


def test_complete_event_joins_the_asset_and_names_the_day(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ol_events: Path
) -> None:
    ensure_airflow_db()
    set_connection(monkeypatch, api)
    out = tmp_path / "cdr"
    with DAG("cdr_lineage", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        operator = CDRToParquetOperator(
            task_id="land", output_path=str(out), day=DAY, asset_partition_key=True
        )
    register_dag(dag)
    run = dag.test(logical_date=datetime.fromisoformat(DAY).replace(tzinfo=timezone.utc))
    assert run.state == "success"

    event = _task_event(ol_events, "COMPLETE")
    (outlet,) = operator.outlets
    assert isinstance(outlet, Asset) and outlet.uri == asset_uri(str(out))
    joined = table_dataset(outlet.uri)
    (output,) = event["outputs"]
    assert (output["namespace"], output["name"]) == (joined.namespace, joined.name) == ("file", str(out))

    fields = output["facets"]["schema"]["fields"]
    assert [(f["name"], f["type"]) for f in fields] == [(f.name, str(f.type)) for f in CDR_SCHEMA]
    rows = pq.read_table(out / f"date={DAY}").num_rows
    stats = output["outputFacets"]["outputStatistics"]
    assert stats["rowCount"] == rows > 0
    assert stats["fileCount"] >= 1 and stats["size"] > 0
    (partition,) = output["outputFacets"]["subset"]["outputCondition"]["partitions"]
    assert partition == {"dimensions": {"date": DAY}, "identifier": DAY}

    (source,) = event["inputs"]
    assert source["name"] == "/api/v2/cdr" and source["namespace"].startswith("http://127.0.0.1")
    assert api.api_key not in json.dumps(event)
    # The day as the event's partition key where Airflow has partitioned Assets (3.2+).
    key = DAY if asset_events_have_partition_keys() else None
    assert asset_events(outlet.uri) == [(key, {"day": DAY, "rows": rows, "files": 1, "bytes": stats["size"]})]


def asset_events(uri: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(partition_key, extra) of every event recorded on the Asset at `uri`."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri)
        )
        return [(getattr(e, "partition_key", None), e.extra) for e in session.scalars(query)]


def test_object_storage_table_is_named_as_the_provider_converts_it() -> None:
    lineage = operator_lineage(
        "https://user:pw@cdr.example.com/base?key=secret",
        "s3://lake/cdr",
        {"day": DAY, "rows": 5, "files": 1, "bytes": 100},
    )
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == ("s3://lake", "cdr")
    assert (output.namespace, output.name) == (table_dataset("s3://lake/cdr").namespace, "cdr")
    assert output.outputFacets["outputStatistics"].rowCount == 5
    assert output.outputFacets["subset"].outputCondition.partitions[0].dimensions == {"date": DAY}
    (source,) = lineage.inputs
    assert (source.namespace, source.name) == ("https://cdr.example.com", "/api/v2/cdr")
    assert "secret" not in repr(lineage) and "pw" not in repr(lineage.inputs)


def test_scheme_without_a_converter_mirrors_the_providers() -> None:
    dataset = table_dataset("gs://lake/cdr")
    assert (dataset.namespace, dataset.name) == ("gs://lake", "cdr")


def test_nothing_before_a_run() -> None:
    assert operator_lineage(None, None) is None
