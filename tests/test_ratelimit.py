"""The rate gate every request of an extraction passes: its shared pauses, and what ends them early."""

from __future__ import annotations

import threading
import time

from airflow_provider_cdr.api.ratelimit import RequestGate


def test_a_pause_holds_every_caller_until_it_ends() -> None:
    gate = RequestGate()
    gate.pause(0.3)
    started = time.monotonic()
    gate.wait()
    assert time.monotonic() - started >= 0.29


def test_a_cancelled_extraction_is_not_held_by_a_long_pause() -> None:
    """A 429's Retry-After (up to two minutes) must not keep the slices of a failed task waiting."""
    gate, stop = RequestGate(), threading.Event()
    gate.pause(120)
    waiter = threading.Thread(target=gate.wait, args=(stop,))
    waiter.start()
    assert not stop.wait(0.1)  # the waiter is paused
    assert waiter.is_alive()
    cancelled_at = time.monotonic()
    stop.set()
    waiter.join(5)
    assert not waiter.is_alive() and time.monotonic() - cancelled_at < 1.0


def test_the_cap_spaces_requests() -> None:
    gate = RequestGate(rate=20)
    started = time.monotonic()
    for _ in range(30):
        gate.wait()
    assert time.monotonic() - started >= 0.9  # 30 requests at 20 a second: at least a second's worth
