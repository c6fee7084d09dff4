"""The extras of a `cdr` connection, each declared once, in `EXTRAS`.

A spec gives an extra's name, type, default, form label, help text and JSON-schema bounds. From
this table come the casts, defaults and range checks of
:class:`~airflow_provider_cdr.api.settings.CDRConnectionSettings`, ``OWN_EXTRAS``, the extras
never sent as headers, and the connection form's fields: ``conn-fields`` (:func:`conn_fields`, used
by ``get_provider_info``; Airflow 3.2+ reads them) and ``CDRHook.get_connection_form_widgets``
(Airflow 3.1 reads that). The form's standard fields (hidden, relabelled, their placeholders) are
:func:`ui_field_behaviour`'s, for both. The README's table of connection settings is checked
against it by the tests.

Two kinds of extras: the provider's own (``http_option=False``), parsed into
``CDRConnectionSettings``; and HttpHook's request options (``verify``, ``cert``, ``proxies``,
``trust_env``), read as HttpHook reads them by
:func:`~airflow_provider_cdr.api.settings.endpoint_from_connection`, declared here so that they
are documented and have a form field too.

Standard library only: ``get_provider_info`` imports this module, so it must stay cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

JsonType = Literal["string", "integer", "number", "boolean", "array", "object"]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def to_bool(value: Any) -> bool:
    """A boolean extra: true for 1/true/yes/on (any case) or True, false for anything else."""
    return str(value).strip().lower() in TRUE_WORDS


_CASTS: Mapping[str, Callable[[Any], Any]] = MappingProxyType(
    {"string": str, "integer": int, "number": float, "boolean": to_bool}
)
_NUMERIC_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


@dataclass(frozen=True)
class ExtraSpec:
    """One connection extra: everything the code, the form and the documentation say about it."""

    name: str
    types: tuple[JsonType, ...]
    """The JSON types a value may have; leaving the extra out (or null, or blank) means the default.
    An own extra has one type, which says how it is cast; an HTTP option may have several."""
    default: Any
    label: str
    help: str
    """What the extra means, for the form; the default is added to it (see :meth:`description`)."""
    bounds: Mapping[str, Any] = field(default_factory=dict)
    """JSON-schema keywords that narrow the type (``minimum``, ``maximum``, ``exclusiveMinimum``,
    ``items``...). The numeric ones are also checked by ``CDRConnectionSettings``."""
    http_option: bool = False
    """True for an HttpHook request option, read by ``endpoint_from_connection`` as HttpHook would."""

    @property
    def cast(self) -> Callable[[Any], Any]:
        """How ``CDRConnectionSettings.from_extras`` turns a value (JSON, or text) into the setting."""
        if self.http_option or len(self.types) != 1:
            raise TypeError(f"the extra {self.name} is not cast: it is read as HttpHook reads it")
        return _CASTS[self.types[0]]

    @property
    def default_text(self) -> str:
        """The default as the form's description and the README show it."""
        return format_value(self.default)

    def description(self) -> str:
        """The form field's description: the help, then the default (when there is one)."""
        return self.help if self.default is None else f"{self.help} Default {self.default_text}."

    def schema(self) -> dict[str, Any]:
        """The JSON schema of a value of the form field; null is an unset field."""
        return {"type": [*self.types, "null"], **self.bounds}

    def form_field(self) -> dict[str, Any]:
        """The extra's entry in ``conn-fields`` of the provider's metadata."""
        return {"label": self.label, "description": self.description(), "schema": self.schema()}

    def problem(self, value: Any) -> str | None:
        """What is wrong with a cast value given the numeric bounds, or None."""
        if value is None:
            return None
        low, high = self.bounds.get("minimum"), self.bounds.get("maximum")
        above = self.bounds.get("exclusiveMinimum")
        below = self.bounds.get("exclusiveMaximum")
        where = f"{self.name}={value}"
        if low is not None and high is not None and not low <= value <= high:
            return f"{where} is not between {low} and {high}"
        if low is not None and value < low:
            return f"{where} must not be negative" if low == 0 else f"{where} must be at least {low}"
        if high is not None and value > high:
            return f"{where} must be at most {high}"
        if above is not None and value <= above:
            return f"{where} must be positive" if above == 0 else f"{where} must be more than {above}"
        if below is not None and value >= below:
            return f"{where} must be less than {below}"
        return None


