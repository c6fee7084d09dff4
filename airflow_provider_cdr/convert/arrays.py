"""NumPy <-> Arrow for the operator's hot path, without pyarrow's pandas probe.

``pa.array(...)`` (of a list, an iterator or a NumPy array), ``pa.scalar(...)``, a Python
number given to a compute function and a boolean ``to_numpy()`` make pyarrow import pandas
(to ask whether the value is a pandas object): about a second of CPU and 30 MiB of resident
memory in a task process that never needs pandas. These helpers build and read the Arrow
buffers directly instead, for the Arrow path and the record-by-record path alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from itertools import repeat
from operator import is_not
from typing import Any

import numpy as np
import pyarrow as pa

_DTYPES = {pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64, pa.float64(): np.float64}
_INT_BOUNDS = {pa.int16(): (-(2**15), 2**15 - 1), pa.int32(): (-(2**31), 2**31 - 1)}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def valid_mask(array: pa.Array) -> np.ndarray | None:
    """Per row, whether it is not null; None when no row is null."""
    if not array.null_count:
        return None
    bitmap = np.frombuffer(array.buffers()[0], dtype=np.uint8)
    bits = np.unpackbits(bitmap, bitorder="little", count=array.offset + len(array))
    return bits[array.offset :].astype(bool)


def values(array: pa.Array, dtype: type[np.generic]) -> np.ndarray:
    """A fixed-width array's values as a NumPy view (whatever a null row holds, e.g. 0)."""
    if array.buffers()[1] is None:
        return np.zeros(len(array), dtype=dtype)
    return np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * np.dtype(dtype).itemsize
    )


def from_numpy(data: np.ndarray, arrow_type: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """An int16/32/64 or float64 Arrow array of `data`, null where `valid` is False."""
    buffer = pa.py_buffer(np.ascontiguousarray(data, dtype=_DTYPES[arrow_type]))
    if valid is None:
        return pa.Array.from_buffers(arrow_type, len(data), [None, buffer])
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        arrow_type, len(data), [bitmap, buffer], null_count=int(len(valid) - valid.sum())
    )


def byte_items(data: np.ndarray, width: int) -> np.ndarray:
    """Every run of `width` bytes of `data` (contiguous uint8) as one ``S{width}`` item: a view.

    ``items[starts]`` gathers fixed-width items in one step; indexing with ``starts[:, None] +
    np.arange(width)`` builds n * width int64 indices first, which took 2-3 times as long on a page
    of 10,000 records. NumPy compares ``S`` items without their trailing NUL bytes, so compare
    them only with a key that does not end in one.
    """
    count = max(len(data) - width + 1, 0)
    return np.ndarray((count,), dtype=f"S{width}", buffer=data, strides=(1,))


def byte_windows(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """The `width` bytes of `data` from each of `starts` (each leaving that many), as (n, width) uint8."""
    return byte_items(data, width)[starts].view(np.uint8).reshape(len(starts), width)


def bool_array(mask: np.ndarray) -> pa.BooleanArray:
    """A NumPy boolean mask as an Arrow boolean array (e.g. for ``RecordBatch.filter``)."""
    bits = pa.py_buffer(np.packbits(mask, bitorder="little"))
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, bits])


# --- Python values -> Arrow, without pa.array (whose probe imports pandas) -----------------


def _validity(values: list[Any]) -> np.ndarray | None:
    """Per value, whether it is not None; None when none is."""
    if None not in values:
        return None
    return np.fromiter(map(is_not, values, repeat(None)), dtype=bool, count=len(values))


def _bitmap(valid: np.ndarray | None) -> pa.Buffer | None:
    return None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))


def _null_count(valid: np.ndarray | None) -> int:
    return 0 if valid is None else int(len(valid) - valid.sum())


def strings_array(values: list[Any]) -> pa.Array:
    """str or None values as an Arrow string array; UnicodeEncodeError for a lone surrogate."""
    valid = _validity(values)
    if valid is None:
        encoded = list(map(str.encode, values))
    else:
        encoded = [b"" if value is None else value.encode() for value in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise OverflowError("a page's strings exceed 2 GiB")
    buffers = [_bitmap(valid), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers, null_count=_null_count(valid))


def numbers_array(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    """int (or, for float64, int and float) or None values; OverflowError when one does not fit."""
    valid = _validity(values)
    dtype = np.float64 if arrow_type == pa.float64() else np.int64
    filled = values if valid is None else [0 if value is None else value for value in values]
    data = np.array(filled, dtype=dtype)  # OverflowError for an int beyond int64
    if dtype is np.int64 and arrow_type != pa.int64() and data.size:
        low, high = _INT_BOUNDS[arrow_type]
        if data.min() < low or data.max() > high:
            raise OverflowError(f"a value does not fit {arrow_type}")
    data = data.astype(np.float64 if dtype is np.float64 else _DTYPES[arrow_type], copy=False)
    buffers = [_bitmap(valid), pa.py_buffer(np.ascontiguousarray(data))]
    return pa.Array.from_buffers(arrow_type, len(values), buffers, null_count=_null_count(valid))


def timestamps_array(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    """Aware datetimes or None as microseconds since the epoch, in a timestamp array of `arrow_type`."""
    micros = [None if value is None else (value - _EPOCH) // _MICROSECOND for value in values]
    return numbers_array(micros, pa.int64()).view(arrow_type)


def bools_array(values: list[Any]) -> pa.Array:
    """bool values (no None) as an Arrow boolean array."""
    return bool_array(np.array(values, dtype=bool))


def bools_of(array: pa.Array) -> np.ndarray:
    """A boolean Arrow array as a NumPy bool array (a null row reads False), without to_numpy()."""
    if array.buffers()[1] is None:
        return np.zeros(len(array), dtype=bool)
    bits = np.unpackbits(np.frombuffer(array.buffers()[1], dtype=np.uint8), bitorder="little")
    result = bits[array.offset : array.offset + len(array)].astype(bool)
    valid = valid_mask(array)
    return result if valid is None else result & valid


def present(array: pa.Array) -> Iterator[tuple[int, Any]]:
    """(row, value) of each non-null row, as Python values: a sparse column without a whole list."""
    valid = valid_mask(array)
    rows = range(len(array)) if valid is None else np.flatnonzero(valid).tolist()
    return zip(rows, array.drop_null().to_pylist())
