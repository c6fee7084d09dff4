"""Paging facts scanned from a page's bytes: those of the full read, or none at all.

The pager acts on scanned facts before the page is read (read-ahead, see api/extraction.py), so
whenever ``scan_page`` answers, its keys, record count, token, total and edge instants must be
exactly what both page formats read from the same bytes; a layout it cannot vouch for gives None.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_cdr.api.page import Page
from airflow_provider_cdr.convert.formats import CDRBatches, RecordDicts
from airflow_provider_cdr.convert.page_scan import scan_page
from tests.reliability.test_bad_input_properties import records as any_records
from tests.test_arrow_page import DRIFTED, WELL_TYPED

UUID = "8d1371d2-e166-4677-b158-b1782ddd412d"
STAMP = "2024-07-31T12:43:09.123-03:00"
TOKEN_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="  # the API's: base64


def record(number: int, **fields: Any) -> dict[str, Any]:
    return {
        "uuid": f"{number:08x}-e166-4677-b158-b1782ddd412d",
        "timestamp": STAMP,
        "type": "inbound",
        **fields,
    }


def assert_same_facts(scanned: Page[None], body: bytes) -> None:
    for page_format in (CDRBatches(), RecordDicts()):
        page = page_format.read(body)
        assert np.array_equal(scanned.keys, page.keys)
        assert (scanned.received, scanned.token, scanned.total, scanned.span_ms) == (
            page.received,
            page.token,
            page.total,
            page.span_ms,
        )
    # A page read ahead is read with the key positions its scan found: the same page as without.
    scanning = CDRBatches()
    assert scanning.scan(body) is not None
    reused, fresh = scanning.read(body), CDRBatches().read(body)
    assert not scanning._scanned  # the read took them (and nothing is left holding the body)
    assert reused.payload.equals(fresh.payload) and np.array_equal(reused.keys, fresh.keys)


def scanned_or_declined(body: bytes) -> bool:
    """True when the scan answered (and then with the full reads' facts)."""
    scanned = scan_page(body)
    if scanned is None:
        return False
    try:
        RecordDicts().read(body)
        CDRBatches().read(body)
    except ValueError:  # the full read refuses the page: it fails the run when it settles, as it would have
        return True
    assert_same_facts(scanned, body)
    return True


TOP_LEVEL = st.fixed_dictionaries(
    {},
    optional={
        "search_token": st.one_of(st.none(), st.text(min_size=1, max_size=6)),
        "total": st.one_of(st.none(), st.integers(-3, 50), st.text(max_size=3), st.floats(0, 9)),
        "page": st.integers(1, 3),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.one_of(WELL_TYPED, DRIFTED, any_records), top=TOP_LEVEL, records_first=st.booleans())
def test_scanned_facts_are_the_full_reads_facts(
    records: list[Any], top: dict[str, Any], records_first: bool
) -> None:
    page = {"records": records, **top} if records_first else {**top, "records": records}
    scanned_or_declined(orjson.dumps(page))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=WELL_TYPED, token=st.one_of(st.none(), st.text(TOKEN_CHARACTERS, min_size=1, max_size=24)))
def test_canonical_pages_are_scanned(records: list[Any], token: str | None) -> None:
    """The API's layout (canonical uuids, plain timestamps, base64 tokens, no brace inside a string)
    is scanned."""
    plain = [
        {
            **{k: v.replace("{", "(") if isinstance(v, str) else v for k, v in r.items()},
            "uuid": f"{n:08x}-e166-4677-b158-b1782ddd412d",
            "timestamp": STAMP,
        }
        for n, r in enumerate(records)
    ]
    assert scanned_or_declined(orjson.dumps({"records": plain, "search_token": token, "total": len(plain)}))


def test_an_empty_page_is_scanned() -> None:
    scanned = scan_page(b'{"records": [ ], "search_token": null, "total": 0}')
    assert scanned is not None and scanned.received == 0 and scanned.total == 0 and not len(scanned.keys)


def test_chat_pages_with_sla_objects_are_scanned() -> None:
    body = orjson.dumps(
        {
            "records": [record(1, sla={"time_to_reply": "00:00:23"}), record(2)],
            "search_token": "t",
            "total": 2,
        }
    )
    assert scanned_or_declined(body)


@pytest.mark.parametrize(
    "body",
    [
        # A brace inside a string, an unknown nested object (here hiding a uuid): not plainly laid out.
        orjson.dumps({"records": [record(1, text="{ok}"), record(2)]}),
        orjson.dumps({"records": [record(1, transfer={"uuid": UUID}), record(2)]}),
        # Not the compact layout: keys followed by a space.
        b'{"records": [{"uuid": "%s", "timestamp": "%s"}]}' % (UUID.encode(), STAMP.encode()),
        # A uuid that is not canonical, a missing or null or odd timestamp at an edge.
        orjson.dumps({"records": [record(1), {**record(2), "uuid": "call-2"}]}),
        orjson.dumps({"records": [record(1), {"uuid": UUID}]}),
        orjson.dumps({"timestamp": STAMP, "records": [record(1), {"uuid": UUID, "type": "inbound"}]}),
        orjson.dumps({"records": [record(1), record(2, timestamp=None)]}),
        orjson.dumps({"records": [record(1, timestamp="2024-07-31 12:43:09Z")]}),
        orjson.dumps({"records": [record(1, timestamp="2024-02-30T12:43:09Z")]}),
        # Cut short, a token the full read refuses, records under another key.
        orjson.dumps({"records": [record(1), record(2)], "search_token": "t"})[:-30],
        orjson.dumps({"records": [record(1)], "search_token": ""}),
        orjson.dumps({"meta": {"records": [record(1)]}}),
        orjson.dumps({"note": "a [bracket]", "records": [record(1)]}),
    ],
)
def test_layouts_it_cannot_vouch_for_are_declined(body: bytes) -> None:
    assert scan_page(body) is None


def test_the_stand_ins_pages_regular_and_drifted_are_scanned(make_stand_in: Any) -> None:
    """The layout the benchmarks and the demo meet is read ahead, with the full reads' facts."""
    for drift in (0.0, 0.05):
        api = make_stand_in(type_drift=drift)
        params = {
            "key": api.api_key,
            "start_date": "2024-03-05",
            "end_date": "2024-03-05",
            "per_page": "1000",
        }
        for page in (1, 2, 3):
            body = requests.get(
                f"{api.url}/api/v2/cdr", params={**params, "page": str(page)}, timeout=30
            ).content
            scanned = scan_page(body)
            assert scanned is not None and scanned.received > 0
            assert_same_facts(scanned, body)
