"""Fault injection for the stand-in: configuration and deterministic per-request decisions.

A request's faults follow from (seed, request number) alone, except the 5xx burst
and the requests-per-second limit, which by nature depend on earlier requests.
So a given request number always meets the same fault, and a retry (a new
request number) may not: a client's recovery can be tested reproducibly.

Precedence: the requests-per-second limit, then a 5xx burst, then 429s, then a
dropped connection answer instead of the route. Otherwise a stall delays the
answer, and the token/page faults and one body fault (reset > truncate > bad
JSON, on 200s only) shape it. A slow body (200s only) sends whatever body that
leaves in small pieces, `drip_bytes_per_s` a second: a server or proxy that
trickles bytes, which no per-read timeout catches. Among the token faults an empty token page wins
over repeat_token, which wins over a backward token.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class FaultConfig:
    """Which faults to inject and how often (rates are probabilities per request; all off by default)."""

    rate_429: float = 0.0  # 429 {"error": "Too many requests"} without Retry-After
    rate_429_retry_after: float = 0.0  # 429 with Retry-After: retry_after_s
    retry_after_s: int = 1
    rate_5xx: float = 0.0  # start a burst of burst_5xx consecutive 500/502/503
    burst_5xx: int = 3
    rate_drop: float = 0.0  # close the connection without any response
    rate_reset_mid_body: float = 0.0  # full Content-Length, half the body, then a reset
    rate_truncate: float = 0.0  # 200 with a cut body whose Content-Length matches the cut
    rate_bad_json: float = 0.0  # 200 with an HTML body
    latency_ms: float = 0.0  # added to every records request
    latency_per_record_us: float = 0.0  # added per record in the page
    rate_stall: float = 0.0  # sleep stall_s before answering
    stall_s: float = 5.0
    edge_repeat: bool = False  # a token resumes at its whole millisecond: edge records come twice
    rate_expired_token: float = 0.0  # 422 {"errors": {"search_token": ["is expired"]}}
    rate_repeat_page: float = 0.0  # pages 2+: the previous page's records instead of this page's
    repeat_token: bool = False  # a continued search answers with the token it was sent: a loop
    rate_empty_token_page: float = 0.0  # no records but a non-null search_token
    rate_limit_rps: int = 0  # >0: more requests than this in one second get 429 + Retry-After: 1
    rate_backward_token: float = 0.0  # a continued search's token points 1 h newer than the one sent
    rate_drop_record: float = 0.0  # a records page silently leaves out its last record
    rate_slow_body: float = 0.0  # a 200's body trickles out at drip_bytes_per_s, a small piece at a time
    rate_oversized_page: float = 0.0  # a records page holds one record more than per_page asked
    drip_bytes_per_s: int = 2000

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FaultConfig:
        """Build from loosely typed values (JSON, CLI strings); ValueError on unknown names or ranges."""
        kinds = {field.name: field.type for field in fields(cls)}
        unknown = sorted(set(values) - set(kinds))
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        typed: dict[str, Any] = {}
        for name, value in values.items():
            kind = kinds[name]
            if kind == "bool":
                typed[name] = _as_bool(name, value)
            elif kind == "int":
                typed[name] = int(float(value))
            else:
                typed[name] = float(value)
        config = cls(**typed)
        for name, value in asdict(config).items():
            if name.startswith("rate_") and name != "rate_limit_rps" and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            if isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"{name} must not be negative")
        return config

    @classmethod
    def parse(cls, spec: str) -> FaultConfig:
        """Parse the CLI form "rate_429=0.05,rate_5xx=0.02,edge_repeat=1"."""
        return cls.from_mapping(parse_assignments(spec, "fault"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merged(self, **changes: Any) -> FaultConfig:
        return replace(self, **changes)


def parse_assignments(spec: str, what: str) -> dict[str, str]:
    """The CLI form "name=value,name=value" as a dict (blank items skipped); ValueError naming `what`."""
    values: dict[str, str] = {}
    for item in spec.split(","):
        if item.strip():
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{what} {item!r} is not name=value")
            values[name.strip()] = value.strip()
    return values


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be a boolean")


@dataclass(frozen=True)
class Decision:
    """What to do to one request; `status` set means answer with that error instead."""

    status: int | None = None
    body: bytes = b""
    retry_after: str | None = None
    drop: bool = False
    stall_s: float = 0.0
    expired_token: bool = False
    repeat_page: bool = False
    empty_token_page: bool = False
    reset_mid_body: bool = False
    truncate: bool = False
    bad_json: bool = False
    backward_token: bool = False
    drop_record: bool = False
    drip_bytes_per_s: int = 0  # > 0: send the body this slowly
    oversized_page: bool = False


NO_FAULT = Decision()
TOO_MANY = b'{"error":"Too many requests"}'
_SERVER_ERRORS = {
    500: b'{"error":"Internal server error"}',
    502: b'{"error":"Bad gateway"}',
    503: b'{"error":"Service unavailable"}',
}


class FaultInjector:
    """Turns (seed, request number) into a Decision, holding the burst and per-second state."""

    def __init__(self, seed: int, config: FaultConfig | None = None) -> None:
        self.seed = seed
        self._config = config or FaultConfig()
        self._lock = threading.Lock()
        self._burst_left = 0
        self._second = -1
        self._in_second = 0

    @property
    def config(self) -> FaultConfig:
        return self._config

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
            self._burst_left = 0

    def reset(self) -> None:
        """Forget burst and rate-limit state (with the server's request counter reset)."""
        with self._lock:
            self._burst_left, self._second, self._in_second = 0, -1, 0

    def decide(self, request_no: int, epoch_second: int) -> Decision:
        """The faults for one /api request; one draw per fault kind keeps each independent of the others."""
        config = self._config
        rng = random.Random(hash((self.seed, request_no)))  # int tuples hash the same in every process
        draws = [rng.random() for _ in range(12)]
        status_pick = rng.choice((500, 502, 503))
        # Drawn after the status pick, so every earlier draw (and so every older decision) stays as it was.
        drop_record_draw = rng.random()
        slow_body_draw = rng.random()
        oversized_draw = rng.random()
        with self._lock:
            if epoch_second != self._second:
                self._second, self._in_second = epoch_second, 0
            self._in_second += 1
            if config.rate_limit_rps and self._in_second > config.rate_limit_rps:
                return Decision(status=429, body=TOO_MANY, retry_after="1")
            if self._burst_left > 0:
                self._burst_left -= 1
                return Decision(status=status_pick, body=_SERVER_ERRORS[status_pick])
            if draws[2] < config.rate_5xx:
                self._burst_left = max(config.burst_5xx - 1, 0)
                return Decision(status=status_pick, body=_SERVER_ERRORS[status_pick])
        if draws[0] < config.rate_429:
            return Decision(status=429, body=TOO_MANY)
        if draws[1] < config.rate_429_retry_after:
            return Decision(status=429, body=TOO_MANY, retry_after=str(config.retry_after_s))
        if draws[3] < config.rate_drop:
            return Decision(drop=True)
        return Decision(
            stall_s=config.stall_s if draws[4] < config.rate_stall else 0.0,
            expired_token=draws[5] < config.rate_expired_token,
            repeat_page=draws[6] < config.rate_repeat_page,
            empty_token_page=draws[7] < config.rate_empty_token_page,
            reset_mid_body=draws[8] < config.rate_reset_mid_body,
            truncate=draws[9] < config.rate_truncate,
            bad_json=draws[10] < config.rate_bad_json,
            backward_token=draws[11] < config.rate_backward_token,
            drop_record=drop_record_draw < config.rate_drop_record,
            drip_bytes_per_s=config.drip_bytes_per_s if slow_body_draw < config.rate_slow_body else 0,
            oversized_page=oversized_draw < config.rate_oversized_page,
        )
