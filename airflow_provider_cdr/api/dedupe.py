"""Remembering which uuids an extraction has yielded, a whole page at a time, in little memory.

A Python set of a million uuid strings costs ~100 MB and a microsecond per record; this keeps
128-bit keys as pairs of uint64 in sorted NumPy arrays (16 MB per million) and answers for a
page in a few vectorised steps, searching on the high half and confirming with the low half. A canonical uuid's key is its 16 bytes, decoded from hex without a Python
loop; any other string's key is its 128-bit BLAKE2b digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

_MERGE_EVERY = 65_536
_RUN_KEYS = 262_144  # 4 MB of keys
_FOLD_AFTER_PAGES = 8
_UUID_LENGTH = 36
_DASHES = np.array([8, 13, 18, 23])
_HEX_COLUMNS = np.array([i for i in range(_UUID_LENGTH) if i not in (8, 13, 18, 23)])
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _value, _chars in enumerate(zip("0123456789abcdef", "0123456789ABCDEF")):
    for _char in _chars:
        _NIBBLE[ord(_char)] = _value


def uuid_keys(uuids: Sequence[str] | pa.Array) -> np.ndarray:
    """One 128-bit key per uuid, as an (n, 2) uint64 array: the same for the same string in any page."""
    array = uuids if isinstance(uuids, pa.Array) else pa.array(uuids, type=pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = array.cast(pa.string())
    count = len(array)
    keys = np.zeros((count, 16), dtype=np.uint8)
    if not count:
        return _as_pairs(keys)
    canonical = np.zeros(count, dtype=bool)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + count + 1]
    rows = np.flatnonzero(np.diff(offsets) == _UUID_LENGTH)
    if array.null_count:
        rows = rows[array.is_valid().to_numpy(zero_copy_only=False)[rows]]
    if rows.size and array.buffers()[2] is not None:
        data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
        if len(rows) == count and offsets[-1] - offsets[0] == count * _UUID_LENGTH:
            # Every uuid 36 bytes, back to back (as a page from the API): a view, no gather.
            chars = data[offsets[0] : offsets[-1]].reshape(count, _UUID_LENGTH)
        else:
            chars = data[offsets[rows, None] + np.arange(_UUID_LENGTH)]
        good, decoded = _decode(chars)
        rows = rows[good]
        canonical[rows] = True
        keys[rows] = decoded[good]
    if not canonical.all():
        texts = array.to_pylist()
        for row in np.flatnonzero(~canonical):
            text = texts[row] if texts[row] is not None else ""
            digest = hashlib.blake2b(b"\x00" + text.encode(), digest_size=16).digest()
            keys[row] = np.frombuffer(digest, dtype=np.uint8)
    return _as_pairs(keys)


def canonical_uuid_keys(chars: np.ndarray) -> np.ndarray | None:
    """Keys of uuids given as an (n, 36) array of their bytes, as uuid_keys gives them; None unless
    every one is canonical (hex digits and dashes where a uuid has them)."""
    good, decoded = _decode(chars)
    return _as_pairs(np.ascontiguousarray(decoded)) if good.all() else None


def _decode(chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of uuid bytes, whether it is canonical, and its 16 bytes (meaningful where it is)."""
    hexes = chars[:, _HEX_COLUMNS]
    dashes = np.all(chars[:, _DASHES] == ord("-"), axis=1)
    decoded = _from_hex(hexes)
    if decoded is not None:
        return dashes, decoded
    nibbles = _NIBBLE[hexes]
    return dashes & np.all(nibbles != 255, axis=1), (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]


def _from_hex(hexes: np.ndarray) -> np.ndarray | None:
    """The (n, 16) bytes of (n, 32) hex digits when every one is a hex digit, else None.

    bytes.fromhex decodes in C, twice as fast as the lookup table; it skips whitespace, so only a
    result of full length means that every byte was a digit."""
    try:
        raw = bytes.fromhex(hexes.tobytes().decode("ascii"))
    except ValueError:  # not hex, or not ASCII (UnicodeDecodeError is a ValueError)
        return None
    if len(raw) != hexes.size // 2:
        return None
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(hexes), 16)


def _as_pairs(keys: np.ndarray) -> np.ndarray:
    return keys.view(">u8").astype(np.uint64).reshape(-1, 2)


