"""The declared CDR schema: names as the API's, types by contract, version in metadata."""

from __future__ import annotations

import pyarrow as pa

from airflow_provider_cdr.convert.schema import (
    API_FIELDS,
    CDR_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    SLA_TYPE,
    empty_table,
)

EXPECTED_TYPES = {
    "uuid": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "utc_offset_minutes": pa.int16(),
    "type": pa.string(),
    "disposition": pa.string(),
    "agent": pa.string(),
    "agent_id": pa.int64(),
    "from": pa.string(),
    "to": pa.string(),
    "queue": pa.string(),
    "wrapup_code": pa.string(),
    "destination_name": pa.string(),
    "duration": pa.int64(),
    "cpc": pa.float64(),
    "sid": pa.string(),
    "text": pa.string(),
    "related_call": pa.string(),
    "template": pa.string(),
    "num_segments": pa.int32(),
    "sla": pa.struct(
        [
            ("time_to_first_response", pa.int64()),
            ("time_to_resolution", pa.int64()),
            ("time_to_reply", pa.int64()),
        ]
    ),
    "extra_fields": pa.string(),
    "raw_values": pa.string(),
}


def test_fields_and_types_are_as_declared() -> None:
    assert {field.name: field.type for field in CDR_SCHEMA} == EXPECTED_TYPES
    assert CDR_SCHEMA.names == list(EXPECTED_TYPES)


def test_only_uuid_is_not_nullable() -> None:
    assert [field.name for field in CDR_SCHEMA if not field.nullable] == ["uuid"]


def test_version_is_in_schema_metadata() -> None:
    assert SCHEMA_VERSION == 1
    assert CDR_SCHEMA.metadata == {SCHEMA_VERSION_KEY.encode(): str(SCHEMA_VERSION).encode()}


def test_units_are_in_field_metadata() -> None:
    def unit(field: pa.Field) -> str:
        return field.metadata[b"unit"].decode()

    assert unit(CDR_SCHEMA.field("duration")) == "seconds"
    assert unit(CDR_SCHEMA.field("cpc")) == "USD"
    assert unit(CDR_SCHEMA.field("utc_offset_minutes")) == "minutes"
    assert all(unit(child) == "seconds" for child in SLA_TYPE)
    assert all(b"description" in field.metadata for field in CDR_SCHEMA)


def test_api_fields_exclude_the_derived_columns() -> None:
    assert set(CDR_SCHEMA.names) - set(API_FIELDS) == {"utc_offset_minutes", "extra_fields", "raw_values"}


def test_empty_table_has_the_full_schema_and_no_rows() -> None:
    table = empty_table()
    assert table.num_rows == 0
    assert table.schema.equals(CDR_SCHEMA, check_metadata=True)
    assert not any(pa.types.is_null(field.type) for field in table.schema)
