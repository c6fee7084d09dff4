"""Convert one JSON-decoded CDR value to its column's type: the slow path, a value at a time.

Each coercer answers ``(result, coerced)``. ``coerced`` is true when the value has the wrong
JSON type but converts without loss (``"56215"`` -> 56215, ``2.0`` -> 2, ``"0.1"`` -> 0.1,
``101`` -> ``"101"``, 79 -> 79 seconds); ``0`` for a float is no coercion: JSON has one
number type. A value that does not convert (``"n/a"`` for a number, ``true`` anywhere, a
timestamp without a UTC offset, ``2.5`` segments) raises ``ValueError`` (or ``TypeError``,
``OverflowError``), and the caller keeps it raw. What happens to coerced and uncoercible
values then is told in :mod:`airflow_provider_cdr.convert.records`.

Only a column that :mod:`airflow_provider_cdr.convert.columns` cannot convert whole comes
here value by value. This module knows nothing of Arrow, columns or pages, so the rules
for one value can be read (and tested) on their own.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

# ``hh:mm:ss``, hours may exceed 24; also used by the vectorised path in ``columns``.
HMS = r"^(?P<h>\d+):(?P<m>[0-5]\d):(?P<s>[0-5]\d)$"
_HMS_RE = re.compile(HMS)
_INT_STR_RE = re.compile(r"([+-]?\d+)(?:\.0*)?")
_FLOAT_STR_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

_INT64_MAX = 2**63 - 1


class _Uncoercible(ValueError):
    """A value that has no lossless conversion to its column's type."""


def to_str(value: Any) -> tuple[str, bool]:
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


def int_coercer(low: int, high: int) -> Callable[[Any], tuple[int, bool]]:
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


def to_float(value: Any) -> tuple[float, bool]:
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


def to_seconds(value: Any) -> tuple[int, bool]:
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


def to_instant(value: Any) -> tuple[datetime, int]:
    """ISO 8601 with a UTC offset to (the instant, the offset in minutes)."""
    if not isinstance(value, str):
        raise _Uncoercible(type(value).__name__)
    parsed = datetime.fromisoformat(value)
    offset = parsed.utcoffset()
    if offset is None:
        # Without an offset the instant is unknown; guessing a zone would shift days silently.
        raise _Uncoercible("no UTC offset")
    return parsed, int(offset.total_seconds()) // 60


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages that must not show the value."""
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
