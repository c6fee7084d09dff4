"""Read a records page straight from its bytes into Arrow, drift included where Arrow can read it.

Arrow's JSON reader parses a page in C++ with the GIL released: several times faster than
decoding it to Python dicts and converting those, and concurrent slices then parse on every
core. It is strict where the API drifts, so the drift it cannot read directly is made readable
first, without changing what the page says:

- **A field the schema does not know** (e.g. a ``recording_url`` on some calls) is read by the
  reader's type inference and folded into ``extra_fields``, when its values are strings,
  integers or booleans and no record sends it as an explicit ``null`` (which Arrow cannot tell
  from an absent key).
- **A number sent as a string** (``"agent_id": "56215"``, ``"cpc": "0.1"``) or **a float for an
  integer** (``"num_segments": 2.0``): Arrow cannot hold numbers and strings, or integers and
  floats, in one column, so such a key is renamed in the bytes (``"cpc":"`` ->
  ``"cpc~as-string":"``, ``"num_segments":2.0`` -> ``"num_segments~as-float":2.0``) and its values
  read as a column of their own, then coerced one by one exactly as the record-by-record path
  does (``2.0`` counted as coerced, ``2.5`` kept raw). The keys are found for all fields at once
  (:mod:`~airflow_provider_cdr.convert.page_keys`), and a renamed column must hold exactly as
  many values as keys were renamed for it.
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

from dataclasses import dataclass
from functools import cache

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from airflow_provider_cdr.api.dedupe import uuid_keys
from airflow_provider_cdr.api.page import Page, page_total
from airflow_provider_cdr.convert.arrays import valid_mask, values
from airflow_provider_cdr.convert.page_keys import IS_NUMBER_START, PageKeys
from airflow_provider_cdr.convert.records import ArrowRecords, RecordConverter
from airflow_provider_cdr.convert.schema import API_FIELDS, CDR_SCHEMA, SLA_TYPE

_SLA_STRINGS = pa.struct([pa.field(field.name, pa.string()) for field in SLA_TYPE])
INT_FIELDS = ("agent_id", "num_segments")
NUMBER_FIELDS = (*INT_FIELDS, "cpc")
AS_STRING, AS_FLOAT = "~as-string", "~as-float"
_RENAME_MARK = b"~as-"
_RENAME_MARK_IN_NAME = _RENAME_MARK.decode()
_QUOTE = ord('"')
_INFERRED_OK = (pa.string(), pa.int64(), pa.bool_())
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
#: The columns renamed drift is read into (null on every record without it).
_RENAMED = {
    **{f"{name}{AS_STRING}": pa.string() for name in NUMBER_FIELDS},
    **{f"{name}{AS_FLOAT}": pa.float64() for name in INT_FIELDS},
}


@cache
def _parse_options(renamed: frozenset[str]) -> pa_json.ParseOptions:
    """The page: explicit for what is known, "infer" so that a new top-level key (total, page)
    costs nothing and a key the schema does not know inside a record is read by inference.

    Only the `renamed` columns the page has are declared: Arrow fills each declared column on
    every record, and all five made a page without drift parse about 20 % slower (2.39 vs 1.95
    us a record)."""
    record = pa.struct([*RECORD_AS_SENT, *(pa.field(n, t) for n, t in _RENAMED.items() if n in renamed)])
    return pa_json.ParseOptions(
        explicit_schema=pa.schema(
            [pa.field("records", pa.list_(record)), pa.field("search_token", pa.string())]
        ),
        unexpected_field_behavior="infer",
        newlines_in_values=True,
    )


def read_records(
    body: bytes, hints: ReadHints | None = None, keys: PageKeys | None = None
) -> ArrowRecords | None:
    """The page's records as Arrow columns, or None: the general path.

    The bytes are searched for drift to make readable (numbers sent as strings, floats for
    integers) before parsing when the pages before had some (`hints`), else only after a parse
    that failed: a page without drift pays for nothing but its parse. `keys`: the body's key
    positions when they were already found (by the page scan), so as not to search twice.
    """
    hints = hints or ReadHints()
    if keys is not None and keys.body is not body:
        raise ValueError("the key positions given are another body's")
    renamed: dict[str, int] = {}
    table = None if hints.expect_drift else _parse(body)
    if table is None:
        if _sends_rename_mark(body):
            return None  # a key already looks like a renamed one
        keys = keys or PageKeys(body)
        readable = _readable(keys)
        if readable is None:
            return None
        text, renamed = readable
        table = _parse(text, frozenset(renamed))
        hints.saw(drift=table is not None and bool(renamed))
    else:
        hints.saw(drift=False)
    if table is None or table.num_rows != 1:
        return None
    read = _records(table, renamed)
    if read is not None and read.unknown and not _no_explicit_nulls(keys or PageKeys(body), read.unknown):
        return None
    return read


def _sends_rename_mark(body: bytes) -> bool:
    """Whether the page holds a rename's mark anywhere. A lone ``~`` is found by memchr, about 35
    times faster than the four-byte mark that most pages never send (0.006 vs 0.22 us a record)."""
    return b"~" in body and _RENAME_MARK in body


def _readable(keys: PageKeys) -> tuple[bytes, dict[str, int]] | None:
    """The body with the keys of numbers sent as strings and of floats for integers renamed (see the
    module docstring), and how many keys each renamed column got; None when a number is too long."""
    inserts: list[tuple[int, bytes]] = []
    renamed: dict[str, int] = {}
    for name in NUMBER_FIELDS:
        at = keys.of(name)
        if not at.size:
            continue
        starts = keys.value_starts(at)
        moved = {AS_STRING: at[starts == _QUOTE]}
        if name in INT_FIELDS:
            numbers = at[IS_NUMBER_START[starts]]
            floats = keys.written_as_float(numbers)
            if floats is None:
                return None
            moved[AS_FLOAT] = numbers[floats]
        for suffix, where in moved.items():
            if where.size:
                renamed[name + suffix] = int(where.size)
                inserts += ((position - 1, suffix.encode()) for position in where.tolist())
    return keys.with_suffixes(inserts), renamed


def _parse(body: bytes, renamed: frozenset[str] = frozenset()) -> pa.Table | None:
    """The page as Arrow reads it, with the `renamed` columns declared; None if Arrow cannot."""
    options = pa_json.ReadOptions(use_threads=False, block_size=max(len(body) + 1, 1 << 16))
    try:
        return pa_json.read_json(
            pa.BufferReader(body), read_options=options, parse_options=_parse_options(renamed)
        )
    except (pa.ArrowException, ValueError):  # ValueError: includes UnicodeDecodeError
        return None


def _records(table: pa.Table, renamed: dict[str, int]) -> ArrowRecords | None:
    chunks = table.column("records")
    # One chunk (the page is one block): used as it is; combine_chunks would copy the whole page.
    listed = chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()
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
        if column.type != RECORD_AS_SENT.field(name).type:
            return None
        read.fields[name] = column
    for name in NUMBER_FIELDS:
        sent = {
            suffix: columns.pop(name + suffix) for suffix in (AS_STRING, AS_FLOAT) if name + suffix in columns
        }
        if any(len(c) - c.null_count != renamed.get(name + suffix, 0) for suffix, c in sent.items()):
            return None  # a key renamed elsewhere (nested) or sent twice: the general path
        moved = {suffix: column for suffix, column in sent.items() if renamed.get(name + suffix)}
        if moved and not _apart(read.fields[name], *moved.values()):
            return None
        if AS_STRING in moved:
            read.sent_as_strings[name] = moved[AS_STRING]
        if AS_FLOAT in moved:
            read.sent_as_floats[name] = moved[AS_FLOAT]
    for name, column in columns.items():
        if _RENAME_MARK_IN_NAME in name:
            return None  # the server sent a key that looks like a renamed one: the general path
        if column.type not in _INFERRED_OK:
            return None  # nested, double (1 and 1.0 look alike), or null only: the general path
        read.unknown[name] = column
    return read


def _apart(*columns: pa.Array) -> bool:
    """No row holds a value in more than one of `columns` (a record that sent the key twice)."""
    held = np.zeros(len(columns[0]), dtype=np.int8)
    for column in columns:
        valid = valid_mask(column)
        held += np.int8(1) if valid is None else valid
    return bool((held <= 1).all())


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
    body: bytes, converter: RecordConverter, hints: ReadHints | None = None, keys: PageKeys | None = None
) -> Page[pa.RecordBatch] | None:
    """The page as a CDR_SCHEMA batch with its dedupe keys, or None: decode it record by record."""
    read = read_records(body, hints, keys)
    if read is None:
        return None
    batch = converter.from_arrow(read)
    if batch is None:
        return None
    return Page(
        batch, uuid_keys(batch.column("uuid")), batch.num_rows, read.token, read.total, batch_span(batch)
    )


def _no_explicit_nulls(keys: PageKeys, unknown: dict[str, pa.Array]) -> bool:
    """No record sends an unknown key as null (Arrow reads it as absent; the general path keeps it),
    and each key appears as a record's key only (not with whitespace before its colon, not nested)."""
    for name, column in unknown.items():
        sent = len(column) - column.null_count
        at = keys.of(name)
        if len(at) != sent:  # a key sent as null is one more key than Arrow has values
            return False
        # Found as "name": only: with no colon after whitespace, no other key can be it (a scan of
        # the page, about 0.1 us a record, saved); else any "name" beyond those sends the general way.
        if keys.spaced_colons and keys.body.count(orjson.dumps(name)) != sent:
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
