"""The two ways a records page is read: as the API's dicts, or as a batch of the declared schema.

Both implement :class:`~airflow_provider_cdr.api.page.PageFormat`. `RecordDicts` serves
``CDRHook.iter_records``; `CDRBatches` serves the operator and ``get_records_df``: Arrow's JSON
reader when the page holds no surprises (:mod:`.arrow_page`), else record by record through
:class:`~.records.RecordConverter`, which coerces, keeps raw values and counts each surprise.
Record-by-record reading holds the GIL throughout, so it runs one page at a time under a lock:
that keeps one page of decoded dicts (~2 KB a record) alive at a time while downloads overlap.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from airflow_provider_cdr.api.dedupe import uuid_keys
from airflow_provider_cdr.api.page import Page, page_parts, read_json, records_span
from airflow_provider_cdr.convert.arrays import bool_array
from airflow_provider_cdr.convert.arrow_page import ReadHints, read_page
from airflow_provider_cdr.convert.page_keys import PageKeys
from airflow_provider_cdr.convert.page_scan import scan_page
from airflow_provider_cdr.convert.records import RecordConverter

_DECLINED_BEFORE_SKIPPING = 3
_RETRY_EVERY = 4
_SCANS_KEPT = 16  # more than pages read ahead at once (one per slice)


class RecordDicts:
    """Pages as lists of dicts, as the API sent them."""

    def read(self, body: bytes) -> Page[list[Any]]:
        records, token, total = page_parts(read_json(body))
        return Page(
            records, uuid_keys(record_uuids(records)), len(records), token, total, records_span(records)
        )

    def select(self, payload: list[Any], keep: np.ndarray) -> list[Any]:
        return [record for record, kept in zip(payload, keep) if kept]


class CDRBatches:
    """Pages as CDR_SCHEMA record batches; `converter` keeps the counts of what was coerced or kept raw.

    Remembers what the last pages needed, so as not to pay twice per page for the same drift: once
    a page held floats in integer fields, the next ones are scanned for them before Arrow parses;
    after several pages in a row that Arrow could not read, only every fourth is offered to it.
    A page read ahead is scanned first (:meth:`scan`); its read then reuses the key positions
    the scan found instead of searching the bytes again (about 3 ms of a page of 10,000 records).
    """

    def __init__(self) -> None:
        self.converter = RecordConverter()
        self._one_at_a_time = threading.Lock()
        self._hints = ReadHints()
        self._declined_in_a_row = 0
        self._pages = 0
        self._scanned: dict[int, PageKeys] = {}
        """Key positions by id(body), until that body is read: held only for bodies still alive
        (each PageKeys holds its body), so an id cannot be another body's."""
        self._scanned_lock = threading.Lock()

    def scan(self, body: bytes) -> Page[PageKeys | None] | None:
        """The page's paging facts from its bytes alone (see :func:`.page_scan.scan_page`)."""
        facts = scan_page(body)
        if facts is not None and facts.payload is not None:
            with self._scanned_lock:
                self._scanned[id(body)] = facts.payload
                while len(self._scanned) > _SCANS_KEPT:  # scanned, never read (a cancelled read)
                    del self._scanned[next(iter(self._scanned))]
        return facts

    def _scanned_keys(self, body: bytes) -> PageKeys | None:
        with self._scanned_lock:
            keys = self._scanned.pop(id(body), None)
        return keys if keys is not None and keys.body is body else None

    def read(self, body: bytes) -> Page[pa.RecordBatch]:
        self._pages += 1
        positions = self._scanned_keys(body)
        if self._declined_in_a_row < _DECLINED_BEFORE_SKIPPING or self._pages % _RETRY_EVERY == 0:
            page = read_page(body, self.converter, self._hints, positions)
            if page is not None:
                self._declined_in_a_row = 0
                return page
            self._declined_in_a_row += 1
        with self._one_at_a_time:
            records, token, total = page_parts(read_json(body))
            batch = self.converter.to_batch(records)
            keys = uuid_keys(batch.column("uuid"))
            return Page(batch, keys, len(records), token, total, records_span(records))

    def select(self, payload: pa.RecordBatch, keep: np.ndarray) -> pa.RecordBatch:
        return payload.filter(bool_array(keep))


def record_uuids(records: Sequence[Any]) -> list[str]:
    """Each record's dedupe key: its uuid, or its full JSON when it has none (so it is never dropped)."""
    try:
        uuids = [record["uuid"] for record in records]
        if all(type(uuid) is str and uuid for uuid in uuids):
            return uuids
    except (KeyError, TypeError):
        pass
    return [uuid_of(record) for record in records]


def uuid_of(record: Any) -> str:
    """The dedupe key of one record: its uuid, or its full JSON when it has none."""
    if isinstance(record, dict):
        value = record.get("uuid")
        if isinstance(value, str) and value:
            return value
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()
