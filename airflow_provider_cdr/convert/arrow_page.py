"""Read a records page straight from its bytes into Arrow, when the page holds no surprises.

Most pages are exactly what the reference describes: every string field a string, every
number a number, no unknown field. Arrow's JSON reader parses such a page in C++ with the
GIL released: faster than decoding it to Python dicts and converting those (1.4x on one core
in benchmarks/convert_speed.py), and concurrent slices can then parse on every core. Arrow is strict where the API drifts (``101`` for a string,
``"56215"`` or ``2.0`` for an integer, an unknown field, a duplicated key, a second JSON
document, invalid UTF-8, a lone surrogate): any of those makes :func:`read_records` answer None, and the
caller takes the record-by-record path (``orjson`` + :meth:`RecordConverter.to_batch`),
which coerces, keeps raw and reports each surprise. So the fast path never decides
anything the general path would decide differently; it only skips work.

JSON has one number type, so ``0`` for ``cpc`` is read as 0.0 here and in the general path
alike (not a coercion); a float for an integer field is not, and goes the general way.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from airflow_provider_cdr.api.dedupe import uuid_keys
from airflow_provider_cdr.api.page import Page, page_total
from airflow_provider_cdr.convert.arrays import valid_mask, values
from airflow_provider_cdr.convert.records import RecordConverter
from airflow_provider_cdr.convert.schema import API_FIELDS, CDR_SCHEMA, SLA_TYPE

_SLA_STRINGS = pa.struct([pa.field(field.name, pa.string()) for field in SLA_TYPE])


def _as_sent(field: pa.Field) -> pa.Field:
    """The JSON type of an API field as the reference documents it (hh:mm:ss and ISO 8601 are strings)."""
    if field.name == "sla":
        return pa.field("sla", _SLA_STRINGS)
    if field.name in ("timestamp", "duration") or pa.types.is_string(field.type):
        return pa.field(field.name, pa.string())
    if pa.types.is_integer(field.type):
        return pa.field(field.name, pa.int64())
    return pa.field(field.name, field.type)


#: One record as the reference documents it.
RECORD_AS_SENT = pa.struct([_as_sent(CDR_SCHEMA.field(name)) for name in API_FIELDS])
_PAGE = pa.schema([pa.field("records", pa.list_(RECORD_AS_SENT)), pa.field("search_token", pa.string())])
# "infer" rather than "error" so that a new top-level key (e.g. total, page) does not slow every
# page down; an unknown key inside a record shows as a changed record type and is refused below.
_PARSE = pa_json.ParseOptions(
    explicit_schema=_PAGE, unexpected_field_behavior="infer", newlines_in_values=True
)


def read_records(body: bytes) -> tuple[pa.StructArray, str | None, int | None] | None:
    """The page's records as RECORD_AS_SENT structs, its search_token and total; None: the general path."""
    options = pa_json.ReadOptions(use_threads=False, block_size=max(len(body) + 1, 1 << 16))
    try:
        table = pa_json.read_json(pa.BufferReader(body), read_options=options, parse_options=_PARSE)
    except (pa.ArrowException, ValueError):  # ValueError: includes UnicodeDecodeError
        return None
    if table.num_rows != 1 or table.schema.field("records").type != _PAGE.field("records").type:
        return None
    records = table.column("records").combine_chunks()
    token = table.column("search_token")[0].as_py()
    total = page_total(table.column("total")[0].as_py()) if "total" in table.schema.names else None
    if not records.is_valid()[0].as_py() or token == "":
        return None
    try:
        records.validate(full=True)  # Arrow's reader lets invalid UTF-8 through; orjson refuses it
    except pa.ArrowInvalid:
        return None
    return records.flatten(), token, total  # the list's one row -> its structs


def read_page(body: bytes, converter: RecordConverter) -> Page[pa.RecordBatch] | None:
    """The page as a CDR_SCHEMA batch with its dedupe keys, or None: decode it record by record."""
    read = read_records(body)
    if read is None:
        return None
    records, token, total = read
    batch = converter.from_arrow(records)
    if batch is None:
        return None
    return Page(batch, uuid_keys(batch.column("uuid")), batch.num_rows, token, total, batch_span(batch))


def batch_span(batch: pa.RecordBatch) -> tuple[int, int] | None:
    """Instants (epoch ms) of a batch's first and last record, when both were readable."""
    if not batch.num_rows:
        return None
    stamps = batch.column("timestamp")
    micros, valid = values(stamps, np.int64), valid_mask(stamps)
    if valid is not None and not (valid[0] and valid[-1]):
        return None
    return int(micros[0]) // 1000, int(micros[-1]) // 1000
