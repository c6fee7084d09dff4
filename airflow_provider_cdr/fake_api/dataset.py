"""Deterministic synthetic CDR records and lookups for the stand-in, and the API's value lists.

Every record of a day follows from (seed, day, records per day, the day's profile):
the demo, the tests and the benchmarks can therefore recompute what the server
serves without talking to it. Each record also carries hidden attributes (queue,
team, campaign, events, end reason, call-phase times, ...) that the API filters on
but does not return; they live as numpy columns next to the record JSON.

This module knows nothing of requests: filters.py parses the API's parameters and
selects records from the day tables built here (ground truth included: filters.truth).
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson

DEFAULT_FIRST_DAY = date(2024, 1, 1)

TYPE_FILTER_VALUES: tuple[str, ...] = (
    "inbound", "outbound", "dialer", "click_to_call", "outbound_sms", "whatsapp", "facebook", "instagram",
    "telegram", "web_chat", "HLR_lookup", "queue_callback",
)  # fmt: skip
# Record types documented for records but not accepted by the `type` filter.
UNFILTERABLE_TYPES: tuple[str, ...] = ("viber", "scheduled_callback")
KINDS: tuple[str, ...] = TYPE_FILTER_VALUES + UNFILTERABLE_TYPES
# The documented alternative spellings a record may carry, and their share.
ALT_SPELLINGS: dict[str, tuple[str, float]] = {
    "web_chat": ("chat", 0.5),
    "outbound_sms": ("outbound SMS", 0.2),
    "click_to_call": ("click-to-call", 0.2),
    "HLR_lookup": ("hlr_ookup", 0.3),
}
DISPOSITIONS: tuple[str, ...] = (
    "answered", "failed", "busy", "no_answer", "rejected", "abandoned", "missed", "dialer_abandoned",
    "system_abandoned", "answered_by_VM", "system_reject", "machine_answered", "sent", "not_sent",
    "route_unavailable", "delivered", "not_delivered", "waiting", "active", "archived",
)  # fmt: skip
END_REASONS: tuple[str, ...] = (
    "agent_disconnect", "customer_disconnect", "dncr_failure", "dncr_rejected", "machine_disconnect",
    "manager_terminate", "remote_party_disconnect", "system_reject", "timeout",
)  # fmt: skip
EVENTS: tuple[str, ...] = ("hold", "transfer", "conference", "voicemail", "callback_requested", "recording")
LEAD_SOURCES: tuple[str, ...] = ("Google ADS", "Facebook Leads", "Website", "Referral", "Feira São Paulo")
DESTINATIONS: tuple[str, ...] = (
    "Germany - Other", "Brazil - Mobile", "Brazil - Fixed", "United States - Other", "United Kingdom - Mobile",
    "Mexico - Mobile", "Japan - Other", "Côte d'Ivoire - Mobile",
)  # fmt: skip
WRAPUP_CODES: tuple[tuple[str, str], ...] = (
    ("0101", "Sale"), ("0102", "Callback scheduled"), ("0103", "Not interested"), ("0104", "Wrong number"),
    ("0201", "Support resolved"), ("0202", "Escalated"), ("0203", "Reembolso solicitado"),
    ("0301", "Voicemail left"), ("1002", "Do not call"), ("1007", "Follow-up 📅"),
)  # fmt: skip
WRAPUP_IDS: tuple[str, ...] = tuple(code for code, _ in WRAPUP_CODES)

_VOICE, _SMS, _CHAT, _HLR = 0, 1, 2, 3
_FAMILY = {
    **dict.fromkeys(("inbound", "outbound", "dialer", "click_to_call", "queue_callback"), _VOICE),
    **dict.fromkeys(("scheduled_callback",), _VOICE),
    **dict.fromkeys(("outbound_sms", "whatsapp"), _SMS),
    **dict.fromkeys(("facebook", "instagram", "telegram", "web_chat", "viber"), _CHAT),
    "HLR_lookup": _HLR,
}
_KIND_FAMILY = np.array([_FAMILY[kind] for kind in KINDS], dtype=np.int8)
_K = {kind: code for code, kind in enumerate(KINDS)}
_D = {disposition: code for code, disposition in enumerate(DISPOSITIONS)}
_NORMAL_MIX = {
    "inbound": 0.28, "outbound": 0.20, "dialer": 0.14, "click_to_call": 0.05, "queue_callback": 0.03,
    "scheduled_callback": 0.005, "HLR_lookup": 0.01, "outbound_sms": 0.10, "whatsapp": 0.07, "web_chat": 0.04,
    "facebook": 0.03, "instagram": 0.025, "telegram": 0.015, "viber": 0.005,
}  # fmt: skip
_PROFILE_MIX = {
    "normal": _NORMAL_MIX,
    "sms_only": {"outbound_sms": 0.6, "whatsapp": 0.4},
    "voice_only": {kind: share for kind, share in _NORMAL_MIX.items() if _FAMILY[kind] == _VOICE},
}
_DISPOSITION_MIX = {
    _VOICE: {
        "answered": 0.55, "no_answer": 0.1, "busy": 0.05, "failed": 0.04, "rejected": 0.02, "abandoned": 0.05,
        "missed": 0.04, "dialer_abandoned": 0.03, "system_abandoned": 0.02, "answered_by_VM": 0.03,
        "system_reject": 0.02, "machine_answered": 0.03, "route_unavailable": 0.02,
    },
    _SMS: {"delivered": 0.55, "sent": 0.25, "not_delivered": 0.08, "not_sent": 0.05, "waiting": 0.07},
    _CHAT: {"archived": 0.6, "active": 0.2, "missed": 0.1, "waiting": 0.1},
    _HLR: {"delivered": 0.8, "failed": 0.15, "not_delivered": 0.05},
}  # fmt: skip
_END_MIX_ANSWERED = {
    "agent_disconnect": 0.45, "customer_disconnect": 0.4, "remote_party_disconnect": 0.1, "manager_terminate": 0.05,
}  # fmt: skip
_END_MIX_OTHER = {
    "timeout": 0.4, "system_reject": 0.15, "dncr_failure": 0.05, "dncr_rejected": 0.05, "machine_disconnect": 0.15,
    "remote_party_disconnect": 0.1, "customer_disconnect": 0.1,
}  # fmt: skip

_FIRST = ("Mike", "Chandra", "José", "Zoë", "Søren", "Ana", "Łukasz", "Nguyễn Văn", "Fatima", "Olek", "Priya")
_LAST = ("A", "Agarwal", "Álvarez", "Müller", "Ødegård", "Conceição", "Żółć", "An", "Haddad", "Kowal", "Rao")
_CJK_NAMES = ("王伟", "田中 美咲", "김민준", "李娜")
_TEAMS = (
    "Vendas BR",
    "Support EU",
    "Retenção",
    "Collections",
    "VIP 🌟",
    "Night shift",
    "サポート",
    "Outbound A",
)
_QUEUES = ("Sales", "Suporte Técnico", "Billing", "Cobrança", "VIP 🇧🇷", "English line", "客服", "Overflow")
_CAMPAIGNS = ("Black Friday", "Renovação 2024", "Win-back Q1", "Leads Google", "Événement Paris", "Cold list")
_COMPANY_NUMBERS = ("15557571011", "31208112500", "551130040000", "442071234567", "4930123456")
_COUNTRY_PREFIXES = ("55", "1", "44", "49", "52", "81", "225", "31", "34", "971")
_SENDER_IDS = ("ACME", "Voiso", "ACMEBrasil", "15557571011", "InfoSMS")
_CHAT_HANDLES = (
    "Guest",
    "Guest",
    "Guest",
    "maria.souza",
    "🌟 Luna",
    "kenji_t",
    "Renée B",
    "user_4821",
    "Олег",
)
_CHAT_PAGES = ("Olek's test", "ACME Brasil", "Soporte ACME", "ACME Shop", "ACME サポート")
_SMS_TEMPLATES = (None, "order_shipped", "appointment_reminder", "otp", "promo_weekend")
_SMS_TEXTS = (
    "Your code is 481516.",
    "Olá! Seu pedido #20931 foi enviado 📦 e chega em 2 dias úteis.",
    "您好，您的预约已确认。如需更改请回复本短信。",  # noqa: RUF001
    "Reminder: your appointment is tomorrow at 10:30. Reply C to cancel or R to reschedule.",
    "¡Oferta de fin de semana! 30% de descuento en toda la tienda 🎉 Válido hasta el domingo. " * 2,
    "Dear customer, we tried to reach you regarding your account. " * 5,
    "Merci pour votre appel. Votre numéro de dossier est 77-1203. Un conseiller vous recontactera.",
    "👍",
)
_DRIFTS = ("cpc_int", "cpc_str", "agent_id_str", "num_segments_float", "missing_null", "new_field", "n/a")
_DRIFT_WEIGHTS = (0.18, 0.18, 0.18, 0.14, 0.14, 0.14, 0.04)


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant; "Z" is accepted (also on Python 3.10), no offset means UTC."""
    return aware(datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text))


