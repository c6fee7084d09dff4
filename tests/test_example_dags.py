"""The example DAGs import cleanly and are shaped as documented: timetables, catch-up, caps."""

from __future__ import annotations

import ast
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from airflow.sdk import Asset
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from airflow_provider_cdr.sensors.cdr import CDRRecordsSensor
from tests.airflow_compat import asset_triggered_timetable, dag_bag, serialized_round_trip

DAGS = Path(__file__).resolve().parents[1] / "dags_examples"
EXAMPLE_DAG_IDS = {"cdr_daily", "cdr_backfill_range", "cdr_lookups", "cdr_agent_summary"}
SETTINGS_VARIABLES = (
    "CDR_TIMEZONE",
    "CDR_START_DATE",
    "CDR_OUTPUT_PATH",
    "CDR_OUTPUT_CONN_ID",
    "CDR_CONN_ID",
    "CDR_POOL",
    "CDR_MAX_API_TASKS",
    "CDR_RETRIES",
    "CDR_RETRY_DELAY_S",
    "CDR_SETTLE_MINUTES",
    "CDR_GRACE_HOURS",
    "CDR_POKE_INTERVAL_S",
)


def parse(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """Parse dags_examples as the dag processor does, with these CDR_* settings."""
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return dag_bag(DAGS)


@pytest.fixture
def bag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    return parse(monkeypatch, CDR_START_DATE="2024-03-01", CDR_OUTPUT_PATH=str(tmp_path))


def test_every_example_imports_without_errors(bag: Any) -> None:
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXAMPLE_DAG_IDS


@pytest.mark.parametrize("dag_id", sorted(EXAMPLE_DAG_IDS))
def test_every_example_validates_and_serializes(bag: Any, dag_id: str) -> None:
    """What the dag processor stores and the scheduler reads back must survive serialization."""
    dag = bag.dags[dag_id]
    dag.validate()
    restored = serialized_round_trip(dag)
    assert set(restored.task_dict) == set(dag.task_dict)


def test_daily_dag_covers_one_account_local_day_per_run(bag: Any) -> None:
    dag = bag.dags["cdr_daily"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.serialize() == {"expression": "0 0 * * *", "timezone": "America/Sao_Paulo"}
    assert dag.catchup is True
    assert dag.start_date == datetime(2024, 3, 1, tzinfo=ZoneInfo("America/Sao_Paulo"))
    interval = dag.timetable.infer_manual_data_interval(
        run_after=datetime(2024, 3, 12, 15, tzinfo=ZoneInfo("America/Sao_Paulo"))
    )
    assert interval.end - interval.start == timedelta(days=1)
    assert interval.start.astimezone(ZoneInfo("America/Sao_Paulo")).hour == 0


def test_daily_dag_is_sensor_then_land_then_check(bag: Any, tmp_path: Path) -> None:
    dag = bag.dags["cdr_daily"]
    wait, land = dag.get_task("wait_for_day"), dag.get_task("land_day")
    assert isinstance(wait, CDRRecordsSensor) and wait.deferrable is True
    assert isinstance(land, CDRToParquetOperator)
    assert land.output_path == f"{tmp_path}/cdr"
    assert land.timezone == "America/Sao_Paulo"
    assert wait.downstream_task_ids == {"land_day"}
    assert land.downstream_task_ids == {"check_day", "reland_day"}
    assert dag.get_task("check_day").retries == 0  # rereading the same files gives the same verdict
    reland = dag.get_task("reland_day")
    assert reland.upstream_task_ids == {"land_day", "recent_days"}
    assert land.execution_timeout == reland.partial_kwargs["execution_timeout"] == timedelta(minutes=120)
    assert land.settle_period == reland.partial_kwargs["settle_period"] == timedelta(minutes=30)


def test_daily_dag_caps_its_load_on_the_api(bag: Any) -> None:
    dag = bag.dags["cdr_daily"]
    land = dag.get_task("land_day")
    assert dag.max_active_runs == 3
    assert dag.max_active_tasks == 4
    assert land.max_active_tis_per_dag == 2
    assert land.pool == "default_pool"
    assert land.retries == 3 and land.retry_delay == timedelta(minutes=5)
    assert land.retry_exponential_backoff


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bag = parse(
        monkeypatch,
        CDR_TIMEZONE="Europe/Berlin",
        CDR_START_DATE="-3",
        CDR_OUTPUT_PATH="s3://bucket/prefix",
        CDR_MAX_API_TASKS="5",
        CDR_POOL="cdr_api",
    )
    assert bag.import_errors == {}
    daily = bag.dags["cdr_daily"]
    assert daily.timetable.serialize()["timezone"] == "Europe/Berlin"
    today = datetime.now(ZoneInfo("Europe/Berlin")).date()
    assert daily.start_date.astimezone(ZoneInfo("Europe/Berlin")).date() == today - timedelta(days=3)
    land = daily.get_task("land_day")
    assert land.output_path == "s3://bucket/prefix/cdr"
    assert land.max_active_tis_per_dag == 5 and land.pool == "cdr_api"


def test_the_default_start_date_is_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow advises a static start_date: the default does not move with the clock."""
    daily = parse(monkeypatch).dags["cdr_daily"]
    assert daily.start_date == datetime(2024, 1, 1, tzinfo=ZoneInfo("America/Sao_Paulo"))


def test_sensor_waits_as_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grace period and poke interval are settings: the deployment tests wait seconds, not minutes."""
    bag = parse(monkeypatch, CDR_GRACE_HOURS="72", CDR_POKE_INTERVAL_S="3", CDR_SETTLE_MINUTES="0")
    sensor = bag.dags["cdr_daily"].get_task("wait_for_day")
    assert sensor.rule.grace_period == timedelta(hours=72)
    assert sensor.rule.settle_period == timedelta(0)
    assert sensor.poke_interval == 3
    default = parse(monkeypatch).dags["cdr_daily"].get_task("wait_for_day")
    assert default.rule.grace_period == timedelta(hours=6) and default.poke_interval == 300


def test_a_wrong_setting_is_an_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = parse(monkeypatch, CDR_TIMEZONE="Mars/Olympus_Mons")
    assert {Path(path).name for path in bag.import_errors} == {f"{dag_id}.py" for dag_id in EXAMPLE_DAG_IDS}
    assert all("Mars/Olympus_Mons" in error for error in bag.import_errors.values())


def test_range_dag_is_manual_with_date_params_and_a_mapped_capped_land(bag: Any) -> None:
    dag = bag.dags["cdr_backfill_range"]
    assert type(dag.timetable).__name__ == "NullTimetable"
    assert dag.max_active_runs == 1
    schemas = {name: param.schema for name, param in dag.params.items()}
    assert schemas["start_day"]["format"] == schemas["end_day"]["format"] == "date"
    assert schemas["redo_landed"]["type"] == "boolean"
    land = dag.get_task("land_day")
    assert land.is_mapped
    assert land.partial_kwargs["max_active_tis_per_dag"] == 2
    assert dag.get_task("days_to_land").downstream_task_ids == {"land_day"}


def test_lookups_dag_snapshots_the_six_lists_daily(bag: Any) -> None:
    dag = bag.dags["cdr_lookups"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.catchup is False
    snapshot = dag.get_task("snapshot")
    assert snapshot.is_mapped
    assert snapshot._get_specified_expand_input().value["name"] == [
        "agents",
        "queues",
        "teams",
        "wrapup_codes",
        "campaigns",
        "deleted_agents",
    ]


# -- the helpers inside the DAG files ----------------------------------------------------------


def dag_module(bag: Any, dag_id: str) -> Any:
    """The module the DagBag loaded the DAG's file as (under a name of its own making)."""
    fileloc = bag.dags[dag_id].fileloc
    return next(m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == fileloc)


def test_range_days_are_inclusive_and_bounded(bag: Any) -> None:
    from airflow_provider_cdr.compat import AirflowFailException

    days_between = dag_module(bag, "cdr_backfill_range").days_between
    assert days_between("2024-03-30", "2024-04-02") == [
        date(2024, 3, 30),
        date(2024, 3, 31),
        date(2024, 4, 1),
        date(2024, 4, 2),
    ]
    with pytest.raises(AirflowFailException, match="before"):
        days_between("2024-03-02", "2024-03-01")
    with pytest.raises(AirflowFailException, match="at most"):
        days_between("2020-01-01", "2024-01-01")


def test_lookup_tables_have_declared_types(bag: Any) -> None:
    to_table = dag_module(bag, "cdr_lookups").to_table
    fetched = datetime(2024, 3, 12, 3, tzinfo=ZoneInfo("UTC"))
    agents = to_table("agents", [{"id": 51234, "name": "Zoë", "team_id": 7}], fetched)
    assert agents.schema.field("id").type == pa.int64()
    assert agents.column("extra_fields").to_pylist() == ['{"team_id": 7}']
    codes = to_table("wrapup_codes", [{"id": "0101", "name": "Sale"}], fetched)
    assert codes.schema.field("id").type == pa.string()
    assert codes.column("id").to_pylist() == ["0101"]
    assert codes.column("extra_fields").to_pylist() == [None]
    empty = to_table("teams", [], fetched)
    assert empty.num_rows == 0 and empty.schema == agents.schema


def test_agent_summary_is_scheduled_on_the_asset_the_daily_landing_emits(bag: Any, tmp_path: Path) -> None:
    summary = bag.dags["cdr_agent_summary"]
    assert isinstance(summary.timetable, asset_triggered_timetable())
    records = Asset(f"file://{tmp_path}/cdr")
    assert bag.dags["cdr_daily"].get_task("land_day").outlets == [records]
    assert summary.timetable.asset_condition == records
    assert summary.catchup is False and summary.max_active_runs == 1
    assert list(summary.task_dict) == ["summarise"]
    assert summary.params["days"] == []  # a manual run names its days


def test_agent_summary_follows_an_object_storage_output(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = parse(monkeypatch, CDR_OUTPUT_PATH="s3://bucket/prefix", CDR_OUTPUT_CONN_ID="aws_cdr")
    assert bag.import_errors == {}
    records = Asset("s3://bucket/prefix/cdr")
    assert bag.dags["cdr_daily"].get_task("land_day").outlets == [records]
    assert bag.dags["cdr_agent_summary"].timetable.asset_condition == records


def module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_duckdb_is_imported_only_inside_the_task_that_needs_it() -> None:
    """duckdb is not a dependency of the provider: the DAG files must parse without it."""
    for path in DAGS.glob("*.py"):
        assert "duckdb" not in module_level_imports(path), path.name
    assert "import duckdb" in (DAGS / "cdr_agent_summary.py").read_text()


def test_no_example_prints() -> None:
    """Task output goes through logging (Airflow's task log), never print()."""
    for path in DAGS.glob("*.py"):
        calls = [
            node.lineno
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
        ]
        assert calls == [], f"{path.name}: print() on lines {calls}"


def test_days_to_summarise_come_from_the_events_and_the_days_asked(bag: Any) -> None:
    from types import SimpleNamespace

    days_to_summarise = dag_module(bag, "cdr_agent_summary").days_to_summarise
    events = {
        "file:///data/cdr": [  # the key (the Asset) is not read, only its events
            SimpleNamespace(extra={"day": "2024-03-06", "rows": 10}),
            SimpleNamespace(extra={"day": "2024-03-05", "rows": 12}),  # a re-landed day
            SimpleNamespace(extra={}),
        ]
    }
    assert days_to_summarise(events, ["2024-03-05"]) == [date(2024, 3, 5), date(2024, 3, 6)]
    assert days_to_summarise(None, []) == []
