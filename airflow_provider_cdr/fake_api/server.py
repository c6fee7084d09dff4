"""The stand-in's HTTP server, and `StandIn`, which runs it (subprocess or thread) for tests and demos.

Stdlib threading server on purpose: no extra dependency, real sockets, real
keep-alive; fast enough because record JSON is serialised once per day and a
page body is a join of pre-made bytes.

Route order for /api requests: the key is checked first (a wrong key is always
401, whatever the faults), then faults, then the route itself.

With a live clock, a window that reaches "now" grows at its newest end between
requests (records become available), so its pages shift, as a live API's would;
with `--now` (tests) every window is fixed.

Paging plays one reading of what the vendor leaves open, chosen by a
`ServerProfile` (profile.py has the details; CLI flags, POST /_admin/profile or
`StandIn(profile=...)` / `set_profile()` switch it). A "search" is the query plus
its cursor (search_token): its first `search_size` matches, newest first.
- page sizes: `page_cap` caps a page whatever per_page asks; `page_sizes=varying`
  makes each page a deterministic random size (pages.py does the arithmetic);
- page offsets: `page_offset=served` starts page k after what earlier pages held,
  `asked` at (k-1)*per_page, skipping what the cap withheld;
- search size: `search_size` records per search (10,000), or none: unbounded;
- tokens: on `every` page or the `last` one, pointing past the `search` or past
  the `page`; `edge_ties=resend` resumes at the token's whole millisecond;
- `total`: pages, records, matches or absent;
- `page_with_token=refuse`: page > 1 with a token is a 422;
- `lookup_paging=honour`: the lookup lists are paged too.
The defaults are the original behaviour: a 10,000-record search cut at per_page,
its search-pointing token on every page, `total` in pages.
"""

from __future__ import annotations

import itertools
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from airflow_provider_cdr.fake_api.dataset import (
    DEFAULT_FIRST_DAY,
    CDRDataset,
    DayTable,
    aware,
    parse_instant,
)
from airflow_provider_cdr.fake_api.faults import NO_FAULT, Decision, FaultConfig, FaultInjector
from airflow_provider_cdr.fake_api.filters import (
    MAX_PER_PAGE,
    Cursor,
    ParamError,
    Query,
    Segment,
    decode_token,
    encode_token,
    iter_matches,
    matching_uuids,
    parse_paging,
    parse_query,
    parse_request,
)
from airflow_provider_cdr.fake_api.pages import Span, fixed_span, page_span, search_key
from airflow_provider_cdr.fake_api.profile import ServerProfile, cli_flag, cli_text

API_PREFIX = "/api/v2/cdr"
LOOKUPS = ("agents", "queues", "teams", "wrapup_codes", "campaigns", "deleted_agents")
BAD_JSON = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
_NOT_FILTERS = ("key", "page", "per_page", "search_token")
BACKWARD_MS = 3_600_000  # how much newer than the request's cursor a backward token points
DRIP_EVERY_S = 0.05  # a slow body's pause between two pieces


@dataclass
class Reply:
    """One response, plus how to misbehave while sending it."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0
    drop: bool = False
    reset_mid_body: bool = False
    drip_bytes_per_s: int = 0  # > 0: the body trickles out this slowly
    api_path: str | None = None  # set for /api requests: what the stats count


def json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, orjson.dumps(payload))


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """An admin request's JSON object body (empty: {}); ValueError naming `what` it should hold."""
    payload = orjson.loads(body or b"{}")
    if not isinstance(payload, dict):
        raise ValueError(f"the body must be a JSON object of {what}")
    return payload


def records_body(segments: list[Segment], total: int | None, page: int, search_token: str | None) -> bytes:
    """A records page's JSON, joined from pre-serialised records; total None leaves the key out."""
    return b"".join(
        [
            b'{"records":[',
            b",".join([table.records_json(idx) for table, idx in segments]),
            b"]" if total is None else b'],"total":%d' % total,
            b',"page":%d,"search_token":' % page,
            orjson.dumps(search_token),
            b"}",
        ]
    )


