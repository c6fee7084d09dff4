"""Request parameters of GET /api/v2/cdr: parsing, validation and matching against day tables.

Sits above dataset.py, whose day tables, value lists and day bounds it uses (dataset.py
never imports this module). `truth` is the in-process ground truth: every available
record of a dataset that matches a set of filters.

Choices where the vendor's docs are silent:
- Unknown parameter names are ignored, as many Rails-style APIs do; a client's
  typo therefore widens the result instead of failing (clients should check).
- An empty value (``type=``) counts as absent; a repeated parameter keeps its last value.
- Comma lists mean "any of" (OR); different parameters combine with AND.
- ``event`` matches records having any of the listed events.
- Both a date and a datetime bound on the same side: the narrower one wins.
- ``start`` after ``end`` is not an error: it matches nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from airflow_provider_cdr.fake_api.dataset import (
    DESTINATIONS,
    DISPOSITIONS,
    END_REASONS,
    EVENTS,
    KINDS,
    LEAD_SOURCES,
    TYPE_FILTER_VALUES,
    WRAPUP_IDS,
    CDRDataset,
    DayTable,
)

MAX_PER_PAGE = 10_000
WINDOW_CAP = 10_000  # records per search across its pages, by default (ServerProfile.search_size)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
_INT = re.compile(r"[+-]?[0-9]+")
_DIGITS = re.compile(r"[0-9]+")
_TOKEN_PREFIX = "cdr_item#"


class ParamError(ValueError):
    """Malformed request parameters; `errors` is the 422 body's {"param": ["message"]}."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True)
class Cursor:
    """Where a search window ended: the last record's instant (epoch ms) and uuid."""

    ms: int
    uuid: str


def encode_token(cursor: Cursor, nonce: int | None = None) -> str:
    """The search_token: urlsafe base64 of [epoch ms, "cdr_item#<uuid>"], like the vendor's; with a
    nonce as a third item, two tokens for the same place differ."""
    items: list[object] = [cursor.ms, _TOKEN_PREFIX + cursor.uuid]
    if nonce is not None:
        items.append(nonce)
    return base64.urlsafe_b64encode(orjson.dumps(items)).decode("ascii")


def decode_token(token: str) -> Cursor:
    """Parse a search_token; ValueError when it is not one we issued (padding optional)."""
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("undecodable search_token") from exc
    if (
        not isinstance(decoded, list)
        or len(decoded) not in (2, 3)
        or type(decoded[0]) is not int
        or not isinstance(decoded[1], str)
        or not decoded[1].startswith(_TOKEN_PREFIX)
    ):
        raise ValueError("not a search_token")
    return Cursor(decoded[0], decoded[1][len(_TOKEN_PREFIX) :])


