"""Turn a page of CDR records (JSON-decoded dicts) into one Arrow batch of ``CDR_SCHEMA``.

The API's JSON drifts (``NOTES.md``): a number comes as ``0``, ``0.0`` or ``"0.1"``,
a field goes missing instead of ``null``, a new field appears. The converter
keeps every value somewhere and never guesses silently:

* a value of the wrong JSON type that converts without loss is *coerced*
  (``"56215"`` -> 56215, ``2.0`` -> 2, ``0`` -> 0.0, ``101`` -> ``"101"``) and counted;
* a value that does not convert (``"n/a"`` for a number, ``true`` anywhere, a
  timestamp without a UTC offset, ``2.5`` segments) is *uncoercible*: the column
  holds null, the original goes into the row's ``raw_values`` JSON object under the
  field name (``sla.<name>`` inside ``sla``), it is counted and logged at WARNING
  with the field name and the record's uuid (never the value or the record, which
  may hold phone numbers or message text);
* a field the schema does not know goes into the row's ``extra_fields`` JSON object
  and is counted by name (a new key inside ``sla`` is kept as ``{"sla": {...}}``);
* a missing field and an explicit ``null`` both become null.

A record that is not a JSON object, or has no usable ``uuid`` (missing, null,
empty, or neither string nor integer), makes :meth:`RecordConverter.to_batch`
raise ``ValueError`` naming the record's position in the page: such a record can
be neither stored under the not-null key nor deduplicated, and dropping it would
lose data silently. The error names the position and the problem, never the
record's content.

Speed: each column is built in one pass (``map(dict.get, ...)`` and one
``pa.array`` call, timestamps parsed by Arrow's vectorised ISO 8601 cast, ``hh:mm:ss``
by a vectorised regex). Only a column whose values are not all of the expected JSON
type, or fail that fast conversion, is redone value by value.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import repeat
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_cdr.schema import API_FIELDS, CDR_SCHEMA, SLA_TYPE

log = logging.getLogger(__name__)

_NONE = type(None)
_KNOWN_FIELDS = frozenset(API_FIELDS)
_STRING_FIELDS = tuple(
    name for name in API_FIELDS if CDR_SCHEMA.field(name).type == pa.string() and name != "uuid"
)
_INT_FIELDS = ("agent_id", "num_segments")
_SLA_KEYS = tuple(field.name for field in SLA_TYPE)
_SLA_KEY_SET = frozenset(_SLA_KEYS)

_HMS = r"^(?P<h>\d+):(?P<m>[0-5]\d):(?P<s>[0-5]\d)$"
_HMS_RE = re.compile(_HMS)
# A UTC offset suffix as Arrow's ISO 8601 parser accepts it: Z, +hh, +hhmm, +hh:mm.
_OFFSET_SUFFIX = r"(Z|[+-]\d\d(:?\d\d)?)$"
_INT_STR_RE = re.compile(r"[+-]?\d+(\.0*)?")
_FLOAT_STR_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_MICROS = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1).astimezone().replace(year=1970)  # replaced below; keeps mypy calm
_UTC_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")

# Per field, how many uncoercible values are logged one by one before only counting.
_LOG_LIMIT_PER_FIELD = 20


class _Uncoercible(ValueError):
    """A value that has no lossless conversion to its column's type."""


# --- one value at a time: the slow path -------------------------------------------------


def _to_str(value: Any) -> tuple[str, bool]:
    if isinstance(value, str):
        value.encode("utf-8")  # lone surrogates cannot be stored: raises UnicodeEncodeError
        return value, False
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Uncoercible(type(value).__name__)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Uncoercible("non-finite float")
        # A phone number decoded as 15557571011.0 is meant as "15557571011".
        return (str(int(value)) if value.is_integer() else repr(value)), True
    return str(value), True


def _int_coercer(low: int, high: int) -> Callable[[Any], tuple[int, bool]]:
    def to_int(value: Any) -> tuple[int, bool]:
        if isinstance(value, bool):
            raise _Uncoercible("bool")
        if isinstance(value, int):
            result, coerced = value, False
        elif isinstance(value, float) and value.is_integer():
            result, coerced = int(value), True
        elif isinstance(value, str) and _INT_STR_RE.fullmatch(value.strip()):
            result, coerced = int(float(value)) if "." in value else int(value), True
        else:
            raise _Uncoercible(type(value).__name__)
        if not low <= result <= high:
            raise _Uncoercible("out of range")
        return result, coerced

    return to_int