@dataclass
class Window:
    """One search: its first `search_size` matching records (all of them if unbounded), newest first.

    Holds days and indices, not day tables, so a cached window never pins a day
    the dataset's LRU has let go (it is regenerated, identically, if needed).
    """

    days: list[tuple[date, np.ndarray]]
    size: int
    resume: Cursor | None  # the search's last record, set when more records match beyond the search
    key: tuple[int, int]  # seeds the search's varying page sizes
    matches: int | None = None  # records from the search's start to the end of all results, once counted

    @property
    def search_token(self) -> str | None:
        """The token that resumes after the search (null when nothing matches beyond it)."""
        return None if self.resume is None else encode_token(self.resume)

    def slice(self, dataset: CDRDataset, start: int, stop: int) -> list[Segment]:
        """Records [start, stop) of the window, as segments."""
        picked: list[Segment] = []
        offset = 0
        for day, idx in self.days:
            lo, hi = max(start - offset, 0), min(stop - offset, idx.size)
            if lo < hi:
                picked.append((dataset.day_table(day), idx[lo:hi]))
            offset += idx.size
            if offset >= stop:
                break
        return picked

    def cursor_at(self, dataset: CDRDataset, position: int) -> Cursor:
        """The cursor of the record at `position` (0-based) of the window."""
        ((table, idx),) = self.slice(dataset, position, position + 1)
        return record_cursor(table, int(idx[0]))


def record_cursor(table: DayTable, index: int) -> Cursor:
    return Cursor(int(table.instants[index]), table.uuids[index])


def build_window(
    dataset: CDRDataset,
    query: Query,
    cursor: Cursor | None,
    *,
    resend_edge: bool,
    search_size: int | None,
    until_ms: int,
) -> Window:
    """The search that starts after `cursor`: up to `search_size` matches, one more looked for beyond."""
    limit = None if search_size is None else search_size + 1
    days: list[tuple[date, np.ndarray]] = []
    found = 0
    for table, idx in iter_matches(
        dataset, query, until_ms=until_ms, cursor=cursor, inclusive_cursor_ms=resend_edge
    ):
        if limit is not None:
            idx = idx[: limit - found]
        days.append((table.day, idx))
        found += idx.size
        if limit is not None and found >= limit:
            break
    resume = None
    if search_size is not None and found > search_size:  # the extra match only says "more beyond"
        day, idx = days.pop()
        if idx.size > 1:
            days.append((day, idx[:-1]))
        found = search_size
        last_day, last_idx = days[-1]
        resume = record_cursor(dataset.day_table(last_day), int(last_idx[-1]))
    return Window(days, found, resume, search_key(dataset.seed, query, cursor))


def count_after(dataset: CDRDataset, query: Query, cursor: Cursor) -> int:
    """How many records match strictly after `cursor` (no cap): what `total=matches` adds to a search."""
    until_ms = dataset.available_until_ms()
    return sum(idx.size for _, idx in iter_matches(dataset, query, until_ms=until_ms, cursor=cursor))


TIMELINE_LENGTH = 100_000  # the last requests /_admin/timeline reports


