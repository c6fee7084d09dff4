"""Long-running child processes for the deployment tests: own process group, log file, whole-tree stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on right now (not 8080: a developer's Airflow may be there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, pause: float = 0.5) -> T:
    """Poll `probe` until it returns something other than None/False; TimeoutError after `timeout` s.

    Connection errors mean "not yet"; any other exception (a service died, an import error)
    ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except OSError as err:  # a server still starting refuses connections (requests' errors too)
            last_error = err
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})"
            )
        time.sleep(pause)


class Service:
    """One child process in a process group of its own, writing to `log`."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: one killpg reaches its workers too
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the group, SIGKILL whatever of the tree (also children that left it) is left."""
        tree = _tree(self.process.pid)
        _signal_group(self.process.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=grace)
        _signal_group(self.process.pid, signal.SIGKILL)
        for process in alive + _survivors(tree):
            with contextlib.suppress(psutil.Error):
                process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the whole tree at once, without warning (a host lost)."""
        tree = _tree(self.process.pid)
        _signal_group(self.process.pid, signal.SIGKILL)
        for process in _survivors(tree):
            with contextlib.suppress(psutil.Error):
                process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _survivors(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [process for process in processes if process.is_running()]


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
