"""Page arithmetic of one search: which records page k holds, and how many pages the search has.

Positions count records from the search's first (newest) one. Everything here
follows from the profile, the request's page and per_page, and the search's key,
so the same request always gets the same page.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from airflow_provider_cdr.fake_api.profile import ServerProfile

ONE_RECORD_SHARE = 0.1  # varying sizes: how often a page holds a single record
_DRAW_BLOCK = 4096  # varying sizes are drawn in fixed blocks, so a longer search extends, never reshuffles


@dataclass(frozen=True)
class Span:
    """Records [start, stop) of a search (start == stop: an empty page) and its page count."""

    start: int
    stop: int
    pages: int


def search_key(seed: int, *parts: object) -> tuple[int, int]:
    """An RNG seed for one search: the dataset seed and a stable hash of the search's query and cursor.

    Hashes the parts' repr with blake2b, not `hash()`: str hashes are salted per process.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return seed, int.from_bytes(digest, "big")


def page_span(size: int, profile: ServerProfile, page: int, per_page: int, key: tuple[int, int]) -> Span:
    """Where page `page` of a search of `size` records lies under `profile`, at this per_page."""
    upper = profile.page_cap or per_page
    if profile.page_sizes == "varying":
        return varying_span(size, page, per_page, upper, key)
    held = min(per_page, upper)
    return fixed_span(size, page, held, step=per_page if profile.page_offset == "asked" else held)


def fixed_span(size: int, page: int, held: int, step: int) -> Span:
    """Pages of `held` records starting every `step` records (step > held skips records)."""
    start = min((page - 1) * step, size)
    return Span(start, min(start + held, size), math.ceil(size / step))


def varying_span(size: int, page: int, per_page: int, upper: int, key: tuple[int, int]) -> Span:
    """Pages of min(per_page, c_k) records, c_k drawn in 1..upper from the search's own RNG."""
    ends = _varying_ends(key, upper, per_page, size)
    pages = int(np.searchsorted(ends, size)) + 1 if size else 0
    start = size if page > pages else (0 if page == 1 else int(ends[page - 2]))
    stop = size if page > pages else min(int(ends[page - 1]), size)
    return Span(start, stop, pages)


@lru_cache(maxsize=256)
def _varying_ends(key: tuple[int, int], upper: int, per_page: int, size: int) -> np.ndarray:
    """Cumulative page ends of a search, drawn until they cover `size` records."""
    rng = np.random.default_rng(key)
    blocks: list[np.ndarray] = []
    covered = 0
    while covered < size:
        single = rng.random(_DRAW_BLOCK) < ONE_RECORD_SHARE
        drawn = rng.integers(1, upper, _DRAW_BLOCK, endpoint=True)
        sizes = np.minimum(np.where(single, 1, drawn), per_page)
        blocks.append(covered + np.cumsum(sizes))
        covered = int(blocks[-1][-1])
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)
