"""Turn a page of CDR records (JSON-decoded dicts) into one Arrow batch of ``CDR_SCHEMA``.

The API's JSON drifts (``NOTES.md``): a number comes as ``0``, ``0.0`` or ``"0.1"``,
a field goes missing instead of ``null``, a new field appears. The converter
keeps every value somewhere and never guesses silently:

* a value of the wrong JSON type that converts without loss is *coerced*
  (``"56215"`` -> 56215, ``2.0`` -> 2, ``"0.1"`` -> 0.1, ``101`` -> ``"101"``, 79 -> 79
  seconds) and counted (``0`` for a float is no coercion: JSON has one number type);
* a value that does not convert (``"n/a"`` for a number, ``true`` anywhere, a
  timestamp without a UTC offset, ``2.5`` segments) is *uncoercible*: the column
  holds null, the original goes into the row's ``raw_values`` JSON object under the
  field name (``sla.<name>`` inside ``sla``), it is counted and logged at WARNING
  with the field name and the record's uuid (never the value or the record, which
  may hold phone numbers or message text);
* a field the schema does not know goes into the row's ``extra_fields`` JSON object
  and is counted by name (a new key inside ``sla`` is kept as ``{"sla": {...}}``
  and counted as ``sla.<key>``); a key that names a derived column
  (``utc_offset_minutes``, ``extra_fields``, ``raw_values``) is unknown too;
* a missing field and an explicit ``null`` both become null.

A record that is not a JSON object, or has no usable ``uuid`` (missing, null,
empty, or neither string nor integer), makes :meth:`RecordConverter.to_batch`
raise ``ValueError`` naming the record's position in the page: such a record can
be neither stored under the not-null key nor deduplicated, and dropping it would
lose data silently. The message names the position and the problem, never the
record's content.

This module assembles the page: it checks the records, builds each column with
:mod:`airflow_provider_cdr.convert.columns` (vectorised, falling back to the one-value
coercers of :mod:`airflow_provider_cdr.convert.values`), adds ``extra_fields`` and
``raw_values``, and keeps the counters and the log lines. How the columns stay fast
(200,000 records/s on a core for the whole bytes -> Parquet path) is told in ``columns``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from airflow_provider_cdr.convert.arrays import present
from airflow_provider_cdr.convert.columns import (
    STRING_FIELDS,
    PageIssues,
    all_present,
    column,
    float_array,
    int_array,
    json_column,
    number_from_arrow,
    seconds_array,
    sla_array,
    sla_from_strings,
    string_array,
    timestamp_arrays,
    uuid_array,
)
from airflow_provider_cdr.convert.schema import API_FIELDS, CDR_SCHEMA
from airflow_provider_cdr.convert.values import json_type

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

_KNOWN_FIELDS = frozenset(API_FIELDS)
_INT_FIELDS = ("agent_id", "num_segments")

# Per field, how many uncoercible values are logged one by one before they are only counted.
_LOG_LIMIT_PER_FIELD = 20


def _check_objects(records: Sequence[Any]) -> None:
    if all(issubclass(kind, dict) for kind in set(map(type, records))):
        return
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"CDR record {row} of the page is a JSON {json_type(record)}, not an object")


@dataclass
class ArrowRecords:
    """A page's records as read by Arrow: every API field's column as sent, and the drift found."""

    fields: dict[str, pa.Array]
    length: int
    token: str | None
    total: int | None
    sent_as_strings: dict[str, pa.Array] = field(default_factory=dict)
    """Number field -> the string values some records sent for it (null elsewhere)."""
    sent_as_floats: dict[str, pa.Array] = field(default_factory=dict)
    """Integer field -> the float values some records sent for it (null elsewhere)."""
    unknown: dict[str, pa.Array] = field(default_factory=dict)
    """Fields the schema does not know -> their values (null where a record lacks the key)."""


class RecordConverter:
    """Converts pages of records to ``CDR_SCHEMA`` batches and counts what the data did.

    One converter is meant to live for one extraction (e.g. one day), so its counters
    describe that whole extraction and can go into the partition manifest via
    :meth:`counts`.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.coerced = 0
        self.uncoercible = 0
        self.unknown_fields: Counter[str] = Counter()
        self.coerced_by_field: Counter[str] = Counter()
        self.uncoercible_by_field: Counter[str] = Counter()
        self._lock = threading.Lock()

    def to_batch(self, records: Sequence[Any]) -> pa.RecordBatch:
        """One page of JSON-decoded records as a batch of exactly ``CDR_SCHEMA``.

        :raises ValueError: a record is not a JSON object or has no usable ``uuid``;
            nothing from the page is counted then.
        """
        _check_objects(records)
        uuids, uuids_coerced = uuid_array(records, None)
        issues = PageIssues(uuids)
        if uuids_coerced:
            issues.coerced["uuid"] = uuids_coerced

        timestamps, offsets = timestamp_arrays(column(records, "timestamp"), issues)
        columns: dict[str, pa.Array] = {"uuid": uuids, "timestamp": timestamps, "utc_offset_minutes": offsets}
        for name in STRING_FIELDS:
            columns[name] = string_array(name, column(records, name), issues)
        for name in _INT_FIELDS:
            columns[name] = int_array(name, column(records, name), CDR_SCHEMA.field(name).type, issues)
        columns["duration"] = seconds_array("duration", column(records, "duration"), issues)
        columns["cpc"] = float_array("cpc", column(records, "cpc"), issues)
        columns["sla"] = sla_array(column(records, "sla"), None, issues)
        _collect_unknown_fields(records, issues)
        return self._finish(columns, issues, len(records))

    def from_arrow(self, read: ArrowRecords) -> pa.RecordBatch | None:
        """A page read by ``arrow_page.read_records`` as a ``CDR_SCHEMA`` batch, as :meth:`to_batch`
        would make it; None when some record needs to_batch's checks (a null or empty uuid, an
        integer out of its column's range)."""
        fields = read.fields
        uuids = fields["uuid"]
        if not all_present(uuids):
            return None
        issues = PageIssues(uuids)
        timestamps, offsets = timestamp_arrays(fields["timestamp"], issues)
        columns: dict[str, pa.Array] = {"uuid": uuids, "timestamp": timestamps, "utc_offset_minutes": offsets}
        columns.update((name, fields[name]) for name in STRING_FIELDS)
        for name in ("agent_id", "num_segments", "cpc"):
            number = number_from_arrow(
                name,
                fields[name],
                CDR_SCHEMA.field(name).type,
                read.sent_as_strings.get(name),
                read.sent_as_floats.get(name),
                issues,
            )
            if number is None:
                return None
            columns[name] = number
        columns["duration"] = seconds_array("duration", fields["duration"], issues)
        columns["sla"] = sla_from_strings(fields["sla"], issues)
        for name, unknown in read.unknown.items():
            for row, value in present(unknown):
                issues.extra.setdefault(row, {})[name] = value
        return self._finish(columns, issues, read.length)

    def _finish(self, columns: dict[str, pa.Array], issues: PageIssues, length: int) -> pa.RecordBatch:
        columns["extra_fields"] = json_column(issues.extra, length)
        columns["raw_values"] = json_column(issues.raw, length)
        batch = pa.RecordBatch.from_arrays([columns[name] for name in CDR_SCHEMA.names], schema=CDR_SCHEMA)
        with self._lock:  # pages may be converted on several threads at once
            self._account(issues, length)
        return batch

    def counts(self) -> dict[str, Any]:
        """The counters as plain JSON-ready values (for a manifest or a log line)."""
        return {
            "rows": self.rows,
            "coerced": self.coerced,
            "uncoercible": self.uncoercible,
            "unknown_fields": dict(sorted(self.unknown_fields.items())),
            "coerced_by_field": dict(sorted(self.coerced_by_field.items())),
            "uncoercible_by_field": dict(sorted(self.uncoercible_by_field.items())),
        }

    def _account(self, issues: PageIssues, length: int) -> None:
        self.rows += length
        self.coerced += sum(issues.coerced.values())
        self.coerced_by_field.update(issues.coerced)
        for extra in issues.extra.values():
            names = [name for name in extra if name != "sla"] + [f"sla.{key}" for key in extra.get("sla", ())]
            for name in names:
                if name not in self.unknown_fields:
                    log.warning(
                        "CDR records carry a field the schema does not know: %r (kept in extra_fields)", name
                    )
                self.unknown_fields[name] += 1
        for row in sorted(issues.raw):
            for name in issues.raw[row]:
                seen = self.uncoercible_by_field[name]
                if seen < _LOG_LIMIT_PER_FIELD:
                    log.warning(
                        "CDR field %r of record uuid=%s could not be coerced; column set to null, "
                        "original kept in raw_values",
                        name,
                        issues.uuids[row].as_py(),
                    )
                elif seen == _LOG_LIMIT_PER_FIELD:
                    log.warning("Further uncoercible values of CDR field %r are counted, not logged", name)
                self.uncoercible_by_field[name] += 1
        self.uncoercible += sum(issues.uncoercible.values())


def _collect_unknown_fields(records: Sequence[dict[str, Any]], issues: PageIssues) -> None:
    """Move fields the schema does not know into the rows' ``extra_fields`` objects."""
    unknown = set().union(*records) - _KNOWN_FIELDS
    if not unknown:
        return
    for row, record in enumerate(records):
        if names := record.keys() & unknown:
            issues.extra.setdefault(row, {}).update((name, record[name]) for name in names)
