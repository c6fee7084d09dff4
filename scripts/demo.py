"""`make demo`: one week of CDRs through the real `cdr_daily` DAG, then the result read back.

What it does, all under `.demo/` (recreated each time) and with nothing left running:

1. starts the CDR API stand-in (seed 7, 5000 records a day, America/Sao_Paulo) with its clock
   frozen after the demo week, so every day of the week is complete;
2. creates a throwaway Airflow home on SQLite (`airflow db migrate`) whose DAGs folder is
   `dags_examples/`, and gives it the `cdr_default` connection as AIRFLOW_CONN_CDR_DEFAULT;
3. runs `cdr_daily` (sensor -> land -> check) once per day with `dag.test()`: the scheduler's
   dependency loop and Airflow's task runner, in one child process; then `cdr_agent_summary` once
   for the week's days (by hand: `dag.test()` has no scheduler to trigger it on the Asset events);
4. prints each day as DuckDB reads it from the Parquet files, next to the stand-in's truth, and
   one line of the agent summary.

Airflow runs in a child process because its in-process task runner handles SIGINT itself: the
parent stays interruptible, and on Ctrl-C or any error it stops the child and the stand-in.
Airflow's own log goes to `.demo/airflow.log`; the terminal gets one line per task.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from airflow_provider_cdr.fake_api.server import stop_process

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / ".demo"
DAGS = ROOT / "dags_examples"
LOG = DEMO / "airflow.log"
LANDED = DEMO / "landed.json"
DAG_ID = "cdr_daily"
SUMMARY_DAG_ID = "cdr_agent_summary"
TIMEZONE = "America/Sao_Paulo"
FIRST_DAY = date(2024, 6, 3)  # a Monday
DAYS = 7
RECORDS_PER_DAY = 5000
TYPE_DRIFT = 0.05  # numbers as strings, floats for integers, unknown and missing fields

# Progress lines go here; Airflow's own output is redirected to the log file meanwhile.
_terminal = sys.stdout


def say(message: str) -> None:
    print(message, file=_terminal, flush=True)


# -- the parent: stand-in, Airflow home, child, report ----------------------------------------


def airflow_environment(api_url: str, api_key: str) -> dict[str, str]:
    """Everything Airflow and the DAG files read, as environment variables (set before import)."""
    home = DEMO / "airflow"
    connection = {
        "conn_type": "cdr",
        "host": api_url,
        "password": api_key,
        "extra": {"timezone": TIMEZONE, "concurrency": 4},
    }
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW_CONN_CDR_DEFAULT": json.dumps(connection),
        "CDR_TIMEZONE": TIMEZONE,
        "CDR_START_DATE": FIRST_DAY.isoformat(),
        "CDR_OUTPUT_PATH": str(DEMO / "data"),
        "CDR_RETRIES": "1",
        "CDR_RETRY_DELAY_S": "5",
    }


def run_child(argv: list[str]) -> None:
    """Run a child to completion; on Ctrl-C or an error, stop it (SIGTERM, then SIGKILL)."""
    child = subprocess.Popen(argv)
    try:
        if child.wait() != 0:
            raise RuntimeError(f"{' '.join(argv[1:4])} ... failed; see {LOG}")
    finally:
        stop_process(child, grace_s=10)


def read_back(data: Path) -> list[tuple[Any, ...]]:
    """Per day: rows, files, bytes and distinct uuids, as DuckDB reads the Parquet files."""
    import duckdb

    pattern = str(data / "cdr" / "date=*" / "*.parquet")
    return duckdb.sql(
        f"""
        WITH rows AS (
            SELECT date, count(*) AS rows, count(DISTINCT uuid) AS uuids
            FROM read_parquet('{pattern}', hive_partitioning = true) GROUP BY date
        ), files AS (
            SELECT regexp_extract(filename, 'date=([0-9-]+)', 1) AS date,
                   count(*) AS files, sum(size) AS bytes
            FROM read_blob('{pattern}') GROUP BY 1
        )
        SELECT rows.date, rows.rows, files.files, files.bytes, rows.uuids
        FROM rows JOIN files ON CAST(rows.date AS VARCHAR) = files.date ORDER BY rows.date
        """
    ).fetchall()


def say_table(rows: list[tuple[Any, ...]], stand_in: Any, days: list[date]) -> None:
    """The week as read back with DuckDB, with the operator's count and the stand-in's truth beside it."""
    reported = {item["day"]: item["rows"] for item in json.loads(LANDED.read_text())}
    say(f"{'day':<12}{'rows':>8}{'files':>7}{'bytes':>11}   {'operator':>8}{'API truth':>11}")
    total = [0, 0, 0]
    for day, count, files, size, uuids in rows:
        truth = len(stand_in.truth(start_date=str(day), end_date=str(day)))
        match = "ok" if count == uuids == truth == reported.get(str(day)) else "MISMATCH"
        say(f"{day!s:<12}{count:>8}{files:>7}{size:>11}   {reported.get(str(day)):>8}{truth:>11}  {match}")
        total = [total[0] + count, total[1] + files, total[2] + size]
    say(f"{'total':<12}{total[0]:>8}{total[1]:>7}{total[2]:>11}")
    if len(rows) != len(days):
        say(f"expected {len(days)} days, DuckDB found {len(rows)}")


def say_summary(data: Path, day: date) -> None:
    """One line of the agent summary: the day's busiest agent, as `cdr_agent_summary` wrote it."""
    import duckdb

    path = data / SUMMARY_DAG_ID / f"date={day.isoformat()}" / "summary.parquet"
    [(agents, agent, calls, answered_share, seconds)] = duckdb.sql(
        f"SELECT count(*) OVER (), agent, calls, answered_share, total_duration_s "
        f"FROM read_parquet('{path}') ORDER BY calls DESC, agent_id LIMIT 1"
    ).fetchall()
    say(
        f"Agent summary {day} ({agents} agents): busiest {agent}: {calls} calls, "
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m talk, {answered_share:.0%} answered"
    )
    say(f"  all agents, all days: {data / SUMMARY_DAG_ID}/date=YYYY-MM-DD/summary.parquet")


