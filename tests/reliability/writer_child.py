"""A writer process to kill or pause while it holds a day: opens, writes, then waits to be told to commit.

Run as ``python writer_child.py BASE CONN_ID DAY RUN_ID LEASE_TTL_S MARKER`` (CONN_ID ``-`` for local
disk). It opens a DayPartitionWriter, writes 300 records (two finished parts and one in progress),
writes MARKER and then blocks reading stdin: the test SIGKILLs or SIGSTOPs it there, without sleeps.
A line on stdin makes it commit: exit 0 once committed, exit 3 with the error on a stdout line
starting REFUSED when the writer refuses (its lease was lost, another writer holds the day).
"""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path

from airflow_provider_cdr.convert.records import RecordConverter
from airflow_provider_cdr.landing.writer import DayPartitionWriter, LeaseLostError, PartitionBusyError
from tests.reliability.race_worker import open_base
from tests.test_partition import day_records

REFUSED = 3


def main(spec: str, conn_id: str, day_iso: str, run_id: str, ttl_s: str, marker: str) -> int:
    day = date.fromisoformat(day_iso)
    base = open_base(spec, None if conn_id == "-" else conn_id)
    converter = RecordConverter()
    writer = DayPartitionWriter(
        base, day, run_id=run_id, row_group_rows=100, file_rows=120, lease_ttl=timedelta(seconds=float(ttl_s))
    )
    try:
        with writer:
            for page in range(3):
                writer.write_batch(converter.to_batch(day_records(day, 100, seed=900 + page)))
            Path(marker).write_text(run_id)
            sys.stdin.readline()
            writer.commit()
    except (LeaseLostError, PartitionBusyError) as err:
        print(f"REFUSED {type(err).__name__}: {err}", flush=True)
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
