"""The operator's Arrow allocations go to the system allocator, and are handed back between row groups.

Arrow's default allocator (mimalloc in the pyarrow wheels) keeps freed memory in per-thread
heaps. Pages parsed on several slice threads and freed on the writer's thread then hold on to
about 100 MiB more at the peak of a 1,000,000-record day than glibc's malloc does (measured
with ``benchmarks/``), and run no faster. So while a day lands, the process's default Arrow pool
is the system one (Airflow runs each task in a process of its own), and after each row group
the freed memory is returned to the OS (``malloc_trim`` under glibc). The previous pool is put
back when the day is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa


@contextmanager
def system_arrow_pool() -> Iterator[pa.MemoryPool]:
    """Make the system allocator Arrow's default for the block; yields it."""
    previous = pa.default_memory_pool()
    pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield pool
    finally:
        pa.set_memory_pool(previous)


def release_unused() -> None:
    """Hand memory the default Arrow pool no longer uses back to the OS (cheap; a few ms at most)."""
    pa.default_memory_pool().release_unused()
