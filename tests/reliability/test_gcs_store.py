"""A day on Google Cloud Storage (``gs://``), against a local emulator (gcp-storage-emulator).

Airflow resolves ``gs://`` only with apache-airflow-providers-google installed; without it the
operator goes through fsspec (gcsfs), which is what runs here. The emulator ignores GCS's
generation preconditions, so GCS is written the read-before-write way (``conditional=False``):
the tests assert that (and fail the day the emulator honours them), and assert what the protocol
promises on such a store: landing, a rerun replacing the day exactly, a failed run leaving the
previous version and none of its own parts, and of two writers of one day at most one holding it
at a time, each committed version whole and read through its manifest.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from airflow_provider_cdr.api.errors import CDRConfigError
from airflow_provider_cdr.convert.records import RecordConverter
from airflow_provider_cdr.fake_api.server import StandIn
from airflow_provider_cdr.landing import object_store
from airflow_provider_cdr.landing.conditional import supports_conditional_writes
from airflow_provider_cdr.landing.writer import DayPartitionWriter, read_manifest
from airflow_provider_cdr.tasks.output import asset_uri, open_base
from tests.airflow_db import ensure_airflow_db
from tests.gcs_local import create_bucket, point_gcsfs
from tests.reliability.race_worker import BARRIER_TIMEOUT_S, records_of
from tests.reliability.reliability_support import land, task_error
from tests.reliability.test_concurrent_writers import Race, assert_round, expected_uuids

BUCKET = "cdr-gcs"
DAY = "2024-03-09"
OTHER_DAY = "2024-03-10"
RACE_DAY = date(2024, 7, 31)  # the day race_worker lands
RACE_ROUNDS = 20  # a round takes ~0.3 s; starting the two writer processes ~15 s


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


@pytest.fixture
def gcs(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """gcsfs at the emulator for this test (and its child processes); yields the test's own prefix."""
    import fsspec

    point_gcsfs(monkeypatch, gcs_endpoint)
    create_bucket(BUCKET)
    yield fsspec.filesystem("gs"), f"gs://{BUCKET}/{tmp_path.name}"


@pytest.fixture
def small_api(make_stand_in: Any, cdr_conn_for: Any) -> StandIn:
    """A stand-in of 300 records a day, as `cdr_default`: small days keep the emulator quick."""
    server: StandIn = cdr_conn_for(make_stand_in(records_per_day=300))
    return server


def names(fs: Any, url: str) -> set[str]:
    fs.invalidate_cache()
    try:
        return {path.rsplit("/", 1)[-1] for path in fs.ls(url.removeprefix("gs://"), detail=False)}
    except FileNotFoundError:
        return set()


def read_day(fs: Any, base: str, day: str) -> tuple[dict[str, Any], list[str]]:
    """The day's manifest and the uuids of the files it lists, read back with pyarrow through gcsfs."""
    partition = f"{base.removeprefix('gs://')}/date={day}"
    fs.invalidate_cache()
    manifest = read_manifest(_upath(f"gs://{partition}"))
    files = [f"{partition}/{entry['name']}" for entry in manifest["files"]]
    uuids = pq.read_table(files, filesystem=fs, columns=["uuid"]).column("uuid").to_pylist()
    return manifest, uuids


def _upath(url: str) -> Any:
    from upath import UPath

    return UPath(url)


def glob_rows(fs: Any, base: str) -> int:
    """What a glob reader finds under the dataset: DuckDB over pyarrow's Hive dataset of every part."""
    dataset = ds.dataset(base.removeprefix("gs://"), filesystem=fs, format="parquet", partitioning="hive")
    connection = duckdb.connect()
    connection.register("parts", dataset)
    [(rows,)] = connection.sql("select count(*) from parts").fetchall()
    return int(rows)


