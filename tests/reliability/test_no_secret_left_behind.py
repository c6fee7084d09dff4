"""The API key is in nothing a run leaves behind: logs, XCom, rendered fields, errors, files, assets, lineage.

Runs that succeed through retries (faults on), and runs that fail (the API refusing, the API
unreachable, a wrong key), each with logging at DEBUG so that urllib3's request lines (which carry
the query string, key included) are produced. Then everything is collected and searched for the key:
the console output and log records of dag.test() (it runs the task in process and writes the task log
there, not under AIRFLOW_HOME/logs; that folder is searched too), every byte of the metadata DB
(XCom, RenderedTaskInstanceFields, task instances, asset events, audit log), the targeted rows as
well, exception texts with their whole chain, every file name and byte under the output path, and
the OpenLineage facets. The key holds URL-special characters (`/ + & = % space`), and every text is
searched for it plain and percent-encoded (quote and quote_plus, upper and lower hex): a URL never
carries it plain.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cdr.api.errors import CDRAPIError
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from tests.airflow_db import ensure_airflow_db
from tests.reliability.reliability_support import defer_sensor, land, point_connection
from tests.secret_support import KEY_WITH_URL_CHARACTERS, assert_secret_absent, exception_chain_text

# URL-special characters: the key in a URL is always encoded, so the encoded forms are looked for too.
SECRET = KEY_WITH_URL_CHARACTERS
WRONG_SECRET = "wR0ng/k3y+&x=%2F y"
DAY = "2024-03-05"
FAULTS = {
    "rate_5xx": 0.1,
    "burst_5xx": 2,
    "rate_drop": 0.1,
    "rate_reset_mid_body": 0.1,
    "rate_429_retry_after": 0.1,
    "retry_after_s": 1,
    "rate_bad_json": 0.05,
    "rate_truncate": 0.05,
}


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


@pytest.fixture
def keyed(make_stand_in: Any) -> Any:
    return make_stand_in(api_key=SECRET)


def point_with_wrong_key(monkeypatch: pytest.MonkeyPatch, server: Any) -> None:
    """`cdr_default` at `server` with WRONG_SECRET: every request is refused with 401."""
    wrong = {
        "conn_type": "cdr",
        "host": server.url,
        "password": WRONG_SECRET,
        "extra": {"timezone": server.timezone},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CDR_DEFAULT", json.dumps(wrong))


def metadata_rows(dag_ids: list[str]) -> str:
    """XCom values, rendered template fields, task instances and asset events of these DAGs, as text."""
    from airflow.models.asset import AssetEvent
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        xcoms = session.scalars(select(XComModel).where(XComModel.dag_id.in_(dag_ids))).all()
        rendered = session.scalars(
            select(RenderedTaskInstanceFields).where(RenderedTaskInstanceFields.dag_id.in_(dag_ids))
        ).all()
        instances = session.scalars(select(TaskInstance).where(TaskInstance.dag_id.in_(dag_ids))).all()
        events = session.scalars(select(AssetEvent)).all()
        assert xcoms and rendered and instances, "the runs left rows to search"
        return "\n".join(
            [json.dumps(XComModel.deserialize_value(x), default=str) for x in xcoms]
            + [json.dumps(r.rendered_fields, default=str) + str(r.k8s_pod_yaml) for r in rendered]
            + [
                repr({c.name: getattr(ti, c.name, None) for c in TaskInstance.__table__.columns})
                for ti in instances
            ]
            + [json.dumps(e.extra, default=str) for e in events]
        )


def everything_under(root: Path) -> bytes:
    blobs = []
    for path in root.rglob("*"):
        blobs.append(str(path).encode())
        if path.is_file():
            blobs.append(path.read_bytes())
    return b"\n".join(blobs)


def test_the_key_is_nowhere_after_runs_that_retry_fail_and_are_refused(
    keyed: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    out = tmp_path / "out"
    runs = []

    # 1. Succeeds through retries of every kind.
    point_connection(monkeypatch, keyed, max_retries=12, max_retry_wait=120)  # about half the requests fail
    keyed.set_faults(**FAULTS)
    runs.append(land(out, DAY, "secret_retries", slices=4, per_page=300))
    assert runs[-1].state == "success"
    assert json.loads((out / f"date={DAY}" / "_manifest.json").read_text())["extraction"]["retries"] > 0

    # 2. Fails: the API keeps answering 5xx.
    point_connection(monkeypatch, keyed, max_retries=1)
    keyed.set_faults(rate_5xx=1.0, burst_5xx=1)
    runs.append(land(out, DAY, "secret_5xx", slices=2))
    # 3. Fails: the API is unreachable (requests' error texts carry the full URL).
    monkeypatch.setenv(
        "AIRFLOW_CONN_CDR_DEFAULT",
        json.dumps(
            {
                "conn_type": "cdr",
                "host": "http://127.0.0.1:9",
                "password": SECRET,
                "extra": {"max_retries": 1},
            }
        ),
    )
    runs.append(land(out, DAY, "secret_unreachable", slices=2))
    # 4. Fails: a wrong key, refused with 401.
    keyed.clear_faults()
    point_with_wrong_key(monkeypatch, keyed)
    runs.append(land(out, DAY, "secret_wrong_key", slices=2))
    assert [run.state for run in runs] == ["success", "failed", "failed", "failed"]

    console = capfd.readouterr()
    assert "Task failed with exception" in console.out + console.err, "the failures were logged"
    assert any(
        "/api/v2/cdr" in record.getMessage() for record in caplog.records if record.name.startswith("urllib3")
    )
    assert_secret_absent(console.out + console.err, "the task log (console)", SECRET, WRONG_SECRET)
    log_records = "\n".join(
        record.getMessage() + "".join(traceback.format_exception(*record.exc_info) if record.exc_info else [])
        for record in caplog.records
    )
    assert_secret_absent(log_records, "a log record", SECRET, WRONG_SECRET)
    home = Path(os.environ["AIRFLOW_HOME"])
    assert_secret_absent(everything_under(home / "logs"), "AIRFLOW_HOME/logs", SECRET, WRONG_SECRET)
    assert_secret_absent(
        metadata_rows([run.dag_id for run in runs]), "XCom/rendered fields/TIs/assets", SECRET
    )
    database = b"".join(path.read_bytes() for path in home.glob("airflow.db*"))
    assert_secret_absent(database, "the metadata DB", SECRET, WRONG_SECRET)
    assert_secret_absent(everything_under(out), "the output (file names, manifest, Parquet)", SECRET)


def test_exceptions_and_lineage_of_a_direct_run_hold_no_key(
    keyed: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point_connection(monkeypatch, keyed)
    operator = CDRToParquetOperator(task_id="land", output_path=str(tmp_path), day=DAY)
    result = operator.execute({})
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert lineage is not None and lineage.outputs[0].name == str(tmp_path)
    assert_secret_absent(json.dumps(result) + repr(lineage), "XCom or lineage", SECRET)

    for connection in (
        {"host": keyed.url, "extra": {"max_retries": 1, "timezone": keyed.timezone}},
        {"host": "http://127.0.0.1:9", "extra": {"max_retries": 1}},
    ):
        keyed.set_faults(rate_5xx=1.0, burst_5xx=1)
        monkeypatch.setenv(
            "AIRFLOW_CONN_CDR_DEFAULT", json.dumps({"conn_type": "cdr", "password": SECRET, **connection})
        )
        failing = CDRToParquetOperator(task_id="land", output_path=str(tmp_path), day=DAY)
        with pytest.raises(CDRAPIError) as raised:
            failing.execute({})
        assert_secret_absent(exception_chain_text(raised.value), "an exception or its chain", SECRET)
        assert_secret_absent(repr(failing.get_openlineage_facets_on_complete(None)), "lineage", SECRET)


def test_the_key_is_nowhere_after_deferred_sensor_runs(
    keyed: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The trigger's path (CDRAsyncHook, aiohttp): retries logged, a refused key turned into an event."""
    caplog.set_level(logging.DEBUG)
    point_connection(monkeypatch, keyed, max_retries=12, max_retry_wait=60)
    keyed.set_faults(rate_5xx=0.2, burst_5xx=1)  # with seed 7: 503, 500, 503, then 200
    succeeded = defer_sensor("2024-03-19", "secret_deferred_retries", monkeypatch)
    keyed.clear_faults()
    point_with_wrong_key(monkeypatch, keyed)
    refused = defer_sensor("2024-03-19", "secret_deferred_refused", monkeypatch)
    assert [succeeded.state, refused.state] == ["success", "failed"]

    console = capfd.readouterr()
    logged = console.out + console.err + "\n".join(record.getMessage() for record in caplog.records)
    assert "retry 1" in logged and "HTTP 401" in logged, "the trigger's retries and refusal were logged"
    assert_secret_absent(logged, "the task or trigger log", SECRET, WRONG_SECRET)
    home = Path(os.environ["AIRFLOW_HOME"])
    assert_secret_absent(
        metadata_rows([succeeded.dag_id, refused.dag_id]), "XCom/rendered fields/TIs", SECRET
    )
    database = b"".join(path.read_bytes() for path in home.glob("airflow.db*"))
    assert_secret_absent(database, "the metadata DB (trigger rows and events included)", SECRET, WRONG_SECRET)
