"""Turn a page of CDR records (JSON-decoded dicts) into one Arrow batch of ``CDR_SCHEMA``.

The API's JSON drifts (``NOTES.md``): a number comes as ``0``, ``0.0`` or ``"0.1"``,
a field goes missing instead of ``null``, a new field appears. The converter
keeps every value somewhere and never guesses silently:

* a value of the wrong JSON type that converts without loss is *coerced*
  (``"56215"`` -> 56215, ``2.0`` -> 2, ``"0.1"`` -> 0.1, ``101`` -> ``"101"``, 79 -> 79
  seconds) and counted (``0`` for a float is no coercion: JSON has one number type);
* a value that does not convert (``"n/a"`` for a number, ``true`` anywhere, a
  timestamp without a UTC offset, ``2.5`` segments) is *uncoercible*: the column
  holds null, the original goes into the row's ``raw_values`` JSON object under the
  field name (``sla.<name>`` inside ``sla``), it is counted and logged at WARNING
  with the field name and the record's uuid (never the value or the record, which
  may hold phone numbers or message text);
* a field the schema does not know goes into the row's ``extra_fields`` JSON object
  and is counted by name (a new key inside ``sla`` is kept as ``{"sla": {...}}``
  and counted as ``sla.<key>``); a key that names a derived column
  (``utc_offset_minutes``, ``extra_fields``, ``raw_values``) is unknown too;
* a missing field and an explicit ``null`` both become null.

A record that is not a JSON object, or has no usable ``uuid`` (missing, null,
empty, or neither string nor integer), makes :meth:`RecordConverter.to_batch`
raise ``ValueError`` naming the record's position in the page: such a record can
be neither stored under the not-null key nor deduplicated, and dropping it would
lose data silently. The message names the position and the problem, never the
record's content.

Speed (the whole bytes -> Parquet path must sustain 200,000 records/s on a core): most
pages never become dicts: ``arrow_page`` reads them into Arrow and :meth:`RecordConverter.from_arrow`
finishes them with the same column functions as below. For pages of dicts, when every
string-shaped field of the page holds strings or nulls, one
``pa.array(records, type=struct)`` call reads them all in C; ``timestamp`` is parsed
by Arrow's ISO 8601 cast, its UTC offset and the ``hh:mm:ss`` fields are read from
the string bytes with numpy. Only a column whose values are not all of the expected
JSON type, or fail that fast conversion, is redone value by value.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import Counter
from datetime import datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_cdr.convert.arrays import from_numpy, valid_mask
from airflow_provider_cdr.convert.schema import API_FIELDS, CDR_SCHEMA, SLA_TYPE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

_NONE = type(None)
_KNOWN_FIELDS = frozenset(API_FIELDS)
_STRING_FIELDS = tuple(
    name for name in API_FIELDS if CDR_SCHEMA.field(name).type == pa.string() and name != "uuid"
)
_INT_FIELDS = ("agent_id", "num_segments")
_SLA_KEYS = tuple(field.name for field in SLA_TYPE)
_SLA_KEY_SET = frozenset(_SLA_KEYS)
_TIMESTAMP_TYPE = CDR_SCHEMA.field("timestamp").type
_INT_RANGES = {
    pa.int16(): (-(2**15), 2**15 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
}

# Every field the API sends as a JSON string (or an object of strings), read in one C call.
_STRING_SHAPED = pa.struct(
    [pa.field(name, pa.string()) for name in ("uuid", "timestamp", "duration", *_STRING_FIELDS)]
    + [pa.field("sla", pa.struct([pa.field(key, pa.string()) for key in _SLA_KEYS]))]
)

_HMS = r"^(?P<h>\d+):(?P<m>[0-5]\d):(?P<s>[0-5]\d)$"
_HMS_RE = re.compile(_HMS)
# A UTC offset suffix as Arrow's ISO 8601 parser accepts it: Z, +hh, +hhmm, +hh:mm.
_OFFSET_SUFFIX = r"(Z|[+-]\d\d(:?\d\d)?)$"
_INT_STR_RE = re.compile(r"([+-]?\d+)(?:\.0*)?")
_FLOAT_STR_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_ZERO, _COLON, _PLUS, _MINUS = (ord(char) for char in "0:+-")

# Per field, how many uncoercible values are logged one by one before they are only counted.
_LOG_LIMIT_PER_FIELD = 20


_INT64_MAX = 2**63 - 1


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
        elif isinstance(value, str) and (match := _INT_STR_RE.fullmatch(value.strip())):
            result, coerced = int(match[1]), True
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
        return float(value), False  # one JSON number type: 0 is as good as 0.0
    if isinstance(value, str) and _FLOAT_STR_RE.fullmatch(value.strip()):
        return float(value), True
    raise _Uncoercible(type(value).__name__)


def _to_seconds(value: Any) -> tuple[int, bool]:
    """``hh:mm:ss`` (hours may exceed 24) to seconds; bare non-negative seconds are coerced."""
    seconds, coerced = _parse_seconds(value)
    if seconds > _INT64_MAX:  # e.g. 1e308: kept raw rather than overflowing the int64 column
        raise _Uncoercible("out of range")
    return seconds, coerced


def _parse_seconds(value: Any) -> tuple[int, bool]:
    if isinstance(value, str):
        if match := _HMS_RE.match(value):
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
    """ISO 8601 with a UTC offset to (the instant, the offset in minutes)."""
    if not isinstance(value, str):
        raise _Uncoercible(type(value).__name__)
    parsed = datetime.fromisoformat(value)
    offset = parsed.utcoffset()
    if offset is None:
        # Without an offset the instant is unknown; guessing a zone would shift days silently.
        raise _Uncoercible("no UTC offset")
    return parsed, int(offset.total_seconds()) // 60


# --- a whole column at once: the fast path ----------------------------------------------


def _as_strings(values: list[Any] | pa.Array) -> pa.Array | None:
    """The values as an Arrow string array, or None when some value is not a string."""
    if isinstance(values, pa.Array):
        return values
    if not set(map(type, values)) <= {str, _NONE}:
        return None
    try:
        return pa.array(values, type=pa.string())
    except (pa.ArrowException, UnicodeError):
        return None


def _tail_bytes(strings: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | None:
    """The last ``width`` bytes of each non-null string as an (n_valid, width) uint8 matrix.

    Also returns the validity mask (None when there is no null) and the byte lengths of the
    non-null strings. None when a non-null string is shorter than ``width``.
    """
    length = len(strings)
    _, offsets_buffer, data_buffer = strings.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=length + 1, offset=strings.offset * 4)
    ends, sizes = offsets[1:], np.diff(offsets)
    valid = valid_mask(strings)
    if valid is not None:
        ends, sizes = ends[valid], sizes[valid]
    if not sizes.size:
        return np.empty((0, width), dtype=np.uint8), valid, sizes
    if sizes.min() < width:
        return None
    data = np.frombuffer(data_buffer, dtype=np.uint8)
    return data[ends[:, None] + np.arange(-width, 0)], valid, sizes


def _digits(matrix: np.ndarray, columns: list[int]) -> np.ndarray | None:
    digits = matrix[:, columns] - np.uint8(_ZERO)  # bytes below "0" wrap around to > 9
    return digits.astype(np.int64) if (digits <= 9).all() else None


def _with_nulls(values: np.ndarray, valid: np.ndarray | None, arrow_type: pa.DataType) -> pa.Array:
    if valid is None:
        return from_numpy(values, arrow_type)
    full = np.zeros(len(valid), dtype=values.dtype)
    full[valid] = values
    return from_numpy(full, arrow_type, valid)


def _hms_seconds(strings: pa.Array) -> pa.Array | None:
    """``hh:mm:ss`` strings to seconds; None when a value is not of that form."""
    tail = _tail_bytes(strings, 8)
    if tail is not None:
        matrix, valid, sizes = tail
        digits = _digits(matrix, [0, 1, 3, 4, 6, 7])
        if (
            digits is not None
            and (sizes == 8).all()
            and (matrix[:, [2, 5]] == _COLON).all()
            and (digits[:, [2, 4]] <= 5).all()
        ):
            hours, minutes, seconds = (digits[:, i] * 10 + digits[:, i + 1] for i in (0, 2, 4))
            return _with_nulls(hours * 3600 + minutes * 60 + seconds, valid, pa.int64())
    # One-digit or 3+-digit hours: still vectorised, by regex.
    parts = pc.extract_regex(strings, _HMS)
    if parts.null_count != strings.null_count:
        return None
    try:
        # flatten() applies the struct's nulls to its children (which hold "" there).
        hours, minutes, seconds = (pc.cast(part, pa.int64()) for part in parts.flatten())
        return pc.add_checked(pc.add(pc.multiply_checked(hours, 3600), pc.multiply(minutes, 60)), seconds)
    except pa.ArrowException:
        return None  # hours beyond int64: the slow path keeps the value raw


def _offset_minutes(strings: pa.Array, instants: pa.Array) -> pa.Array:
    """The UTC offsets the API wrote at the end of the (successfully cast) timestamp strings."""
    tail = _tail_bytes(strings, 6)
    if tail is not None:
        matrix, valid, _ = tail
        digits = _digits(matrix, [1, 2, 4, 5])
        signs = matrix[:, 0]
        if (
            digits is not None
            and (matrix[:, 3] == _COLON).all()
            and ((signs == _PLUS) | (signs == _MINUS)).all()
        ):
            minutes = (digits[:, 0] * 10 + digits[:, 1]) * 60 + digits[:, 2] * 10 + digits[:, 3]
            return _with_nulls(np.where(signs == _MINUS, -minutes, minutes), valid, pa.int16())
    # Other suffixes (Z, +hh, +hhmm): the wall clock without its suffix, read as UTC, minus the instant.
    local = pc.cast(pc.replace_substring_regex(strings, _OFFSET_SUFFIX, ""), pa.timestamp("us"))
    offset_us = pc.subtract(local.cast(pa.int64()), instants.cast(pa.int64()))
    return pc.divide(offset_us, 60_000_000).cast(pa.int16())


# --- the page being converted -----------------------------------------------------------


class _PageIssues:
    """What one page's conversion coerced, could not coerce, or did not know."""

    def __init__(self, uuids: pa.Array) -> None:
        self.uuids = uuids
        self.coerced: Counter[str] = Counter()
        self.uncoercible: Counter[str] = Counter()
        self.raw: dict[int, dict[str, Any]] = {}
        self.extra: dict[int, dict[str, Any]] = {}

    def keep_raw(self, field: str, row: int, value: Any) -> None:
        self.uncoercible[field] += 1
        self.raw.setdefault(row, {})[field] = value


