"""How the stand-in pages: one switch per legal reading of the CDR API's undocumented paging.

The vendor's reference leaves open how a search is cut into pages and where its
`search_token` sits (see /work/shared/cdr-api/NOTES.md, "Unknowns"). Each field
of `ServerProfile` plays one of those unknowns; the defaults are the stand-in's
original behaviour, so a client can be tested against every reading by flipping
one switch at a time (CLI flags, POST /_admin/profile, `StandIn(profile=...)`).

- page_cap: the most records one page holds, whatever per_page asks (a server that
  answers per_page=10000 with 1000). None: per_page is honoured up to 10,000.
- page_sizes: "constant" pages hold min(per_page, page_cap); "varying" pages hold a
  deterministic random 1..min(per_page, page_cap) each, pages of 1 included.
- page_offset: where page k starts. "served": right after what pages 1..k-1 held
  at this per_page; "asked": at (k-1)*per_page, skipping what the cap withheld
  (a careless server: only per_page <= cap is exact). Not with "varying".
- search_size: records one search spans across its pages, the "10,000 per
  search" reading. None: a search is unbounded ("10,000 per response"), page
  numbers go on, and a token pointing past the search never comes.
- token_on: "every" page of a search carries the token, or only the "last" one
  (the page holding the search's last record, and any page beyond the end).
- token_points: the token resumes after the "search"'s last record, or after this
  "page"'s last record (then following it with page=1 gets the next records).
- total: "pages" of the search at this per_page, "records" in the search,
  "matches" from the search's start to the end of all results, or "absent".
- page_with_token: "accept" page > 1 together with a search_token, or "refuse" it (422).
- edge_ties: a token resumes strictly after its record ("skip") or at its whole
  millisecond ("resend": records sharing it come again, like the edge_repeat fault).
- lookup_paging: the lookup routes "ignore" page/per_page (the whole list), or
  "honour" them (still a bare JSON list, one page of it).
- token_nonce: "on" gives every token a nonce: tokens for the same place differ, so
  their text says nothing about where they point.
- start_bound / end_bound: how start_datetime and end_datetime (whole seconds) bound
  a search: from the start's first millisecond or strictly after it; to the end of
  the end's second, to its first millisecond, or strictly before it.

Counting "matches", or an unbounded search, reads every matching day of the
query: cheap on test datasets, slow for an open range over big days.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from airflow_provider_cdr.fake_api.faults import parse_assignments
from airflow_provider_cdr.fake_api.filters import MAX_PER_PAGE, WINDOW_CAP


def _choice(default: str, choices: tuple[str, ...], help: str) -> Any:
    return field(default=default, metadata={"choices": choices, "help": help})


def _count(default: int | None, help: str) -> Any:
    """A record count of 1..10,000, or None (no limit)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerProfile:
    """Which reading of the paging behaviour the stand-in plays (defaults: its original one)."""

    page_cap: int | None = _count(
        None, "the most records one page holds whatever per_page asks (none: per_page is honoured)"
    )
    page_sizes: str = _choice(
        "constant",
        ("constant", "varying"),
        "constant: every page holds per_page (or the cap); varying: each page holds a deterministic "
        "random 1..per_page (or the cap), pages of 1 included",
    )
    page_offset: str = _choice(
        "served",
        ("served", "asked"),
        "where page k starts: served = after what pages 1..k-1 held; asked = at (k-1)*per_page, "
        "skipping what the cap withheld",
    )
    search_size: int | None = _count(
        WINDOW_CAP,
        "records one search spans across its pages, the '10,000 per search' reading "
        "(none: unbounded, the '10,000 per response' reading: page numbers go on, and a token "
        "pointing past the search never comes)",
    )
    token_on: str = _choice(
        "every",
        ("every", "last"),
        "which pages carry the search_token: every page of a search, or only its last page (and beyond)",
    )
    token_points: str = _choice(
        "search",
        ("search", "page"),
        "where the token resumes: after the search's last record, or after this page's last record",
    )
    total: str = _choice(
        "pages",
        ("pages", "records", "matches", "absent"),
        "what `total` counts: pages of the search at this per_page, records in the search, records "
        "matching from the search's start to the end, or absent (no key)",
    )
    page_with_token: str = _choice(
        "accept",
        ("accept", "refuse"),
        "page > 1 together with a search_token: served, or refused with 422",
    )
    edge_ties: str = _choice(
        "skip",
        ("skip", "resend"),
        "a token resumes strictly after its record (skip) or at its whole millisecond, so records "
        "sharing it come again (resend)",
    )
    lookup_paging: str = _choice(
        "ignore",
        ("ignore", "honour"),
        "the lookup routes return the whole list (ignore) or one page of it by page/per_page (honour)",
    )
    token_nonce: str = _choice(
        "off",
        ("off", "on"),
        "on: every token carries a nonce, so two tokens for the same place differ (and the same token "
        "never comes twice)",
    )
    start_bound: str = _choice(
        "inclusive",
        ("inclusive", "exclusive"),
        "start_datetime matches records from its first millisecond on (inclusive), or only strictly "
        "after it (exclusive: a record at exactly hh:mm:ss.000 is left out)",
    )
    end_bound: str = _choice(
        "second",
        ("second", "instant", "exclusive"),
        "end_datetime matches records up to the end of its second (second), up to its first millisecond "
        "(instant), or only strictly before it (exclusive)",
    )

    def __post_init__(self) -> None:
        for name in self.field_names():
            self.check_value(name, getattr(self, name))
        if self.page_offset == "asked" and self.page_sizes == "varying":
            raise ValueError(
                "page_offset=asked needs page_sizes=constant: varying pages have no asked offset"
            )

    @classmethod
    def check_value(cls, name: str, value: Any) -> None:
        """ValueError unless `value` is legal for field `name` on its own."""
        choices = field_choices(name)
        if choices is not None and value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
        if choices is None and value is not None and not (type(value) is int and 1 <= value <= MAX_PER_PAGE):
            raise ValueError(
                f"{name} must be a whole number from 1 to {MAX_PER_PAGE}, or none (got {value!r})"
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(item.name for item in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ServerProfile:
        """Build from loosely typed values (JSON, CLI strings); ValueError on unknown names or values."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown profile field(s): {', '.join(unknown)}")
        return cls(**{name: cls.parse_value(name, value) for name, value in values.items()})

    @classmethod
    def parse(cls, spec: str) -> ServerProfile:
        """Parse the form "page_cap=1000,token_on=last"."""
        return cls.from_mapping(parse_assignments(spec, "profile field"))

    @classmethod
    def parse_value(cls, name: str, value: Any) -> Any:
        """One field's checked value from JSON or CLI text: a choice as given, a count as int or none/null."""
        if field_choices(name) is not None:
            value = value.strip() if isinstance(value, str) else value
        elif isinstance(value, str):
            text = value.strip().lower()
            value = None if text in ("none", "null") else int(text) if text.isdigit() else value
        elif type(value) is float and value.is_integer():
            value = int(value)
        cls.check_value(name, value)
        return value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the defaults."""
        default = ServerProfile().to_dict()
        return {name: value for name, value in self.to_dict().items() if value != default[name]}


def cli_flag(name: str) -> str:
    """The command-line flag of a profile field: page_cap -> --page-cap."""
    return "--" + name.replace("_", "-")


def cli_text(value: Any) -> str:
    """A profile value as the command line spells it (None is "none")."""
    return "none" if value is None else str(value)


def field_help(name: str) -> str:
    """What reading a field's values play (the CLI's help text)."""
    return _metadata(name)["help"]


def field_choices(name: str) -> tuple[str, ...] | None:
    """The values a field allows, or None for a count field."""
    return _metadata(name).get("choices")


def _metadata(name: str) -> Mapping[str, Any]:
    for item in fields(ServerProfile):
        if item.name == name:
            return item.metadata
    raise ValueError(f"unknown profile field {name!r}")