def format_value(value: Any) -> str:
    """A value as the documentation writes it: JSON spelling, whole numbers without ``.0``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


EXTRAS: tuple[ExtraSpec, ...] = (
    ExtraSpec(
        "timezone",
        ("string",),
        "UTC",
        "Account time zone",
        "IANA name of the contact centre's time zone; the API reads start_date/end_date and "
        "datetimes in it, so a wrong one shifts days: the operator then fails the task.",
    ),
    ExtraSpec(
        "per_page",
        ("integer",),
        10000,
        "Records per page",
        "Records asked per page, 1 to 10000 (the API's maximum); the server may serve fewer.",
        {"minimum": 1, "maximum": 10000},
    ),
    ExtraSpec(
        "timeout",
        ("number",),
        60.0,
        "Read timeout (s)",
        "Seconds one read may wait for the server's next bytes.",
        {"exclusiveMinimum": 0},
    ),
    ExtraSpec(
        "connect_timeout",
        ("number",),
        10.0,
        "Connect timeout (s)",
        "Seconds connecting to the server may take.",
        {"exclusiveMinimum": 0},
    ),
    ExtraSpec(
        "request_deadline",
        ("number",),
        300.0,
        "Request deadline (s)",
        "Longest one attempt may take, from sending to the body's last byte; then it is retried "
        "(within the retry budget).",
        {"exclusiveMinimum": 0},
    ),
    ExtraSpec(
        "max_retries",
        ("integer",),
        8,
        "Retries per request",
        "On 408, 425, 429, 500, 502, 503, 504, connection errors, timeouts, attempts past the "
        "request deadline and unreadable bodies.",
        {"minimum": 0},
    ),
    ExtraSpec(
        "max_retry_wait",
        ("number",),
        300.0,
        "Longest total wait for one request (s)",
        "Seconds one request may spend waiting between its retries, in all.",
        {"minimum": 0},
    ),
    ExtraSpec(
        "rate_limit",
        ("number",),
        None,
        "Requests per second (cap)",
        "Cap on requests per second from one worker process (from all of them with "
        "`rate_limit_redis`), shared by every concurrent request and by extractions that follow "
        "each other. Unset: no cap.",
        {"exclusiveMinimum": 0},
    ),
    ExtraSpec(
        "rate_limit_redis",
        ("string",),
        None,
        "Share the cap through Redis (URL)",
        "redis://host:6379/0: `rate_limit` and Retry-After pauses then hold for every worker and task "
        "calling this account together, counted in that Redis (the `redis` extra). Unset: per process.",
    ),
    ExtraSpec(
        "concurrency",
        ("integer",),
        4,
        "Requests in flight at once",
        "How many time slices of a day the operator fetches at the same time (its default "
        "`concurrency`); CDRHook.extraction() runs one unless told otherwise.",
        {"minimum": 1},
    ),
    ExtraSpec(
        "allow_insecure_http",
        ("boolean",),
        False,
        "Allow plain http:// to a non-loopback host",
        "The API key travels in the URL: plain http:// is refused unless this is true.",
    ),
    ExtraSpec(
        "verify",
        ("string", "boolean"),
        True,
        "Verify TLS certificates",
        "true: against REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE if set (and trust_env), else certifi's "
        "bundle; a CA bundle path (file or directory): against that CA; false: not verified.",
        http_option=True,
    ),
    ExtraSpec(
        "cert",
        ("string", "array"),
        None,
        "Client certificate",
        'For servers that ask for one: a path, or ["certificate path", "key path"].',
        {"items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        http_option=True,
    ),
    ExtraSpec(
        "proxies",
        ("string", "object"),
        None,
        "Proxies",
        'A proxy URL for every scheme, or proxy URLs by scheme ({"https": "http://proxy:3128"}).',
        {"additionalProperties": {"type": "string"}},
        http_option=True,
    ),
    ExtraSpec(
        "trust_env",
        ("boolean",),
        True,
        "Use the environment's proxies and CA bundle",
        "Whether HTTP(S)_PROXY/NO_PROXY and REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE apply.",
        http_option=True,
    ),
)
"""Every documented extra of a `cdr` connection: the one place each is declared."""

SPECS: Mapping[str, ExtraSpec] = MappingProxyType({spec.name: spec for spec in EXTRAS})
OWN_EXTRA_SPECS: tuple[ExtraSpec, ...] = tuple(spec for spec in EXTRAS if not spec.http_option)
OWN_EXTRAS: tuple[str, ...] = tuple(spec.name for spec in OWN_EXTRA_SPECS)
"""The provider's own extras, parsed into ``CDRConnectionSettings``."""
DOCUMENTED_HTTP_OPTIONS: tuple[str, ...] = tuple(spec.name for spec in EXTRAS if spec.http_option)


def conn_fields() -> dict[str, dict[str, Any]]:
    """``conn-fields`` of the connection type: one form field per extra, in the table's order."""
    return {spec.name: spec.form_field() for spec in EXTRAS}


def ui_field_behaviour() -> dict[str, Any]:
    """``ui-field-behaviour`` of the connection type: the standard fields the form hides or relabels,
    and placeholders. A new dict on every call (Airflow rewrites the placeholders' keys in place)."""
    return {
        "hidden-fields": ["schema", "login", "port"],
        "relabeling": {"host": "Base URL", "password": "API key"},
        "placeholders": {
            "host": "https://cc-ams03.voiso.com",
            "password": "contact-centre or user API key",
            "extra": '{"timezone": "America/Sao_Paulo", "per_page": 10000}',
        },
    }
