"""Bad operator arguments fail at once, with a message that names the problem, and touch nothing.

Arguments that are not templated are refused when the DAG is parsed (see
tests/operators/test_cdr_to_parquet.py); here they arrive through templates or the connection, so
the task refuses them at run time: before any request, and without writing anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cdr.api.errors import CDRQueryError
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from tests.airflow_db import ensure_airflow_db
from tests.reliability.reliability_support import land, point_connection, task_error

DAY = "2024-03-05"


@pytest.fixture(scope="module", autouse=True)
def _metadata_db() -> None:
    ensure_airflow_db()


def tree(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_size for path in root.rglob("*")}


def make_file(root: Path) -> Path:
    existing = root / "a-file"
    existing.write_text("not a directory")
    return existing


CASES = {
    "an unparsable day": ({"day": "{{ 'yesterday' }}"}, "is not a day in YYYY-MM-DD form"),
    "a day with a path in it": ({"day": "{{ '../2024-03-05' }}"}, "is not a day in YYYY-MM-DD form"),
    "a day that does not exist": ({"day": "{{ '2024-02-30' }}"}, "is not a day in YYYY-MM-DD form"),
    "output path that is a file": ({"output_path": "{file}"}, "exists and is not a directory"),
    "output path under a file": ({"output_path": "{file}/cdr"}, "is not a directory"),
    "output path the kernel refuses": ({"output_path": "/proc/cdr-out"}, "is not writable"),
    "output path in a read-only tree": ({"output_path": "/sys/cdr-out"}, "is not writable"),
    "filters that fight the window": ({"filters": {"end_date": "{{ ds }}"}}, "set by the task"),
    "filters that render to text": ({"filters": "{{ 'type=inbound' }}"}, "must be a mapping"),
    "an unknown filter value": ({"filters": {"type": "{{ 'inbond' }}"}}, "did you mean 'inbound'"),
}


@pytest.mark.parametrize(("arguments", "message"), CASES.values(), ids=CASES.keys())
def test_a_bad_argument_fails_the_task_before_any_request_and_writes_nothing(
    arguments: dict[str, Any],
    message: str,
    api: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    point_connection(monkeypatch, api)
    file = make_file(tmp_path)
    arguments = {"day": DAY, "output_path": str(tmp_path / "out"), **arguments}
    arguments["output_path"] = arguments["output_path"].replace("{file}", str(file))
    before = tree(tmp_path)
    capfd.readouterr()
    run = land(Path(arguments.pop("output_path")), arguments.pop("day"), "bad_argument", **arguments)
    assert run.state == "failed"
    assert message in task_error(capfd.readouterr())
    assert api.stats()["requests"] == 0, "refused before any request"
    assert tree(tmp_path) == before, "nothing written"
    assert not Path("/proc/cdr-out").exists() and not Path("/sys/cdr-out").exists()


def test_an_unknown_time_zone_on_the_connection_fails_before_any_request(
    api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    point_connection(monkeypatch, api, timezone="Mars/Olympus")
    capfd.readouterr()
    assert land(tmp_path / "out", DAY, "bad_zone").state == "failed"
    assert "timezone='Mars/Olympus' is not an IANA time zone" in task_error(capfd.readouterr())
    assert api.stats()["requests"] == 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/localtime", ""])
def test_an_unknown_time_zone_argument_fails_at_parse_time(zone: str) -> None:
    with pytest.raises(CDRQueryError, match="not an IANA time zone"):
        CDRToParquetOperator(task_id="bad", output_path="/tmp/never-written", timezone=zone)


@pytest.mark.parametrize(
    "filters",
    [{"cli": "../../../etc/passwd"}, {"lead_source": "/abs/path"}, {"destination_name": "a/../../b"}],
)
def test_filter_values_never_become_path_components(
    filters: dict[str, str], api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point_connection(monkeypatch, api)
    out = tmp_path / "out"
    assert land(out, DAY, "path_filters", filters=filters).state == "success"
    written = [path.relative_to(tmp_path) for path in tmp_path.rglob("*")]
    assert {path.parts[0] for path in written} == {"out"}, "nothing outside the output path"
    assert {path.parts[1] for path in written if len(path.parts) > 1} == {f"date={DAY}"}
    (value,) = filters.values()
    for path in written:
        assert value not in str(path) and "passwd" not in str(path) and ".." not in path.parts
    manifest = json.loads((out / f"date={DAY}" / "_manifest.json").read_text())
    assert manifest["extraction"]["query"] == filters, "the value is kept as data, in the manifest"