class Stats:
    """Counts of /api requests, for the admin route and the benchmarks' assertions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_status: Counter[str] = Counter()
            self.by_path: Counter[str] = Counter()
            self.per_second: Counter[str] = Counter()
            # Per second again, for each day a query is about: tells apart the tasks of a range.
            self.per_second_by_day: defaultdict[str, Counter[str]] = defaultdict(Counter)
            self.in_flight = 0
            self.max_in_flight = 0
            # Bounded: a stand-in left running (docker compose) must not grow with every request.
            self.arrivals: deque[float] = deque(maxlen=TIMELINE_LENGTH)
            self.retry_afters: deque[tuple[float, float]] = deque(maxlen=TIMELINE_LENGTH)

    def begin(self, path: str, now: float, day: str | None) -> int:
        """Count a request as started; returns its number (1-based), which drives the faults.

        `day`: the day the request's query is about, if it names one (tells a range's tasks apart).
        """
        epoch_second = str(int(now))
        with self._lock:
            self.arrivals.append(now)
            self.requests += 1
            self.by_path[path] += 1
            self.per_second[epoch_second] += 1
            if day is not None:
                self.per_second_by_day[day][epoch_second] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.requests

    def finish(self, status: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self.by_status[status] += 1

    def asked_to_wait(self, arrived: float, seconds: float) -> None:
        """A request that arrived at `arrived` was answered 429 with Retry-After: `seconds`."""
        with self._lock:
            self.retry_afters.append((arrived, seconds))

    def timeline(self) -> dict[str, Any]:
        """When the last TIMELINE_LENGTH /api requests arrived, and which answers asked the client to wait."""
        with self._lock:
            return {
                "arrivals": list(self.arrivals),
                "retry_afters": [list(pair) for pair in self.retry_afters],
            }

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "by_status": dict(self.by_status),
                "by_path": dict(self.by_path),
                "per_second": dict(self.per_second),
                "max_per_second": max(self.per_second.values(), default=0),
                "per_second_by_day": {day: dict(seconds) for day, seconds in self.per_second_by_day.items()},
                "max_in_flight": self.max_in_flight,
            }


def _query_day(params: dict[str, str]) -> str | None:
    """The day a query's window is about, if it names one: its `start_date`, or the date in the
    middle of `start_datetime`..`end_datetime` (a client may start a day's first slice a second
    before midnight, for an API that reads the start as exclusive)."""
    if "start_date" in params:
        return params["start_date"]
    try:
        start, end = (datetime.fromisoformat(params[name]) for name in ("start_datetime", "end_datetime"))
        return (start + (end - start) / 2).date().isoformat()
    except (KeyError, ValueError, TypeError, OverflowError):
        return None


def stop_process(process: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM a child if it still runs, then SIGKILL it if it has not exited after `grace_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class StandInApp:
    """Routes requests to replies; everything except socket I/O, so it is testable in-process."""

    def __init__(
        self,
        dataset: CDRDataset,
        api_key: str = "demo-key",
        faults: FaultConfig | None = None,
        profile: ServerProfile | None = None,
    ) -> None:
        self.dataset = dataset
        self.api_key = api_key
        self.faults = FaultInjector(dataset.seed, faults)
        self.stats = Stats()
        self._profile = profile or ServerProfile()
        self._lookup_rows = dataset.lookups()
        self._lookups = {name: orjson.dumps(rows) for name, rows in self._lookup_rows.items()}
        self._windows: OrderedDict[tuple[Any, ...], Window] = OrderedDict()
        self._nonces = itertools.count(1)  # token_nonce=on: each token issued is unique
        self._windows_lock = threading.Lock()

    @property
    def profile(self) -> ServerProfile:
        return self._profile

    def configure_profile(self, profile: ServerProfile) -> None:
        """Play another reading; cached windows go, as they were cut for the previous one."""
        with self._windows_lock:
            self._profile = profile
            self._windows.clear()

    def handle(self, method: str, target: str, body: bytes = b"") -> Reply:
        parts = urllib.parse.urlsplit(target)
        params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        path = parts.path.rstrip("/") or "/"
        if path.startswith("/_admin/"):
            return self._admin(method, path, params, body)
        if not path.startswith("/api/"):
            return json_reply(404, {"error": "Not found"})
        now = time.time()
        request_no = self.stats.begin(path, now, _query_day(params))
        try:
            reply = self._api(method, path, params, request_no, int(now))
        except Exception:  # a stand-in bug must still answer, and close its in-flight count
            traceback.print_exc()
            reply = json_reply(500, {"error": "Internal server error"})
        reply.api_path = path
        for name, value in reply.headers:
            if name == "Retry-After":
                self.stats.asked_to_wait(now, float(value))
        return reply

    def finish(self, reply: Reply, status: str) -> None:
        """Call once a reply was sent (or dropped): closes its in-flight count."""
        if reply.api_path is not None:
            self.stats.finish(status)

    # -- /api -------------------------------------------------------------
    def _api(
        self, method: str, path: str, params: dict[str, str], request_no: int, epoch_second: int
    ) -> Reply:
        if params.get("key") != self.api_key:
            return json_reply(401, {"error": "Invalid api_key"})
        decision = self.faults.decide(request_no, epoch_second)
        if decision.status is not None:
            headers = [("Retry-After", decision.retry_after)] if decision.retry_after else []
            return Reply(decision.status, decision.body, headers=headers)
        if decision.drop:
            return Reply(0, b"", drop=True)
        if method != "GET":
            reply = json_reply(405, {"error": "Method not allowed"})
        elif path == API_PREFIX:
            reply = self._records(params, decision)
        elif path.startswith(API_PREFIX + "/") and path[len(API_PREFIX) + 1 :] in LOOKUPS:
            reply = self._lookup(path[len(API_PREFIX) + 1 :], params)
        else:
            reply = json_reply(404, {"error": "Not found"})
        reply.delay_s += decision.stall_s
        if reply.status == 200:
            reply.drip_bytes_per_s = decision.drip_bytes_per_s
            if decision.reset_mid_body:
                reply.reset_mid_body = True
            elif decision.truncate:
                reply.body = reply.body[: max(1, len(reply.body) // 2)]
            elif decision.bad_json:
                reply.body, reply.content_type = BAD_JSON, "text/html; charset=utf-8"
        return reply

    def _records(self, params: dict[str, str], decision: Decision = NO_FAULT) -> Reply:
        try:
            bounds = {"start_bound": self._profile.start_bound, "end_bound": self._profile.end_bound}
            query, paging = parse_request(params, self.dataset.tz, **bounds)
        except ParamError as exc:
            return json_reply(422, {"errors": exc.errors})
        profile, config = self._profile, self.faults.config
        if profile.page_with_token == "refuse" and paging.page > 1 and paging.cursor is not None:
            return json_reply(422, {"errors": {"page": ["must be 1 when search_token is given"]}})
        if paging.cursor is not None and decision.expired_token:
            return json_reply(422, {"errors": {"search_token": ["is expired"]}})
        until_ms = self.dataset.available_until_ms()
        resend_edge = config.edge_repeat or profile.edge_ties == "resend"
        window = self._window(query, paging.cursor, resend_edge, profile.search_size, until_ms)
        span = page_span(window.size, profile, paging.page, paging.per_page, window.key)
        served = span
        if decision.repeat_page and paging.page > 1:  # page 1 has no previous page in its search
            served = page_span(window.size, profile, paging.page - 1, paging.per_page, window.key)
        stop = served.stop - 1 if decision.drop_record and served.stop > served.start else served.stop
        if decision.oversized_page and stop - served.start >= paging.per_page:
            stop = min(stop + 1, window.size)  # the next page's first record too: more than asked
        segments = window.slice(self.dataset, served.start, stop)
        search_token = self._token(window, span, profile)
        search_token = self._faulty_token(search_token, params, paging.cursor, decision)
        if decision.empty_token_page:
            # No records, and a token that resumes right after the pages before this one (as a store that
            # yields an empty scan segment with a continuation key), so a client that follows it loses
            # nothing. On page 1 there is nothing before: the search's own cursor, or the top of the results.
            segments = []
            if span.start > 0:
                search_token = encode_token(window.cursor_at(self.dataset, min(span.start, window.size) - 1))
            else:
                search_token = encode_token(paging.cursor or Cursor(until_ms + 1, ""))
        if search_token is not None and profile.token_nonce == "on":
            search_token = encode_token(decode_token(search_token), next(self._nonces))
        count = sum(idx.size for _, idx in segments)
        total = self._total(window, span, query, profile.total)
        body = records_body(segments, total, paging.page, search_token)
        delay_s = config.latency_ms / 1000 + config.latency_per_record_us * count / 1e6
        return Reply(200, body, delay_s=delay_s)

    def _token(self, window: Window, span: Span, profile: ServerProfile) -> str | None:
        """The page's search_token as the profile places and aims it."""
        reaches_end = span.stop >= window.size  # the search's last page, or a page beyond it
        if profile.token_on == "last" and not reaches_end:
            return None
        if profile.token_points == "page" and not reaches_end:
            return encode_token(window.cursor_at(self.dataset, span.stop - 1))
        return window.search_token

    def _faulty_token(
        self, token: str | None, params: dict[str, str], cursor: Cursor | None, decision: Decision
    ) -> str | None:
        """The token faults, which only hit a reply with a token to a request that carried one."""
        if token is None or cursor is None:
            return token
        if self.faults.config.repeat_token:
            return params["search_token"]  # a server stuck in a loop
        if decision.backward_token:
            return encode_token(Cursor(cursor.ms + BACKWARD_MS, cursor.uuid))  # re-serves sent records
        return token

    def _total(self, window: Window, span: Span, query: Query, reading: str) -> int | None:
        """`total` in the profile's reading; None leaves the key out."""
        if reading == "pages":
            return span.pages
        if reading == "records":
            return window.size
        if reading == "matches":
            if window.matches is None:
                rest = 0 if window.resume is None else count_after(self.dataset, query, window.resume)
                window.matches = window.size + rest
            return window.matches
        return None

    def _window(
        self, query: Query, cursor: Cursor | None, resend_edge: bool, search_size: int | None, until_ms: int
    ) -> Window:
        """The search for a query and cursor, cached: every page of a search reuses it."""
        effective_hi = until_ms if query.hi_ms is None else min(query.hi_ms, until_ms)
        key = (query, cursor, resend_edge, search_size, effective_hi)
        with self._windows_lock:
            window = self._windows.get(key)
            if window is not None:
                self._windows.move_to_end(key)
                return window
        window = build_window(
            self.dataset, query, cursor, resend_edge=resend_edge, search_size=search_size, until_ms=until_ms
        )
        with self._windows_lock:
            self._windows[key] = window
            while len(self._windows) > 64:
                self._windows.popitem(last=False)
        return window

    def _lookup(self, name: str, params: dict[str, str]) -> Reply:
        """A lookup list: whole, or with lookup_paging=honour one page of it (still a bare list)."""
        profile = self._profile
        if profile.lookup_paging == "ignore":
            return Reply(200, self._lookups[name])
        try:
            paging = parse_paging({key: params[key] for key in ("page", "per_page") if key in params})
        except ParamError as exc:
            return json_reply(422, {"errors": exc.errors})
        rows = self._lookup_rows[name]
        held = min(paging.per_page, profile.page_cap or MAX_PER_PAGE)
        span = fixed_span(len(rows), paging.page, held, step=held)
        return json_reply(200, rows[span.start : span.stop])

    # -- /_admin ----------------------------------------------------------
    def _admin(self, method: str, path: str, params: dict[str, str], body: bytes) -> Reply:
        route = (method, path)
        if route == ("GET", "/_admin/health"):
            return json_reply(200, {"ok": True})
        if route == ("GET", "/_admin/stats"):
            return json_reply(200, self.stats.snapshot())
        if route == ("GET", "/_admin/timeline"):
            return json_reply(200, self.stats.timeline())
        if route == ("POST", "/_admin/reset"):
            self.stats.reset()
            self.faults.reset()
            return json_reply(200, {"ok": True})
        if route == ("GET", "/_admin/faults"):
            return json_reply(200, self.faults.config.to_dict())
        if route == ("POST", "/_admin/faults"):
            try:
                config = FaultConfig.from_mapping(json_object(body, "fault fields"))
            except (ValueError, TypeError) as exc:
                return json_reply(400, {"error": str(exc)})
            self.faults.configure(config)
            return json_reply(200, config.to_dict())
        if route == ("GET", "/_admin/profile"):
            return json_reply(200, self._profile.to_dict())
        if route == ("POST", "/_admin/profile"):
            try:
                profile = ServerProfile.from_mapping(json_object(body, "profile fields"))
            except (ValueError, TypeError) as exc:
                return json_reply(400, {"error": str(exc)})
            self.configure_profile(profile)
            return json_reply(200, profile.to_dict())
        if route == ("POST", "/_admin/clock"):
            return self._set_clock(body)
        if route == ("GET", "/_admin/truth"):
            filters = {name: value for name, value in params.items() if name not in _NOT_FILTERS}
            try:
                query = parse_query(filters, self.dataset.tz)
            except ParamError as exc:
                return json_reply(422, {"errors": exc.errors})
            uuids = matching_uuids(self.dataset, query, until_ms=self.dataset.available_until_ms())
            return json_reply(200, {"uuids": uuids, "count": len(uuids)})
        return json_reply(404, {"error": "Not found"})

    def _set_clock(self, body: bytes) -> Reply:
        """Move the server's clock: records "arrive" while a client waits, as they would live.

        Body: {"now": ISO instant or null (live clock), "ingest_lag_s": seconds}, both optional.
        """
        try:
            payload = orjson.loads(body or b"{}")
            if not isinstance(payload, dict) or set(payload) - {"now", "ingest_lag_s"}:
                raise ValueError("the body must be a JSON object with `now` and/or `ingest_lag_s`")
            if "now" in payload:
                self.dataset.now = None if payload["now"] is None else aware(parse_instant(payload["now"]))
            if "ingest_lag_s" in payload:
                self.dataset.ingest_lag_s = float(payload["ingest_lag_s"])
        except (ValueError, TypeError) as exc:
            return json_reply(400, {"error": str(exc)})
        now = self.dataset.now
        return json_reply(
            200,
            {"now": None if now is None else now.isoformat(), "ingest_lag_s": self.dataset.ingest_lag_s},
        )


