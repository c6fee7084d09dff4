"""CDRToParquetOperator through dag.test() under the readings of the API: every day exact, in Parquet.

Each run lands days around the decision points (1,001 and 10,001 records, an empty day, both DST
days) in slices that cross 10,000-record searches, from servers that read the datetime bounds
of a slice each way (records sit on every hour's first millisecond, where slices meet), then
reads the partitions back with DuckDB and checks the manifest's paging facts against the
stand-in's own request count.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from airflow.sdk import DAG

from airflow_provider_cdr.fake_api.server import StandIn
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from tests.airflow_db import ensure_airflow_db, register_dag
from tests.conformance.readings import BIG_DAY, BIG_DAY_SIZE, DAY_SIZES, can_be_exact, request_bound

DAYS = ["2024-03-01", "2024-03-05", "2024-03-08", "2024-03-10", "2024-11-03"]

OPERATOR_READINGS: dict[str, tuple[dict[str, Any], int, int]] = {
    # label: (reading, tie group, slices)
    "cap 1000, tokens on every page past the search, datetimes exclusive at both ends": (
        {"page_cap": 1000, "start_bound": "exclusive", "end_bound": "exclusive"},
        1,
        8,
    ),
    "cap 1000, tokens on every page past the search, one slice": ({"page_cap": 1000}, 1, 1),
    "varying sizes, tokens past the page, page>1 with a token refused, ties at the edges": (
        {
            "page_cap": 1000,
            "page_sizes": "varying",
            "token_points": "page",
            "page_with_token": "refuse",
            "total": "absent",
        },
        7,
        2,
    ),
    "cap 333, token on the last page, total in records, unbounded search, start exclusive": (
        {
            "page_cap": 333,
            "token_on": "last",
            "total": "records",
            "search_size": None,
            "start_bound": "exclusive",
            "end_bound": "instant",
        },
        1,
        2,
    ),
    "cap 1000, asked offsets, tokens past the page, total of all matches, ties re-sent": (
        {
            "page_cap": 1000,
            "page_offset": "asked",
            "token_points": "page",
            "total": "matches",
            "edge_ties": "resend",
        },
        7,
        2,
    ),
    "cap 1000, tokens past the search that differ on every page, page>1 with a token refused": (
        {"page_cap": 1000, "page_with_token": "refuse", "token_nonce": "on"},
        1,
        2,
    ),
    "per_page honoured, token on the last page, page>1 with a token refused": (
        {"token_on": "last", "page_with_token": "refuse", "total": "absent"},
        1,
        8,
    ),
}


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


def point_connection(monkeypatch: pytest.MonkeyPatch, server: StandIn) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CDR_DEFAULT",
        json.dumps(
            {
                "conn_type": "cdr",
                "host": server.url,
                "password": server.api_key,
                "extra": {"timezone": server.timezone},
            }
        ),
    )


def land(out: Path, dag_id: str, days: list[str], **operator_kwargs: Any) -> str:
    """One dag.test() with a task per day; returns the run's state."""
    with DAG(dag_id, schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        for day in days:
            CDRToParquetOperator(
                task_id=f"land_{day.replace('-', '_')}", output_path=str(out), day=day, **operator_kwargs
            )
    register_dag(dag)
    return str(dag.test().state)


def manifest(out: Path, day: str) -> dict[str, Any]:
    return json.loads((out / f"date={day}" / "_manifest.json").read_text())


def check_landed_exactly(out: Path, server: StandIn, days: list[str]) -> int:
    """Every day's partition holds exactly the day's records; returns the requests the manifests count."""
    rows = dict(
        duckdb.sql(
            f"select cast(date as varchar), count(*) from read_parquet('{out}/*/*.parquet', "
            "hive_partitioning=true) group by 1"
        ).fetchall()
    )
    requests = 0
    for day in days:
        uuids = pq.read_table(out / f"date={day}", columns=["uuid"]).column("uuid").to_pylist()
        assert len(uuids) == len(set(uuids)) == rows.get(day, 0)
        assert set(uuids) == server.truth(start_date=day, end_date=day)
        facts = manifest(out, day)["extraction"]
        paging = facts["paging"]
        bound = request_bound(paging["pages"], facts["slices"], paging["token_test_requests"])
        assert facts["requests"] <= bound, paging
        requests += facts["requests"]
    return requests


@pytest.mark.parametrize("label", list(OPERATOR_READINGS))
def test_days_land_exactly_under_a_reading(
    reading_stand_in: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, label: str
) -> None:
    fields, tie_group, slices = OPERATOR_READINGS[label]
    server = reading_stand_in(fields, tie_group)
    point_connection(monkeypatch, server)
    state = land(tmp_path, f"conf_{list(OPERATOR_READINGS).index(label)}", DAYS, slices=slices)
    if not can_be_exact(fields, per_page=10_000):
        # Some days of this reading cannot be read whole by any client: those must fail (and land
        # nothing), the others land exactly.
        assert state == "failed"
        landed_days = [day for day in DAYS if (tmp_path / f"date={day}").exists()]
        assert landed_days and set(landed_days) < set(DAYS)
        check_landed_exactly(tmp_path, server, landed_days)
        return
    assert state == "success"
    requests = check_landed_exactly(tmp_path, server, DAYS)
    assert server.stats()["requests"] == requests, "the manifests count every request the API saw"
    assert sum(DAY_SIZES[day] for day in DAYS) == sum(manifest(tmp_path, d)["rows"] for d in DAYS)


def test_a_rerun_under_faults_is_identical(
    reading_stand_in: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = reading_stand_in({"page_cap": 1000, "total": "records"})
    point_connection(monkeypatch, server)
    days = ["2024-03-05", "2024-03-08", "2024-11-03"]
    assert land(tmp_path, "conf_clean", days, slices=2) == "success"
    first = {day: pq.read_table(tmp_path / f"date={day}").sort_by("uuid") for day in days}
    server.set_faults(
        rate_429=0.1,
        rate_5xx=0.05,
        burst_5xx=2,
        rate_drop=0.05,
        rate_truncate=0.05,
        rate_repeat_page=0.1,
        rate_empty_token_page=0.1,
    )
    assert land(tmp_path, "conf_faulty", days, slices=2, max_restarts=2) == "success"
    assert server.stats()["by_status"].get("429"), "the faults really fired"
    for day in days:
        assert pq.read_table(tmp_path / f"date={day}").sort_by("uuid").equals(first[day])


def test_the_issues_day_lands_whole_from_a_server_capping_pages_at_1000(
    reading_stand_in: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The first round landed 16,000 of these 100,000 records and reported success."""
    server = reading_stand_in({"page_cap": 1000})
    point_connection(monkeypatch, server)
    assert land(tmp_path, "conf_big_day", [BIG_DAY]) == "success"  # the operator's defaults
    facts = manifest(tmp_path, BIG_DAY)
    assert facts["rows"] == BIG_DAY_SIZE
    assert set(pq.read_table(tmp_path / f"date={BIG_DAY}").column("uuid").to_pylist()) == server.truth(
        start_date=BIG_DAY, end_date=BIG_DAY
    )
    paging = facts["extraction"]["paging"]
    assert paging["per_page_asked"] == 10_000 and paging["per_page_served"] == 1000
    # As many requests as asking 1000 in the first place: a page per 1,000 records and slice, plus
    # one empty answer per slice and one offset test.
    assert server.stats()["requests"] <= paging["pages"] + facts["extraction"]["slices"] + 1
    assert paging["pages"] <= BIG_DAY_SIZE // 1000 + facts["extraction"]["slices"]