def _json_column(rows_to_objects: dict[int, dict[str, Any]], length: int) -> pa.Array:
    if not rows_to_objects:
        return pa.nulls(length, pa.string())
    return pa.array(
        [_dumps(rows_to_objects[row]) if row in rows_to_objects else None for row in range(length)]
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
    values: list[Any] | pa.Array,
    coerce: Callable[[Any], tuple[Any, bool]],
    arrow_type: pa.DataType,
    issues: _PageIssues,
) -> pa.Array:
    converted: list[Any] = []
    for row, value in enumerate(values.to_pylist() if isinstance(values, pa.Array) else values):
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


def _string_array(field: str, values: list[Any] | pa.Array, issues: _PageIssues) -> pa.Array:
    strings = _as_strings(values)
    return strings if strings is not None else _slow_column(field, values, _to_str, pa.string(), issues)


def _int_array(field: str, values: list[Any], arrow_type: pa.DataType, issues: _PageIssues) -> pa.Array:
    # A type census first: pa.array would turn 2.5 into an error but 2.0 into 2 without telling.
    if set(map(type, values)) <= {int, _NONE}:
        try:
            return pa.array(values, type=arrow_type)
        except (pa.ArrowException, OverflowError):
            pass
    return _slow_column(field, values, _int_coercer(*_INT_RANGES[arrow_type]), arrow_type, issues)