def _to_float(value: Any) -> tuple[float, bool]:
    if isinstance(value, bool):
        raise _Uncoercible("bool")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Uncoercible("non-finite float")
        return value, False
    if isinstance(value, int):
        return float(value), True
    if isinstance(value, str) and _FLOAT_STR_RE.fullmatch(value.strip()):
        return float(value), True
    raise _Uncoercible(type(value).__name__)


def _to_seconds(value: Any) -> tuple[int, bool]:
    """``hh:mm:ss`` (hours may exceed 24) to seconds; bare non-negative seconds are coerced."""
    if isinstance(value, str):
        match = _HMS_RE.match(value)
        if match:
            return int(match["h"]) * 3600 + int(match["m"]) * 60 + int(match["s"]), False
        if value.strip().isdigit():
            return int(value), True
        raise _Uncoercible("not hh:mm:ss")
    if isinstance(value, bool):
        raise _Uncoercible("bool")
    if isinstance(value, int) and value >= 0:
        return value, True
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value), True
    raise _Uncoercible(type(value).__name__)


def _to_instant(value: Any) -> tuple[datetime, int]:
    """ISO 8601 with a UTC offset to (the UTC instant, the offset in minutes)."""
    if not isinstance(value, str):
        raise _Uncoercible(type(value).__name__)
    parsed = datetime.fromisoformat(value)
    offset = parsed.utcoffset()
    if offset is None:
        # Without an offset the instant is unknown; guessing a zone would shift days silently.
        raise _Uncoercible("no UTC offset")
    return parsed, int(offset.total_seconds()) // 60


# --- the page being converted -----------------------------------------------------------


class _PageIssues:
    """What one page's conversion coerced, could not coerce, or did not know."""

    def __init__(self, uuids: list[str]) -> None:
        self.uuids = uuids
        self.coerced: Counter[str] = Counter()
        self.uncoercible: Counter[str] = Counter()
        self.raw: dict[int, dict[str, Any]] = {}
        self.extra: dict[int, dict[str, Any]] = {}

    def keep_raw(self, field: str, row: int, value: Any) -> None:
        self.uncoercible[field] += 1
        self.raw.setdefault(row, {})[field] = value

    def json_column(self, rows_to_objects: dict[int, dict[str, Any]], length: int) -> pa.Array:
        if not rows_to_objects:
            return pa.nulls(length, pa.string())
        return pa.array(
            [_dumps(rows_to_objects[row]) if row in rows_to_objects else None for row in range(length)],
            type=pa.string(),
        )


