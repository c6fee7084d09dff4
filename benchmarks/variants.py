"""One benchmark variant in a process of its own, so its peak RSS and CPU time are its own.

Run by ``benchmarks/run.py``; prints one JSON line: records, wall_s, cpu_s, peak_rss_mib, and the
epoch seconds the timed part started and ended at (``started_at``, ``ended_at``: to set against
the stand-in's request times).

- ``baseline``: what a DAG author writes by hand today: HttpHook in a page loop with
  ``per_page=1000`` (the API's own example), search_token handled, every record gathered
  in a list, then ``pandas.DataFrame(records).to_parquet()``.
- ``operator``: ``CDRToParquetOperator`` with its defaults.
- ``imports``: nothing after the operator's imports: the floor of the operator's peak RSS.
- ``ceiling``: the same requests as the operator (same slices, per_page, concurrency),
  only downloaded: no JSON parsing, no writing. Records are counted with ``bytes.count``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

_TOKEN = re.compile(rb'"search_token":\s*"([^"]+)"')


def baseline(day: str, out: Path) -> int:
    import pandas as pd
    from airflow.providers.http.hooks.http import HttpHook

    hook = HttpHook(method="GET", http_conn_id="cdr_http")
    key = os.environ["CDR_BENCH_KEY"]
    records: list[dict[str, Any]] = []
    page, token = 1, None
    while True:
        params: dict[str, Any] = {
            "key": key,
            "page": page,
            "per_page": 1000,
            "start_date": day,
            "end_date": day,
        }
        if token:
            params["search_token"] = token
        body = hook.run("/api/v2/cdr", data=params).json()
        records.extend(body["records"])
        if len(body["records"]) == 1000 and page * 1000 < 10_000:
            page += 1
            continue
        token = body.get("search_token")
        if not token:
            break
        page = 1
    frame = pd.DataFrame(records)
    # Drifted columns (ints and strings in one object column) cannot be written as they are.
    mixed = [
        name
        for name in frame.columns
        if frame[name].dtype == object and frame[name].dropna().map(type).nunique() > 1
    ]
    frame.astype({name: "string" for name in mixed}).to_parquet(out / f"date={day}.parquet")
    return len(records)


def operator(day: str, out: Path) -> int:
    from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator

    options = json.loads(os.environ.get("CDR_BENCH_OPERATOR_OPTIONS", "{}"))
    result = CDRToParquetOperator(task_id="bench", output_path=str(out), day=day, **options).execute({})
    return int(result["rows"])


def ceiling(day: str, out: Path) -> int:
    """The operator's requests, downloaded with the same concurrency and nothing else."""
    from airflow_provider_cdr.api.endpoints import RECORDS_PATH
    from airflow_provider_cdr.days.day_window import DayWindow
    from airflow_provider_cdr.hooks.cdr import CDRHook
    from airflow_provider_cdr.operators.cdr_to_parquet import DEFAULT_SLICES

    hook = CDRHook()
    settings = hook.settings
    window = DayWindow(date.fromisoformat(day), ZoneInfo(settings.timezone))
    key = os.environ["CDR_BENCH_KEY"]
    session = hook.get_conn()
    url = hook.base_url + RECORDS_PATH
    per_page = int(os.environ.get("CDR_BENCH_CEILING_PER_PAGE", settings.per_page))

    def download(bounds: dict[str, str]) -> int:
        count, page, token = 0, 1, None
        while True:
            params = {**bounds, "key": key, "page": str(page), "per_page": str(per_page)}
            if token:
                params["search_token"] = token
            body = session.get(url, params=params, timeout=120).content
            received = body.count(b'"uuid":')
            count += received
            if received == per_page and page * per_page < 10_000:
                page += 1
                continue
            found = _TOKEN.search(body[-400:])
            if not found:
                return count
            token, page = found.group(1).decode(), 1

    with ThreadPoolExecutor(settings.concurrency) as pool:
        return sum(pool.map(download, window.slices(DEFAULT_SLICES)))


def imports(day: str, out: Path) -> int:
    """Nothing: the process's peak RSS is then what importing the operator costs."""
    return 0


def _peak_rss_kib() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so a
    child of a big parent (the benchmark, holding the stand-in's ground truth) would inherit it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _import_before_timing(variant: str) -> None:
    """Import what the variant imports (Airflow's take seconds) before the clock starts.

    Only what the variant itself needs: the operator never imports pandas, so its process does
    not carry pandas' ~30 MiB either. The provider is imported before pyarrow, as in a DAG file
    that imports it (see airflow_provider_cdr/__init__.py).
    """
    if variant != "baseline":  # first, as a DAG file imports it: it picks Arrow's allocator
        from airflow_provider_cdr.operators import cdr_to_parquet  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    from airflow.providers.http.hooks.http import HttpHook  # noqa: F401

    if variant == "baseline":
        import pandas  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=["baseline", "operator", "ceiling", "imports"])
    parser.add_argument("--day", default="2024-03-05")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run = {"baseline": baseline, "operator": operator, "ceiling": ceiling, "imports": imports}[args.variant]
    _import_before_timing(args.variant)
    started_at, started, cpu_started = time.time(), time.perf_counter(), time.process_time()
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        records = profiler.runcall(run, args.day, args.out)
        profiler.dump_stats(args.profile)
    else:
        records = run(args.day, args.out)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    ended_at = time.time()
    peak_kib = _peak_rss_kib()
    print(
        json.dumps(
            {
                "records": records,
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_mib": peak_kib / 1024,
                "started_at": started_at,
                "ended_at": ended_at,
            }
        )
    )


if __name__ == "__main__":
    main()
