"""Each example DAG, parsed from dags_examples/, runs end to end with dag.test() against the stand-in.

dag.test() runs the scheduler's dependency loop and the real task runner in this process; the
DAG must be in a DAG bundle, so the `dags-folder` bundle is pointed at dags_examples/.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.airflow_compat import dag_bag
from tests.airflow_db import ensure_airflow_db, register_dag
from tests.s3_local import create_bucket

DAGS = Path(__file__).resolve().parents[1] / "dags_examples"
TIMEZONE = "America/Sao_Paulo"  # the session stand-in's
LOOKUPS = ("agents", "queues", "teams", "wrapup_codes", "campaigns", "deleted_agents")


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


@pytest.fixture
def out(cdr_conn: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Settings for one parse of the examples: the stand-in's zone, output under tmp_path, no retries."""
    from airflow import settings

    monkeypatch.setattr(settings, "DAGS_FOLDER", str(DAGS))
    monkeypatch.setenv("CDR_TIMEZONE", TIMEZONE)
    monkeypatch.setenv("CDR_START_DATE", "2024-03-01")
    monkeypatch.setenv("CDR_OUTPUT_PATH", str(tmp_path))
    monkeypatch.setenv("CDR_RETRIES", "0")
    for name in ("CDR_OUTPUT_CONN_ID", "CDR_CONN_ID", "CDR_POOL", "CDR_SETTLE_MINUTES", "CDR_TABLE_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def load_dag(dag_id: str) -> Any:
    """The DAG parsed with this test's settings, and stored as the dag processor would store it.

    Stored here because Airflow 3.1's dag.test() parses and stores a DAG only the first time
    (while it has no version yet): a later test's settings (another output path, so another
    Asset) would otherwise never reach the metadata DB.
    """
    bag = dag_bag(DAGS)
    assert bag.import_errors == {}
    return register_dag(bag.dags[dag_id])


def midnight_after(day: str) -> datetime:
    """A manual run at this logical date has the account-local `day` as its data interval."""
    start = date.fromisoformat(day) + timedelta(days=1)
    return datetime(start.year, start.month, start.day, tzinfo=ZoneInfo(TIMEZONE))


def xcoms(run: Any, task_id: str) -> list[Any]:
    """The task's return values in this run, one per map index."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    query = XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value")
    with create_session() as session:
        rows = sorted(session.scalars(query).all(), key=lambda row: row.map_index)
        return [XComModel.deserialize_value(row) for row in rows]


def states(run: Any) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}


def landed_uuids(records: Path, day: str) -> list[str]:
    """uuids of the files the day's manifest lists (what a manifest-aware reader reads)."""
    partition = records / f"date={day}"
    manifest = json.loads((partition / "_manifest.json").read_text())
    files = [str(partition / entry["name"]) for entry in manifest["files"]]
    return pq.read_table(files, columns=["uuid"]).column("uuid").to_pylist()


def test_daily_dag_lands_consecutive_days_equal_to_ground_truth(out: Path, cdr_conn: Any) -> None:
    dag = load_dag("cdr_daily")
    for day in ("2024-03-10", "2024-03-11"):
        run = dag.test(logical_date=midnight_after(day))
        assert run.state == "success", states(run)
        # Landed years after the day ended: nothing to land again for late records.
        assert states(run).pop(("reland_day", -1)) == "skipped"
        assert set(states(run).values()) - {"skipped"} == {"success"}
        landed = landed_uuids(out / "cdr", day)
        truth = cdr_conn.truth(start_date=day, end_date=day)
        assert len(truth) > 0
        assert len(landed) == len(set(landed))
        assert set(landed) == truth
        [reported] = xcoms(run, "land_day")
        assert reported["day"] == day and reported["rows"] == len(truth)
        [checked] = xcoms(run, "check_day")
        assert checked == {"day": day, "rows": len(truth), "files": reported["files"]}


def test_daily_dag_lands_a_day_without_records_as_an_empty_partition(
    out: Path, make_stand_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quiet day (a holiday) is not a failure: the sensor lets it through, the check counts 0 rows."""
    quiet = make_stand_in(day_profiles={"2024-03-08": "empty"})
    connection = {
        "conn_type": "cdr",
        "host": quiet.url,
        "password": quiet.api_key,
        "extra": {"timezone": TIMEZONE},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CDR_DEFAULT", json.dumps(connection))
    run = load_dag("cdr_daily").test(logical_date=midnight_after("2024-03-08"))
    assert run.state == "success", states(run)
    assert xcoms(run, "wait_for_day")[0]["status"] == "empty"
    assert xcoms(run, "check_day") == [{"day": "2024-03-08", "rows": 0, "files": 1}]


def test_daily_dag_rerun_replaces_the_day(out: Path, cdr_conn: Any) -> None:
    dag = load_dag("cdr_daily")
    day = "2024-03-12"
    for _ in range(2):
        run = dag.test(logical_date=midnight_after(day))
        assert run.state == "success", states(run)
    partition = out / "cdr" / f"date={day}"
    assert len(list(partition.glob("part-*.parquet"))) == xcoms(run, "land_day")[0]["files"]
    assert set(landed_uuids(out / "cdr", day)) == cdr_conn.truth(start_date=day, end_date=day)


def test_daily_dag_check_fails_on_a_damaged_partition(out: Path, cdr_conn: Any) -> None:
    """The check reads the files, not the operator's word: a stray file fails the run."""
    dag = load_dag("cdr_daily")
    day = "2024-03-13"
    partition = out / "cdr" / f"date={day}"

    def commit_then_damage(self: Any, *args: Any, **kwargs: Any) -> Any:
        summary = original(self, *args, **kwargs)
        stray = partition / "part-stray-00000.parquet"
        pq.write_table(pq.read_table(partition / summary.files[0]), stray)
        return summary

    from airflow_provider_cdr.landing.writer import DayPartitionWriter

    original = DayPartitionWriter.commit
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DayPartitionWriter, "commit", commit_then_damage)
        run = dag.test(logical_date=midnight_after(day))
    assert states(run)[("land_day", -1)] == "success"
    assert states(run)[("check_day", -1)] == "failed"
    assert run.state == "failed"


def test_range_dag_maps_one_task_per_day_and_skips_landed_days(out: Path, cdr_conn: Any) -> None:
    dag = load_dag("cdr_backfill_range")
    days = ["2024-03-14", "2024-03-15", "2024-03-16"]
    run = dag.test(run_conf={"start_day": days[0], "end_day": days[-1], "redo_landed": False})
    assert run.state == "success", states(run)
    landed = xcoms(run, "land_day")
    assert [item["day"] for item in landed] == days
    for day in days:
        assert set(landed_uuids(out / "cdr", day)) == cdr_conn.truth(start_date=day, end_date=day)
    assert xcoms(run, "report") == [{"days": 3, "rows": sum(item["rows"] for item in landed)}]

    # Landed days are skipped; only the new day is fetched.
    run = dag.test(run_conf={"start_day": days[1], "end_day": "2024-03-17", "redo_landed": False})
    assert run.state == "success", states(run)
    assert xcoms(run, "days_to_land") == [["2024-03-17"]]
    assert [item["day"] for item in xcoms(run, "land_day")] == ["2024-03-17"]

    # Nothing left to land: the mapped task is skipped and the report still runs.
    run = dag.test(run_conf={"start_day": days[0], "end_day": days[0], "redo_landed": False})
    assert run.state == "success", states(run)
    assert xcoms(run, "report") == [{"days": 0, "rows": 0}]

    # redo_landed lands again.
    run = dag.test(run_conf={"start_day": days[0], "end_day": days[0], "redo_landed": True})
    assert run.state == "success", states(run)
    assert [item["day"] for item in xcoms(run, "land_day")] == [days[0]]


def test_daily_and_range_dags_land_into_one_delta_table(
    out: Path, cdr_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltalake import DeltaTable

    monkeypatch.setenv("CDR_TABLE_FORMAT", "delta")
    day, next_day = "2024-03-18", "2024-03-19"
    run = load_dag("cdr_daily").test(logical_date=midnight_after(day))
    assert run.state == "success", states(run)
    truth = cdr_conn.truth(start_date=day, end_date=day)
    [reported] = xcoms(run, "land_day")
    [checked] = xcoms(run, "check_day")  # read back from the table's snapshot, against its commit
    assert checked == {"day": day, "rows": len(truth), "files": reported["files"]}
    run = load_dag("cdr_backfill_range").test(
        run_conf={"start_day": day, "end_day": next_day, "redo_landed": False}
    )
    assert run.state == "success", states(run)
    assert xcoms(run, "days_to_land") == [[next_day]], "the day in the table counts as landed"
    table = DeltaTable(str(out / "cdr"))
    assert table.version() == 1
    for each in (day, next_day):
        rows = table.to_pyarrow_dataset(partitions=[("date", "=", each)]).to_table(columns=["uuid"])
        uuids = rows.column("uuid").to_pylist()
        assert len(uuids) == len(set(uuids)) and set(uuids) == cdr_conn.truth(start_date=each, end_date=each)
    assert not (out / "cdr" / f"date={day}" / "_manifest.json").exists()


def test_daily_dag_lands_the_day_before_again_so_late_records_arrive(
    out: Path, make_stand_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records that reach the API after their day was landed reach the lake with the next day's run."""
    from airflow_provider_cdr.api import availability

    late = make_stand_in(records_per_day=1200, now="2024-03-06T03:40:00Z", ingest_lag_s=2 * 3600)
    connection = {
        "conn_type": "cdr",
        "host": late.url,
        "password": late.api_key,
        "extra": {"timezone": TIMEZONE},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CDR_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("CDR_LOOKBACK_DAYS", "1")
    dag, day, next_day = load_dag("cdr_daily"), "2024-03-05", "2024-03-06"

    # 40 minutes after the day's end, the records of its last 80 minutes are still on their way.
    late.set_clock(now="2024-03-06T03:40:00Z")
    monkeypatch.setattr(availability, "utcnow", lambda: datetime(2024, 3, 6, 3, 40, tzinfo=ZoneInfo("UTC")))
    run = dag.test(logical_date=midnight_after(day))
    assert run.state == "success", states(run)
    first = set(landed_uuids(out / "cdr", day))
    whole_day = {"start_date": day, "end_date": day}
    assert first == late.truth(**whole_day) and len(first) < 1200

    # The next day's timely run lands that day again: now with every record.
    late.set_clock(now="2024-03-07T03:40:00Z")
    monkeypatch.setattr(availability, "utcnow", lambda: datetime(2024, 3, 7, 3, 40, tzinfo=ZoneInfo("UTC")))
    run = dag.test(logical_date=midnight_after(next_day))
    assert run.state == "success", states(run)
    assert [item["day"] for item in xcoms(run, "reland_day")] == [day]
    assert set(landed_uuids(out / "cdr", day)) == late.truth(**whole_day)
    assert len(late.truth(**whole_day)) == 1200
    manifest = json.loads((out / "cdr" / f"date={day}" / "_manifest.json").read_text())
    assert len(manifest["versions"]) == 2, "the manifest keeps when each version was landed"


def test_daily_dag_catch_up_runs_do_not_land_days_again(out: Path, cdr_conn: Any) -> None:
    dag = load_dag("cdr_daily")
    for day in ("2024-03-16", "2024-03-17"):  # landed now, years after they ended
        run = dag.test(logical_date=midnight_after(day))
        assert run.state == "success", states(run)
    assert xcoms(run, "recent_days") == [[]]
    assert states(run)[("reland_day", -1)] == "skipped"


def test_range_dag_refuses_a_day_that_has_not_ended(out: Path, cdr_conn: Any) -> None:
    today = datetime.now(ZoneInfo(TIMEZONE)).date().isoformat()
    run = load_dag("cdr_backfill_range").test(
        run_conf={"start_day": "2024-03-14", "end_day": today, "redo_landed": False}
    )
    assert states(run)[("days_to_land", -1)] == "failed"
    assert cdr_conn.stats()["requests"] == 0


def test_range_dag_lands_again_a_day_landed_as_partial(out: Path, cdr_conn: Any) -> None:
    from airflow.sdk import DAG

    from airflow_provider_cdr.api import availability
    from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator

    day = "2024-03-18"
    with DAG("partial_for_range", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as partial:
        CDRToParquetOperator(task_id="land", output_path=str(out / "cdr"), day=day, allow_partial=True)
    register_dag(partial)
    with pytest.MonkeyPatch.context() as clock:  # while the day is still going on
        clock.setattr(availability, "utcnow", lambda: datetime(2024, 3, 18, 20, tzinfo=ZoneInfo("UTC")))
        assert partial.test().state == "success"
    run = load_dag("cdr_backfill_range").test(
        run_conf={"start_day": day, "end_day": day, "redo_landed": False}
    )
    assert run.state == "success", states(run)
    assert xcoms(run, "days_to_land") == [[day]], "a partial day does not count as landed"
    assert json.loads((out / "cdr" / f"date={day}" / "_manifest.json").read_text())["complete"] is True


def test_range_dag_refuses_a_reversed_range(out: Path, cdr_conn: Any) -> None:
    dag = load_dag("cdr_backfill_range")
    run = dag.test(run_conf={"start_day": "2024-03-15", "end_day": "2024-03-14", "redo_landed": False})
    assert states(run)[("days_to_land", -1)] == "failed"
    assert run.state == "failed"


def test_lookups_dag_writes_the_six_dimension_tables(out: Path, cdr_conn: Any) -> None:
    dag = load_dag("cdr_lookups")
    day = "2024-03-11"
    run = dag.test(logical_date=midnight_after(day))
    assert run.state == "success", states(run)
    expected = cdr_conn.dataset.lookups()
    for name in LOOKUPS:
        path = out / "dimensions" / name / f"date={day}" / f"{name}.parquet"
        table = pq.read_table(path)
        assert table.column_names == ["id", "name", "extra_fields", "fetched_at"]
        assert table.column("id").to_pylist() == [item["id"] for item in expected[name]]
        assert table.column("name").to_pylist() == [item["name"] for item in expected[name]]
    assert not list(out.glob("dimensions/*/*/*.tmp"))


# -- object storage: the docker-compose layout (an S3 bucket, an `aws` connection) ----------------


def test_daily_and_lookups_dags_land_in_object_storage(
    out: Path, cdr_conn: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # s3:// paths go through the amazon provider's filesystem (the s3 extra and the dev group).
    import s3fs

    create_bucket(s3_endpoint, "cdr-lake")
    # The docker-compose file's connection, pointed at this S3 server instead of MinIO.
    compose = yaml.safe_load((DAGS.parent / "docker" / "docker-compose.yaml").read_text())
    connection = json.loads(compose["x-airflow-common"]["environment"]["AIRFLOW_CONN_AWS_CDR"])
    connection.update(login="testing", password="testing")
    connection["extra"]["endpoint_url"] = s3_endpoint
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CDR", json.dumps(connection))
    monkeypatch.setenv("CDR_OUTPUT_PATH", "s3://cdr-lake/warehouse")
    monkeypatch.setenv("CDR_OUTPUT_CONN_ID", "aws_cdr")
    day = "2024-03-09"

    run = load_dag("cdr_daily").test(logical_date=midnight_after(day))
    assert run.state == "success", states(run)
    run = load_dag("cdr_lookups").test(logical_date=midnight_after(day))
    assert run.state == "success", states(run)

    bucket = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=s3_endpoint)
    partition = f"cdr-lake/warehouse/cdr/date={day}"
    manifest = json.loads(bucket.cat_file(f"{partition}/_manifest.json"))
    files = [f"{partition}/{entry['name']}" for entry in manifest["files"]]
    uuids = pq.read_table(files, filesystem=bucket, columns=["uuid"]).column("uuid").to_pylist()
    assert set(uuids) == cdr_conn.truth(start_date=day, end_date=day)
    assert len(uuids) == len(set(uuids))
    for name in LOOKUPS:
        table = pq.read_table(
            f"cdr-lake/warehouse/dimensions/{name}/date={day}/{name}.parquet", filesystem=bucket
        )
        assert table.num_rows == len(cdr_conn.dataset.lookups()[name])


# -- the agent summary, scheduled on the landing's Asset -------------------------------------------

CALLS = {"inbound", "outbound", "dialer", "click_to_call", "queue_callback", "scheduled_callback"}


def expected_summary(records: Path, day: str) -> dict[int, dict[str, Any]]:
    """Per agent, from the landed files with pyarrow alone: voice records with an agent."""
    import pyarrow.compute as pc

    partition = records / f"date={day}"
    manifest = json.loads((partition / "_manifest.json").read_text())
    table = pq.read_table(
        [str(partition / entry["name"]) for entry in manifest["files"]],
        columns=["agent_id", "type", "disposition", "duration"],
    )
    kind = pc.replace_substring(pc.utf8_lower(table.column("type")), "-", "_")
    table = table.filter(
        pc.and_(pc.is_in(kind, pa.array(sorted(CALLS))), pc.is_valid(table.column("agent_id")))
    )
    answered = pc.fill_null(pc.equal(table.column("disposition"), "answered"), False).cast(pa.int64())
    grouped = (
        table.append_column("is_answered", answered)
        .group_by("agent_id")
        .aggregate([("agent_id", "count"), ("is_answered", "sum"), ("duration", "sum")])
    )
    return {
        row["agent_id"]: {
            "calls": row["agent_id_count"],
            "answered": row["is_answered_sum"],
            "total_duration_s": row["duration_sum"] or 0,
        }
        for row in grouped.to_pylist()
    }


def summary_rows(out: Path, day: str) -> dict[int, dict[str, Any]]:
    table = pq.read_table(out / "cdr_agent_summary" / f"date={day}" / "summary.parquet")
    assert table.column_names == [
        "agent_id",
        "agent",
        "calls",
        "answered",
        "answered_share",
        "total_duration_s",
    ]
    return {row.pop("agent_id"): row for row in table.to_pylist()}


def check_summary(out: Path, day: str, truth: set[str]) -> None:
    """The summary file equals the one computed from the landed Parquet, itself equal to the stand-in's."""
    assert set(landed_uuids(out / "cdr", day)) == truth
    expected = expected_summary(out / "cdr", day)
    got = summary_rows(out, day)
    assert len(got) > 10 and set(got) == set(expected)
    for agent_id, row in got.items():
        assert {key: row[key] for key in ("calls", "answered", "total_duration_s")} == expected[agent_id]
        assert row["answered_share"] == pytest.approx(row["answered"] / row["calls"])
        assert row["agent"]
    assert 0 < sum(r["answered"] for r in got.values()) < sum(r["calls"] for r in got.values())


def test_agent_summary_runs_for_the_day_the_landing_announced(
    out: Path, cdr_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cdr_daily lands a day and emits its Asset event; the summary run that event triggers (linked
    to the run as the scheduler links the events a run consumes) summarises exactly that day."""
    from airflow.models import dagrun
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    day = "2024-03-14"
    run = load_dag("cdr_daily").test(logical_date=midnight_after(day))
    assert run.state == "success", states(run)

    create_run = dagrun.get_or_create_dagrun

    def consuming_the_event(**kwargs: Any) -> Any:
        new_run = create_run(**kwargs)
        session = kwargs["session"]
        [event] = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == f"file://{out}/cdr", AssetEvent.source_run_id == run.run_id)
        ).all()
        new_run.consumed_asset_events.append(event)
        session.commit()
        return new_run

    monkeypatch.setattr(dagrun, "get_or_create_dagrun", consuming_the_event)
    summary = load_dag("cdr_agent_summary").test()
    assert summary.state == "success", states(summary)
    [written] = xcoms(summary, "summarise")
    assert [item["day"] for item in written] == [day]
    check_summary(out, day, cdr_conn.truth(start_date=day, end_date=day))
    assert written[0]["calls"] == sum(row["calls"] for row in summary_rows(out, day).values())
    assert not list((out / "cdr_agent_summary").rglob("*.tmp"))


def test_agent_summary_by_hand_names_its_days_and_fails_on_a_day_not_landed(out: Path, cdr_conn: Any) -> None:
    days = ["2024-03-15", "2024-03-16"]
    for day in days:
        assert load_dag("cdr_daily").test(logical_date=midnight_after(day)).state == "success"
    summary = load_dag("cdr_agent_summary")
    run = summary.test(run_conf={"days": days})
    assert run.state == "success", states(run)
    assert [item["day"] for item in xcoms(run, "summarise")[0]] == days
    for day in days:
        check_summary(out, day, cdr_conn.truth(start_date=day, end_date=day))
    run = summary.test(run_conf={"days": ["2024-03-17"]})  # never landed
    assert run.state == "failed"
    assert not (out / "cdr_agent_summary" / "date=2024-03-17").exists()
