"""Remembering which uuids an extraction has yielded, a whole page at a time, in little memory.

A Python set of a million uuid strings costs ~100 MB and a microsecond per record; this keeps
16-byte keys in sorted NumPy arrays (16 MB per million) and answers for a page in a few
vectorised steps. A canonical uuid's key is its 16 bytes, decoded from hex without a Python
loop; any other string's key is its 128-bit BLAKE2b digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

_MERGE_EVERY = 65_536
_UUID_LENGTH = 36
_DASHES = np.array([8, 13, 18, 23])
_HEX_COLUMNS = np.array([i for i in range(_UUID_LENGTH) if i not in (8, 13, 18, 23)])
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _value, _chars in enumerate(zip("0123456789abcdef", "0123456789ABCDEF")):
    for _char in _chars:
        _NIBBLE[ord(_char)] = _value


def uuid_keys(uuids: Sequence[str] | pa.Array) -> np.ndarray:
    """One 16-byte key per uuid (dtype S16), the same for the same string in any page."""
    array = uuids if isinstance(uuids, pa.Array) else pa.array(uuids, type=pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = array.cast(pa.string())
    count = len(array)
    keys = np.zeros((count, 16), dtype=np.uint8)
    if not count:
        return keys.view("S16").ravel()
    canonical = np.zeros(count, dtype=bool)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + count + 1]
    if array.null_count == 0 and np.all(np.diff(offsets) == _UUID_LENGTH):
        start = int(offsets[0])
        chars = np.frombuffer(array.buffers()[2], dtype=np.uint8)[start : start + count * _UUID_LENGTH]
        chars = chars.reshape(count, _UUID_LENGTH)
        nibbles = _NIBBLE[chars[:, _HEX_COLUMNS]]
        canonical = np.all(chars[:, _DASHES] == ord("-"), axis=1) & np.all(nibbles != 255, axis=1)
        keys[canonical] = (nibbles[canonical, 0::2] << 4) | nibbles[canonical, 1::2]
    if not canonical.all():
        texts = array.to_pylist()
        for row in np.flatnonzero(~canonical):
            text = texts[row] if texts[row] is not None else ""
            digest = hashlib.blake2b(b"\x00" + text.encode(), digest_size=16).digest()
            keys[row] = np.frombuffer(digest, dtype=np.uint8)
    return keys.view("S16").ravel()


class SeenUUIDs:
    """A set of uuids (as 16-byte keys) that answers for a whole page at once."""

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype="S16")
        self._recent: list[np.ndarray] = []
        self._recent_size = 0

    def __len__(self) -> int:
        return len(self._sorted) + self._recent_size

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Mark each key (see uuid_keys) seen; return a boolean mask: was it new (also within this page)?"""
        fresh = np.zeros(len(keys), dtype=bool)
        if not len(keys):
            return fresh
        _, first = np.unique(keys, return_index=True)
        fresh[first] = True
        for known in (self._sorted, *self._recent):
            fresh &= ~_contains(known, keys)
        added = np.sort(keys[fresh])
        if len(added):
            self._recent.append(added)
            self._recent_size += len(added)
        if self._recent_size >= _MERGE_EVERY:
            self._sorted = np.sort(np.concatenate([self._sorted, *self._recent]))
            self._recent, self._recent_size = [], 0
        return fresh


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    positions = np.searchsorted(sorted_keys, keys)
    positions[positions == len(sorted_keys)] = 0
    return sorted_keys[positions] == keys