def test_gs_goes_through_fsspec_when_no_provider_registers_it(gcs: Any) -> None:
    """Airflow's ObjectStoragePath has no fallback for a scheme no provider registers (it fails at
    first use); open_base then takes fsspec's filesystem, and refuses a connection id it cannot use."""
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import has_fs

    _, base = gcs
    assert not has_fs("gs"), "apache-airflow-providers-google is not installed here"
    with pytest.raises(ValueError, match="No filesystem registered for scheme gs"):
        _ = ObjectStoragePath(base).fs
    opened = open_base(base)
    assert not isinstance(opened, ObjectStoragePath) and "gs" in opened.fs.protocol
    assert asset_uri(base) == base
    with pytest.raises(CDRConfigError, match="apache-airflow-providers-google"):
        open_base(base, "google_cloud_default")
    assert isinstance(open_base("s3://bucket/cdr", "aws_default"), ObjectStoragePath), "s3: the provider's"


def test_gcs_gets_read_before_write_because_the_emulator_ignores_generation_preconditions(gcs: Any) -> None:
    """gcsfs sends ifGenerationMatch=0 for mode="create"; GCS refuses a second create (412), the
    emulator replaces the object. So the GCS tests cannot show atomic conditional writes, and GCS
    stays on the read-before-write path: when this fails, the emulator honours them."""
    fs, base = gcs
    path = f"{base.removeprefix('gs://')}/probe"
    fs.pipe_file(path, b"first", mode="create")
    fs.pipe_file(path, b"second", mode="create")
    assert fs.cat_file(path) == b"second"
    assert not supports_conditional_writes(fs)


def test_the_operator_lands_a_day_on_gcs_and_a_rerun_replaces_it_exactly(
    gcs: Any, small_api: StandIn
) -> None:
    fs, base = gcs
    options = {"slices": 2, "per_page": 100, "file_rows": 100}
    for day in (DAY, OTHER_DAY):
        assert land(base, day, "gcs_land", **options).state == "success"
    first, _ = read_day(fs, base, DAY)
    first_files = {entry["name"] for entry in first["files"]}
    assert len(first_files) >= 2, "the day was written as several parts"

    assert land(base, DAY, "gcs_rerun", **options).state == "success"
    for day in (DAY, OTHER_DAY):
        manifest, uuids = read_day(fs, base, day)
        assert len(uuids) == len(set(uuids)) and set(uuids) == small_api.truth(start_date=day, end_date=day)
        assert manifest["rows"] == len(uuids) and manifest["complete"] is True
        listed = {entry["name"] for entry in manifest["files"]}
        assert names(fs, f"{base}/date={day}") == listed | {"_manifest.json"}, "nothing beside the version"
    rerun, _ = read_day(fs, base, DAY)
    assert [entry["run_id"] for entry in rerun["versions"]] == [first["run_id"], rerun["run_id"]]
    assert not first_files & {entry["name"] for entry in rerun["files"]}, "the first run's parts are gone"
    assert glob_rows(fs, base) == len(small_api.truth(start_date=DAY, end_date=OTHER_DAY))


