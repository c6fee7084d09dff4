"""Read a records page straight from its bytes into Arrow, drift included where Arrow can read it.

Arrow's JSON reader parses a page in C++ with the GIL released: several times faster than
decoding it to Python dicts and converting those, and concurrent slices then parse on every
core. It is strict where the API drifts, so the drift it cannot read directly is made readable
first, without changing what the page says:

- **A field the schema does not know** (e.g. a ``recording_url`` on some calls) is read by the
  reader's type inference and folded into ``extra_fields``, when its values are strings,
  integers or booleans and no record sends it as an explicit ``null`` (which Arrow cannot tell
  from an absent key).
- **A number sent as a string** (``"agent_id": "56215"``, ``"cpc": "0.1"``): Arrow cannot hold
  numbers and strings in one column, so such a key is renamed in the bytes (``"cpc":"`` ->
  ``"cpc~as-string":"``, a literal replacement that can only meet keys, since a quote inside a
  JSON string is escaped) and its values read as a column of their own, then coerced one by one
  exactly as the record-by-record path does.
- **A float for an integer field** (``"num_segments": 2.0``): the field is read as float64 and the
  positions of the floats found in the bytes, so that ``2.0`` is counted as coerced and ``2.5``
  kept raw, as the record-by-record path does.
- Missing fields and ``null`` are what Arrow reads anyway; calls, chats and SMS mix freely.

What is left goes the general way (``orjson`` + :meth:`RecordConverter.to_batch`): a number for
a string field, a boolean, an object where a value belongs, an unknown nested field, a
duplicated key, a second JSON document, invalid UTF-8, a lone surrogate. So the fast path never
decides anything the general path would decide differently (the property tests compare them);
it only skips work.

JSON has one number type, so ``0`` for ``cpc`` is read as 0.0 here and in the general path
alike (not a coercion); a float for an integer field is not.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from airflow_provider_cdr.api.dedupe import uuid_keys
from airflow_provider_cdr.api.page import Page, page_total
from airflow_provider_cdr.convert.arrays import valid_mask, values
from airflow_provider_cdr.convert.records import ArrowRecords, RecordConverter
from airflow_provider_cdr.convert.schema import API_FIELDS, CDR_SCHEMA, SLA_TYPE

_SLA_STRINGS = pa.struct([pa.field(field.name, pa.string()) for field in SLA_TYPE])
INT_FIELDS = ("agent_id", "num_segments")
NUMBER_FIELDS = (*INT_FIELDS, "cpc")
AS_STRING = "~as-string"
_RENAMES = {name: (f'"{name}":"'.encode(), f'"{name}{AS_STRING}":"'.encode()) for name in NUMBER_FIELDS}
_NUMBER_TOKEN = {name: re.compile(f'"{name}":(-?[0-9][0-9.eE+-]*)'.encode()) for name in INT_FIELDS}
_FLOAT_TOKEN = {name: re.compile(f'"{name}":-?[0-9]+[.eE]'.encode()) for name in INT_FIELDS}
_FLOAT_MARKS = np.frombuffer(b".eE", dtype=np.uint8)
_INFERRED_OK = (pa.string(), pa.int64(), pa.bool_())
_EXACT_IN_FLOAT = 2**53
_FORGET_DRIFT_AFTER = 8  # pages without drift to make readable before it is no longer looked for first


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


@functools.cache
def _parse_options(floats_in: frozenset[str]) -> pa_json.ParseOptions:
    """The page's explicit schema, with the integer fields in `floats_in` read as float64.

    "infer" so that a new top-level key (total, page) costs nothing, and a key the schema does
    not know inside a record is read by inference (see the module docstring).
    """
    record = pa.struct(
        [
            pa.field(f.name, pa.float64()) if f.name in floats_in else f
            for f in (RECORD_AS_SENT.field(i) for i in range(RECORD_AS_SENT.num_fields))
        ]
    )
    page = pa.schema([pa.field("records", pa.list_(record)), pa.field("search_token", pa.string())])
    return pa_json.ParseOptions(
        explicit_schema=page, unexpected_field_behavior="infer", newlines_in_values=True
    )


def read_records(body: bytes, hints: ReadHints | None = None) -> ArrowRecords | None:
    """The page's records as Arrow columns, or None: the general path.

    The bytes are searched for drift to make readable (numbers sent as strings, floats for
    integers) before parsing when the pages before had some (`hints`), else only after a parse
    that failed: a page without drift pays for nothing but its parse.
    """
    hints = hints or ReadHints()
    table: pa.Table | None = None
    floats: dict[str, np.ndarray | None] = {}
    if not hints.expect_drift:
        table = _parse(body, floats)
    if table is None:
        renamed = _renamed(body)
        if renamed is None:
            return None
        floats = _float_tokens(renamed)
        table = _parse(renamed, floats)
        hints.saw(
            drift=table is not None
            and (renamed is not body or any(m.any() for m in floats.values() if m is not None))
        )
    else:
        hints.saw(drift=False)
    if table is None or table.num_rows != 1:
        return None
    return _records(table, floats)


def _renamed(body: bytes) -> bytes | None:
    """The body with the keys of numbers sent as strings renamed (see the module docstring);
    None when a key already looks like a renamed one."""
    if AS_STRING.encode() in body:
        return None
    for name in NUMBER_FIELDS:
        old, new = _RENAMES[name]
        if old in body:
            body = body.replace(old, new)
    return body


def _parse(body: bytes, floats: dict[str, np.ndarray | None]) -> pa.Table | None:
    floats_in = frozenset(name for name, mask in floats.items() if mask is not None and mask.any())
    options = pa_json.ReadOptions(use_threads=False, block_size=max(len(body) + 1, 1 << 16))
    try:
        return pa_json.read_json(
            pa.BufferReader(body), read_options=options, parse_options=_parse_options(floats_in)
        )
    except (pa.ArrowException, ValueError):  # ValueError: includes UnicodeDecodeError
        return None


def _float_tokens(body: bytes) -> dict[str, np.ndarray | None]:
    """Per integer field, for each number in the page (in order), whether it is written as a float."""
    found: dict[str, np.ndarray | None] = {}
    for name in INT_FIELDS:
        if _FLOAT_TOKEN[name].search(body) is None:
            continue  # no float: nothing to tell apart
        tokens = _NUMBER_TOKEN[name].findall(body)
        joined = np.frombuffer(b",".join(tokens), dtype=np.uint8)
        commas = np.flatnonzero(joined == ord(","))
        marks = np.flatnonzero(np.isin(joined, _FLOAT_MARKS))
        written_as_float = np.zeros(len(tokens), dtype=bool)
        written_as_float[np.searchsorted(commas, marks)] = True
        found[name] = written_as_float
    return found


def _records(table: pa.Table, floats: dict[str, np.ndarray | None]) -> ArrowRecords | None:
    listed = table.column("records").combine_chunks()
    token = table.column("search_token")[0].as_py()
    total = page_total(table.column("total")[0].as_py()) if "total" in table.schema.names else None
    if not listed.is_valid()[0].as_py() or token == "":
        return None
    try:
        listed.validate(full=True)  # Arrow's reader lets invalid UTF-8 through; orjson refuses it
    except pa.ArrowInvalid:
        return None
    records: pa.StructArray = listed.flatten()  # the list's one row -> its structs
    if records.null_count:
        return None
    columns = dict(zip((f.name for f in records.type), records.flatten()))
    read = ArrowRecords({}, len(records), token, total)
    for name in API_FIELDS:
        column = columns.pop(name)
        expected = RECORD_AS_SENT.field(name).type
        if column.type != expected and not (name in INT_FIELDS and column.type == pa.float64()):
            return None
        read.fields[name] = column
    for name in NUMBER_FIELDS:
        sent = columns.pop(f"{name}{AS_STRING}", None)
        if sent is not None:
            if sent.type != pa.string() or not _apart(sent, read.fields[name]):
                return None
            read.sent_as_strings[name] = sent
    for name, column in read.fields.items():
        if name in INT_FIELDS and column.type == pa.float64():
            rows = _float_rows(column, floats.get(name))
            if rows is None:
                return None
            read.float_rows[name] = rows
    for name, column in columns.items():
        if column.type not in _INFERRED_OK:
            return None  # nested, double (1 and 1.0 look alike), or null only: the general path
        read.unknown[name] = column
    return read


def _apart(first: pa.Array, second: pa.Array) -> bool:
    """No row holds a value in both (a record that sent the key twice)."""
    one, two = valid_mask(first), valid_mask(second)
    both = (np.ones(len(first), bool) if one is None else one) & (
        np.ones(len(second), bool) if two is None else two
    )
    return not both.any()


def _float_rows(column: pa.Array, written_as_float: np.ndarray | None) -> np.ndarray | None:
    """The rows of an integer field read as float64 whose value was written as a float; None when the
    bytes and the column disagree, or an integer was too large to read exactly as a float64."""
    valid = valid_mask(column)
    rows = np.flatnonzero(valid) if valid is not None else np.arange(len(column))
    if written_as_float is None or len(written_as_float) != len(rows):
        return None  # the key also appears elsewhere (a nested object): the general path
    numbers = values(column, np.float64)[rows]
    if (np.abs(numbers[~written_as_float]) >= _EXACT_IN_FLOAT).any():
        return None
    return rows[written_as_float]


@dataclass
class ReadHints:
    """What the pages before this one needed (advisory: a wrong hint costs time, never rows)."""

    pages_since_drift: int = _FORGET_DRIFT_AFTER

    @property
    def expect_drift(self) -> bool:
        return self.pages_since_drift < _FORGET_DRIFT_AFTER

    def saw(self, drift: bool) -> None:
        self.pages_since_drift = 0 if drift else min(self.pages_since_drift + 1, _FORGET_DRIFT_AFTER)


def read_page(
    body: bytes, converter: RecordConverter, hints: ReadHints | None = None
) -> Page[pa.RecordBatch] | None:
    """The page as a CDR_SCHEMA batch with its dedupe keys, or None: decode it record by record."""
    read = read_records(body, hints)
    if read is None:
        return None
    if read.unknown and not _no_explicit_nulls(body, read.unknown):
        return None
    batch = converter.from_arrow(read)
    if batch is None:
        return None
    return Page(
        batch, uuid_keys(batch.column("uuid")), batch.num_rows, read.token, read.total, batch_span(batch)
    )


def _no_explicit_nulls(body: bytes, unknown: dict[str, pa.Array]) -> bool:
    """No record sends an unknown key as null (Arrow reads it as absent; the general path keeps it),
    and each key appears as a record's key only (not with spaces around its colon, not nested)."""
    for name, column in unknown.items():
        key = orjson.dumps(name)
        sent = len(column) - column.null_count
        if body.count(key + b":null") or body.count(key + b":") != sent or body.count(key) != sent:
            return False
    return True


def batch_span(batch: pa.RecordBatch) -> tuple[int, int] | None:
    """Instants (epoch ms) of a batch's first and last record, when both were readable."""
    if not batch.num_rows:
        return None
    stamps = batch.column("timestamp")
    micros, valid = values(stamps, np.int64), valid_mask(stamps)
    if valid is not None and not (valid[0] and valid[-1]):
        return None
    return int(micros[0]) // 1000, int(micros[-1]) // 1000
