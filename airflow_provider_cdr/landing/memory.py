"""The operator's Arrow allocations go to the system allocator, and are handed back between row groups.

Arrow's default allocator (mimalloc in the pyarrow wheels) keeps freed memory in per-thread
heaps. Pages parsed on several slice threads and freed on the writer's thread then hold on to
about 100 MiB more at the peak of a 1,000,000-record day than glibc's malloc does (measured
with ``benchmarks/``), and run no faster. So while a day lands, the process's default Arrow pool
is the system one (Airflow runs each task in a process of its own), and after each row group
the freed memory is returned to the OS (``malloc_trim`` under glibc). The previous pool is put
back when the day is done.

Under glibc each thread that allocates may get a malloc arena of its own (up to 8 per core), and
a page received and parsed on a slice thread but freed on the writer's leaves holes in the slice's
arena that only that arena can reuse. One arena for the process took about 10 MiB off the peak
of a 1,000,000-record day with latency (300 -> 290 MiB, two runs each; no change in CPU time).
Arenas once made are never removed, so the setting stays for the rest of the task's process.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import pyarrow as pa

_M_ARENA_MAX = -8  # glibc's mallopt parameter

log = logging.getLogger(__name__)


@contextmanager
def system_arrow_pool() -> Iterator[pa.MemoryPool]:
    """Make the system allocator Arrow's default for the block; yields it."""
    _one_malloc_arena()
    previous = pa.default_memory_pool()
    _tell_if_not_system(previous.backend_name)
    pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield pool
    finally:
        pa.set_memory_pool(previous)


def release_unused() -> None:
    """Hand memory the default Arrow pool no longer uses back to the OS (cheap; a few ms at most)."""
    pa.default_memory_pool().release_unused()


@cache
def _one_malloc_arena() -> bool:
    """Ask glibc's malloc for one arena for all threads from now on (see the module docstring);
    whether it agreed. Elsewhere (musl, macOS, Windows) nothing is done."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1))
    except (OSError, ValueError, AttributeError):  # no confstr name, no libc, no mallopt
        return False


@cache
def _tell_if_not_system(backend: str) -> None:
    """Once per process: Arrow's own default allocator is not the system one (see the package's
    ``__init__``), so the Parquet writer's buffers are held the way that allocator holds them."""
    if backend != "system":
        log.info(
            "Arrow's default allocator in this process is %s (pyarrow was imported before "
            "airflow_provider_cdr, or ARROW_DEFAULT_MEMORY_POOL chose it); the Parquet writer's "
            "buffers come from it. ARROW_DEFAULT_MEMORY_POOL=system in the worker's environment "
            "lowers the peak memory of a large day.",
            backend,
        )