class Predicate(Protocol):
    def select(self, table: DayTable, idx: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class OneOf:
    """Column value is one of `values` (integer codes or ids)."""

    column: str
    values: tuple[int, ...]

    def select(self, table: DayTable, idx: np.ndarray) -> np.ndarray:
        return idx[np.isin(table.column(self.column)[idx], self.values)]


@dataclass(frozen=True)
class AnyBit:
    """Bit-set column shares at least one bit with `bits` (the event list)."""

    column: str
    bits: int

    def select(self, table: DayTable, idx: np.ndarray) -> np.ndarray:
        return idx[(table.column(self.column)[idx] & self.bits) != 0]


@dataclass(frozen=True)
class Longer:
    """Seconds column strictly greater than `seconds` (the `_from` filters)."""

    column: str
    seconds: int

    def select(self, table: DayTable, idx: np.ndarray) -> np.ndarray:
        return idx[table.column(self.column)[idx] > self.seconds]


@dataclass(frozen=True)
class Shorter:
    """Seconds column strictly smaller than `seconds` (the `_to` filters)."""

    column: str
    seconds: int

    def select(self, table: DayTable, idx: np.ndarray) -> np.ndarray:
        return idx[table.column(self.column)[idx] < self.seconds]


@dataclass(frozen=True)
class IsSet:
    """Boolean column is true (first_seen=required)."""

    column: str

    def select(self, table: DayTable, idx: np.ndarray) -> np.ndarray:
        return idx[table.column(self.column)[idx]]


@dataclass(frozen=True)
class Text:
    """Text column starts with / contains / equals `value`."""

    column: str
    mode: str
    value: str

    def select(self, table: DayTable, idx: np.ndarray) -> np.ndarray:
        values, wanted = table.column(self.column), self.value
        if self.mode == "prefix":
            keep = [i for i in idx.tolist() if values[i].startswith(wanted)]
        elif self.mode == "contains":
            keep = [i for i in idx.tolist() if wanted in values[i]]
        else:
            keep = [i for i in idx.tolist() if values[i] == wanted]
        return np.array(keep, dtype=np.int64)


@dataclass(frozen=True)
class Query:
    """A parsed search: an inclusive instant range (epoch ms, None = open) and predicates."""

    lo_ms: int | None
    hi_ms: int | None
    predicates: tuple[Predicate, ...]


@dataclass(frozen=True)
class Paging:
    page: int
    per_page: int
    cursor: Cursor | None


_CODES = {
    "type": ("kind", {name: KINDS.index(name) for name in TYPE_FILTER_VALUES}),
    "disposition": ("disposition", {name: i for i, name in enumerate(DISPOSITIONS)}),
    "end_reason": ("end_reason", {name: i for i, name in enumerate(END_REASONS)}),
}
_ID_LISTS = {
    "queue_ids": "queue_id",
    "agent_ids": "agent_id",
    "team_ids": "team_id",
    "campaign_ids": "campaign_id",
    "deleted_agent_ids": "deleted_agent_id",
}
_TIMES = ("duration", "dialing_time", "talk_time", "hold_time", "ivr_time", "queue_time")
_TEXTS = {
    "cli": ("from_", "prefix"),
    "number": ("to", "prefix"),
    "wildcard_cli": ("from_", "contains"),
    "wildcard_number": ("to", "contains"),
    "uuid": ("uuids", "equals"),
    "related_call_uuid": ("related", "equals"),
}
_NAMED = {"lead_source": ("lead_source", LEAD_SOURCES), "destination_name": ("destination", DESTINATIONS)}


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_query(
    params: Mapping[str, str], tz: ZoneInfo, *, start_bound: str = "inclusive", end_bound: str = "second"
) -> Query:
    """Parse every filter parameter (paging ignored); raise ParamError listing all bad ones."""
    errors: dict[str, list[str]] = {}
    predicates: list[Predicate] = []
    given = {name: value for name, value in params.items() if value != ""}

    def bad(name: str, message: str = "is invalid") -> None:
        errors.setdefault(name, []).append(message)

    for name, (column, codes) in _CODES.items():
        if name in given:
            items = _items(given[name])
            if not items or any(item not in codes for item in items):
                bad(name)
            else:
                predicates.append(OneOf(column, tuple(sorted({codes[item] for item in items}))))
    if "event" in given:
        items = _items(given["event"])
        if not items or any(item not in EVENTS for item in items):
            bad("event")
        else:
            predicates.append(AnyBit("events", sum(1 << EVENTS.index(item) for item in set(items))))
    for name, column in _ID_LISTS.items():
        if name in given:
            items = _items(given[name])
            if not items or not all(_INT.fullmatch(item) for item in items):
                bad(name)
            else:
                predicates.append(OneOf(column, tuple(sorted({int(item) for item in items}))))
    if "wrapup_codes" in given:
        items = _items(given["wrapup_codes"])
        if not items or not all(_DIGITS.fullmatch(item) for item in items):
            bad("wrapup_codes")
        else:
            known = tuple(sorted({WRAPUP_IDS.index(item) for item in items if item in WRAPUP_IDS}))
            predicates.append(OneOf("wrapup", known))
    for time_name in _TIMES:
        for suffix, predicate in (("_from", Longer), ("_to", Shorter)):
            name = time_name + suffix
            if name in given:
                if _INT.fullmatch(given[name].strip()):
                    predicates.append(predicate(time_name, int(given[name])))
                else:
                    bad(name)
    if "first_seen" in given:
        if given["first_seen"].strip().lower() == "required":
            predicates.append(IsSet("first_seen"))
        else:
            bad("first_seen")
    for name, (column, names) in _NAMED.items():
        if name in given:
            value = given[name]
            predicates.append(OneOf(column, (names.index(value),) if value in names else ()))
    for name, (column, mode) in _TEXTS.items():
        if name in given:
            predicates.append(Text(column, mode, given[name].strip()))
    lo_ms, hi_ms = _bounds(given, tz, bad, start_bound, end_bound)
    if errors:
        raise ParamError(errors)
    return Query(lo_ms, hi_ms, tuple(predicates))


# How far past a datetime bound's first millisecond the bound reaches, by reading: the range is
# [start + START_REACH, end + END_REACH] in epoch ms.
START_REACH = {"inclusive": 0, "exclusive": 1}
END_REACH = {"second": 999, "instant": 0, "exclusive": -1}


def _bounds(
    given: Mapping[str, str],
    tz: ZoneInfo,
    bad: Callable[[str], None],
    start_bound: str = "inclusive",
    end_bound: str = "second",
) -> tuple[int | None, int | None]:
    """Date/datetime parameters as an inclusive epoch-ms range in the account's time zone.

    Dates cover whole days. A datetime bound is read as `start_bound` (`inclusive` from its first
    millisecond, or `exclusive`: strictly after it) and `end_bound` (`second`: to the end of its
    second, `instant`: to its first millisecond, `exclusive`: strictly before it).
    """
    lows: list[int] = []
    highs: list[int] = []
    for name, pattern, is_start in (
        ("start_date", _DATE, True),
        ("end_date", _DATE, False),
        ("start_datetime", _DATETIME, True),
        ("end_datetime", _DATETIME, False),
    ):
        if name not in given:
            continue
        try:
            if not pattern.fullmatch(given[name]):
                raise ValueError(name)
            local = datetime.fromisoformat(given[name]).replace(tzinfo=tz, fold=0)
            if pattern is _DATE and not is_start:  # the whole end day: up to the next day's start
                local = datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=tz)
                highs.append(_ms(local) - 1)
            elif is_start:
                lows.append(_ms(local) + (START_REACH[start_bound] if pattern is _DATETIME else 0))
            else:
                highs.append(_ms(local) + END_REACH[end_bound])
        except (ValueError, OverflowError, OSError):
            bad(name)
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000