class SeenUUIDs:
    """A set of uuid keys (see uuid_keys) that answers for a whole page at once.

    Keys live in arrays sorted by their high half: full runs, one run being filled, and a few
    recent ones (one per page). The recent ones are folded together every few pages, and into
    the run being filled every _MERGE_EVERY keys by a linear merge; a run of _RUN_KEYS keys is
    full and never merged again. So no array is sorted twice, and a merge never needs more
    than two runs' worth of memory on top of the keys (a single growing array would need the
    whole set twice over at its last merge: 32 MB more at a million records).
    """

    def __init__(self) -> None:
        self._full: list[np.ndarray] = []
        self._filling = sort_keys(np.empty((0, 2), dtype=np.uint64))
        self._recent: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(keys) for keys in (*self._full, self._filling, *self._recent))

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Mark each key seen; return a boolean mask: was it new (also within this page)?"""
        order = probe_order(keys)  # sorted once, searched in every array
        fresh = _first_occurrences(keys, order)
        for known in (*self._full, self._filling, *self._recent):
            fresh &= ~contains(known, keys, order)
        if fresh.any():
            self._recent.append(np.asfortranarray(keys[order[fresh[order]]]))  # already in key order
        if len(self._recent) >= _FOLD_AFTER_PAGES:
            recent = sort_keys(np.concatenate(self._recent))
            if len(recent) < _MERGE_EVERY:
                self._recent = [recent]
            else:
                self._filling, self._recent = merge_sorted(self._filling, recent), []
                if len(self._filling) >= _RUN_KEYS:
                    self._full.append(self._filling)
                    self._filling = sort_keys(np.empty((0, 2), dtype=np.uint64))
        return fresh


def sort_keys(keys: np.ndarray) -> np.ndarray:
    """Sorted by the high half, column-major so that each half is contiguous to search."""
    return np.asfortranarray(keys[np.argsort(keys[:, 0], kind="stable")])


def merge_sorted(big: np.ndarray, small: np.ndarray) -> np.ndarray:
    """Two key arrays sorted by their high half, merged into one in linear time."""
    merged = np.empty((len(big) + len(small), 2), dtype=np.uint64, order="F")
    small_rows = np.searchsorted(big[:, 0], small[:, 0]) + np.arange(len(small))
    big_rows = np.ones(len(merged), dtype=bool)
    big_rows[small_rows] = False
    merged[small_rows] = small
    merged[big_rows] = big
    return merged


def probe_order(keys: np.ndarray) -> np.ndarray:
    """The rows of `keys` in order of their high half (stable: equal keys keep their page order)."""
    return np.argsort(keys[:, 0], kind="stable")


def _first_occurrences(keys: np.ndarray, order: np.ndarray) -> np.ndarray:
    """True for the first row of each distinct key (`order`: from probe_order)."""
    fresh = np.zeros(len(keys), dtype=bool)
    high = keys[order, 0]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = high[1:] != high[:-1]
    fresh[order[starts]] = True
    if not starts.all():  # a repeated high half: decide on the whole key
        _, first = np.unique(keys, axis=0, return_index=True)
        fresh[:] = False
        fresh[first] = True
    return fresh


def contains(sorted_keys: np.ndarray, keys: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Per key, whether it is in `sorted_keys` (from sort_keys); `order` (probe_order of `keys`)
    when the caller has it: sorted probes search many times faster than random ones."""
    if not len(sorted_keys) or not len(keys):
        return np.zeros(len(keys), dtype=bool)
    high, low = sorted_keys[:, 0], sorted_keys[:, 1]
    order = probe_order(keys) if order is None else order
    probe_high, probe_low = keys[order, 0], keys[order, 1]
    start = np.minimum(np.searchsorted(high, probe_high), len(high) - 1)
    same_high = high[start] == probe_high
    found_sorted = same_high & (low[start] == probe_low)
    for row in np.flatnonzero(same_high & ~found_sorted):  # the same high half more than once: rare
        end = np.searchsorted(high, probe_high[row], "right")
        found_sorted[row] = bool(np.any(low[start[row] : end] == probe_low[row]))
    found = np.empty(len(keys), dtype=bool)
    found[order] = found_sorted
    return found
