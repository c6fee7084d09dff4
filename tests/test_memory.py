"""The operator's allocator settings (landing/memory.py), seen from glibc's own accounts.

Each case runs in a fresh interpreter: malloc arenas, once made, stay for the process, so the
pytest process (whose threads made arenas long ago) cannot show what a task's process gets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc's malloc only"
)

_THREADS_ALLOCATE = """
import ctypes, sys, threading
import pyarrow as pa
from airflow_provider_cdr.landing.memory import system_arrow_pool

def heaps() -> int:
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    handle = ctypes.c_void_p(libc.fopen(sys.argv[2].encode(), b"w"))
    libc.malloc_info(0, handle)
    libc.fclose(handle)
    return open(sys.argv[2]).read().count("<heap nr=")

def work(held: list, ready: threading.Barrier) -> None:
    held.append([pa.array(range(i, i + 5_000)) for i in range(20)])  # Arrow buffers: malloc
    ready.wait()

def run() -> None:
    before = heaps()
    ready, held = threading.Barrier(5), []
    threads = [threading.Thread(target=work, args=(held, ready)) for _ in range(4)]
    for thread in threads:
        thread.start()
    ready.wait()  # all four threads hold their buffers now
    print(before, heaps())
    for thread in threads:
        thread.join()

if sys.argv[1] == "in-pool":
    with system_arrow_pool():
        run()
else:
    pa.set_memory_pool(pa.system_memory_pool())
    run()
"""


def _heaps_before_and_after_threads_allocate(where: str, tmp_path: Path) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", _THREADS_ALLOCATE, where, str(tmp_path / f"{where}.xml")],
        capture_output=True,
        text=True,
        check=True,
    )
    before, after = done.stdout.strip().splitlines()[-1].split()
    return int(before), int(after)


def test_threads_allocating_while_a_day_lands_share_one_malloc_arena(tmp_path: Path) -> None:
    # The control: the same threads and allocations on the system pool, without the operator's
    # context, make arenas of their own; inside it they make none (arenas made before, by threads
    # of the imports, stay: glibc never removes one).
    before, after = _heaps_before_and_after_threads_allocate("control", tmp_path)
    assert after >= before + 3
    before, after = _heaps_before_and_after_threads_allocate("in-pool", tmp_path)
    assert after == before
