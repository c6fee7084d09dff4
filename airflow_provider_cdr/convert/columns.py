"""Build a page's ``CDR_SCHEMA`` columns one column at a time, vectorised, tracking the page's issues.

Speed (the whole bytes -> Parquet path must sustain 200,000 records/s on a core): most
pages never become dicts: ``arrow_page`` reads them into Arrow and
:meth:`~airflow_provider_cdr.convert.records.RecordConverter.from_arrow` finishes them with
the same column functions as ``to_batch``. For pages of dicts, when every string-shaped
field of the page holds strings or nulls, one ``pa.array(records, type=struct)`` call
(:func:`read_string_shaped`) reads them all in C; ``timestamp`` is parsed by Arrow's ISO 8601
cast, its UTC offset and the ``hh:mm:ss`` fields are read from the string bytes with numpy.
Only a column whose values are not all of the expected JSON type, or fail that fast
conversion, is redone value by value with the coercers of
:mod:`airflow_provider_cdr.convert.values`.

What the conversion of one page coerced, could not coerce (kept raw) or did not know is
collected in a :class:`PageIssues`; :mod:`airflow_provider_cdr.convert.records` turns it
into the ``raw_values`` and ``extra_fields`` columns, counters and log lines.
"""

from __future__ import annotations

import json
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
from airflow_provider_cdr.convert.values import (
    HMS,
    int_coercer,
    json_type,
    to_float,
    to_instant,
    to_seconds,
    to_str,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

_NONE = type(None)
STRING_FIELDS = tuple(
    name for name in API_FIELDS if CDR_SCHEMA.field(name).type == pa.string() and name != "uuid"
)
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
    [pa.field(name, pa.string()) for name in ("uuid", "timestamp", "duration", *STRING_FIELDS)]
    + [pa.field("sla", pa.struct([pa.field(key, pa.string()) for key in _SLA_KEYS]))]
)

# A UTC offset suffix as Arrow's ISO 8601 parser accepts it: Z, +hh, +hhmm, +hh:mm.
_OFFSET_SUFFIX = r"(Z|[+-]\d\d(:?\d\d)?)$"
_ZERO, _COLON, _PLUS, _MINUS = (ord(char) for char in "0:+-")


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
    parts = pc.extract_regex(strings, HMS)
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


class PageIssues:
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


def json_column(rows_to_objects: dict[int, dict[str, Any]], length: int) -> pa.Array:
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


def column(records: Sequence[dict[str, Any]], name: str) -> list[Any]:
    return list(map(dict.get, records, repeat(name)))


def _slow_column(
    field: str,
    values: list[Any] | pa.Array,
    coerce: Callable[[Any], tuple[Any, bool]],
    arrow_type: pa.DataType,
    issues: PageIssues,
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


def string_array(field: str, values: list[Any] | pa.Array, issues: PageIssues) -> pa.Array:
    strings = _as_strings(values)
    return strings if strings is not None else _slow_column(field, values, to_str, pa.string(), issues)


def int_array(field: str, values: list[Any], arrow_type: pa.DataType, issues: PageIssues) -> pa.Array:
    # A type census first: pa.array would turn 2.5 into an error but 2.0 into 2 without telling.
    if set(map(type, values)) <= {int, _NONE}:
        try:
            return pa.array(values, type=arrow_type)
        except (pa.ArrowException, OverflowError):
            pass
    return _slow_column(field, values, int_coercer(*_INT_RANGES[arrow_type]), arrow_type, issues)


def float_array(field: str, values: list[Any], issues: PageIssues) -> pa.Array:
    types = set(map(type, values))
    if types <= {float, int, _NONE}:  # not bool: pa.array would store True as 1.0
        try:
            array = pa.array(values, type=pa.float64())
        except (pa.ArrowException, OverflowError):
            pass
        else:
            return array  # an int is a JSON number like any other: not a coercion
    return _slow_column(field, values, to_float, pa.float64(), issues)


def seconds_array(field: str, values: list[Any] | pa.Array, issues: PageIssues) -> pa.Array:
    strings = _as_strings(values)
    if strings is not None and (seconds := _hms_seconds(strings)) is not None:
        return seconds
    return _slow_column(field, values, to_seconds, pa.int64(), issues)


def timestamp_arrays(values: list[Any] | pa.Array, issues: PageIssues) -> tuple[pa.Array, pa.Array]:
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
                instant, offset = to_instant(value)
            except (ValueError, TypeError, OverflowError):
                issues.keep_raw("timestamp", row, value)
        instants_list.append(instant)
        offsets_list.append(offset)
    return pa.array(instants_list, type=_TIMESTAMP_TYPE), pa.array(offsets_list, type=pa.int16())


def _sla_objects(values: list[Any], issues: PageIssues) -> list[dict[str, Any] | None]:
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


def sla_array(values: list[Any], strings: pa.StructArray | None, issues: PageIssues) -> pa.Array:
    types = set(map(type, values))
    if types <= {_NONE}:
        return pa.nulls(len(values), SLA_TYPE)
    slas = values if types <= {dict, _NONE} else _sla_objects(values, issues)
    if set().union(*filter(None, slas)) - _SLA_KEY_SET:
        for row, sla in enumerate(slas):
            if sla is not None and (unknown := sla.keys() - _SLA_KEY_SET):
                issues.extra.setdefault(row, {})["sla"] = {key: sla[key] for key in unknown}
    if strings is not None:
        return sla_from_strings(strings, issues)
    children = [[None if sla is None else sla.get(key) for sla in slas] for key in _SLA_KEYS]
    mask = pa.array([sla is None for sla in slas], type=pa.bool_())
    arrays = [seconds_array(f"sla.{key}", child, issues) for key, child in zip(_SLA_KEYS, children)]
    return pa.StructArray.from_arrays(arrays, fields=list(SLA_TYPE), mask=mask)


def sla_from_strings(strings: pa.StructArray, issues: PageIssues) -> pa.Array:
    """The sla objects already read as a struct of hh:mm:ss strings (flatten() applies its nulls)."""
    arrays = [seconds_array(f"sla.{key}", child, issues) for key, child in zip(_SLA_KEYS, strings.flatten())]
    return pa.StructArray.from_arrays(arrays, fields=list(SLA_TYPE), mask=strings.is_null())


def read_string_shaped(records: Sequence[dict[str, Any]]) -> pa.StructArray | None:
    """All string-shaped fields in one C call; None when one of them holds a non-string."""
    try:
        return pa.array(records, type=_STRING_SHAPED)
    except (pa.ArrowException, UnicodeError):
        return None


def _uuid_problem(value: Any) -> str:
    if value is None:
        return "no uuid (missing or null)"
    if value == "":
        return "an empty uuid"
    return f"a uuid of JSON type {json_type(value)}"


def all_present(uuids: pa.Array) -> bool:
    """No uuid null or empty: the page needs no check record by record."""
    return uuids.null_count == 0 and (len(uuids) == 0 or pc.min(pc.binary_length(uuids)).as_py() > 0)


def uuid_array(records: Sequence[dict[str, Any]], strings: pa.StructArray | None) -> tuple[pa.Array, int]:
    """The not-null uuid column and how many uuids were coerced from integers."""
    if strings is not None and all_present(uuids := strings.field("uuid")):
        return uuids, 0
    checked: list[str] = []
    coerced = 0
    for row, value in enumerate(column(records, "uuid")):
        if isinstance(value, str) and value:
            checked.append(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            coerced += 1
            checked.append(str(value))
        else:
            raise ValueError(f"CDR record {row} of the page has {_uuid_problem(value)}")
    return pa.array(checked, type=pa.string()), coerced