def _float_array(field: str, values: list[Any], issues: _PageIssues) -> pa.Array:
    types = set(map(type, values))
    if types <= {float, int, _NONE}:  # not bool: pa.array would store True as 1.0
        try:
            array = pa.array(values, type=pa.float64())
        except (pa.ArrowException, OverflowError):
            pass
        else:
            return array  # an int is a JSON number like any other: not a coercion
    return _slow_column(field, values, _to_float, pa.float64(), issues)


def _seconds_array(field: str, values: list[Any] | pa.Array, issues: _PageIssues) -> pa.Array:
    strings = _as_strings(values)
    if strings is not None and (seconds := _hms_seconds(strings)) is not None:
        return seconds
    return _slow_column(field, values, _to_seconds, pa.int64(), issues)


def _timestamp_arrays(values: list[Any] | pa.Array, issues: _PageIssues) -> tuple[pa.Array, pa.Array]:
    """The ``timestamp`` instants and the ``utc_offset_minutes`` the API sent with them."""
    strings = _as_strings(values)
    if strings is not None:
        try:
            instants = pc.cast(strings, _TIMESTAMP_TYPE)
            return instants, _offset_minutes(strings, instants)
        except pa.ArrowException:
            pass
    instants_list: list[datetime | None] = []
    offsets_list: list[int | None] = []
    for row, value in enumerate(values.to_pylist() if isinstance(values, pa.Array) else values):
        instant: datetime | None = None
        offset: int | None = None
        if value is not None:
            try:
                instant, offset = _to_instant(value)
            except (ValueError, TypeError, OverflowError):
                issues.keep_raw("timestamp", row, value)
        instants_list.append(instant)
        offsets_list.append(offset)
    return pa.array(instants_list, type=_TIMESTAMP_TYPE), pa.array(offsets_list, type=pa.int16())


