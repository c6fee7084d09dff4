"""A real Redis server for the tests (Debian's `redis-server`, which `.ci/run` installs when missing):
started on a free loopback port, with no persistence, and stopped at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def redis_server() -> Iterator[str]:
    """Run one redis-server; yields its URL (``redis://127.0.0.1:<port>/0``)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (Debian: apt-get install redis-server; .ci/run does)"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_until_it_answers(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_it_answers(url: str, process: subprocess.Popen[bytes]) -> None:
    import redis

    deadline = time.monotonic() + 30
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    while True:
        assert process.poll() is None, f"redis-server exited with {process.returncode}"
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not answer within 30 s"
            time.sleep(0.05)