def _dumps(obj: dict[str, Any]) -> str:
    """Deterministic JSON text (sorted keys), so a rerun stores identical bytes."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        # orjson refuses lone surrogates and mixed-type keys; the stdlib escapes them.
        return json.dumps(obj, default=str, ensure_ascii=True)


def _column(records: Sequence[dict[str, Any]], name: str) -> list[Any]:
    return list(map(dict.get, records, repeat(name)))


def _slow_column(
    field: str,
    values: list[Any],
    coerce: Callable[[Any], tuple[Any, bool]],
    arrow_type: pa.DataType,
    issues: _PageIssues,
) -> pa.Array:
    converted: list[Any] = []
    for row, value in enumerate(values):
        if value is None:
            converted.append(None)
            continue
        try:
            result, coerced = coerce(value)
        except (ValueError, TypeError, OverflowError):
            issues.keep_raw(field, row, value)
            converted.append(None)
            continue
        if coerced:
            issues.coerced[field] += 1
        converted.append(result)
    return pa.array(converted, type=arrow_type)


def _string_array(field: str, values: list[Any], issues: _PageIssues) -> pa.Array:
    if set(map(type, values)) <= {str, _NONE}:
        try:
            return pa.array(values, type=pa.string())
        except (pa.ArrowException, UnicodeError):
            pass
    return _slow_column(field, values, _to_str, pa.string(), issues)


def _int_array(field: str, values: list[Any], arrow_type: pa.DataType, issues: _PageIssues) -> pa.Array:
    if set(map(type, values)) <= {int, _NONE}:
        try:
            return pa.array(values, type=arrow_type)
        except (pa.ArrowException, OverflowError):
            pass
    info = _INT_RANGES[arrow_type]
    return _slow_column(field, values, _int_coercer(*info), arrow_type, issues)


_INT_RANGES = {pa.int16(): (-(2**15), 2**15 - 1), pa.int32(): (-(2**31), 2**31 - 1), pa.int64(): (-(2**63), 2**63 - 1)}


def _float_array(field: str, values: list[Any], issues: _PageIssues) -> pa.Array:
    types = set(map(type, values))
    if types <= {float, int, _NONE}:
        try:
            array = pa.array(values, type=pa.float64())
        except (pa.ArrowException, OverflowError):
            pass
        else:
            if int in types:
                issues.coerced[field] += sum(type(value) is int for value in values)
            return array
    return _slow_column(field, values, _to_float, pa.float64(), issues)


def _seconds_array(field: str, values: list[Any], issues: _PageIssues) -> pa.Array:
    if set(map(type, values)) <= {str, _NONE}:
        try:
            strings = pa.array(values, type=pa.string())
        except (pa.ArrowException, UnicodeError):
            strings = None
        if strings is not None:
            parts = pc.extract_regex(strings, _HMS)
            if parts.null_count == strings.null_count:
                hours, minutes, seconds = (pc.cast(parts.field(i), pa.int64()) for i in range(3))
                return pc.add(pc.add(pc.multiply(hours, 3600), pc.multiply(minutes, 60)), seconds)
    return _slow_column(field, values, _to_seconds, pa.int64(), issues)


def _timestamp_arrays(values: list[Any], issues: _PageIssues) -> tuple[pa.Array, pa.Array]:
    """The ``timestamp`` instants and the ``utc_offset_minutes`` the API sent with them."""
    timestamp_type = CDR_SCHEMA.field("timestamp").type
    if set(map(type, values)) <= {str, _NONE}:
        try:
            strings = pa.array(values, type=pa.string())
            instants = pc.cast(strings, timestamp_type)
            # The same wall clock without its offset, read as if UTC: the difference is the offset.
            local = pc.cast(pc.replace_substring_regex(strings, _OFFSET_SUFFIX, ""), pa.timestamp("us"))
            offset_us = pc.subtract(local.cast(pa.int64()), instants.cast(pa.int64()))
            offsets = pc.divide(offset_us, 60_000_000).cast(pa.int16())
            return instants, offsets
        except (pa.ArrowException, UnicodeError):
            pass
    instants_list: list[datetime | None] = []
    offsets_list: list[int | None] = []
    for row, value in enumerate(values):
        instant: datetime | None = None
        offset: int | None = None
        if value is not None:
            try:
                instant, offset = _to_instant(value)
            except (ValueError, TypeError, OverflowError):
                issues.keep_raw("timestamp", row, value)
        instants_list.append(instant)
        offsets_list.append(offset)
    return pa.array(instants_list, type=timestamp_type), pa.array(offsets_list, type=pa.int16())


def _sla_array(values: list[Any], issues: _PageIssues) -> pa.Array:
    types = set(map(type, values))
    if types <= {_NONE}:
        return pa.nulls(len(values), SLA_TYPE)
    slas: list[dict[str, Any] | None] = values
    if not types <= {dict, _NONE}:
        # The reference calls sla an "array": accept a one-element list holding the object.
        slas = []
        for row, value in enumerate(values):
            if value is None or isinstance(value, dict):
                slas.append(value)
            elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
                issues.coerced["sla"] += 1
                slas.append(value[0])
            else:
                issues.keep_raw("sla", row, value)
                slas.append(None)
    present = [sla for sla in slas if sla is not None]
    if set().union(*present) - _SLA_KEY_SET:
        for row, sla in enumerate(slas):
            if sla is not None and (unknown := sla.keys() - _SLA_KEY_SET):
                issues.extra.setdefault(row, {})["sla"] = {key: sla[key] for key in sorted(unknown)}
    children = [
        _seconds_array(f"sla.{key}", [None if sla is None else sla.get(key) for sla in slas], issues)
        for key in _SLA_KEYS
    ]
    mask = pa.array([sla is None for sla in slas], type=pa.bool_())
    return pa.StructArray.from_arrays(children, fields=list(SLA_TYPE), mask=mask)


def _describe_missing_uuid(value: Any) -> str:
    if value is None:
        return "no uuid (missing or null)"
    if value == "":
        return "an empty uuid"
    return f"a uuid of JSON type {type(value).__name__}"


def _uuids(records: Sequence[dict[str, Any]], issues_coerced: Counter[str]) -> list[str]:
    values = _column(records, "uuid")
    if set(map(type, values)) <= {str} and "" not in values:
        return values
    uuids: list[str] = []
    for row, value in enumerate(values):
        if isinstance(value, str) and value:
            uuids.append(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            issues_coerced["uuid"] += 1
            uuids.append(str(value))
        else:
            raise ValueError(f"CDR record {row} of the page has {_describe_missing_uuid(value)}")
    return uuids


def _check_objects(records: Sequence[Any]) -> None:
    if all(issubclass(kind, dict) for kind in set(map(type, records))):
        return
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(
                f"CDR record {row} of the page is a JSON {type(record).__name__}, not an object"
            )


class RecordConverter:
    """Converts pages of records to ``CDR_SCHEMA`` batches and counts what the data did.

    One converter is meant to live for one extraction (e.g. one day), so its counters
    describe that whole extraction and can go into the partition manifest via
    :meth:`counts`.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.coerced = 0
        self.uncoercible = 0
        self.unknown_fields: Counter[str] = Counter()
        self.coerced_by_field: Counter[str] = Counter()
        self.uncoercible_by_field: Counter[str] = Counter()

    def to_batch(self, records: Sequence[Any]) -> pa.RecordBatch:
        """One page of JSON-decoded records as a batch of exactly ``CDR_SCHEMA``.

        :raises ValueError: a record is not a JSON object or has no usable ``uuid``;
            nothing from the page is counted then.
        """
        _check_objects(records)
        uuid_coercions: Counter[str] = Counter()
        issues = _PageIssues(_uuids(records, uuid_coercions))
        issues.coerced.update(uuid_coercions)
        length = len(records)

        timestamps, offsets = _timestamp_arrays(_column(records, "timestamp"), issues)
        columns: dict[str, pa.Array] = {
            "uuid": pa.array(issues.uuids, type=pa.string()),
            "timestamp": timestamps,
            "utc_offset_minutes": offsets,
        }
        for name in _STRING_FIELDS:
            columns[name] = _string_array(name, _column(records, name), issues)
        for name in _INT_FIELDS:
            columns[name] = _int_array(name, _column(records, name), CDR_SCHEMA.field(name).type, issues)
        columns["duration"] = _seconds_array("duration", _column(records, "duration"), issues)
        columns["cpc"] = _float_array("cpc", _column(records, "cpc"), issues)
        columns["sla"] = _sla_array(_column(records, "sla"), issues)
        self._collect_unknown_fields(records, issues)
        columns["extra_fields"] = issues.json_column(issues.extra, length)
        columns["raw_values"] = issues.json_column(issues.raw, length)

        batch = pa.RecordBatch.from_arrays([columns[name] for name in CDR_SCHEMA.names], schema=CDR_SCHEMA)
        self._account(issues, length)
        return batch

    def counts(self) -> dict[str, Any]:
        """The counters as plain JSON-ready values (for a manifest or a log line)."""
        return {
            "rows": self.rows,
            "coerced": self.coerced,
            "uncoercible": self.uncoercible,
            "unknown_fields": dict(sorted(self.unknown_fields.items())),
            "coerced_by_field": dict(sorted(self.coerced_by_field.items())),
            "uncoercible_by_field": dict(sorted(self.uncoercible_by_field.items())),
        }

    def _collect_unknown_fields(self, records: Sequence[dict[str, Any]], issues: _PageIssues) -> None:
        unknown = set().union(*records) - _KNOWN_FIELDS
        if not unknown:
            for extra in issues.extra.values():  # only new keys inside sla
                self._count_unknown({f"sla.{key}" for key in extra.get("sla", {})})
            return
        for row, record in enumerate(records):
            if names := record.keys() & unknown:
                issues.extra.setdefault(row, {}).update((name, record[name]) for name in names)
        for extra in issues.extra.values():
            self._count_unknown({name for name in extra if name != "sla"})
            self._count_unknown({f"sla.{key}" for key in extra.get("sla", {})})

    def _count_unknown(self, names: set[str]) -> None:
        for name in names:
            if name not in self.unknown_fields:
                log.warning("CDR records carry a field the schema does not know: %r (kept in extra_fields)", name)
            self.unknown_fields[name] += 1

    def _account(self, issues: _PageIssues, length: int) -> None:
        self.rows += length
        self.coerced += sum(issues.coerced.values())
        self.coerced_by_field.update(issues.coerced)
        for row in sorted(issues.raw):
            for field in issues.raw[row]:
                seen = self.uncoercible_by_field[field]
                if seen < _LOG_LIMIT_PER_FIELD:
                    log.warning(
                        "CDR field %r of record uuid=%s could not be coerced; column set to null, "
                        "original kept in raw_values",
                        field,
                        issues.uuids[row],
                    )
                elif seen == _LOG_LIMIT_PER_FIELD:
                    log.warning("Further uncoercible values of CDR field %r are counted, not logged", field)
                self.uncoercible_by_field[field] += 1
        self.uncoercible += sum(issues.uncoercible.values())