def aware(moment: datetime) -> datetime:
    """The instant itself if it carries an offset, else the same wall time read as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _mix(names: Mapping[str, float], codes: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([codes[name] for name in names], dtype=np.int16)
    weights = np.array(list(names.values()), dtype=float)
    return values, weights / weights.sum()


def _clock(value: int) -> str:
    return f"{value // 3600:02d}:{value // 60 % 60:02d}:{value % 60:02d}"


_HMS = [_clock(value) for value in range(4 * 3600)]


def _hms(seconds: list[int]) -> list[str]:
    """Format seconds as hh:mm:ss (hours may exceed 24); common values come from a table, for speed."""
    table, size = _HMS, len(_HMS)
    return [table[value] if value < size else _clock(value) for value in seconds]


def _sla(rng: np.random.Generator, n: int) -> list[tuple[str, str, str]]:
    """(first response, resolution, reply) times as hh:mm:ss; resolution can run past 24 hours."""
    text = iter(_hms(rng.integers([5, 600, 5], [900, 259_200, 600], (n, 3)).ravel().tolist()))
    return list(zip(text, text, text, strict=False))


def _offset_label(offset_ms: int) -> str:
    minutes = abs(offset_ms) // 60_000
    return f"{'-' if offset_ms < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(eq=False)
class DayTable:
    """One local day of records, newest first, as served JSON plus the hidden filter columns."""

    day: date
    instants: np.ndarray  # epoch ms, descending
    neg_instants: np.ndarray  # -instants, ascending: what bisection needs
    uuids: list[str]
    blob: bytes  # every record's JSON followed by a comma
    offsets: np.ndarray  # record i is blob[offsets[i]:offsets[i + 1] - 1]
    from_: list[str]
    to: list[str]
    related: list[str | None]
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.uuids)

    def column(self, name: str) -> Any:
        """A filterable column by name: numpy array, or list for text columns."""
        if name in ("uuids", "from_", "to", "related"):
            return getattr(self, name)
        return self.columns[name]

    def records_json(self, idx: np.ndarray) -> bytes:
        """The records at idx as comma-joined JSON; a contiguous run is one slice of the blob."""
        if idx.size == 0:
            return b""
        first, last = int(idx[0]), int(idx[-1])
        if last - first == idx.size - 1:
            return self.blob[self.offsets[first] : self.offsets[last + 1] - 1]
        view, offsets = memoryview(self.blob), self.offsets
        return b",".join([view[offsets[i] : offsets[i + 1] - 1] for i in idx.tolist()])

    def records(self) -> list[dict[str, Any]]:
        """The day's records as the server sends them (drift included), newest first."""
        if not self.uuids:
            return []
        return orjson.loads(b"[" + self.blob[:-1] + b"]")


