"""The validated query model: every documented CDR filter, checked before any request is sent.

Filters are named exactly as the API's parameters (`start_date=`, `type=`, `agent_ids=` ...).
`build_query()` turns Python values into the strings the API expects and refuses anything
it cannot vouch for, with every problem in one message.
"""

from __future__ import annotations

import difflib
import re
import uuid as uuid_lib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_provider_cdr.api.errors import CDRConfigError, CDRQueryError

DATE_FORMAT = "%Y-%m-%d"
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"

# Filter values as the API's `type` filter documents them; keys are lenient spellings seen
# in the record docs (NOTES.md), lower-cased, that mean the same filter value.
TYPE_VALUES = (
    "inbound",
    "outbound",
    "dialer",
    "click_to_call",
    "outbound_sms",
    "whatsapp",
    "facebook",
    "instagram",
    "telegram",
    "web_chat",
    "HLR_lookup",
    "queue_callback",
)
TYPE_ALIASES = {
    "click-to-call": "click_to_call",
    "outbound sms": "outbound_sms",
    "sms": "outbound_sms",
    "chat": "web_chat",
    "hlr_ookup": "HLR_lookup",
}
DISPOSITION_VALUES = (
    "answered",
    "failed",
    "busy",
    "no_answer",
    "rejected",
    "abandoned",
    "missed",
    "dialer_abandoned",
    "system_abandoned",
    "answered_by_VM",
    "system_reject",
    "machine_answered",
    "sent",
    "not_sent",
    "route_unavailable",
    "delivered",
    "not_delivered",
    "waiting",
    "active",
    "archived",
    # Listed by the product, not by the API reference: accepted, sent as lower case.
    "initiated",
    "available",
    "absent",
)
END_REASON_VALUES = (
    "agent_disconnect",
    "customer_disconnect",
    "dncr_failure",
    "dncr_rejected",
    "machine_disconnect",
    "manager_terminate",
    "remote_party_disconnect",
    "system_reject",
    "timeout",
)

WINDOW_FILTERS = frozenset({"start_date", "end_date", "start_datetime", "end_datetime"})
# Parameters the hook owns; a caller passing them as filters is told so.
PAGING_PARAMS = frozenset({"key", "page", "per_page", "search_token"})
RANGE_FILTERS = ("duration", "dialing_time", "talk_time", "hold_time", "ivr_time", "queue_time")


