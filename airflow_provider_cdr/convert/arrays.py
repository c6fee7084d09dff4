"""NumPy <-> Arrow for the operator's hot path, without pyarrow's pandas probe.

``pa.array(numpy_array)``, ``pa.scalar(...)`` and a boolean ``to_numpy()`` make pyarrow
import pandas (to ask whether the value is a pandas object): about 30 MiB of resident
memory in a task process that never needs pandas. These helpers build and read the
Arrow buffers directly instead. The general (drift) path may still use ``pa.array``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_DTYPES = {pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64}


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
    """An int16/32/64 Arrow array of `data`, null where `valid` is False."""
    buffer = pa.py_buffer(np.ascontiguousarray(data, dtype=_DTYPES[arrow_type]))
    if valid is None:
        return pa.Array.from_buffers(arrow_type, len(data), [None, buffer])
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        arrow_type, len(data), [bitmap, buffer], null_count=int(len(valid) - valid.sum())
    )


def bool_array(mask: np.ndarray) -> pa.BooleanArray:
    """A NumPy boolean mask as an Arrow boolean array (e.g. for ``RecordBatch.filter``)."""
    bits = pa.py_buffer(np.packbits(mask, bitorder="little"))
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, bits])
