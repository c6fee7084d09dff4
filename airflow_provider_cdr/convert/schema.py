"""The one declared, versioned Arrow schema of a stored CDR record.

Every Parquet file the provider writes has exactly this schema, whatever a day's
records happened to contain: an all-SMS day and an empty day open together with
a day of calls in one query, because no column is ever inferred (and so never
null-typed). Types follow the API's contract (``cdr-api-reference.txt``), not
the data; field names are the API's own.

Bump :data:`SCHEMA_VERSION` on any change a reader could notice; the policy
(``docs/upgrading.md``) is that a new version only adds columns, so that a reader of
several versions at once merges schemas instead of failing. The version is stored in
the schema metadata of every file and in each partition's manifest.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION: int = 1

#: Key of the schema-level metadata entry that carries :data:`SCHEMA_VERSION`.
SCHEMA_VERSION_KEY = "cdr_schema_version"

_SECONDS = {"unit": "seconds", "source_format": "hh:mm:ss (hours may exceed 24)"}


def _field(
    name: str,
    type_: pa.DataType,
    description: str,
    *,
    nullable: bool = True,
    metadata: dict[str, str] | None = None,
) -> pa.Field:
    """Declare a field with its documentation as field metadata, which Parquet files keep."""
    return pa.field(name, type_, nullable=nullable, metadata={"description": description, **(metadata or {})})


#: The SLA struct: the three ``hh:mm:ss`` SLA values of digital interactions, as seconds.
SLA_TYPE = pa.struct(
    [
        _field(
            "time_to_first_response", pa.int64(), "time allowed for the first response", metadata=_SECONDS
        ),
        _field(
            "time_to_resolution", pa.int64(), "time allowed to archive the interaction", metadata=_SECONDS
        ),
        _field("time_to_reply", pa.int64(), "time allowed to reply to each message", metadata=_SECONDS),
    ]
)

CDR_SCHEMA: pa.Schema = pa.schema(
    [
        _field("uuid", pa.string(), "unique id of the interaction", nullable=False),
        _field(
            "timestamp",
            pa.timestamp("us", tz="UTC"),
            "instant the interaction ended (the API sends ISO 8601 with a UTC offset)",
        ),
        _field(
            "utc_offset_minutes",
            pa.int16(),
            "UTC offset the API sent with timestamp; local time = timestamp + offset",
            metadata={"unit": "minutes"},
        ),
        _field("type", pa.string(), "interaction type, stored as sent (spellings vary)"),
        _field("disposition", pa.string(), "end-of-interaction status"),
        _field("agent", pa.string(), "name of the user who first handled the interaction"),
        _field("agent_id", pa.int64(), "id of that user"),
        _field("from", pa.string(), "ANI, SMS sender id, or social account"),
        _field("to", pa.string(), "DNIS, SMS receiver, or social account"),
        _field("queue", pa.string(), "inbound queue that distributed the call"),
        _field("wrapup_code", pa.string(), "wrap-up code; a string to keep leading zeros ('0101')"),
        _field("destination_name", pa.string(), "name associated with the recipient's number"),
        _field("duration", pa.int64(), "length of the interaction", metadata=_SECONDS),
        _field("cpc", pa.float64(), "cost per call or message", metadata={"unit": "USD"}),
        _field("sid", pa.string(), "SMS sender id"),
        _field("text", pa.string(), "SMS body"),
        _field("related_call", pa.string(), "uuid of the interaction related to the SMS"),
        _field("template", pa.string(), "template used for the digital interaction or SMS"),
        _field("num_segments", pa.int32(), "number of 160-character SMS segments"),
        _field("sla", SLA_TYPE, "SLA limits of digital interactions; null when the API sent none"),
        _field(
            "extra_fields",
            pa.string(),
            "JSON object of fields this schema version does not know; null if none",
            metadata={"format": "json"},
        ),
        _field(
            "raw_values",
            pa.string(),
            "JSON object field -> original value, for values that could not be coerced "
            "(the column holds null); null if none",
            metadata={"format": "json"},
        ),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)},
)

#: Names of the fields that come from the API (the rest are derived by the converter).
API_FIELDS: tuple[str, ...] = tuple(
    name for name in CDR_SCHEMA.names if name not in ("utc_offset_minutes", "extra_fields", "raw_values")
)


def empty_table() -> pa.Table:
    """A zero-row table with the full schema, e.g. for an empty day's partition."""
    return CDR_SCHEMA.empty_table()


# Columns with few distinct values a day: dictionary-encoded in Parquet (smaller and faster to
# write). The others (uuid, numbers, texts) would only fall back to plain after trying.
DICTIONARY_COLUMNS: tuple[str, ...] = (
    "type",
    "disposition",
    "agent",
    "queue",
    "wrapup_code",
    "destination_name",
    "template",
    "agent_id",
    "utc_offset_minutes",
)
