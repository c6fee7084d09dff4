"""The request gate of a whole deployment: one rate cap and one Retry-After pause in Redis.

`ratelimit.RequestGate` caps one process. With W workers running T tasks each, the API would
see W x T times the cap; its limit is one number for the account. `RedisRequestGate` keeps the
cap's rolling window (a sorted set of send times) and the pause (a "paused until" instant) in
Redis, and checks and counts a request in one Lua script that reads Redis's own clock: so the
cap holds across processes and hosts whose clocks differ, and no two callers take the last
slot. A 429's Retry-After pauses every worker's requests to the account, not only the
process that met it.

Why a script of our own rather than a rate-limit library: the libraries we looked at (``limits``,
``pyrate-limiter``) count hits, but none shares a server-requested pause, and the two must be
one decision (a slot must not be taken during a pause). The script is the same rolling window
as the in-process gate, so the two behave alike.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from typing import Any

from airflow_provider_cdr.api.errors import CDRConfigError
from airflow_provider_cdr.api.ratelimit import window_for

# KEYS: the sent-times sorted set, the paused-until key. ARGV: slots, window (ms), this request's
# member. Returns 0 when the request may go (and counts it), else the milliseconds to wait.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return paused - now end
local slots = tonumber(ARGV[1])
if slots > 0 then
  local window = tonumber(ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= slots then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return math.max(1, tonumber(oldest[2]) + window - now)
  end
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window * 2)
end
return 0
"""

# KEYS: the paused-until key. ARGV: the pause (ms). Extends the pause, never shortens it.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pause = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + pause > current then redis.call('SET', KEYS[1], now + pause, 'PX', pause + 1000) end
return 0
"""

REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_redis_url(url: str) -> str | None:
    """What is wrong with a `rate_limit_redis` URL, or None (its password is never repeated)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in REDIS_SCHEMES:
        return "rate_limit_redis must be a redis://, rediss:// or unix:// URL"
    return None


class RedisRequestGate:
    """The RequestGate interface (wait, pause) for every process that calls one account of the API.

    :param url: the Redis server (``redis://host:6379/0``); connected lazily, one client per gate.
    :param scope: names the account's keys (the hook passes the base URL and a digest of the key,
        never the key itself).
    :param rate: requests per rolling second for all processes together; None: only pauses are shared.
    """

    def __init__(self, url: str, scope: str, rate: float | None) -> None:
        problem = check_redis_url(url)
        if problem:
            raise CDRConfigError(problem)
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self._slots, window_s = window_for(rate)
        self._window_ms = max(1, round(window_s * 1000))
        digest = hashlib.sha256(scope.encode()).hexdigest()[:16]
        self._keys = (f"cdr:rate:{digest}:sent", f"cdr:rate:{digest}:paused")
        self._url = url
        self._client: Any = None
        self._scripts: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event | None = None) -> None:
        """Return when one more request may be sent by any process, counted as sent; or, without
        counting it, as soon as `stop` is set."""
        take, _ = self._ready()
        while True:
            delay_ms = int(take(keys=self._keys, args=[self._slots, self._window_ms, uuid.uuid4().hex]))
            if delay_ms <= 0:
                return
            if stop is None:
                time.sleep(delay_ms / 1000)
            elif stop.wait(delay_ms / 1000):
                return

    def pause(self, seconds: float) -> None:
        """Hold every process's requests to this account for `seconds` from now."""
        _, pause = self._ready()
        pause(keys=self._keys[1:], args=[max(1, round(seconds * 1000))])

    def _ready(self) -> tuple[Any, Any]:
        with self._lock:
            if self._scripts is None:
                import redis

                self._client = redis.Redis.from_url(self._url, socket_timeout=10, socket_connect_timeout=10)
                self._scripts = (self._client.register_script(_TAKE), self._client.register_script(_PAUSE))
            return self._scripts


_redis_gates: dict[tuple[str, str, float | None], RedisRequestGate] = {}
_redis_lock = threading.Lock()


def shared_redis_gate(url: str, scope: str, rate: float | None) -> RedisRequestGate:
    """This process's gate for one account through one Redis (one client, reused by every extraction)."""
    with _redis_lock:
        gate = _redis_gates.get((url, scope, rate))
        if gate is None:
            gate = _redis_gates[(url, scope, rate)] = RedisRequestGate(url, scope, rate)
        return gate