def demo(days: list[date]) -> None:
    from airflow_provider_cdr.fake_api.server import StandIn

    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    # Frozen at 06:00 local the morning after the week: every day of it has ended and is in.
    midnight = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), ZoneInfo(TIMEZONE))
    stand_in = StandIn(
        seed=7,
        records_per_day=RECORDS_PER_DAY,
        timezone=TIMEZONE,
        now=midnight + timedelta(hours=6),
        type_drift=TYPE_DRIFT,
    )
    say(
        f"Starting the CDR stand-in (seed 7, {RECORDS_PER_DAY} records/day, {TIMEZONE}, "
        f"{TYPE_DRIFT:.0%} of records drifting as real APIs drift) ..."
    )
    with stand_in:
        say(f"  listening on {stand_in.url}, clock frozen at {stand_in.now.isoformat()}")
        os.environ.update(airflow_environment(stand_in.url, stand_in.api_key))
        say(f"Creating a throwaway Airflow home in {DEMO / 'airflow'} (SQLite) ...")
        with LOG.open("ab") as log:
            subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"], stdout=log, stderr=log, check=True
            )
        say(f"Running {DAG_ID} for {days[0]} .. {days[-1]} (Airflow's log: {LOG})")
        run_child([sys.executable, __file__, "--run-days", *(day.isoformat() for day in days)])
        say("")
        say_table(read_back(DEMO / "data"), stand_in, days)
        say("")
        say_summary(DEMO / "data", days[-1])
    say(f"\nFiles: {DEMO / 'data' / 'cdr'}/date=YYYY-MM-DD/part-*.parquet (+ _manifest.json)")
    query = (
        f"SELECT date, type, count(*) AS n FROM read_parquet('{DEMO / 'data' / 'cdr'}/*/*.parquet', "
        "hive_partitioning = true) GROUP BY ALL ORDER BY ALL"
    )
    say(f'Query them: .venv/bin/python -c "import duckdb; duckdb.sql(\\"{query}\\").show()"')


# -- the child: Airflow, one dag.test() per day -----------------------------------------------


@contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send the process's stdout/stderr (Airflow's log lines) to `log`; `say()` still reaches the terminal."""
    global _terminal
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    _terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with log.open("ab") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        _terminal.close()
        _terminal = sys.stdout


def say_tasks(label: str, run: Any) -> None:
    for ti in sorted(run.get_task_instances(), key=lambda ti: ti.start_date or run.start_date):
        duration = f"{ti.duration:5.1f}s" if ti.duration is not None else "    -"
        say(f"  {label}  {ti.task_id:<13} {ti.state!s:<8} {duration}")


def run_days(days: list[date]) -> list[dict[str, Any]]:
    """One `dag.test()` per day, then the agent summary of them all; a line per task as each run
    finishes. Returns the landing XComs."""
    from airflow.dag_processing.dagbag import BundleDagBag

    # As the dag processor and the workers parse it: the bundle's root is on sys.path.
    bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name="dags-folder")
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[DAG_ID]
    tz = ZoneInfo(TIMEZONE)
    landed = []
    for day in days:
        # A manual run's data interval is the day that ended at its logical date: midnight after `day`.
        logical_date = datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(days=1)
        started = time.monotonic()
        run = dag.test(logical_date=logical_date)
        say_tasks(str(day), run)
        if run.state != "success":
            raise RuntimeError(f"{DAG_ID} failed for {day}; see {LOG}")
        say(f"{day}  done in {time.monotonic() - started:.1f}s")
        landed.append(_xcom(run, "land_day"))
    # The scheduler would run it on each landing's Asset event; dag.test() runs it by hand.
    started = time.monotonic()
    run = bag.dags[SUMMARY_DAG_ID].test(run_conf={"days": [day.isoformat() for day in days]})
    say_tasks(f"{'summary':<10}", run)
    if run.state != "success":
        raise RuntimeError(f"{SUMMARY_DAG_ID} failed; see {LOG}")
    say(f"{SUMMARY_DAG_ID} for {len(days)} days done in {time.monotonic() - started:.1f}s")
    return landed


def _xcom(run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value"
        )
        return XComModel.deserialize_value(session.scalars(query).one())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=DAYS, help=f"how many days from {FIRST_DAY} (default 7)")
    parser.add_argument("--run-days", nargs="+", type=date.fromisoformat, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_days:  # the child
        with output_to(LOG):
            landed = run_days(args.run_days)
        LANDED.write_text(json.dumps(landed))
        return 0
    began = time.monotonic()
    demo([FIRST_DAY + timedelta(days=n) for n in range(args.days)])
    say(f"Demo finished in {time.monotonic() - began:.0f}s; the stand-in is stopped.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        if "--run-days" not in sys.argv:  # the parent speaks for both
            print("\nInterrupted; everything the demo started is stopped.", file=sys.stderr)
        sys.exit(130)