def parse_paging(params: Mapping[str, str]) -> Paging:
    """page, per_page and search_token; raise ParamError listing all bad ones."""
    errors: dict[str, list[str]] = {}
    page, per_page, cursor = 1, 1000, None
    if params.get("page", "") != "":
        if not _INT.fullmatch(params["page"].strip()):
            errors["page"] = ["is invalid"]
        elif (page := int(params["page"])) < 1:
            errors["page"] = ["must be greater than or equal to 1"]
    if params.get("per_page", "") != "":
        if not _INT.fullmatch(params["per_page"].strip()):
            errors["per_page"] = ["is invalid"]
        elif not 1 <= (per_page := int(params["per_page"])) <= MAX_PER_PAGE:
            errors["per_page"] = [f"must be between 1 and {MAX_PER_PAGE}"]
    if params.get("search_token", "") != "":
        try:
            cursor = decode_token(params["search_token"])
        except ValueError:
            errors["search_token"] = ["is invalid"]
    if errors:
        raise ParamError(errors)
    return Paging(page, per_page, cursor)


def parse_request(
    params: Mapping[str, str], tz: ZoneInfo, *, start_bound: str = "inclusive", end_bound: str = "second"
) -> tuple[Query, Paging]:
    """Both halves of a records request, with the errors of both in one ParamError."""
    errors: dict[str, list[str]] = {}
    query: Query | None = None
    paging: Paging | None = None
    try:
        query = parse_query(params, tz, start_bound=start_bound, end_bound=end_bound)
    except ParamError as exc:
        errors.update(exc.errors)
    try:
        paging = parse_paging(params)
    except ParamError as exc:
        errors.update(exc.errors)
    if errors or query is None or paging is None:
        raise ParamError(errors)
    return query, paging


Segment = tuple[DayTable, np.ndarray]


def _range(dataset: CDRDataset, query: Query, until_ms: int, cursor_ms: int | None) -> tuple[int, int] | None:
    lo = dataset.day_bounds_ms(dataset.first_day)[0]
    if query.lo_ms is not None:
        lo = max(lo, query.lo_ms)
    hi = until_ms if query.hi_ms is None else min(query.hi_ms, until_ms)
    if cursor_ms is not None:
        hi = min(hi, cursor_ms)
    return (lo, hi) if lo <= hi else None


def _select(table: DayTable, query: Query, start: int, stop: int) -> np.ndarray:
    idx = np.arange(start, stop, dtype=np.int64)
    for predicate in query.predicates:
        if idx.size == 0:
            break
        idx = predicate.select(table, idx)
    return idx


def _after_cursor(table: DayTable, start: int, cursor: Cursor) -> int:
    """First index (from start) strictly after the cursor in (instant, uuid) descending order."""
    at_cursor_end = int(np.searchsorted(table.neg_instants, -cursor.ms, "right"))
    while start < at_cursor_end and table.uuids[start] >= cursor.uuid:
        start += 1
    return start


def iter_matches(
    dataset: CDRDataset,
    query: Query,
    *,
    until_ms: int,
    cursor: Cursor | None = None,
    inclusive_cursor_ms: bool = False,
) -> Iterator[Segment]:
    """Matching records newest first, one (day table, indices) segment per day with matches.

    Starts strictly after the cursor, or with `inclusive_cursor_ms` at the cursor's
    whole millisecond (edge_ties=resend or the edge_repeat fault: records sharing it come again).
    Lazy, so a caller that stops early generates no further days.
    """
    bounds = _range(dataset, query, until_ms, None if cursor is None else cursor.ms)
    if bounds is None:
        return
    lo, hi = bounds
    ordinal, last = dataset.local_date(hi).toordinal(), dataset.local_date(lo).toordinal()
    while ordinal >= last:
        table = dataset.day_table(date.fromordinal(ordinal))
        ordinal -= 1
        start = int(np.searchsorted(table.neg_instants, -hi, "left"))
        stop = int(np.searchsorted(table.neg_instants, -lo, "right"))
        if cursor is not None and not inclusive_cursor_ms:
            start = _after_cursor(table, start, cursor)
        idx = _select(table, query, start, stop)
        if idx.size:
            yield table, idx


def matching_uuids(dataset: CDRDataset, query: Query, *, until_ms: int) -> list[str]:
    """Ground truth: uuids of every match, newest first, day by day (no paging, no cap)."""
    return [
        table.uuids[i] for table, idx in iter_matches(dataset, query, until_ms=until_ms) for i in idx.tolist()
    ]


def truth(dataset: CDRDataset, /, **filters: str) -> list[str]:
    """uuids of every available record matching API filters: no paging, no cap, no faults."""
    return matching_uuids(dataset, parse_query(filters, dataset.tz), until_ms=dataset.available_until_ms())
