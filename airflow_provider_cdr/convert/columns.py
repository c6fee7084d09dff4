"""Build a page's ``CDR_SCHEMA`` columns one column at a time, vectorised, tracking the page's issues.

Speed (the whole bytes -> Parquet path must sustain 200,000 records/s on a core): most
pages never become dicts: ``arrow_page`` reads them into Arrow and
:meth:`~airflow_provider_cdr.convert.records.RecordConverter.from_arrow` finishes them with
the same column functions as ``to_batch``. For pages of dicts, each column is built from its
values in one pass (:mod:`~airflow_provider_cdr.convert.arrays`' builders, which never make
pyarrow import pandas); ``timestamp`` is parsed by Arrow's ISO 8601 cast, its UTC offset and
the ``hh:mm:ss`` fields are read from the string bytes with numpy. Drift stays column-wise:
only the values of the wrong JSON type (or, for ``hh:mm:ss``, of the wrong form) go one by
one through the coercers of :mod:`airflow_provider_cdr.convert.values`, and the rest of
their column is still built at once. A column is redone value by value only when the fast
build itself refuses it (an integer beyond its type, a lone surrogate, a non-finite float).

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

from airflow_provider_cdr.convert.arrays import (
    bool_array,
    bools_array,
    bools_of,
    byte_windows,
    from_numpy,
    numbers_array,
    present,
    strings_array,
    timestamps_array,
    valid_mask,
)
from airflow_provider_cdr.convert.arrays import (
    values as values_of,
)
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
_STR = frozenset({str})
_INT = frozenset({int})
_NUMBER = frozenset({int, float})
_INT64_MAX = 2**63 - 1
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
        return strings_array(values)
    except (UnicodeError, OverflowError):
        return None


def _odd_rows(values: list[Any], kinds: frozenset[type]) -> list[int]:
    """Rows whose value is neither None nor of one of `kinds` (exactly: a bool is no int)."""
    if set(map(type, values)) <= kinds | {_NONE}:
        return []
    return [row for row, value in enumerate(values) if value is not None and type(value) not in kinds]


def _coerce_rows(
    field: str,
    values: list[Any],
    rows: Sequence[int],
    coerce: Callable[[Any], tuple[Any, bool]],
    issues: PageIssues,
) -> list[Any]:
    """A copy of `values` with the value of each of `rows` coerced, or None where it is kept raw."""
    fixed = list(values)
    for row in rows:
        fixed[row] = _coerce_one(field, row, fixed[row], coerce, issues)
    return fixed


def _coerce_one(
    field: str, row: int, value: Any, coerce: Callable[[Any], tuple[Any, bool]], issues: PageIssues
) -> Any:
    try:
        result, coerced = coerce(value)
    except (ValueError, TypeError, OverflowError):
        issues.keep_raw(field, row, value)
        return None
    if coerced:
        issues.coerced[field] += 1
    return result


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
    return byte_windows(data, ends - width, width), valid, sizes


def _digits(matrix: np.ndarray, columns: list[int]) -> np.ndarray | None:
    digits = matrix[:, columns] - np.uint8(_ZERO)  # bytes below "0" wrap around to > 9
    return digits.astype(np.int64) if (digits <= 9).all() else None


def _with_nulls(values: np.ndarray, valid: np.ndarray | None, arrow_type: pa.DataType) -> pa.Array:
    if valid is None:
        return from_numpy(values, arrow_type)
    full = np.zeros(len(valid), dtype=values.dtype)
    full[valid] = values
    return from_numpy(full, arrow_type, valid)


def _with_nulls_all(values: np.ndarray, valid: np.ndarray | None, arrow_type: pa.DataType) -> pa.Array:
    """`values` has a slot for every row (whatever a null row holds): null where `valid` is False."""
    return from_numpy(np.where(valid, values, 0) if valid is not None else values, arrow_type, valid)


def _hms_seconds(strings: pa.Array) -> pa.Array | None:
    """``hh:mm:ss`` strings to seconds; None when a value is not of that form."""
    quick = _hms_or_odd(strings)
    if quick is not None and not quick[1]:
        return quick[0]
    # One-digit or 3+-digit hours: still vectorised, by regex.
    parts = pc.extract_regex(strings, HMS)
    if parts.null_count != strings.null_count:
        return None
    try:
        # flatten() applies the struct's nulls to its children (which hold "" there).
        hours, minutes, seconds = (pc.cast(part, pa.int64()) for part in parts.flatten())
    except pa.ArrowException:
        return None  # hours beyond int64: the slow path keeps the value raw
    hours_np = values_of(hours, np.int64)
    if hours_np.size and hours_np.max() > (_INT64_MAX - 3599) // 3600:
        return None  # the total would not fit int64: the slow path keeps the value raw
    total = hours_np * 3600 + values_of(minutes, np.int64) * 60 + values_of(seconds, np.int64)
    return _with_nulls_all(total, valid_mask(strings), pa.int64())


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
    offset_us = values_of(local.cast(pa.int64()), np.int64) - values_of(instants.cast(pa.int64()), np.int64)
    return _with_nulls_all(offset_us // 60_000_000, valid_mask(instants), pa.int16())


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

    def forget(self, field: str) -> None:
        """Undo what was noted for `field`: its column is about to be redone value by value."""
        self.coerced.pop(field, None)
        self.uncoercible.pop(field, None)
        for row in [row for row, values in self.raw.items() if field in values]:
            del self.raw[row][field]
            if not self.raw[row]:
                del self.raw[row]


def json_column(rows_to_objects: dict[int, dict[str, Any]], length: int) -> pa.Array:
    if not rows_to_objects:
        return pa.nulls(length, pa.string())
    rows = sorted(rows_to_objects)
    texts = strings_array([_dumps(rows_to_objects[row]) for row in rows])
    at = np.zeros(length, dtype=np.int32)
    at[rows] = np.arange(len(rows), dtype=np.int32)
    present = np.zeros(length, dtype=bool)
    present[rows] = True
    return texts.take(from_numpy(at, pa.int32(), present))


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
    return strings_array(converted) if arrow_type == pa.string() else numbers_array(converted, arrow_type)


def string_array(field: str, values: list[Any] | pa.Array, issues: PageIssues) -> pa.Array:
    if isinstance(values, pa.Array):
        return values
    fixed = _coerce_rows(field, values, _odd_rows(values, _STR), to_str, issues)
    try:
        return strings_array(fixed)
    except (UnicodeError, OverflowError):  # a lone surrogate: that value is kept raw
        issues.forget(field)
        return _slow_column(field, values, to_str, pa.string(), issues)


def int_array(field: str, values: list[Any], arrow_type: pa.DataType, issues: PageIssues) -> pa.Array:
    # By exact type: a float (even 2.0) or a string is coerced one by one, never truncated.
    coerce = int_coercer(*_INT_RANGES[arrow_type])
    fixed = _coerce_rows(field, values, _odd_rows(values, _INT), coerce, issues)
    try:
        return numbers_array(fixed, arrow_type)
    except OverflowError:  # an integer beyond the column's type: that value is kept raw
        issues.forget(field)
        return _slow_column(field, values, coerce, arrow_type, issues)


def float_array(field: str, values: list[Any], issues: PageIssues) -> pa.Array:
    # An int is a JSON number like any other: not a coercion. A bool is odd (True is no 1.0).
    fixed = _coerce_rows(field, values, _odd_rows(values, _NUMBER), to_float, issues)
    try:
        array = numbers_array(fixed, pa.float64())
    except OverflowError:
        array = None
    if array is not None and np.isfinite(values_of(array, np.float64)).all():
        return array
    issues.forget(field)
    return _slow_column(field, values, to_float, pa.float64(), issues)


def seconds_array(field: str, values: list[Any] | pa.Array, issues: PageIssues) -> pa.Array:
    """``hh:mm:ss`` to seconds, vectorised for every value of that form; the others one by one."""
    odd: list[int] = []
    if isinstance(values, pa.Array) and (quick := _hms_or_odd(values)) is not None:
        seconds, odd = quick
        if not odd:
            return seconds
        return _patched(
            seconds, {row: _coerce_one(field, row, values[row].as_py(), to_seconds, issues) for row in odd}
        )
    if isinstance(values, pa.Array):
        strings: pa.Array | None = values
    else:
        odd = _odd_rows(values, _STR)
        texts = list(values)
        for row in odd:
            texts[row] = None
        strings = _as_strings(texts)
    if strings is not None:
        seconds = _hms_seconds(strings)
        if seconds is None:
            strings, unlike = _only_hms(strings)
            seconds = _hms_seconds(strings)
            odd = sorted([*odd, *unlike])
        if seconds is not None:
            if not odd:
                return seconds
            # The odd values only: the whole column as Python objects would cost more than the rest.
            originals = {
                row: values[row].as_py() if isinstance(values, pa.Array) else values[row] for row in odd
            }
            return _patched(
                seconds,
                {row: _coerce_one(field, row, value, to_seconds, issues) for row, value in originals.items()},
            )
    return _slow_column(field, values, to_seconds, pa.int64(), issues)


def _hms_or_odd(strings: pa.Array) -> tuple[pa.Array, list[int]] | None:
    """Seconds of every ``hh:mm:ss`` value with two-digit hours, null elsewhere, and the rows of the
    other non-null values (to be coerced one by one); None when those are too many to take singly.

    Drift such as ``"n/a"`` on a few records then costs those records, not a regex over the page.
    """
    length = len(strings)
    _, offsets_buffer, data_buffer = strings.buffers()
    if data_buffer is None or not length:
        return None
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=length + 1, offset=strings.offset * 4)
    nonnull = np.ones(length, dtype=bool) if (valid := valid_mask(strings)) is None else valid
    rows = np.flatnonzero((np.diff(offsets) == 8) & nonnull)
    matrix = byte_windows(np.frombuffer(data_buffer, dtype=np.uint8), offsets[rows], 8)
    digits = matrix[:, [0, 1, 3, 4, 6, 7]] - np.uint8(_ZERO)  # bytes below "0" wrap around to > 9
    good = (
        (digits <= 9).all(axis=1)
        & (matrix[:, [2, 5]] == _COLON).all(axis=1)
        & (digits[:, [2, 4]] <= 5).all(axis=1)
    )
    odd = nonnull.copy()
    odd[rows[good]] = False
    odd_rows = np.flatnonzero(odd)
    if odd_rows.size > max(8, length // 8):
        return None
    d = digits[good].astype(np.int64)
    seconds = np.zeros(length, dtype=np.int64)
    seconds[rows[good]] = (
        (d[:, 0] * 10 + d[:, 1]) * 3600 + (d[:, 2] * 10 + d[:, 3]) * 60 + d[:, 4] * 10 + d[:, 5]
    )
    found = np.zeros(length, dtype=bool)
    found[rows[good]] = True
    return from_numpy(seconds, pa.int64(), None if found.all() else found), odd_rows.tolist()


def _only_hms(strings: pa.Array) -> tuple[pa.Array, list[int]]:
    """The strings with those not of the ``hh:mm:ss`` form made null, and the rows of those."""
    matches = pc.match_substring_regex(strings, HMS)
    unlike = ~bools_of(matches)
    if (valid := valid_mask(strings)) is not None:
        unlike &= valid
    rows = np.flatnonzero(unlike)
    if not rows.size:
        return strings, []
    return pc.replace_with_mask(strings, bool_array(unlike), pa.nulls(rows.size, pa.string())), rows.tolist()


def _patched(array: pa.Array, rows: dict[int, Any]) -> pa.Array:
    """An int64 array with the value of each row in `rows` set (None: null)."""
    data = values_of(array, np.int64).copy()
    valid = valid_mask(array)
    valid = np.ones(len(array), dtype=bool) if valid is None else valid.copy()
    for row, value in rows.items():
        valid[row] = value is not None
        data[row] = 0 if value is None else value
    return _with_nulls_all(data, None if valid.all() else valid, pa.int64())


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
    return timestamps_array(instants_list, _TIMESTAMP_TYPE), numbers_array(offsets_list, pa.int16())


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
    mask = bools_array([sla is None for sla in slas])
    arrays = [seconds_array(f"sla.{key}", child, issues) for key, child in zip(_SLA_KEYS, children)]
    return pa.StructArray.from_arrays(arrays, fields=list(SLA_TYPE), mask=mask)


def sla_from_strings(strings: pa.StructArray, issues: PageIssues) -> pa.Array:
    """The sla objects already read as a struct of hh:mm:ss strings (flatten() applies its nulls)."""
    arrays = [seconds_array(f"sla.{key}", child, issues) for key, child in zip(_SLA_KEYS, strings.flatten())]
    return pa.StructArray.from_arrays(arrays, fields=list(SLA_TYPE), mask=strings.is_null())


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
    return strings_array(checked), coerced


def number_from_arrow(
    field: str,
    column: pa.Array,
    arrow_type: pa.DataType,
    sent_as_strings: pa.Array | None,
    sent_as_floats: pa.Array | None,
    issues: PageIssues,
) -> pa.Array | None:
    """A number field as Arrow read it (int64 or float64), with the values some records sent as
    strings, or as floats for an integer, coerced one by one, as :func:`int_array` and
    :func:`float_array` coerce them; None when a value must go the general way (out of range)."""
    is_float = arrow_type == pa.float64()
    if sent_as_strings is None and sent_as_floats is None and column.type == arrow_type:
        return column
    valid = valid_mask(column)
    valid = np.ones(len(column), dtype=bool) if valid is None else valid.copy()
    data = values_of(column, np.float64 if is_float else np.int64).copy()
    coerce = to_float if is_float else int_coercer(*_INT_RANGES[arrow_type])
    patches: dict[int, Any] = {}
    for sent in (sent_as_floats, sent_as_strings):
        if sent is not None:
            for row, value in present(sent):
                patches[row] = _coerce_one(field, row, value, coerce, issues)
    rest = valid.copy()
    rest[list(patches)] = False
    if not is_float and arrow_type != pa.int64():
        low, high = _INT_RANGES[arrow_type]
        kept = data[rest]
        if kept.size and (kept.min() < low or kept.max() > high):
            return None
    for row, value in patches.items():
        valid[row] = value is not None
        data[row] = 0 if value is None else value
    return from_numpy(np.where(valid, data, 0), arrow_type, None if valid.all() else valid)
