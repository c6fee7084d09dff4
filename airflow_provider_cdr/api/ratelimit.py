"""One gate that every request of an extraction passes: a request-rate cap and shared pauses.

Concurrent slices share it, so a 429's Retry-After pauses all of them, and the cap holds
for the extraction as a whole, not per slice. Extractions in one process that call the same
API at the same rate share one gate (`shared_gate`): otherwise each new one (e.g. the next
mapped task that dag.test() runs right after the previous) starts with a full second's
allowance while the API still counts the previous one's requests.
"""

from __future__ import annotations

import threading
import time
from collections import deque

# Keep a little under the cap, so network jitter never makes the server count one too many.
_SAFETY = 0.03


def window_for(rate: float | None) -> tuple[int, float]:
    """`rate` per second as (slots, window): that many requests per rolling window of seconds (one
    second for rate >= 1, longer for a slower rate), a little under the cap. (0, 0.0) for no cap."""
    if not rate:
        return 0, 0.0
    slots = max(1, int(rate))
    return slots, (slots / rate) * (1.0 + _SAFETY)


class RequestGate:
    """Blocks callers until a request may go: no more than `rate` per rolling second, none while paused."""

    def __init__(self, rate: float | None = None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self._slots, self._window = window_for(rate)
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Hold every caller for `seconds` from now (a server asked us to back off)."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def wait(self, stop: threading.Event | None = None) -> None:
        """Return when one more request may be sent, and count it as sent; or, without counting it,
        as soon as `stop` is set (the extraction was cancelled: a long Retry-After pause must not hold
        it)."""
        while True:
            with self._lock:
                now = time.monotonic()
                delay = self._paused_until - now
                if delay <= 0 and self._slots:
                    while self._sent and now - self._sent[0] >= self._window:
                        self._sent.popleft()
                    if len(self._sent) >= self._slots:
                        delay = self._window - (now - self._sent[0])
                if delay <= 0:
                    self._sent.append(now)
                    return
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                return


_shared_gates: dict[tuple[str, float | None], RequestGate] = {}
_shared_lock = threading.Lock()


def shared_gate(api: str, rate: float | None) -> RequestGate:
    """The one gate of this process for requests to `api` (a base URL) capped at `rate` per second."""
    with _shared_lock:
        gate = _shared_gates.get((api, rate))
        if gate is None:
            gate = _shared_gates[(api, rate)] = RequestGate(rate)
        return gate