def _sla_objects(values: list[Any], issues: _PageIssues) -> list[dict[str, Any] | None]:
    """The sla objects of the page; the reference calls sla an "array", so [object] is accepted."""
    slas: list[dict[str, Any] | None] = []
    for row, value in enumerate(values):
        if value is None or isinstance(value, dict):
            slas.append(value)
        elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            issues.coerced["sla"] += 1
            slas.append(value[0])
        else:
            issues.keep_raw("sla", row, value)
            slas.append(None)
    return slas


def _sla_array(values: list[Any], strings: pa.StructArray | None, issues: _PageIssues) -> pa.Array:
    types = set(map(type, values))
    if types <= {_NONE}:
        return pa.nulls(len(values), SLA_TYPE)
    slas = values if types <= {dict, _NONE} else _sla_objects(values, issues)
    if set().union(*filter(None, slas)) - _SLA_KEY_SET:
        for row, sla in enumerate(slas):
            if sla is not None and (unknown := sla.keys() - _SLA_KEY_SET):
                issues.extra.setdefault(row, {})["sla"] = {key: sla[key] for key in unknown}
    if strings is not None:
        return _sla_from_strings(strings, issues)
    children = [[None if sla is None else sla.get(key) for sla in slas] for key in _SLA_KEYS]
    mask = pa.array([sla is None for sla in slas], type=pa.bool_())
    arrays = [_seconds_array(f"sla.{key}", child, issues) for key, child in zip(_SLA_KEYS, children)]
    return pa.StructArray.from_arrays(arrays, fields=list(SLA_TYPE), mask=mask)


def _sla_from_strings(strings: pa.StructArray, issues: _PageIssues) -> pa.Array:
    """The sla objects already read as a struct of hh:mm:ss strings (flatten() applies its nulls)."""
    arrays = [_seconds_array(f"sla.{key}", child, issues) for key, child in zip(_SLA_KEYS, strings.flatten())]
    return pa.StructArray.from_arrays(arrays, fields=list(SLA_TYPE), mask=strings.is_null())


