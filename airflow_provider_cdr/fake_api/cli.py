"""`cdr-fake-api`: run the CDR API stand-in from a shell, a demo or a test fixture.

Prints exactly one line, `CDR stand-in listening on http://127.0.0.1:<port>`, once
the socket accepts connections (so a parent process can read the port of
`--port 0`), then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from airflow_provider_cdr.fake_api.dataset import DEFAULT_FIRST_DAY, CDRDataset, parse_instant
from airflow_provider_cdr.fake_api.faults import FaultConfig
from airflow_provider_cdr.fake_api.profile import ServerProfile, cli_flag, cli_text, field_choices, field_help
from airflow_provider_cdr.fake_api.server import StandInApp, StandInServer


def _day_profile(text: str) -> tuple[date, str | int]:
    day, sep, profile = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("use YYYY-MM-DD=PROFILE (empty, sms_only, voice_only or a count)")
    try:
        return date.fromisoformat(day.strip()), int(profile) if profile.strip().isdigit() else profile.strip()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _faults(text: str) -> FaultConfig:
    try:
        return FaultConfig.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 (got {text!r})")
    return int(text)


def _profile_value(name: str) -> Callable[[str], Any]:
    """The argparse type of one profile flag (combinations of flags are judged by build_server)."""

    def parse(text: str) -> Any:
        try:
            return ServerProfile.parse_value(name, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def _add_profile_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ServerProfile field; an absent flag leaves the field at its default."""
    group = parser.add_argument_group(
        "paging readings", "how the stand-in reads the API's undocumented paging (defaults: the original)"
    )
    for name in ServerProfile.field_names():
        choices = field_choices(name)
        group.add_argument(
            cli_flag(name),
            type=_profile_value(name),
            default=argparse.SUPPRESS,
            metavar="|".join(choices) if choices else "N|none",
            help=f"{field_help(name)} (default {cli_text(getattr(ServerProfile(), name))})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdr-fake-api", description="A deterministic local stand-in for the Voiso CDR API v2."
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (default 8080)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--records-per-day", type=int, default=5000)
    parser.add_argument("--timezone", default="UTC", help="the account's IANA time zone (default UTC)")
    parser.add_argument("--api-key", default="demo-key")
    parser.add_argument(
        "--day-profile",
        type=_day_profile,
        action="append",
        default=[],
        metavar="DAY=PROFILE",
        help="repeatable; PROFILE is empty, sms_only, voice_only or a record count",
    )
    parser.add_argument("--type-drift", type=float, default=0.0, help="share of records with JSON type drift")
    parser.add_argument("--first-day", type=date.fromisoformat, default=DEFAULT_FIRST_DAY)
    parser.add_argument("--now", type=parse_instant, default=None, help="freeze the clock (ISO instant)")
    parser.add_argument(
        "--ingest-lag-s", type=float, default=0.0, help="records newer than now-lag are hidden"
    )
    parser.add_argument("--faults", type=_faults, default=None, metavar="NAME=VALUE,...")
    parser.add_argument("--latency-ms", type=float, default=None)
    parser.add_argument("--latency-per-record-us", type=float, default=None)
    parser.add_argument(
        "--hour-edges",
        action="store_true",
        help="put a record at the first millisecond of every hour (hh:00:00.000), where a day's slices "
        "meet: with --start-bound exclusive or --end-bound exclusive they test a client's windows",
    )
    parser.add_argument(
        "--tie-group",
        type=_positive_int,
        default=1,
        metavar="N",
        help="every run of N consecutive records of a day shares one millisecond, so search and page "
        "edges fall inside groups of ties (default 1: the ordinary spread)",
    )
    _add_profile_flags(parser)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def build_server(args: argparse.Namespace) -> StandInServer:
    """The configured, bound (not yet serving) server for parsed arguments."""
    dataset = CDRDataset(
        args.seed,
        args.records_per_day,
        args.timezone,
        dict(args.day_profile),
        args.type_drift,
        first_day=args.first_day,
        now=args.now,
        ingest_lag_s=args.ingest_lag_s,
        tie_group=args.tie_group,
        hour_edges=args.hour_edges,
    )
    profile = ServerProfile.from_mapping(
        {name: getattr(args, name) for name in ServerProfile.field_names() if hasattr(args, name)}
    )
    faults = args.faults or FaultConfig()
    shortcuts: dict[str, Any] = {}
    if args.latency_ms is not None:
        shortcuts["latency_ms"] = args.latency_ms
    if args.latency_per_record_us is not None:
        shortcuts["latency_per_record_us"] = args.latency_per_record_us
    app = StandInApp(dataset, api_key=args.api_key, faults=faults.merged(**shortcuts), profile=profile)
    return StandInServer(app, args.host, args.port, verbose=args.verbose)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        server = build_server(args)
    except (ValueError, KeyError) as exc:  # bad time zone, day profile, drift share or paging reading
        print(f"cdr-fake-api: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    worker.start()
    print(f"CDR stand-in listening on {server.url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
