"""What cuts a synchronous request short: its deadline, or another slice of its extraction failing.

requests has no total timeout: its read timeout bounds each socket read, so a server that
trickles a few bytes at a time holds a request for as long as it likes. Here an attempt's socket
is shut down by a timer at the attempt's deadline, and at once when the extraction is cancelled;
the blocked read then ends with a transport error, which the hook turns into a retry (deadline)
or into `CDRCancelled` (cancellation). The body is still read in one call into one buffer.
The deadlines of all requests in flight are kept by one watchdog thread per process: a timer
thread per request cost a thread start per page, which waits for the GIL while pages parse.

The wait for headers is bounded by the read timeout, capped at the deadline: the socket is only
reachable once requests hands the response over (and not at all through an HTTPS proxy to an
HTTPS API, where the per-read timeout is then the only bound).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
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
        self._cutoff._track(sock)
        watch = _WATCHDOG.watch(self._ends, self, sock)
        try:
            yield
        finally:
            _WATCHDOG.forget(watch)
            self._cutoff._untrack(sock)

    def _cut_off(self, sock: socket.socket) -> None:
        self._cut = True
        _shut(sock)


class _Watchdog:
    """Shuts the socket of each watched attempt whose deadline passes: one thread for the process,
    started on first use."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start empty, thread not started (also in a forked child: the parent's lock and thread
        did not come along)."""
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, Attempt, socket.socket]] = []  # a heap, soonest first
        self._watched: set[int] = set()
        self._numbers = itertools.count()
        self._started = False

    def watch(self, ends: float, attempt: Attempt, sock: socket.socket) -> int:
        with self._wake:
            if not self._started:
                self._started = True
                threading.Thread(target=self._run, name="cdr-request-deadlines", daemon=True).start()
            number = next(self._numbers)
            self._watched.add(number)
            heapq.heappush(self._due, (ends, number, attempt, sock))
            if self._due[0][1] == number:
                self._wake.notify()
            return number

    def forget(self, number: int) -> None:
        with self._wake:
            self._watched.discard(number)
            if len(self._due) > 2 * len(self._watched) + 64:  # drop what finished long before its deadline
                self._due = [entry for entry in self._due if entry[1] in self._watched]
                heapq.heapify(self._due)

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._due and self._due[0][1] not in self._watched:
                    heapq.heappop(self._due)
                if not self._due:
                    self._wake.wait()
                    continue
                left = self._due[0][0] - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                _, number, attempt, sock = heapq.heappop(self._due)
                self._watched.discard(number)
                attempt._cut_off(sock)


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):  # Airflow forks task processes
    os.register_at_fork(after_in_child=_WATCHDOG.reset)
