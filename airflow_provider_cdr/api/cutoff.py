"""What cuts a synchronous request short: its deadline, or another slice of its extraction failing.

requests has no total timeout: its read timeout bounds each socket read, so a server that
trickles a few bytes at a time holds a request for as long as it likes. Here an attempt's socket
is shut down by a timer at the attempt's deadline, and at once when the extraction is cancelled;
the blocked read then ends with a transport error, which the hook turns into a retry (deadline)
or into `CDRCancelled` (cancellation). The body is still read in one call into one buffer.

The wait for headers is bounded by the read timeout, capped at the deadline: the socket is only
reachable once requests hands the response over (and not at all through an HTTPS proxy to an
HTTPS API, where the per-read timeout is then the only bound).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow_provider_cdr.api.errors import CDRCancelled
from airflow_provider_cdr.api.retry import deadline_problem, transport_problem


def _socket_of(response: Any) -> socket.socket | None:
    """The socket under a streamed requests response (urllib3 2), or None once it is released."""
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _shut(sock: socket.socket) -> None:
    """Wake a read blocked on `sock` (another thread's) with an end of stream; TLS sockets included."""
    with contextlib.suppress(OSError):  # already closed: nothing is blocked on it
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Cutoff:
    """One extraction's cancellation, and the deadlines of its requests in flight."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: set[socket.socket] = set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def stop(self) -> threading.Event:
        """Set once the extraction is cancelled: what waits (the rate gate's pauses) wake on."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop every request of the extraction: in flight, waiting to retry, or not sent yet."""
        self._cancelled.set()
        with self._lock:
            in_flight = list(self._in_flight)
        for sock in in_flight:
            _shut(sock)

    def check(self) -> None:
        """Raise CDRCancelled once the extraction is cancelled: no new request goes out."""
        if self._cancelled.is_set():
            raise CDRCancelled("the request was not sent: another slice of the extraction failed")

    def sleep(self, seconds: float) -> None:
        """A retry's backoff, cut short (CDRCancelled) when the extraction is cancelled."""
        if self._cancelled.wait(seconds):
            raise CDRCancelled("the retry was dropped: another slice of the extraction failed")

    def attempt(self, deadline: float) -> Attempt:
        """One attempt starting now, to be finished within `deadline` seconds."""
        return Attempt(self, deadline)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._in_flight.add(sock)
        if self._cancelled.is_set():  # cancelled just before the socket was known
            _shut(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._in_flight.discard(sock)


class Attempt:
    """The clock of one attempt: how long it may still wait, and whether its deadline cut it off."""

    def __init__(self, cutoff: Cutoff, deadline: float) -> None:
        self.deadline = deadline
        self._cutoff = cutoff
        self._ends = time.monotonic() + deadline
        self._cut = False

    def time_left(self, cap: float) -> float:
        """Seconds left before the deadline, at most `cap` (a per-read timeout), never below 0.001."""
        return max(min(cap, self._ends - time.monotonic()), 0.001)

    @property
    def expired(self) -> bool:
        return self._cut or time.monotonic() >= self._ends

    def problem(self, error: BaseException, secret: str) -> str:
        """What a transport error of this attempt means for the retry log: its deadline, or the error."""
        return deadline_problem(self.deadline) if self.expired else transport_problem(error, secret)

    @contextmanager
    def guard(self, response: Any) -> Iterator[None]:
        """While the block reads `response`, its socket is shut at the deadline or on cancellation."""
        sock = _socket_of(response)
        if sock is None:
            yield
            return
        timer = threading.Timer(max(self._ends - time.monotonic(), 0.0), self._cut_off, [sock])
        timer.daemon = True
        self._cutoff._track(sock)
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            self._cutoff._untrack(sock)

    def _cut_off(self, sock: socket.socket) -> None:
        self._cut = True
        _shut(sock)
