"""`make bench`: the operator against the hand-written baseline and the download ceiling.

For each latency model (80 ms + 10 us/record per request, and none) and each day size
(100,000 and 1,000,000 records), one stand-in process serves the day and every variant
(see variants.py) runs `--runs` times in a process of its own. Medians, ratios and the
targets go to benchmarks/results.md, a chart to benchmarks/results.png. The baseline's
and the operator's uuid sets are compared in the same run, and the request-rate cap is
checked by counting requests per second at the stand-in.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from airflow_provider_cdr.fake_api.server import StandIn

HERE = Path(__file__).resolve().parent
DAY = "2024-03-05"
NEXT_DAY = "2024-03-06"  # the last slice of DAY ends at its 00:00:00, so the stand-in builds it too
ZONE = "America/Sao_Paulo"
LATENCIES = {"80 ms + 10 us/record": (80.0, 10.0), "no latency": (0.0, 0.0)}
VARIANTS = ("baseline", "operator", "ceiling")
RATE_CAP = 20


@dataclass
class Result:
    latency: str
    volume: int
    variant: str
    records: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float

    @property
    def rate(self) -> float:
        return self.records / self.wall_s


def environment(stand_in: StandIn, home: Path, **extra: object) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        CDR_BENCH_KEY=stand_in.api_key,
        AIRFLOW_CONN_CDR_DEFAULT=json.dumps(
            {
                "conn_type": "cdr",
                "host": stand_in.url,
                "password": stand_in.api_key,
                "extra": {"timezone": ZONE, **extra},
            }
        ),
        AIRFLOW_CONN_CDR_HTTP=json.dumps({"conn_type": "http", "host": stand_in.url}),
    )
    return env


def run_variant(
    variant: str, env: dict[str, str], out: Path, profile: Path | None = None
) -> dict[str, float]:
    command = [sys.executable, str(HERE / "variants.py"), variant, "--day", DAY, "--out", str(out)]
    if profile:
        command += ["--profile", str(profile)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def uuids(path: Path) -> set[str]:
    return set(pq.read_table(path, columns=["uuid"]).column("uuid").to_pylist())


def measure(volume: int, latency: str, runs: int, work: Path) -> tuple[list[Result], list[str]]:
    fixed_ms, per_record_us = LATENCIES[latency]
    notes: list[str] = []
    results: list[Result] = []
    with StandIn(records_per_day=volume, timezone=ZONE, now="2024-03-20T12:00:00Z") as stand_in:
        stand_in.truth(start_date=DAY, end_date=NEXT_DAY)  # generate the days before anything is timed
        stand_in.set_faults(latency_ms=fixed_ms, latency_per_record_us=per_record_us)
        env = environment(stand_in, work / "home")
        for variant in VARIANTS:
            samples = []
            for attempt in range(runs):
                out = work / f"{variant}-{volume}-{attempt}"
                samples.append(run_variant(variant, env, out))
                if attempt == 0 and variant != "ceiling":
                    landed = uuids(
                        out / f"date={DAY}" if variant == "operator" else out / f"date={DAY}.parquet"
                    )
                    truth = stand_in.truth(start_date=DAY, end_date=DAY)
                    notes.append(
                        f"{latency}, {volume:,}: {variant} landed {len(landed):,} uuids, truth {len(truth):,}, equal: {landed == truth}"
                    )
            print(
                f"  {latency:>22} {volume:>9,} {variant:>8}: {[round(s['wall_s'], 1) for s in samples]} s",
                flush=True,
            )
            results.append(
                Result(
                    latency,
                    volume,
                    variant,
                    int(samples[0]["records"]),
                    statistics.median(s["wall_s"] for s in samples),
                    statistics.median(s["cpu_s"] for s in samples),
                    statistics.median(s["peak_rss_mib"] for s in samples),
                )
            )
        if volume == min(VOLUMES) and fixed_ms:
            stand_in.reset_stats()
            run_variant("operator", environment(stand_in, work / "home", rate_limit=RATE_CAP), work / "rate")
            seen = stand_in.stats()["max_per_second"]
            notes.append(
                f"rate cap {RATE_CAP}/s on the connection: the stand-in counted at most {seen} requests in one second ({'kept' if seen <= RATE_CAP else 'EXCEEDED'})"
            )
    return results, notes


# Servers that page differently: what proving every search's end costs the operator there.
PAGING_READINGS: dict[str, dict[str, object]] = {
    "per_page honoured (10,000)": {},
    "pages capped at 1,000": {"page_cap": 1000},
    "capped at 1,000, token on the last page only, `total` in records": {
        "page_cap": 1000,
        "token_on": "last",
        "total": "records",
    },
    "capped at 1,000, no `total`": {"page_cap": 1000, "total": "absent"},
}


def paging_costs(volume: int, work: Path) -> str:
    """Requests per day against the least any client needs (the pages that held records), per reading."""
    lines = [
        "| server | records | requests | pages with records (the minimum) | empty answers to prove an end "
        "| offset tests | extra |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, profile in PAGING_READINGS.items():
        with StandIn(
            records_per_day=volume, timezone=ZONE, now="2024-03-20T12:00:00Z", profile=profile
        ) as api:
            api.truth(start_date=DAY, end_date=NEXT_DAY)
            out = work / f"paging-{len(lines)}"
            records = int(run_variant("operator", environment(api, work / "home"), out)["records"])
            requests = api.stats()["requests"]
        paging = json.loads((out / f"date={DAY}" / "_manifest.json").read_text())["extraction"]["paging"]
        extra = requests / paging["pages"] - 1
        lines.append(
            f"| {label} | {records:,} | {requests} | {paging['pages']} | {paging['proof_requests']} "
            f"| {paging['offset_test_requests']} | {extra:.0%} |"
        )
    return "\n".join(lines)


def profile_operator(volume: int, work: Path) -> str:
    """Where the operator's time goes without latency: the top of a cProfile."""
    with StandIn(records_per_day=volume, timezone=ZONE, now="2024-03-20T12:00:00Z") as stand_in:
        stand_in.truth(start_date=DAY, end_date=NEXT_DAY)
        target = work / "profile.out"
        run_variant(
            "operator", environment(stand_in, work / "home", concurrency=1), work / "profiled", target
        )
    stats = pstats.Stats(str(target))
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:15]  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    lines = ["| function | own time (s) | share |", "| --- | ---: | ---: |"]
    for (filename, line, name), (_, _, own, _, _) in rows:
        where = f"{Path(filename).name}:{line} {name}"
        lines.append(f"| `{where}` | {own:.2f} | {own / total:.0%} |")
    return "\n".join(lines)


