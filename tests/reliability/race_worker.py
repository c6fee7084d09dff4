"""A writer process for the race tests: lands one day per round, starting at a barrier with its rival.

Run through multiprocessing (spawn) by test_concurrent_writers.py. Each round the parent and both
writers meet at `start`; each writer then opens a DayPartitionWriter for the same day. With `tried`
given, both also meet there once they have tried to open, so the winner is still holding the day
when the loser tries: every round is a real collision. Each writer reports one result per round:
("won", run_id, files, rows) or ("busy", run_id, message) or ("error", run_id, text).
"""

from __future__ import annotations

import traceback
from datetime import date, timedelta
from multiprocessing.synchronize import Barrier
from queue import Queue
from typing import Any

BARRIER_TIMEOUT_S = 120


def records_of(day: date, run_id: str) -> list[dict[str, Any]]:
    """What `run_id` lands: its own uuids (the seed comes from the run id), a count of its own."""
    from tests.test_partition import day_records

    seed = sum(ord(char) * (position + 1) for position, char in enumerate(run_id))
    return day_records(day, 200 + seed % 97, seed=seed)


def open_base(spec: str, conn_id: str | None) -> Any:
    if conn_id is None:
        return spec
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(spec, conn_id=conn_id)


def race(
    spec: str,
    conn_id: str | None,
    day_iso: str,
    name: str,
    rounds: int,
    start: Barrier,
    tried: Barrier | None,
    results: Queue[tuple[Any, ...]],
) -> None:
    from airflow_provider_cdr.convert.records import RecordConverter
    from airflow_provider_cdr.landing.writer import DayPartitionWriter, PartitionBusyError

    day = date.fromisoformat(day_iso)
    base = open_base(spec, conn_id)
    for number in range(rounds):
        start.wait(BARRIER_TIMEOUT_S)
        run_id = f"{name}-{number}"
        writer = DayPartitionWriter(
            base, day, run_id=run_id, row_group_rows=100, file_rows=150, lease_ttl=timedelta(minutes=5)
        )
        try:
            writer.__enter__()
        except PartitionBusyError as err:
            result: tuple[Any, ...] = ("busy", run_id, str(err))
        except Exception:
            result = ("error", run_id, traceback.format_exc())
        else:
            result = ("open", run_id)
        if tried is not None:
            tried.wait(BARRIER_TIMEOUT_S)
        if result[0] == "open":
            result = land(writer, records_of(day, run_id), RecordConverter())
        results.put(result)


def land(writer: Any, records: list[dict[str, Any]], converter: Any) -> tuple[Any, ...]:
    try:
        with writer:
            for start in range(0, len(records), 100):
                writer.write_batch(converter.to_batch(records[start : start + 100]))
            summary = writer.commit()
    except Exception:
        return ("error", writer.run_id, traceback.format_exc())
    return ("won", writer.run_id, summary.files, summary.rows)