def _read_string_shaped(records: Sequence[dict[str, Any]]) -> pa.StructArray | None:
    """All string-shaped fields in one C call; None when one of them holds a non-string."""
    try:
        return pa.array(records, type=_STRING_SHAPED)
    except (pa.ArrowException, UnicodeError):
        return None


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages that must not show the value."""
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _uuid_problem(value: Any) -> str:
    if value is None:
        return "no uuid (missing or null)"
    if value == "":
        return "an empty uuid"
    return f"a uuid of JSON type {_json_type(value)}"


def _all_present(uuids: pa.Array) -> bool:
    """No uuid null or empty: the page needs no check record by record."""
    return uuids.null_count == 0 and (len(uuids) == 0 or pc.min(pc.binary_length(uuids)).as_py() > 0)


def _uuid_array(records: Sequence[dict[str, Any]], strings: pa.StructArray | None) -> tuple[pa.Array, int]:
    """The not-null uuid column and how many uuids were coerced from integers."""
    if strings is not None and _all_present(uuids := strings.field("uuid")):
        return uuids, 0
    checked: list[str] = []
    coerced = 0
    for row, value in enumerate(_column(records, "uuid")):
        if isinstance(value, str) and value:
            checked.append(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            coerced += 1
            checked.append(str(value))
        else:
            raise ValueError(f"CDR record {row} of the page has {_uuid_problem(value)}")
    return pa.array(checked, type=pa.string()), coerced


def _check_objects(records: Sequence[Any]) -> None:
    if all(issubclass(kind, dict) for kind in set(map(type, records))):
        return
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"CDR record {row} of the page is a JSON {_json_type(record)}, not an object")


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
        self._lock = threading.Lock()

    def to_batch(self, records: Sequence[Any]) -> pa.RecordBatch:
        """One page of JSON-decoded records as a batch of exactly ``CDR_SCHEMA``.

        :raises ValueError: a record is not a JSON object or has no usable ``uuid``;
            nothing from the page is counted then.
        """
        _check_objects(records)
        strings = _read_string_shaped(records)
        uuids, uuids_coerced = _uuid_array(records, strings)
        issues = _PageIssues(uuids)
        if uuids_coerced:
            issues.coerced["uuid"] = uuids_coerced

        def string_shaped(name: str) -> list[Any] | pa.Array:
            return strings.field(name) if strings is not None else _column(records, name)

        timestamps, offsets = _timestamp_arrays(string_shaped("timestamp"), issues)
        columns: dict[str, pa.Array] = {"uuid": uuids, "timestamp": timestamps, "utc_offset_minutes": offsets}
        for name in _STRING_FIELDS:
            columns[name] = _string_array(name, string_shaped(name), issues)
        for name in _INT_FIELDS:
            columns[name] = _int_array(name, _column(records, name), CDR_SCHEMA.field(name).type, issues)
        columns["duration"] = _seconds_array("duration", string_shaped("duration"), issues)
        columns["cpc"] = _float_array("cpc", _column(records, "cpc"), issues)
        columns["sla"] = _sla_array(
            _column(records, "sla"), strings.field("sla") if strings is not None else None, issues
        )
        _collect_unknown_fields(records, issues)
        return self._finish(columns, issues, len(records))

    def from_arrow(self, records: pa.StructArray) -> pa.RecordBatch | None:
        """A page read by ``arrow_page.read_records`` as a ``CDR_SCHEMA`` batch, as :meth:`to_batch`
        would make it; None when some record needs to_batch's checks (a null record or uuid, an
        empty uuid, an int out of its column's range)."""
        fields = dict(zip((field.name for field in records.type), records.flatten()))
        uuids = fields["uuid"]
        if records.null_count or not _all_present(uuids):
            return None
        try:
            num_segments = fields["num_segments"].cast(CDR_SCHEMA.field("num_segments").type)
        except pa.ArrowInvalid:
            return None
        issues = _PageIssues(uuids)
        timestamps, offsets = _timestamp_arrays(fields["timestamp"], issues)
        columns: dict[str, pa.Array] = {"uuid": uuids, "timestamp": timestamps, "utc_offset_minutes": offsets}
        columns.update((name, fields[name]) for name in (*_STRING_FIELDS, "agent_id", "cpc"))
        columns["num_segments"] = num_segments
        columns["duration"] = _seconds_array("duration", fields["duration"], issues)
        columns["sla"] = _sla_from_strings(fields["sla"], issues)
        return self._finish(columns, issues, len(records))

    def _finish(self, columns: dict[str, pa.Array], issues: _PageIssues, length: int) -> pa.RecordBatch:
        columns["extra_fields"] = _json_column(issues.extra, length)
        columns["raw_values"] = _json_column(issues.raw, length)
        batch = pa.RecordBatch.from_arrays([columns[name] for name in CDR_SCHEMA.names], schema=CDR_SCHEMA)
        with self._lock:  # pages may be converted on several threads at once
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

    def _account(self, issues: _PageIssues, length: int) -> None:
        self.rows += length
        self.coerced += sum(issues.coerced.values())
        self.coerced_by_field.update(issues.coerced)
        for extra in issues.extra.values():
            names = [name for name in extra if name != "sla"] + [f"sla.{key}" for key in extra.get("sla", ())]
            for name in names:
                if name not in self.unknown_fields:
                    log.warning(
                        "CDR records carry a field the schema does not know: %r (kept in extra_fields)", name
                    )
                self.unknown_fields[name] += 1
        for row in sorted(issues.raw):
            for field in issues.raw[row]:
                seen = self.uncoercible_by_field[field]
                if seen < _LOG_LIMIT_PER_FIELD:
                    log.warning(
                        "CDR field %r of record uuid=%s could not be coerced; column set to null, "
                        "original kept in raw_values",
                        field,
                        issues.uuids[row].as_py(),
                    )
                elif seen == _LOG_LIMIT_PER_FIELD:
                    log.warning("Further uncoercible values of CDR field %r are counted, not logged", field)
                self.uncoercible_by_field[field] += 1
        self.uncoercible += sum(issues.uncoercible.values())


def _collect_unknown_fields(records: Sequence[dict[str, Any]], issues: _PageIssues) -> None:
    """Move fields the schema does not know into the rows' ``extra_fields`` objects."""
    unknown = set().union(*records) - _KNOWN_FIELDS
    if not unknown:
        return
    for row, record in enumerate(records):
        if names := record.keys() & unknown:
            issues.extra.setdefault(row, {}).update((name, record[name]) for name in names)
