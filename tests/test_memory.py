"""The operator's allocator settings (landing/memory.py, the package's ``__init__``), seen from
glibc's and Arrow's own accounts.

Each case runs in a fresh interpreter: malloc arenas, once made, stay for the process, and Arrow
picks its default allocator once; the pytest process (whose threads made arenas long ago, and
which imported pyarrow early) cannot show what a task's process gets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

glibc_only = pytest.mark.skipif(
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


@glibc_only
def test_threads_allocating_while_a_day_lands_share_one_malloc_arena(tmp_path: Path) -> None:
    # The control: the same threads and allocations on the system pool, without the operator's
    # context, make arenas of their own; inside it they make none (arenas made before, by threads
    # of the imports, stay: glibc never removes one).
    before, after = _heaps_before_and_after_threads_allocate("control", tmp_path)
    assert after >= before + 3
    before, after = _heaps_before_and_after_threads_allocate("in-pool", tmp_path)
    assert after == before


_BACKEND = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
if sys.argv[1] == "pyarrow-first":
    import pyarrow
import airflow_provider_cdr
import pyarrow as pa
from airflow_provider_cdr.landing.memory import system_arrow_pool
print("backend", pa.default_memory_pool().backend_name)
with system_arrow_pool():
    pass
"""


def _allocator_story(order: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", _BACKEND, order],
        capture_output=True,
        text=True,
        check=True,
        env={**environment, **env},
    )
    return done.stdout


def test_the_provider_asks_for_the_system_allocator_unless_the_environment_chose() -> None:
    told = _allocator_story("provider-first")
    assert "backend system" in told
    assert "default allocator" not in told
    # An explicit choice stands, and the operator's log says what it costs.
    told = _allocator_story("provider-first", ARROW_DEFAULT_MEMORY_POOL="mimalloc")
    assert "backend mimalloc" in told
    assert "Arrow's default allocator in this process is mimalloc" in told


def test_pyarrow_imported_first_keeps_its_allocator_and_the_log_says_so() -> None:
    told = _allocator_story("pyarrow-first")
    assert "backend system" not in told
    assert "ARROW_DEFAULT_MEMORY_POOL=system in the worker's environment" in told
