"""Records per second of the path API bytes -> Arrow batch -> committed Parquet day, on one core.

Two ways from bytes to a batch are timed: the operator's (``arrow_page.read_page``: Arrow's
JSON reader, drift included where it can be made readable) and the general one it falls back
to (``orjson`` + ``RecordConverter.to_batch``), on regular pages and on drifted ones: 5 % of
the records drifted as the stand-in drifts them (numbers as strings, floats for integers, an
unknown ``recording_url``, a missing field, ``"n/a"`` for a duration).

Run: ``.venv/bin/python benchmarks/convert_speed.py [--records N] [--per-page N]``.
The pages are synthetic but shaped like the API's sample response: about 60 % calls,
25 % chats with an ``sla`` object, 15 % SMS with non-ASCII text. The process is
pinned to one CPU (Linux) so Arrow's thread pools cannot make it look faster.
One warm-up page runs first: the first Arrow conversion of a process imports
pandas (about a second, once), which says nothing about throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import orjson

from airflow_provider_cdr.convert import arrow_page
from airflow_provider_cdr.convert.arrow_page import ReadHints, read_page
from airflow_provider_cdr.convert.formats import CDRBatches
from airflow_provider_cdr.convert.records import RecordConverter
from airflow_provider_cdr.fake_api.dataset import drift_records
from airflow_provider_cdr.landing.writer import DayPartitionWriter


def synthetic_record(number: int, rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {
        "uuid": f"{number:08x}-4103-48ac-84ad-4861155f86db",
        "timestamp": f"2024-07-31T{number % 24:02d}:{number % 60:02d}:{number * 7 % 60:02d}."
        f"{number % 1000:03d}-03:00",
        "agent": rng.choice(["Mike A", "Chandra Agarwal", None, "Zoë Łukasz"]),
        "from": str(15550000000 + number),
        "to": "31208112500",
        "disposition": rng.choice(["answered", "no_answer", "busy"]),
        "duration": f"{number % 30:02d}:{number % 60:02d}:{number * 3 % 60:02d}",
        "queue": None,
        "wrapup_code": "0101",
        "agent_id": 50000 + number % 100,
        "cpc": 0.3972,
        "type": "outbound",
    }
    kind = rng.random()
    if kind < 0.25:
        record.update(
            type="chat",
            cpc=0.0,
            sla={
                "time_to_first_response": "00:01:45",
                "time_to_resolution": "48:16:27",
                "time_to_reply": "00:00:23",
            },
        )
    elif kind < 0.40:
        record.update(
            type="outbound_sms",
            sid="ACME",
            text="Привет, ваш заказ готов ✓ " * 3,
            related_call=None,
            template="order_ready",
            num_segments=1,
        )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--per-page", type=int, default=10_000, help="the operator's default per_page")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON line (for benchmarks/run.py)")
    args = parser.parse_args()
    rates = measure(args.records, args.per_page, args.repeat)
    if args.json:
        print(json.dumps(rates))
        return
    print(f"{args.records:,} records in pages of {args.per_page:,}, one core, best of {args.repeat}")
    for label, (wall, cpu) in rates.items():
        print(f"{label:34} {wall:>10,.0f} records/s wall   {cpu:>10,.0f} records/s CPU time")


def measure(records: int, per_page: int, repeat: int) -> dict[str, tuple[float, float]]:
    """Label -> (records/s of wall time, records/s of CPU time), best of `repeat`, on one core."""
    with on_one_core():
        timings = _timings(records, per_page, repeat)
    return {
        label: (records / min(run[0] for run in runs), records / min(run[1] for run in runs))
        for label, runs in timings.items()
    }


def _timings(records: int, per_page: int, repeat: int) -> dict[str, list[tuple[float, float]]]:
    """Each path once per round, `repeat` rounds: the paths take turns, so a machine whose speed
    drifts during the run slows them alike and their ratios hold (timed one after the other, a
    path could come out faster than the parse it contains)."""
    pages = synthetic_pages(records, per_page, drift=0.0)
    drifted = synthetic_pages(records, per_page, drift=DRIFT)
    RecordConverter().to_batch(orjson.loads(pages[0])["records"])  # warm-up, see docstring
    paths: dict[str, Callable[[], object]] = {
        "regular: Arrow's JSON parse alone (the floor)": lambda: parse_alone(pages),
        "regular: bytes -> batches, general path": lambda: _convert(pages),
        "regular: bytes -> batches, Arrow path": lambda: _read(pages),
        "regular: bytes -> committed Parquet day": lambda: _convert_and_write(pages),
        "drifted: bytes -> batches, general path": lambda: _convert(drifted),
        "drifted: bytes -> batches, Arrow path": lambda: _read(drifted),
        "drifted: bytes -> committed Parquet day": lambda: _convert_and_write(drifted),
    }
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in paths}
    for _ in range(repeat):
        for label, work in paths.items():
            runs[label].append(timed(work))
    return runs


DRIFT = 0.05


def synthetic_pages(records: int, per_page: int, drift: float) -> list[bytes]:
    rng = random.Random(7)
    pages = []
    for start in range(0, records, per_page):
        page = [synthetic_record(n, rng) for n in range(start, start + per_page)]
        pages.append(orjson.dumps({"records": drift_records(page, drift, seed=start) if drift else page}))
    return pages


@contextmanager
def on_one_core() -> Iterator[None]:
    """The calling thread on one core for the block (Linux), so that Arrow's thread pools cannot
    make a one-core rate look faster; its mask is put back after, as child processes inherit it."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds): CPU time is what a shared machine cannot steal."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def parse_alone(pages: list[bytes]) -> None:
    """Only what every Arrow path must do: pyarrow's JSON reader on the page, nothing else."""
    for page in pages:
        if arrow_page._parse(page) is None:
            raise SystemExit("a synthetic page did not parse")


def _convert(pages: list[bytes]) -> None:
    converter = RecordConverter()
    for page in pages:
        converter.to_batch(orjson.loads(page)["records"])


def _read(pages: list[bytes]) -> None:
    converter, hints = RecordConverter(), ReadHints()
    for page in pages:
        if read_page(page, converter, hints) is None:
            raise SystemExit("a synthetic page left the Arrow path: the benchmark would time the wrong thing")


def _convert_and_write(pages: list[bytes]) -> None:
    """What the operator does with each page (its page format), then the commit."""
    batches = CDRBatches()
    with tempfile.TemporaryDirectory() as base, DayPartitionWriter(base, date(2024, 7, 31)) as writer:
        for body in pages:
            writer.write_batch(batches.read(body).payload)
        writer.commit(manifest={"benchmark": True})


if __name__ == "__main__":
    main()