def _fold(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", value.strip()).lower()


def _enum_normaliser(values: Iterable[str], aliases: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """Map a user's spelling (any case, spaces or dashes) to the API's spelling, or raise."""
    canonical = {_fold(v): v for v in values}
    for alias, target in (aliases or {}).items():
        canonical[_fold(alias)] = target

    def normalise(value: str) -> str:
        found = canonical.get(_fold(value))
        if found is None:
            hint = difflib.get_close_matches(_fold(value), list(canonical), n=1)
            suggestion = f" (did you mean {canonical[hint[0]]!r}?)" if hint else ""
            raise ValueError(f"unknown value {value!r}{suggestion}; expected one of {', '.join(values)}")
        return found

    return normalise


def _as_items(value: Any) -> list[Any]:
    """A comma string or a Python collection, as a list of items without blanks."""
    if isinstance(value, str):
        items: list[Any] = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        items = [value]
    items = [item for item in items if not (isinstance(item, str) and item == "")]
    if not items:
        raise ValueError("is empty")
    return items


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        number = int(value)
    else:
        raise ValueError(f"{value!r} is not a whole number")
    if number < 0:
        raise ValueError(f"{number} is negative")
    return number


def _seconds(value: Any) -> str:
    number = _int(value)
    if number > 2**31 - 1:
        raise ValueError(f"{number} does not fit the API's int32")
    return str(number)


def _id_list(value: Any) -> str:
    return ",".join(str(_int(item)) for item in _as_items(value))


def _code_list(value: Any) -> str:
    codes = []
    for item in _as_items(value):
        if not isinstance(item, str):
            raise ValueError(f"{item!r}: give wrap-up codes as strings, to keep leading zeros ('0101')")
        codes.append(item.strip())
    return ",".join(codes)


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{value!r} is not text")
    text = str(value).strip()
    if not text:
        raise ValueError("is empty")
    if "\x00" in text or "\n" in text:
        raise ValueError("contains control characters")
    return text


def _uuid(value: Any) -> str:
    try:
        return str(uuid_lib.UUID(str(value).strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not a UUID") from None


def _enum_list(normalise: Callable[[str], str]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        items = _as_items(value)
        for item in items:
            if not isinstance(item, str):
                raise ValueError(f"{item!r} is not text")
        return ",".join(dict.fromkeys(normalise(item) for item in items))

    return convert


def _first_seen(value: Any) -> str:
    if value is True or (isinstance(value, str) and value.strip().lower() == "required"):
        return "required"
    raise ValueError(f"{value!r}: the only documented value is 'required' (or True)")


def _free_text_list(value: Any) -> str:
    return ",".join(_text(item) for item in _as_items(value))


_CONVERTERS: dict[str, Callable[[Any], str]] = {
    "cli": _text,
    "number": _text,
    "wildcard_cli": _text,
    "wildcard_number": _text,
    "type": _enum_list(_enum_normaliser(TYPE_VALUES, TYPE_ALIASES)),
    "disposition": _enum_list(_enum_normaliser(DISPOSITION_VALUES)),
    "queue_ids": _id_list,
    "agent_ids": _id_list,
    "team_ids": _id_list,
    "campaign_ids": _id_list,
    "deleted_agent_ids": _id_list,
    "wrapup_codes": _code_list,
    # No value list is published for `event`; any text is passed through.
    "event": _free_text_list,
    "end_reason": _enum_list(_enum_normaliser(END_REASON_VALUES)),
    "first_seen": _first_seen,
    "lead_source": _text,
    "uuid": _uuid,
    "related_call_uuid": _uuid,
    "destination_name": _text,
    **{f"{name}_{edge}": _seconds for name in RANGE_FILTERS for edge in ("from", "to")},
}
FILTER_NAMES = frozenset(_CONVERTERS) | WINDOW_FILTERS


@dataclass(frozen=True)
class CDRQuery:
    """A validated set of API parameters (strings, as sent), without paging and without the key."""

    params: tuple[tuple[str, str], ...]

    def as_params(self) -> dict[str, str]:
        return dict(self.params)

    def with_window(self, **window: str) -> CDRQuery:
        """The same filters over another date/datetime window (used to slice a day)."""
        kept = {k: v for k, v in self.params if k not in WINDOW_FILTERS}
        kept.update(window)
        return CDRQuery(tuple(sorted(kept.items())))


def _window_value(name: str, value: Any, tz: ZoneInfo) -> str:
    """Dates as YYYY-MM-DD; datetimes as account-local YYYY-MM-DDTHH:MM:SS (aware ones converted)."""
    is_date = name.endswith("_date")
    kind, form, fmt = (
        ("date", "YYYY-MM-DD", DATE_FORMAT)
        if is_date
        else ("datetime", "YYYY-MM-DDTHH:MM:SS", DATETIME_FORMAT)
    )
    if isinstance(value, datetime):
        if is_date:
            raise ValueError(f"{value!r}: give a date, or use {name}time for a datetime")
        return (value.astimezone(tz).replace(tzinfo=None) if value.tzinfo else value).strftime(fmt)
    if isinstance(value, date) and is_date:
        return value.strftime(fmt)
    if isinstance(value, str):
        try:
            return datetime.strptime(value.strip(), fmt).strftime(fmt)
        except ValueError:
            raise ValueError(f"{value!r} is not a {kind} in {form} form") from None
    raise ValueError(f"{value!r} is not a {kind}")


def _unknown_name_message(name: str) -> str:
    if name in PAGING_PARAMS:
        return f"{name!r} is managed by the hook, not a filter"
    hint = difflib.get_close_matches(name, sorted(FILTER_NAMES), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown filter {name!r}{suggestion}"


def _check_order(params: Mapping[str, str], low: str, high: str, problems: list[str]) -> None:
    if low in params and high in params:
        key = int if low.endswith("_from") else str
        if key(params[low]) > key(params[high]):  # type: ignore[operator]
            problems.append(f"{low}={params[low]} is after {high}={params[high]}")


def time_zone(name: str) -> ZoneInfo:
    """The zone named `name`; a bad name is a configuration mistake (CDRConfigError), not a KeyError.

    The one place a zone name is read: the connection's extra, the operator's and sensor's
    ``timezone`` and the example DAGs' setting all come through here.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: "", "../x", a NUL byte
        raise CDRConfigError(f"timezone={name!r} is not an IANA time zone name") from None


def build_query(filters: Mapping[str, Any], timezone: str | ZoneInfo = "UTC") -> CDRQuery:
    """Validate `filters` (API parameter names -> Python values) into a CDRQuery, or raise CDRQueryError.

    `None` values are dropped, so optional filters can be passed through templated arguments.
    """
    tz = timezone if isinstance(timezone, ZoneInfo) else time_zone(timezone)
    params: dict[str, str] = {}
    problems: list[str] = []
    for name, value in filters.items():
        if value is None:
            continue
        if name not in FILTER_NAMES:
            problems.append(_unknown_name_message(name))
            continue
        try:
            if name in WINDOW_FILTERS:
                params[name] = _window_value(name, value, tz)
            else:
                params[name] = _CONVERTERS[name](value)
        except ValueError as err:
            problems.append(f"{name}: {err}")
    _check_order(params, "start_date", "end_date", problems)
    _check_order(params, "start_datetime", "end_datetime", problems)
    for name in RANGE_FILTERS:
        _check_order(params, f"{name}_from", f"{name}_to", problems)
    if problems:
        raise CDRQueryError("Invalid CDR filters: " + "; ".join(problems))
    return CDRQuery(tuple(sorted(params.items())))
