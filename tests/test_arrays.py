"""NumPy <-> Arrow helpers of the hot path: right values, right nulls, also for sliced arrays, no pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from airflow_provider_cdr.convert.arrays import bool_array, from_numpy, valid_mask, values


@pytest.mark.parametrize("arrow_type", [pa.int16(), pa.int32(), pa.int64()])
def test_from_numpy_keeps_values_and_nulls(arrow_type: pa.DataType) -> None:
    data = np.array([5, -7, 0, 300, 9])
    valid = np.array([True, False, True, True, False])
    array = from_numpy(data, arrow_type, valid)
    assert array.type == arrow_type
    assert array.to_pylist() == [5, None, 0, 300, None]
    assert array.null_count == 2
    array.validate(full=True)
    assert from_numpy(data, arrow_type).to_pylist() == data.tolist()


def test_valid_mask_and_values_read_a_sliced_array() -> None:
    full = pa.array([1, None, 3, 4, None, 6, 7, 8, None, 10, 11], type=pa.int64())
    part = full.slice(3, 7)  # offset 3: the bitmap and the values do not start at bit/byte 0
    assert valid_mask(part).tolist() == [v is not None for v in part.to_pylist()]
    assert values(part, np.int64)[valid_mask(part)].tolist() == [v for v in part.to_pylist() if v is not None]
    assert valid_mask(pa.array([1, 2], type=pa.int64())) is None


def test_bool_array_filters_a_batch() -> None:
    batch = pa.RecordBatch.from_pydict({"n": list(range(10))})
    keep = np.arange(10) % 3 == 0
    assert batch.filter(bool_array(keep)).column("n").to_pylist() == [0, 3, 6, 9]


def test_the_helpers_do_not_import_pandas() -> None:
    """The point of the module: pa.array() on NumPy would import pandas (~30 MiB) to probe the value."""
    code = (
        "import sys, numpy as np, pyarrow as pa\n"
        "from airflow_provider_cdr.convert.arrays import bool_array, from_numpy, valid_mask, values\n"
        "a = from_numpy(np.arange(5), pa.int64(), np.array([True, False, True, True, True]))\n"
        "valid_mask(a); values(a, np.int64)\n"
        "pa.RecordBatch.from_arrays([a], names=['a']).filter(bool_array(np.ones(5, dtype=bool)))\n"
        "print('pandas' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