class _Handler(BaseHTTPRequestHandler):
    """Socket side: read the request, ask the app, write (or mangle) the reply."""

    protocol_version = "HTTP/1.1"
    server_version = "CDRStandIn/0.1"
    disable_nagle_algorithm = True
    server: StandInServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        app = self.server.app
        reply = app.handle(method, self.path, body)
        status = "dropped" if reply.drop else str(reply.status)
        try:
            self._write(reply)
        except OSError:
            self.close_connection = True
        finally:
            app.finish(reply, status)

    def _write(self, reply: Reply) -> None:
        if reply.delay_s > 0:
            time.sleep(reply.delay_s)
        if reply.drop:
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if reply.reset_mid_body:
            self.wfile.write(reply.body[: len(reply.body) // 2])
            # Linger 0: closing sends a TCP reset instead of a clean end of stream.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if reply.drip_bytes_per_s > 0:
            self._drip(reply.body, reply.drip_bytes_per_s)
            return
        self.wfile.write(reply.body)

    def _drip(self, body: bytes, bytes_per_s: int) -> None:
        """Send `body` a small piece every DRIP_EVERY_S: each read gets bytes, the whole takes long.

        A client that hangs up makes a write fail, which ends the drip (and the connection).
        """
        piece = max(1, int(bytes_per_s * DRIP_EVERY_S))
        for start in range(0, len(body), piece):
            self.wfile.write(body[start : start + piece])
            time.sleep(DRIP_EVERY_S)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class StandInServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with daemon threads, a deep backlog and quiet client disconnects."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(
        self, app: StandInApp, host: str = "127.0.0.1", port: int = 0, verbose: bool = False
    ) -> None:
        self.app = app
        self.verbose = verbose
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


_READY = re.compile(rb"listening on (http://\S+)")
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy: it is loopback


def _normalise_profiles(profiles: Mapping[date | str, str | int]) -> dict[date, str | int]:
    """Days as dates and numeric profiles as record counts, the way the CLI parses them."""
    normalised: dict[date, str | int] = {}
    for day, profile in profiles.items():
        key = day if isinstance(day, date) else date.fromisoformat(day)
        normalised[key] = int(profile) if isinstance(profile, str) and profile.isdigit() else profile
    return normalised


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def _shut_down(server: StandInServer) -> None:
    server.shutdown()
    server.server_close()


class StandIn:
    """Runs the stand-in CLI on a free port; a handle for tests, demos and benchmarks.

    By default in a subprocess (as a deployment runs it); with `in_process=True` the
    same server, built from the same command line, serves from a daemon thread of
    this process: cheap enough for a test to start many differently-configured ones.
    """

    def __init__(
        self,
        seed: int = 7,
        records_per_day: int = 2500,
        timezone: str = "UTC",
        api_key: str = "demo-key",
        faults: FaultConfig | Mapping[str, Any] | None = None,
        day_profiles: Mapping[date | str, str | int] | None = None,
        type_drift: float = 0.0,
        now: datetime | str | None = None,
        ingest_lag_s: float = 0.0,
        extra_args: Sequence[str] = (),
        *,
        first_day: date = DEFAULT_FIRST_DAY,
        startup_timeout_s: float = 30.0,
        profile: ServerProfile | Mapping[str, Any] | None = None,
        tie_group: int = 1,
        hour_edges: bool = False,
        in_process: bool = False,
    ) -> None:
        self.seed = seed
        self.records_per_day = records_per_day
        self.timezone = timezone
        self._api_key = api_key
        if faults is not None and not isinstance(faults, FaultConfig):
            faults = FaultConfig.from_mapping(faults)
        self.faults = faults
        self.day_profiles = _normalise_profiles(day_profiles or {})
        self.type_drift = type_drift
        if isinstance(now, str):
            now = parse_instant(now)
        self.now = None if now is None else aware(now)
        self.ingest_lag_s = ingest_lag_s
        self.extra_args = tuple(extra_args)
        self.first_day = first_day
        self.startup_timeout_s = startup_timeout_s
        if profile is not None and not isinstance(profile, ServerProfile):
            profile = ServerProfile.from_mapping(profile)
        self.profile = profile or ServerProfile()
        self.tie_group = tie_group
        self.hour_edges = hour_edges
        self.in_process = in_process
        self._process: subprocess.Popen[bytes] | None = None
        self._server: StandInServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # -- lifecycle ------------------------------------------------------------
    def argv(self) -> list[str]:
        """The command line that starts this stand-in (port 0: the OS picks a free one)."""
        argv = [sys.executable, "-m", "airflow_provider_cdr.fake_api.cli", "--port", "0"]
        argv += ["--seed", str(self.seed), "--records-per-day", str(self.records_per_day)]
        argv += ["--timezone", self.timezone, "--api-key", self._api_key]
        argv += ["--first-day", self.first_day.isoformat(), "--type-drift", str(self.type_drift)]
        argv += ["--ingest-lag-s", str(self.ingest_lag_s)]
        if self.now is not None:
            argv += ["--now", self.now.isoformat()]
        for day, profile in sorted(self.day_profiles.items()):
            argv += ["--day-profile", f"{day.isoformat()}={profile}"]
        if self.tie_group != 1:
            argv += ["--tie-group", str(self.tie_group)]
        if self.hour_edges:
            argv += ["--hour-edges"]
        for name, value in self.profile.changed().items():
            argv += [cli_flag(name), cli_text(value)]
        if self.faults is not None:
            default = FaultConfig().to_dict()
            changed = {k: v for k, v in self.faults.to_dict().items() if v != default[k]}
            if changed:
                argv += [
                    "--faults",
                    ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in changed.items()),
                ]
        return argv + list(self.extra_args)

    def start(self) -> StandIn:
        """Spawn the server (or its thread), learn its port, wait until /_admin/health answers."""
        if self._process is not None or self._server is not None:
            return self
        if self.in_process:
            return self._start_in_process()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        process = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        self._process = process
        self._finalizer = weakref.finalize(self, _kill, process)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            self._url = self._read_url(process, deadline)
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_in_process(self) -> StandIn:
        """Serve from a daemon thread; the server is built from argv(), as the subprocess's would be."""
        from airflow_provider_cdr.fake_api import cli  # cli imports this module

        server = cli.build_server(cli.build_parser().parse_args(self.argv()[3:]))
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="cdr-stand-in", daemon=True
        )
        thread.start()
        self._server, self._thread, self._url = server, thread, server.url
        self._finalizer = weakref.finalize(self, _shut_down, server)
        try:
            self._wait_healthy(time.monotonic() + self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _read_url(process: subprocess.Popen[bytes], deadline: float) -> str:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not selector.select(left):
                    continue
                line = process.stdout.readline()
                if not line:
                    raise RuntimeError(f"stand-in exited before listening (exit code {process.wait()})")
                if match := _READY.search(line):
                    return match.group(1).decode()
        raise TimeoutError("stand-in did not report its port in time")

    def _wait_healthy(self, deadline: float) -> None:
        pause = 0.01
        while True:
            try:
                if self._call("GET", "/_admin/health").get("ok"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("stand-in did not become healthy in time")
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def stop(self) -> None:
        """Terminate the server (SIGTERM), then kill it if it does not exit within 5 s.

        In process: stop serving, close the socket and let the thread end.
        """
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None and thread is not None:
            self._finalizer.detach()
            _shut_down(server)
            thread.join()
            return
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process, grace_s=5)
        if process.stdout is not None:
            process.stdout.close()
        self._finalizer.detach()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- handles --------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The server's process id (None in process or not started): e.g. to read its CPU time."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:40123 (the hook's connection host)."""
        if self._url is None:
            raise RuntimeError("the stand-in is not started")
        return self._url

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def running(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        return self._process is not None and self._process.poll() is None

    @cached_property
    def dataset(self) -> CDRDataset:
        """An in-process dataset with the server's parameters: ground truth without HTTP."""
        return CDRDataset(
            self.seed,
            self.records_per_day,
            self.timezone,
            self.day_profiles,
            self.type_drift,
            first_day=self.first_day,
            now=self.now,
            ingest_lag_s=self.ingest_lag_s,
            tie_group=self.tie_group,
            hour_edges=self.hour_edges,
        )

    def set_profile(self, **fields: Any) -> dict[str, Any]:
        """Play another paging reading: replace the whole profile (unnamed fields go back to default)."""
        return self._call("POST", "/_admin/profile", fields)

    def profile_config(self) -> dict[str, Any]:
        """The paging reading the running server plays."""
        return self._call("GET", "/_admin/profile")

    def set_faults(self, **fields: Any) -> dict[str, Any]:
        """Replace the whole fault configuration (unnamed fields go back to off)."""
        return self._call("POST", "/_admin/faults", fields)

    def clear_faults(self) -> None:
        self._call("POST", "/_admin/faults", {})

    def faults_config(self) -> dict[str, Any]:
        return self._call("GET", "/_admin/faults")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_admin/stats")

    def timeline(self) -> dict[str, Any]:
        """Arrival times of /api requests and the 429s that carried Retry-After (since the last reset)."""
        return self._call("GET", "/_admin/timeline")

    def reset_stats(self) -> None:
        """Zero the counters, including the request number that drives fault decisions."""
        self._call("POST", "/_admin/reset", {})

    def set_clock(self, **clock: Any) -> dict[str, Any]:
        """Move the running server's clock: `now=` (ISO string, datetime, or None for live) and/or
        `ingest_lag_s=`. The in-process `dataset` keeps the start-up clock."""
        payload = {
            name: value.isoformat() if isinstance(value, datetime) else value for name, value in clock.items()
        }
        return self._call("POST", "/_admin/clock", payload)

    def truth(self, **filters: Any) -> set[str]:
        """uuids the server holds for these filters (no paging, no cap, no faults; availability applies)."""
        params = urllib.parse.urlencode({name: str(value) for name, value in filters.items()})
        return set(self._call("GET", f"/_admin/truth?{params}")["uuids"])

    def _call(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        data = None if payload is None else orjson.dumps(dict(payload))
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _LOCAL.open(request, timeout=60) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()!r}") from exc
