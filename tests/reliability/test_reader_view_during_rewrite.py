"""What DuckDB's `{base}/*/*.parquet` glob and pyarrow.dataset see at every step of a local rewrite.

DuckDB's glob, unlike pyarrow and Spark, does not skip dot-directories: a staging directory beside
the partitions, once its files carry their final `.parquet` names (just before the swap), and the
replaced version under the staging name (just after it) were both counted, doubling the day. The
staging directories now live one level down, in `{base}/.cdr-staging/`. No Airflow here: the
writer's steps are observed in process, and a reader counts rows at each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cdr.landing.local_store import LocalStore
from tests.reliability.reliability_support import visible_rows
from tests.test_partition import DAY, day_records, write_day


def test_a_glob_reader_sees_one_whole_version_at_every_step_of_a_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_day(tmp_path, DAY, day_records(DAY, 300))
    seen: dict[str, int] = {}

    def observed(step: str, method: Any) -> Any:
        def wrapper(self: LocalStore, *args: Any, **kwargs: Any) -> Any:
            seen[step] = visible_rows(tmp_path)
            return method(self, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(LocalStore, "commit", observed("files written, no manifest", LocalStore.commit))
    monkeypatch.setattr(LocalStore, "_swap", observed("manifest written, before the swap", LocalStore._swap))
    monkeypatch.setattr(
        LocalStore, "clean_up", observed("swapped, old version not yet deleted", LocalStore.clean_up)
    )
    write_day(tmp_path, DAY, day_records(DAY, 500, seed=1))
    seen["after"] = visible_rows(tmp_path)

    assert seen == {
        "files written, no manifest": 300,
        "manifest written, before the swap": 300,
        "swapped, old version not yet deleted": 500,
        "after": 500,
    }
    assert [path.name for path in tmp_path.iterdir()] == ["date=2024-07-31"]


def test_leftovers_of_the_previous_layout_are_still_cleaned_up(tmp_path: Path) -> None:
    """Staging left in `{base}` itself by an earlier version is removed by the next writer of the day."""
    write_day(tmp_path, DAY, day_records(DAY, 50))
    old_style = tmp_path / ".date=2024-07-31.staging-crashed"
    old_style.mkdir()
    (old_style / "part-x-00000.parquet.inprogress").write_bytes(b"partial")
    write_day(tmp_path, DAY, day_records(DAY, 60))
    assert not old_style.exists()
    assert visible_rows(tmp_path) == 60
