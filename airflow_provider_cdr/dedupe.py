"""Remembering which uuids an extraction has yielded, in memory that stays small.

A Python set of a million uuid strings costs ~100 MB; this keeps 16-byte digests in a
sorted NumPy array (16 MB per million) plus a small set of recent ones, merged in bulk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

_MERGE_EVERY = 65_536


def _digest(uuid: str) -> bytes:
    return hashlib.blake2b(uuid.encode(), digest_size=16).digest()


class SeenUUIDs:
    """A set of uuids (as 128-bit digests) that answers for a whole page at once."""

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype="S16")
        self._recent: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def add_new(self, uuids: Iterable[str]) -> list[bool]:
        """Mark each uuid seen; return, per uuid, whether it was new (also within this call)."""
        digests = [_digest(u) for u in uuids]
        if len(self._sorted) and digests:
            probe = np.array(digests, dtype="S16")
            positions = np.searchsorted(self._sorted, probe)
            positions[positions == len(self._sorted)] = 0
            known = (self._sorted[positions] == probe).tolist()
        else:
            known = [False] * len(digests)
        fresh: list[bool] = []
        recent = self._recent
        for digest, old in zip(digests, known):
            if old or digest in recent:
                fresh.append(False)
            else:
                recent.add(digest)
                fresh.append(True)
        if len(recent) >= _MERGE_EVERY:
            self._merge()
        return fresh

    def _merge(self) -> None:
        merged = np.concatenate([self._sorted, np.array(list(self._recent), dtype="S16")])
        merged.sort()
        self._sorted = merged
        self._recent = set()