def one_core_rates() -> dict[str, list[float]]:
    """convert_speed.py in a process of its own (it pins itself to one core)."""
    command = [sys.executable, str(HERE / "convert_speed.py"), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    rates: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rates


def import_floor_mib(work: Path) -> float:
    """Peak RSS of a process that only imports what the operator variant imports."""
    return run_variant("imports", {**os.environ, "AIRFLOW_HOME": str(work / "home")}, work / "imports")[
        "peak_rss_mib"
    ]


def find(results: list[Result], latency: str, volume: int, variant: str) -> Result:
    return next(r for r in results if (r.latency, r.volume, r.variant) == (latency, volume, variant))


def report(
    results: list[Result],
    notes: list[str],
    profile: str,
    runs: int,
    one_core: dict[str, list[float]],
    floor_mib: float,
    paging: str,
) -> str:
    lines = [
        "# Benchmark: CDRToParquetOperator vs the hand-written baseline",
        "",
        f"Written by `make bench` (`benchmarks/run.py`); medians of {runs} runs per row, each run in a fresh",
        "process; one day in America/Sao_Paulo; 2-core machine. (a) baseline = HttpHook page loop,",
        "per_page=1000, list of dicts, `pandas.DataFrame(...).to_parquet()`; (b) operator = CDRToParquetOperator",
        "defaults; (c) ceiling = the operator's requests with its concurrency, downloaded only.",
        "",
        "| latency | records/day | variant | records/s | wall (s) | CPU (s) | peak RSS (MiB) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.latency} | {r.volume:,} | {r.variant} | {r.rate:,.0f} | {r.wall_s:.1f} | {r.cpu_s:.1f} | {r.peak_rss_mib:.0f} |"
        )
    lines += [
        "",
        "## Ratios and targets",
        "",
        "| latency | records/day | b/a records/s | b/c records/s | target | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for latency in LATENCIES:
        for volume in VOLUMES:
            a, b, c = (find(results, latency, volume, v) for v in VARIANTS)
            ba, bc = b.rate / a.rate, b.rate / c.rate
            if LATENCIES[latency][0]:
                target, met = "b/a >= 5, b/c >= 0.70", ba >= 5 and bc >= 0.70
            else:
                target, met = "b/a >= 2", ba >= 2
            lines.append(
                f"| {latency} | {volume:,} | {ba:.1f} | {bc:.2f} | {target} | {'yes' if met else 'NO'} |"
            )
    small, large = min(VOLUMES), max(VOLUMES)
    for latency in LATENCIES:
        b_small, b_large = (
            find(results, latency, small, "operator"),
            find(results, latency, large, "operator"),
        )
        a_small, a_large = (
            find(results, latency, small, "baseline"),
            find(results, latency, large, "baseline"),
        )
        growth = b_large.peak_rss_mib / b_small.peak_rss_mib
        lines.append("")
        lines.append(
            f"Peak RSS, {latency}: operator {b_small.peak_rss_mib:.0f} -> {b_large.peak_rss_mib:.0f} MiB "
            f"({growth:.2f}x; targets <= 300 MiB and <= 1.25x: "
            f"{'met' if b_large.peak_rss_mib <= 300 and growth <= 1.25 else 'NOT met'}); "
            f"baseline {a_small.peak_rss_mib:.0f} -> {a_large.peak_rss_mib:.0f} MiB."
        )
    lines.append("")
    lines.append(
        f"For scale: a process that only imports the operator (Airflow, pyarrow, numpy) peaks at "
        f"{floor_mib:.0f} MiB; the rest of the operator's figure is its working memory."
    )
    lines += [
        "",
        "## The bytes-to-Parquet path on one core (`benchmarks/convert_speed.py`)",
        "",
        "| path | records/s (wall) | records/s (CPU time) |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {label} | {wall:,.0f} | {cpu:,.0f} |" for label, (wall, cpu) in one_core.items()]
    wall, _ = one_core["bytes -> committed Parquet day"]
    lines += [
        "",
        f"Target: at least 200,000 records/s on one core: {'met' if wall >= 200_000 else 'NOT met'}.",
    ]
    lines += [
        "",
        f"## Requests per day: proving where searches end ({min(VOLUMES):,} records, the operator's defaults)",
        "",
        "A page shorter than asked does not end a search (the server may cap or vary page sizes), so",
        "the operator asks until a page comes back empty, unless the search delivered 10,000 records with a",
        "token or a `total` whose meaning it learned says so; where page 2 starts after a short page 1 is",
        "learned with one extra request per extraction.",
        "",
        paging,
    ]
    lines += ["", "## Checks in the same run", ""] + [f"- {note}" for note in notes]
    lines += [
        "",
        "## Where the operator's time goes (cProfile, no latency, concurrency 1, own time)",
        "",
        profile,
        "",
    ]
    return "\n".join(lines)


def chart(results: list[Result], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for latency in LATENCIES:
        for variant in VARIANTS:
            rows = sorted(
                (r for r in results if r.latency == latency and r.variant == variant), key=lambda r: r.volume
            )
            style = "-" if LATENCIES[latency][0] else "--"
            label = f"{variant} ({latency})"
            speed.plot([r.volume for r in rows], [r.rate for r in rows], style, marker="o", label=label)
            memory.plot(
                [r.volume for r in rows], [r.peak_rss_mib for r in rows], style, marker="o", label=label
            )
    for axis, title in ((speed, "records/s"), (memory, "peak RSS (MiB)")):
        axis.set_xscale("log")
        axis.set_xlabel("records per day")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    speed.set_yscale("log")
    memory.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(target, dpi=110)


VOLUMES = (100_000, 1_000_000)


def main() -> None:
    global VOLUMES
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--volumes", type=int, nargs="+", default=list(VOLUMES))
    args = parser.parse_args()
    VOLUMES = tuple(sorted(args.volumes))
    results: list[Result] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cdr-bench-") as scratch:
        work = Path(scratch)
        for latency in LATENCIES:
            for volume in VOLUMES:
                found, said = measure(
                    volume, latency, args.runs, work / f"{volume}-{LATENCIES[latency][0]:.0f}"
                )
                results += found
                notes += said
        profile = profile_operator(min(VOLUMES), work)
        floor = import_floor_mib(work)
        paging = paging_costs(min(VOLUMES), work)
    one_core = one_core_rates()
    (HERE / "results.md").write_text(report(results, notes, profile, args.runs, one_core, floor, paging))
    chart(results, HERE / "results.png")
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main()
