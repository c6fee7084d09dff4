"""A local write that runs out of room: the error says so, the previous version stays, nothing is left.

Two real ways to run out, both on the real filesystem code path:

- a 2 MiB tmpfs mounted for the test (``mount -t tmpfs -o size=2m``; needs root or CAP_SYS_ADMIN, the
  test is skipped where mounting is refused): writes fail with ENOSPC, as on a full disk;
- ``RLIMIT_FSIZE`` in a child process (SIGXFSZ ignored): a write past the limit fails with EFBIG.
  This one runs everywhere, and covers the same paths (the error inside pyarrow's write, the abort).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.reliability.reliability_support import visible_rows
from tests.test_partition import day_records, expected_table, sorted_rows, tree, write_day

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2024, 7, 31)


def incompressible_day(count: int) -> list[dict[str, Any]]:
    """A day that no codec shrinks below ~1 KiB a record: each carries 1 KiB of random bytes, as hex."""
    rng = random.Random(7)
    records = day_records(DAY, count, seed=5)
    for record in records:
        record["text"] = rng.randbytes(1024).hex()
    return records


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs at tmp_path/small, unmounted after (which fails if the writer left a file open)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the RLIMIT_FSIZE test covers it")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_fails_the_write_with_enospc_and_keeps_the_previous_version(small_disk: Path) -> None:
    previous_records = day_records(DAY, 300)
    write_day(small_disk, DAY, previous_records)
    before = tree(small_disk)
    used_before = shutil.disk_usage(small_disk).used

    with pytest.raises(OSError) as failure:
        write_day(small_disk, DAY, incompressible_day(3000), page_size=200, row_group_rows=200)

    assert failure.value.errno == errno.ENOSPC, repr(failure.value)
    assert "No space left on device" in str(failure.value)
    assert tree(small_disk) == before, "the previous version is untouched and nothing staged is left"
    assert [path.name for path in small_disk.iterdir()] == ["date=2024-07-31"]
    assert shutil.disk_usage(small_disk).used == used_before, "the staged bytes were freed"
    assert visible_rows(small_disk) == len(previous_records)
    table = pq.read_table(small_disk / "date=2024-07-31")
    assert sorted_rows(table) == sorted_rows(expected_table(previous_records))

    # The day is not left locked: a version that fits lands at once.
    records = day_records(DAY, 100, seed=1)
    write_day(small_disk, DAY, records)
    assert sorted_rows(pq.read_table(small_disk / "date=2024-07-31")) == sorted_rows(expected_table(records))


LIMITED_WRITER = textwrap.dedent(
    """
    import resource, signal, sys, traceback
    from datetime import date
    sys.path.insert(0, sys.argv[2])
    from tests.reliability.test_disk_full import DAY, day_split_at_commit, incompressible_day
    from tests.test_partition import write_day

    records = incompressible_day(3000) if sys.argv[3] == "all" else day_split_at_commit(sys.argv[3])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead of failing the write
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, 512 * 1024))
    options = {"page_size": 200, "row_group_rows": 200} if sys.argv[3] == "all" else {"page_size": 2000}
    try:
        write_day(sys.argv[1], DAY, records, **options)
    except OSError as err:
        print(f"errno={err.errno} {type(err).__name__}: {err}")
        print("frames=" + ",".join(frame.name for frame in traceback.extract_tb(err.__traceback__)))
        sys.exit(3)
    sys.exit("the write fitted under the limit")
    """
)


def day_split_at_commit(big: str) -> list[dict[str, Any]]:
    """40,000 records, all left at the commit (so written as two halves side by side, each on its
    own thread): the `big` half ("first" or "second") carries 1,000 incompressible ones, over 512 KiB."""
    records = day_records(DAY, 40_000, seed=5)
    start = 0 if big == "first" else 20_000
    for record, noisy in zip(records[start : start + 1000], incompressible_day(1000)):
        record["text"] = noisy["text"]
    return records


@pytest.mark.parametrize(
    "big",
    ["all", "first", "second"],
    ids=["row-groups-on-the-way", "last-rows-half-written-here", "last-rows-half-on-the-encoder-thread"],
)
def test_a_file_size_limit_fails_the_write_with_efbig_and_keeps_the_previous_version(
    tmp_path: Path, big: str
) -> None:
    base = tmp_path / "out"
    previous_records = day_records(DAY, 300)
    write_day(base, DAY, previous_records)
    before = tree(base)

    child = subprocess.run(
        [sys.executable, "-c", LIMITED_WRITER, str(base), str(ROOT), big],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert child.returncode == 3, child.stdout + child.stderr[-3000:]
    (reported,) = [line for line in child.stdout.splitlines() if line.startswith("errno=")]
    assert reported.startswith(f"errno={errno.EFBIG} OSError: [Errno {errno.EFBIG}] File too large"), reported
    (frames,) = [line for line in child.stdout.splitlines() if line.startswith("frames=")]
    failed_in = {"all": "_write_row_group", "first": "_drain_last", "second": "_write_whole"}[big]
    called = frames.removeprefix("frames=").split(",")
    assert called[called.index("write") - 1] == failed_in, frames  # the caller of _OpenFile.write
    assert tree(base) == before, "the previous version is untouched and nothing staged is left"
    assert [path.name for path in base.iterdir()] == ["date=2024-07-31"]
    assert visible_rows(base) == len(previous_records)