class CDRDataset:
    """Synthetic, deterministic CDR data for any local day, plus lookups.

    Days before `first_day` are empty; later days have `records_per_day` records
    unless `day_profiles` says otherwise. `now` and `ingest_lag_s` decide what is
    available (None: the real clock). With `tie_group` > 1 every run of that many
    consecutive records of a day (newest first) shares one millisecond, so search
    and page edges fall inside groups of ties (unless they fall between two runs).
    With `hour_edges`, a record sits at the first millisecond of every hour of the
    day (hh:00:00.000), where slices of a day meet: whether a client's windows
    reach them depends on how the server reads its datetime bounds. Day tables (about 650 bytes a record) stay in an LRU of up to `cache_records`
    records (three days of a million and more: a day's slices reach a second into the day
    before and the day after), always keeping the latest day used.
    """

    def __init__(
        self,
        seed: int,
        records_per_day: int,
        timezone: str,
        day_profiles: Mapping[date, str | int] | None = None,
        type_drift: float = 0.0,
        *,
        first_day: date = DEFAULT_FIRST_DAY,
        now: datetime | None = None,
        ingest_lag_s: float = 0.0,
        cache_records: int = 3_500_000,
        tie_group: int = 1,
        hour_edges: bool = False,
    ) -> None:
        if records_per_day < 0 or not 0.0 <= type_drift <= 1.0:
            raise ValueError("records_per_day must be >= 0 and type_drift within 0..1")
        if tie_group < 1:
            raise ValueError("tie_group must be >= 1")
        self.seed = seed
        self.records_per_day = records_per_day
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        self.day_profiles = {day: _check_profile(profile) for day, profile in (day_profiles or {}).items()}
        self.type_drift = type_drift
        self.first_day = first_day
        self.now = None if now is None else aware(now)
        self.ingest_lag_s = ingest_lag_s
        self.tie_group = tie_group
        self.hour_edges = hour_edges
        self._cache: OrderedDict[date, DayTable] = OrderedDict()
        self._cache_records = cache_records
        self._cache_lock = threading.Lock()
        self._day_locks: dict[date, threading.Lock] = {}
        self._build_lookups()

    # -- time -------------------------------------------------------------
    def available_until_ms(self) -> int:
        """Newest instant (epoch ms) already served: now minus the ingest lag."""
        now_s = self.now.timestamp() if self.now is not None else time.time()
        return int((now_s - self.ingest_lag_s) * 1000)

    def day_bounds_ms(self, day: date) -> tuple[int, int]:
        """[start, end) of a local calendar day in epoch ms; 23 or 25 hours long on DST days."""
        start = datetime(day.year, day.month, day.day, tzinfo=self.tz)
        end_day = day + timedelta(days=1)
        end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=self.tz)
        return int(start.timestamp() * 1000), int(end.timestamp() * 1000)

    def local_date(self, instant_ms: int) -> date:
        return datetime.fromtimestamp(instant_ms / 1000, self.tz).date()

    # -- records ----------------------------------------------------------
    def records_for_day(self, day: date) -> list[dict[str, Any]]:
        """The day's records exactly as served, newest first (parsed from the cached day table)."""
        return self.day_table(day).records()

    def day_table(self, day: date) -> DayTable:
        """The day's table from the LRU cache, generated once even under concurrent requests."""
        with self._cache_lock:
            table = self._cache.get(day)
            if table is not None:
                self._cache.move_to_end(day)
                return table
            day_lock = self._day_locks.setdefault(day, threading.Lock())
        with day_lock:
            with self._cache_lock:
                table = self._cache.get(day)
            if table is None:
                table = self._generate(day)
                with self._cache_lock:
                    self._cache[day] = table
                    self._evict()
                    self._day_locks.pop(day, None)
        return table

    def _evict(self) -> None:
        total = sum(len(table) for table in self._cache.values())
        while len(self._cache) > 1 and total > self._cache_records:
            _, oldest = self._cache.popitem(last=False)
            total -= len(oldest)

    def volume(self, day: date) -> tuple[int, str]:
        """How many records the day has and which type mix they follow."""
        if day < self.first_day:
            return 0, "normal"
        profile = self.day_profiles.get(day, "normal")
        if profile == "empty":
            return 0, "normal"
        if isinstance(profile, int):
            return profile, "normal"
        return self.records_per_day, profile

    # -- lookups ----------------------------------------------------------
    def lookups(self) -> dict[str, list[dict[str, Any]]]:
        """The six lookup lists, keyed by their route name."""
        return {
            "agents": self._agents,
            "queues": self._queues,
            "teams": self._teams,
            "wrapup_codes": [{"id": code, "name": name} for code, name in WRAPUP_CODES],
            "campaigns": self._campaigns,
            "deleted_agents": self._deleted_agents,
        }

    def _build_lookups(self) -> None:
        rng = np.random.default_rng([self.seed, 0x100C])
        team_ids = sorted(rng.choice(np.arange(3, 60), len(_TEAMS), replace=False).tolist())
        self._teams = [{"id": i, "name": name} for i, name in zip(team_ids, _TEAMS, strict=True)]
        queue_ids = sorted(rng.choice(np.arange(150, 400), len(_QUEUES), replace=False).tolist())
        self._queues = [{"id": i, "name": name} for i, name in zip(queue_ids, _QUEUES, strict=True)]
        campaign_ids = sorted(rng.choice(np.arange(10, 90), len(_CAMPAIGNS), replace=False).tolist())
        self._campaigns = [{"id": i, "name": name} for i, name in zip(campaign_ids, _CAMPAIGNS, strict=True)]
        people = [f"{first} {last}" for first in _FIRST for last in _LAST] + list(_CJK_NAMES)
        names = [people[i] for i in rng.choice(len(people), 72, replace=False).tolist()]
        ids = sorted(rng.choice(np.arange(50_000, 60_000), 72, replace=False).tolist())
        teams = rng.choice(team_ids, 72).tolist()
        self._agents = [
            {"id": ids[k], "name": names[k], "email": f"agent{ids[k]}@example.com", "team_id": teams[k]}
            for k in range(60)
        ]
        self._deleted_agents = [
            {
                "id": ids[k],
                "name": names[k],
                "deleted_at": (self.first_day + timedelta(days=90 * (k - 59))).isoformat(),
            }
            for k in range(60, 72)
        ]
        self._deleted_team = teams[60:]

    # -- generation -------------------------------------------------------
    def _generate(self, day: date) -> DayTable:
        count, mix = self.volume(day)
        start_ms, end_ms = self.day_bounds_ms(day)
        rng = np.random.default_rng([self.seed, day.toordinal(), count, list(_PROFILE_MIX).index(mix)])
        offsets = _spread(rng, count, end_ms - start_ms)  # drawn even if replaced: the draws after it stay
        if self.tie_group > 1:
            tie_rng = np.random.default_rng([self.seed, day.toordinal(), count, self.tie_group, 0x7135])
            offsets = _tied_offsets(tie_rng, count, self.tie_group, end_ms - start_ms)
        if self.hour_edges:
            _put_on_the_hours(offsets, end_ms - start_ms)
        instants = start_ms + offsets
        raw = _uuid_bytes(rng, self.seed, day, count)
        order = np.lexsort(
            (raw[:, 8:].copy().view(">u8")[:, 0], raw[:, :8].copy().view(">u8")[:, 0], instants)
        )
        order = order[::-1]
        instants, raw = instants[order], raw[order]
        uuids = _uuid_text(raw)
        timestamps = _timestamps(instants, self.tz, start_ms, end_ms)
        cols, text = self._columns(rng, day, count, mix, uuids)
        drift_rng = np.random.default_rng([self.seed, day.toordinal(), 0xD21F7])
        drifts = _drift_plan(drift_rng, count, self.type_drift) if self.type_drift > 0 else {}
        paused = gc.isenabled()
        gc.disable()  # millions of fresh dicts would otherwise trigger useless full collections
        try:
            blob, offsets = _serialise(self._assemble(cols, text, timestamps, uuids, drifts))
        finally:
            if paused:
                gc.enable()
        return DayTable(
            day=day,
            instants=instants,
            neg_instants=-instants,
            uuids=uuids,
            blob=blob,
            offsets=offsets,
            from_=text["from"],
            to=text["to"],
            related=text["related"],
            columns=cols,
        )

    def _columns(
        self, rng: np.random.Generator, day: date, n: int, mix: str, uuids: list[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Draw every per-record attribute as a column (hidden ones included)."""
        kinds, weights = _mix(_PROFILE_MIX[mix], _K)
        kind = rng.choice(kinds, n, p=weights).astype(np.int16)
        family = _KIND_FAMILY[kind]
        disposition = np.zeros(n, dtype=np.int16)
        for fam, shares in _DISPOSITION_MIX.items():
            where = np.flatnonzero(family == fam)
            codes, probs = _mix(shares, _D)
            disposition[where] = rng.choice(codes, where.size, p=probs)
        voice, sms, chat = family == _VOICE, family == _SMS, family == _CHAT
        answered = disposition == _D["answered"]
        outward = np.isin(
            kind, [_K[k] for k in ("outbound", "dialer", "click_to_call", "scheduled_callback")]
        )
        inbound = kind == _K["inbound"]
        callback = kind == _K["queue_callback"]
        dialled = outward | callback

        has_agent = (voice & (answered | outward | (disposition == _D["answered_by_VM"]))) | (
            sms & (rng.random(n) < 0.6)
        )
        has_agent |= chat & np.isin(disposition, [_D["archived"], _D["active"]]) & (rng.random(n) < 0.85)
        # A deleted agent handles interactions only before its deletion date.
        still_there = [
            k for k, a in enumerate(self._deleted_agents) if date.fromisoformat(a["deleted_at"]) > day
        ]
        deleted = has_agent & (rng.random(n) < 0.08) & bool(still_there)
        active_ids = np.array([a["id"] for a in self._agents])
        active_teams = np.array([a["team_id"] for a in self._agents])
        gone_ids = np.array([self._deleted_agents[k]["id"] for k in still_there] or [-1])
        gone_teams = np.array([self._deleted_team[k] for k in still_there] or [-1])
        pick_active = rng.integers(0, active_ids.size, n)
        pick_gone = rng.integers(0, gone_ids.size, n)
        agent_id = np.where(deleted, gone_ids[pick_gone], active_ids[pick_active])
        team_id = np.where(deleted, gone_teams[pick_gone], active_teams[pick_active])
        agent_id, team_id = np.where(has_agent, agent_id, -1), np.where(has_agent, team_id, -1)

        queue_ids = np.array([q["id"] for q in self._queues])
        queue_pick = rng.integers(0, queue_ids.size, n)
        queue_id = np.where(inbound | callback, queue_ids[queue_pick], -1)
        campaign_ids = np.array([c["id"] for c in self._campaigns])
        dialer = kind == _K["dialer"]
        campaign_id = np.where(dialer, campaign_ids[rng.integers(0, campaign_ids.size, n)], -1)
        lead_source = np.where(dialer & (rng.random(n) < 0.7), rng.integers(0, len(LEAD_SOURCES), n), -1)
        destination = np.where(kind == _K["outbound"], rng.integers(0, len(DESTINATIONS), n), -1)
        wrapup = np.where(
            has_agent & ~sms & (rng.random(n) < np.where(chat, 0.5, 0.8)),
            rng.integers(0, len(WRAPUP_IDS), n),
            -1,
        )

        dialing = np.where(dialled, rng.integers(2, 45, n), 0)
        ivr = np.where(inbound & (rng.random(n) < 0.6), rng.integers(1, 90, n), 0)
        queue_time = np.where(inbound | callback, np.minimum(rng.exponential(40, n), 1800).astype(int), 0)
        machine = np.isin(disposition, [_D["answered_by_VM"], _D["machine_answered"]])
        talk = np.where(answered & voice, 5 + np.minimum(rng.exponential(170, n), 7200).astype(int), 0)
        talk = np.where(machine, rng.integers(5, 40, n), talk)
        hold = np.where(
            (talk > 30) & (rng.random(n) < 0.3), np.minimum(rng.integers(5, 300, n), talk // 2), 0
        )
        chat_long = rng.random(n) < 0.03
        chat_duration = np.where(
            chat_long, rng.integers(86_400, 259_200, n), np.minimum(rng.exponential(900, n), 86_000)
        )
        duration = np.where(voice, dialing + ivr + queue_time + talk, np.where(chat, chat_duration, 0))

        bits = np.zeros(n, dtype=np.int64)
        bits |= np.where(hold > 0, 1, 0)
        bits |= np.where(answered & voice & (rng.random(n) < 0.08), 2, 0)
        bits |= np.where(answered & voice & (rng.random(n) < 0.03), 4, 0)
        bits |= np.where((disposition == _D["answered_by_VM"]) | (inbound & (rng.random(n) < 0.05)), 8, 0)
        bits |= np.where(inbound & (rng.random(n) < 0.04), 16, 0)
        bits |= np.where((talk > 0) & (rng.random(n) < 0.7), 32, 0)

        end_reason = np.full(n, -1, dtype=np.int16)
        reasons = {reason: i for i, reason in enumerate(END_REASONS)}
        for mask, shares in ((voice & answered, _END_MIX_ANSWERED), (voice & ~answered, _END_MIX_OTHER)):
            where = np.flatnonzero(mask)
            values, probs = _mix(shares, reasons)
            end_reason[where] = rng.choice(values, where.size, p=probs)
        first_seen = (outward & (kind != _K["scheduled_callback"])) & (rng.random(n) < 0.25)

        text_pick = rng.integers(0, len(_SMS_TEXTS), n)
        segments = np.array([-(-len(t) // 160) for t in _SMS_TEXTS])[text_pick]
        cpc = np.where(voice & (answered | machine), np.round(rng.uniform(0.002, 0.6, n), 4), 0.0)
        cpc = np.where(sms, np.round(rng.uniform(0.005, 0.06, n) * segments, 4), cpc)
        cpc = np.where(family == _HLR, 0.002, cpc)

        columns = {
            "kind": kind,
            "disposition": disposition,
            "agent_id": agent_id,
            "deleted_agent_id": np.where(deleted, agent_id, -1),
            "team_id": team_id,
            "queue_id": queue_id,
            "campaign_id": campaign_id,
            "lead_source": lead_source,
            "destination": destination,
            "wrapup": wrapup,
            "events": bits,
            "end_reason": end_reason,
            "duration": duration.astype(np.int64),
            "dialing_time": dialing,
            "talk_time": talk,
            "hold_time": hold,
            "ivr_time": ivr,
            "queue_time": queue_time,
            "first_seen": first_seen,
        }
        text = self._texts(rng, kind, uuids)
        text.update(
            family=family.tolist(),
            cpc=cpc.tolist(),
            text_pick=text_pick.tolist(),
            segments=segments.tolist(),
            sla=dict(zip(np.flatnonzero(chat).tolist(), _sla(rng, int(chat.sum())), strict=True)),
            alt=rng.random(n).tolist(),
        )
        return columns, text

    @staticmethod
    def _texts(rng: np.random.Generator, kind: np.ndarray, uuids: list[str]) -> dict[str, Any]:
        """from/to strings and the related-call uuids (SMS follow-ups and callbacks' parents)."""
        n = kind.size
        family = _KIND_FAMILY[kind]
        sms, chat, inbound = family == _SMS, family == _CHAT, kind == _K["inbound"]
        calling_out = ((family == _VOICE) & ~inbound) | (family == _HLR)

        def pick(pool: tuple[str, ...]) -> np.ndarray:
            return np.array(pool, dtype=object)[rng.integers(0, len(pool), n)]

        prefixes = pick(_COUNTRY_PREFIXES).tolist()
        digits = rng.integers(10**8, 10**10, n).tolist()
        customer = np.array([p + str(d) for p, d in zip(prefixes, digits, strict=True)], dtype=object)
        company, sender = pick(_COMPANY_NUMBERS), pick(_SENDER_IDS)
        handle, page = pick(_CHAT_HANDLES), pick(_CHAT_PAGES)
        from_ = np.where(chat, handle, np.where(sms, sender, np.where(calling_out, company, customer)))
        to = np.where(chat, page, np.where(sms | calling_out, customer, company))
        # A related call is an older voice call of the same day: later in newest-first order.
        voice_pos = np.flatnonzero(family == _VOICE)
        inbound_pos = np.flatnonzero(inbound)
        related: list[str | None] = [None] * n
        callbacks = np.flatnonzero(kind == _K["queue_callback"])
        follow_ups = np.flatnonzero(sms & (rng.random(n) < 0.3))
        for wanted, pool in ((callbacks, inbound_pos), (follow_ups, voice_pos)):
            first = np.searchsorted(pool, wanted, side="right")
            chosen = first + (rng.random(wanted.size) * (pool.size - first)).astype(int)
            for i, k in zip(wanted.tolist(), chosen.tolist(), strict=True):
                if k < pool.size:
                    related[i] = uuids[int(pool[k])]
        return {"from": from_.tolist(), "to": to.tolist(), "related": related, "sender": sender.tolist()}

    def _assemble(
        self,
        cols: dict[str, np.ndarray],
        text: dict[str, Any],
        timestamps: list[str],
        uuids: list[str],
        drifts: dict[int, str],
        chunk: int = 20_000,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the record dicts in chunks, keys in the order of the reference's sample, per shape."""
        names = {a["id"]: a["name"] for a in self._agents + self._deleted_agents}
        names[-1] = None
        queue_names = {q["id"]: q["name"] for q in self._queues}
        kinds = cols["kind"].tolist()
        spelled = [
            ALT_SPELLINGS[KINDS[k]][0]
            if KINDS[k] in ALT_SPELLINGS and alt < ALT_SPELLINGS[KINDS[k]][1]
            else KINDS[k]
            for k, alt in zip(kinds, text["alt"], strict=True)
        ]
        agent_ids = cols["agent_id"].tolist()
        agents = [names[a] for a in agent_ids]
        agent_ids = [a if a >= 0 else None for a in agent_ids]
        inbound = _K["inbound"]
        queues = [
            queue_names[q] if k == inbound else None
            for q, k in zip(cols["queue_id"].tolist(), kinds, strict=True)
        ]
        dispositions = [DISPOSITIONS[code] for code in cols["disposition"].tolist()]
        durations = _hms(cols["duration"].tolist())
        wrapups = [WRAPUP_IDS[w] if w >= 0 else None for w in cols["wrapup"].tolist()]
        destinations = cols["destination"].tolist()
        rows = zip(
            text["family"], agents, text["from"], dispositions, durations, queues, text["to"], timestamps,
            uuids, wrapups, spelled, agent_ids, text["cpc"], strict=True,
        )  # fmt: skip
        records: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            (
                family,
                agent,
                sender,
                disposition,
                duration,
                queue,
                to,
                stamp,
                uuid,
                wrapup,
                kind,
                agent_id,
                cpc,
            ) = row
            if family == _CHAT:
                first_response, resolution, reply = text["sla"][i]
                record = {
                    "agent": agent, "from": sender, "disposition": disposition, "duration": duration, "to": to,
                    "timestamp": stamp, "uuid": uuid, "wrapup_code": wrapup, "type": kind, "agent_id": agent_id,
                    "cpc": cpc,
                    "sla": {"time_to_first_response": first_response, "time_to_resolution": resolution,
                            "time_to_reply": reply},
                    "queue": None,
                }  # fmt: skip
            else:
                record = {
                    "agent": agent, "from": sender, "disposition": disposition, "duration": duration,
                    "queue": queue, "to": to, "timestamp": stamp, "uuid": uuid, "wrapup_code": wrapup,
                    "type": kind, "agent_id": agent_id, "cpc": cpc,
                }  # fmt: skip
                if family == _SMS:
                    message = text["text_pick"][i]
                    record["sid"] = text["sender"][i]
                    record["text"] = _SMS_TEXTS[message]
                    record["template"] = _SMS_TEMPLATES[message % len(_SMS_TEMPLATES)]
                    record["num_segments"] = text["segments"][i]
                    record["related_call"] = text["related"][i]
                elif destinations[i] >= 0:
                    record["destination_name"] = DESTINATIONS[destinations[i]]
            if i in drifts:
                _apply_drift(record, drifts[i])
            records.append(record)
            if len(records) == chunk:
                yield records
                records = []
        if records:
            yield records


def _check_profile(profile: str | int) -> str | int:
    if isinstance(profile, int) or profile in ("empty", "sms_only", "voice_only", "normal"):
        return profile
    raise ValueError(f"unknown day profile {profile!r}: use empty, sms_only, voice_only or a record count")


def _spread(rng: np.random.Generator, n: int, length_ms: int) -> np.ndarray:
    """Offsets (ms) across the day, incl. its first and last ms and groups sharing one ms."""
    offsets = rng.integers(0, length_ms, n, dtype=np.int64)
    if n >= 1:
        offsets[0] = 0
    if n >= 2:
        offsets[1] = length_ms - 1
    if n >= 8:
        sizes = rng.integers(2, 5, max(1, n // 250))
        members = rng.choice(np.arange(2, n), min(int(sizes.sum()), n - 2), replace=False)
        leaders = np.repeat(members[np.cumsum(sizes) - sizes], sizes)[: members.size]
        offsets[members] = offsets[leaders]
    return offsets


def _put_on_the_hours(offsets: np.ndarray, length_ms: int) -> None:
    """Move records 2, 3, ... to the first millisecond of each hour after the day's first (in place)."""
    hours = np.arange(3_600_000, length_ms, 3_600_000, dtype=np.int64)[: max(offsets.size - 2, 0)]
    offsets[2 : 2 + hours.size] = hours


def _tied_offsets(rng: np.random.Generator, n: int, group: int, length_ms: int) -> np.ndarray:
    """Offsets (ms) where each run of `group` records, newest first, shares one ms of its own.

    The newest run takes the day's last ms and the oldest (maybe shorter) run its
    first ms, as _spread puts records there; the runs between get distinct ms.
    """
    groups = -(-n // group)
    if groups <= 1:
        return np.zeros(n, dtype=np.int64)
    inner = np.sort(rng.choice(length_ms - 2, groups - 2, replace=False) + 1)[::-1]
    firsts = np.concatenate(([length_ms - 1], inner, [0])).astype(np.int64)
    return np.repeat(firsts, group)[:n]


def _uuid_bytes(rng: np.random.Generator, seed: int, day: date, n: int) -> np.ndarray:
    """uuid4-shaped bytes; the last 48 bits are a bijection of (day, index), so uuids never repeat."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    serial = (np.uint64(day.toordinal()) << np.uint64(24)) | np.arange(n, dtype=np.uint64)
    node = serial ^ np.uint64((seed * 0x9E3779B97F4A7C15) % 2**48)
    mask, shift = np.uint64(2**48 - 1), np.uint64(23)
    for factor in (0x5DEECE66D, 0xB5AD4ECEDA1D):  # xorshift-multiply rounds: bijective on 48 bits
        node ^= node >> shift
        node = (node * np.uint64(factor)) & mask
    node ^= node >> shift
    raw[:, 10:] = node.astype(">u8").view(np.uint8).reshape(n, 8)[:, 2:]
    return raw


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _uuid_text(raw: np.ndarray) -> list[str]:
    n = raw.shape[0]
    digits = np.empty((n, 32), dtype=np.uint8)
    digits[:, 0::2], digits[:, 1::2] = _HEX[raw >> 4], _HEX[raw & 0x0F]
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dst, src in ((0, 0), (9, 8), (14, 12), (19, 16), (24, 20)):
        width = {0: 8, 20: 12}.get(src, 4)
        text[:, dst : dst + width] = digits[:, src : src + width]
    joined = text.tobytes().decode("ascii")
    return [joined[k : k + 36] for k in range(0, 36 * n, 36)]


def _timestamps(instants: np.ndarray, tz: ZoneInfo, start_ms: int, end_ms: int) -> list[str]:
    """ISO 8601 local times with ms and the UTC offset in force at each instant (DST-aware)."""
    if instants.size == 0:
        return []

    def offset_at(ms: int) -> int:
        delta = datetime.fromtimestamp(ms / 1000, tz).utcoffset() or timedelta(0)
        return int(delta.total_seconds() * 1000)

    probes = [*range(start_ms, end_ms, 1_800_000), end_ms - 1]
    changes, labels = [], [offset_at(start_ms)]
    for left, right in itertools.pairwise(probes):
        if offset_at(left) != offset_at(right):
            low, high = left, right  # offset(low) is the old one, offset(high) the new one
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if offset_at(mid) == offset_at(left) else (low, mid)
            changes.append(high)
            labels.append(offset_at(high))
    offsets = np.array(labels, dtype=np.int64)[
        np.searchsorted(np.array(changes, dtype=np.int64), instants, "right")
    ]
    local = np.datetime_as_string((instants + offsets).astype("datetime64[ms]"), unit="ms").tolist()
    suffix = {value: _offset_label(value) for value in labels}
    return [stamp + suffix[off] for stamp, off in zip(local, offsets.tolist(), strict=True)]


def drift_records(records: list[dict[str, Any]], share: float, seed: int = 7) -> list[dict[str, Any]]:
    """Drift a `share` of `records` in place, as the stand-in drifts its days (for benchmarks)."""
    plan = _drift_plan(np.random.default_rng(seed), len(records), share)
    for row, drift in plan.items():
        _apply_drift(records[row], drift)
    return records


def _drift_plan(rng: np.random.Generator, n: int, share: float) -> dict[int, str]:
    """Which records drift and how: what a real API's JSON does over time."""
    chosen = np.flatnonzero(rng.random(n) < share)
    kinds = rng.choice(len(_DRIFTS), chosen.size, p=_DRIFT_WEIGHTS)
    return {i: _DRIFTS[pick] for i, pick in zip(chosen.tolist(), kinds.tolist(), strict=True)}


def _apply_drift(record: dict[str, Any], drift: str) -> None:
    """Drift one record in place; a kind that does not fit the record's shape falls back to another."""
    if drift == "agent_id_str" and record["agent_id"] is None:
        drift = "new_field"
    if drift == "num_segments_float" and "num_segments" not in record:
        drift = "cpc_str"
    nulls = [key for key, value in record.items() if value is None]
    if drift == "missing_null" and not nulls:
        drift = "new_field"
    if drift == "cpc_int":
        record["cpc"] = round(record["cpc"])
    elif drift == "cpc_str":
        record["cpc"] = str(record["cpc"])
    elif drift == "agent_id_str":
        record["agent_id"] = str(record["agent_id"])
    elif drift == "num_segments_float":
        record["num_segments"] = float(record["num_segments"])
    elif drift == "missing_null":
        del record[nulls[0]]
    elif drift == "new_field":
        record["recording_url"] = f"https://recordings.example.invalid/{record['uuid']}.mp3"
    else:
        record["duration"] = "n/a"


_BOUNDARY = np.frombuffer(b'},{"', dtype=np.uint8)


def _serialise(chunks: Iterator[list[dict[str, Any]]]) -> tuple[bytes, np.ndarray]:
    """Serialise records once, a chunk per orjson call: one blob of `record,` parts plus start offsets.

    Records hold no arrays of objects, and a quote inside a string is escaped, so
    `},{"` in a chunk's JSON array occurs exactly between two records.
    """
    parts: list[bytes] = []
    starts: list[np.ndarray] = []
    size = 0
    for records in chunks:
        array = orjson.dumps(records)
        octets = np.frombuffer(array, dtype=np.uint8)
        hit = np.ones(octets.size - 3, dtype=bool)
        for k, byte in enumerate(_BOUNDARY.tolist()):
            hit &= octets[k : octets.size - 3 + k] == byte
        cuts = np.flatnonzero(hit) + 2  # the "{" opening the next record, in `array` coordinates
        if cuts.size != len(records) - 1:
            raise AssertionError("record boundary scan disagrees with the record count")
        starts.append(size + np.concatenate(([1], cuts)) - 1)
        parts.append(array[1:-1])
        size += len(array) - 1  # the record bytes plus one comma
    offsets = np.concatenate([*starts, [size]]).astype(np.int64) if parts else np.zeros(1, dtype=np.int64)
    return b",".join(parts) + b"," if parts else b"", offsets