def test_a_failing_run_on_gcs_leaves_the_previous_version_and_deletes_its_parts(
    gcs: Any, small_api: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fs, base = gcs
    options = {"slices": 1, "per_page": 100, "row_group_rows": 50, "file_rows": 50}
    assert land(base, DAY, "gcs_before", **options).state == "success"
    before, before_uuids = read_day(fs, base, DAY)
    before_names = names(fs, f"{base}/date={DAY}")

    finished: list[str] = []  # the failing run's parts that were uploaded whole before it failed
    original_finish = object_store.ObjectPartitionStore.finish

    def finish(self: Any, name: str, handle: Any) -> int:
        size = original_finish(self, name, handle)
        finished.append(name)
        return size

    monkeypatch.setattr(object_store.ObjectPartitionStore, "finish", finish)
    small_api.set_faults(rate_repeat_page=1.0)  # pages 2+ repeat page 1: the run stops, failing
    capsys.readouterr()
    assert land(base, DAY, "gcs_failing", **options).state == "failed"
    assert "times in a row; stopping" in task_error(capsys.readouterr())

    assert finished, "the failing run had uploaded a part before it failed"
    after, after_uuids = read_day(fs, base, DAY)
    assert after == before and after_uuids == before_uuids, "the previous version is the day"
    assert names(fs, f"{base}/date={DAY}") == before_names, "the failed run's parts are deleted"
    assert glob_rows(fs, base) == before["rows"]


def test_a_run_of_a_day_another_writer_holds_on_gcs_fails_and_changes_nothing(
    gcs: Any, small_api: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer holds the day's lease (opened here, as a zombie task's would be); a real operator
    run of that day is refused, naming the holder, and changes nothing; the holder then commits."""
    fs, base = gcs
    options = {"slices": 2, "per_page": 100}
    assert land(base, DAY, "gcs_held_first", **options).state == "success"
    first, _ = read_day(fs, base, DAY)
    first_names = names(fs, f"{base}/date={DAY}")

    day = date.fromisoformat(DAY)
    with DayPartitionWriter(_upath(base), day, run_id="holder", lease_ttl=timedelta(minutes=5)) as holder:
        capsys.readouterr()
        assert land(base, DAY, "gcs_held_second", **options).state == "failed"
        error = task_error(capsys.readouterr())
        assert "PartitionBusyError: Another writer is writing" in error and f"date={DAY}" in error, error
        assert "run holder " in error, error
        assert read_day(fs, base, DAY)[0] == first, "the refused run committed nothing"
        assert names(fs, f"{base}/date={DAY}") == first_names, "and wrote and deleted nothing"
        holder.write_batch(RecordConverter().to_batch(records_of(day, "holder")))
        holder.commit()

    manifest, uuids = read_day(fs, base, DAY)
    assert sorted(uuids) == sorted(record["uuid"] for record in records_of(day, "holder"))
    assert names(fs, f"{base}/date={DAY}") == {e["name"] for e in manifest["files"]} | {"_manifest.json"}
    assert [entry["run_id"] for entry in manifest["versions"]] == [first["run_id"], "holder"]


def race_round(race: Race) -> dict[str, tuple[Any, ...]]:
    """Let both writers go once; their results by run id (errors included: see the test)."""
    race.start.wait(BARRIER_TIMEOUT_S)
    results = [race.results.get(timeout=BARRIER_TIMEOUT_S) for _ in race.processes]
    return {result[1]: result for result in results}


def test_two_writers_racing_for_a_day_on_gcs_leave_whole_versions(gcs: Any) -> None:
    """Two writer processes open the same day at once, round after round. Without atomic
    preconditions both may pass the lease's read-before-write check (the documented window); then
    the one whose lease was overwritten learns it at its next renewal (LeaseLostError), or a commit
    finds another manifest than it read (PartitionBusyError), and deletes its own parts. What must
    hold every round: the manifest is that round's winner's (or the previous one, if none won) and
    its files hold exactly that run's records; a refused writer names the holder; parts beside the
    manifest's belong only to a winner whose commit another winner of its round replaced unseen."""
    fs, base = gcs
    url = f"{base}/race"
    partition = f"{url}/date={RACE_DAY.isoformat()}"
    stranded: set[str] = set()  # parts of winners replaced by a manifest that did not see them
    both_passed = 0
    previous: dict[str, Any] | None = None
    with Race(url, None, RACE_ROUNDS, colliding=True) as race:
        for _ in range(RACE_ROUNDS):
            results = race_round(race)
            for result in results.values():
                lost = result[0] == "error" and (
                    "LeaseLostError" in result[2] or "PartitionBusyError" in result[2]
                )
                assert result[0] in ("won", "busy") or lost, result
                both_passed += lost
            winners = [run for run, result in results.items() if result[0] == "won"]
            if len(winners) == 1 and any(result[0] == "busy" for result in results.values()):
                assert_round(results, colliding=True)  # the refused writer names the holder
            manifest, uuids = read_day(fs, url, RACE_DAY.isoformat())
            assert manifest["run_id"] in winners if winners else manifest == previous, (results, manifest)
            assert manifest["complete"] is True
            assert sorted(uuids) == sorted(expected_uuids(manifest["run_id"])), "one run's records, whole"
            for run in winners:
                if run != manifest["run_id"]:
                    stranded |= set(results[run][2])
            listed = {entry["name"] for entry in manifest["files"]}
            beside = names(fs, partition) - listed - {"_manifest.json"}
            assert beside <= stranded, (beside, stranded)
            previous = manifest
    print(f"GCS race: {both_passed} writers of {RACE_ROUNDS} rounds passed the lease check and lost later")
