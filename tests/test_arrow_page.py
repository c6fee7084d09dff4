"""The Arrow path from bytes to batch: taken for pages without surprises, and then the same batch.

The general path (orjson + RecordConverter.to_batch) is the reference: whenever read_page gives
a page, its batch, its counters and its token must equal what the general path gives, and
every kind of drift must send the page the general way.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pyarrow as pa
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_cdr.api.page import page_parts, records_span
from airflow_provider_cdr.convert.arrow_page import read_page, read_records
from airflow_provider_cdr.convert.formats import CDRBatches
from airflow_provider_cdr.convert.page_keys import PageKeys
from airflow_provider_cdr.convert.records import RecordConverter
from tests.reliability.test_bad_input_properties import records as any_records
from tests.test_records import SAMPLE_RESPONSE, call

STRINGS = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["", "Zoë Łukasz", "😀 ✓", "0101"]))
HMS = st.one_of(
    st.none(),
    st.sampled_from(
        ["00:01:19", "48:16:27", "1:02:03", "123:00:00", "00:61:00", "n/a", "", "99999999999999999999:00:00"]
    ),
)
TIMESTAMPS = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "2024-07-31T12:43:09.000-03:00",
            "2024-07-31T12:43:09Z",
            "2024-07-31T12:43:09+0530",
            "2024-07-31T12:43:09.123456+01",
            "2024-07-31T12:43:09",  # no offset: kept raw
            "yesterday",
        ]
    ),
)
# Records of the documented JSON types (each field may also be missing or null): the Arrow path's domain.
WELL_TYPED = st.lists(
    st.fixed_dictionaries(
        {"uuid": st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=12))},
        optional={
            "timestamp": TIMESTAMPS,
            "duration": HMS,
            **{
                name: STRINGS
                for name in ("type", "agent", "from", "to", "queue", "wrapup_code", "text", "sid")
            },
            "agent_id": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
            "num_segments": st.one_of(st.none(), st.integers(-(2**33), 2**33)),
            "cpc": st.one_of(
                st.none(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False)
            ),
            "sla": st.one_of(
                st.none(),
                st.fixed_dictionaries({}, optional={"time_to_resolution": HMS, "time_to_reply": HMS}),
            ),
        },
    ),
    max_size=8,
)


def general_path(body: bytes) -> tuple[pa.RecordBatch, str | None, int | None, dict[str, Any]]:
    converter = RecordConverter()
    records, token, total = page_parts(orjson.loads(body))
    return converter.to_batch(records), token, total, converter.counts()


def assert_same_as_general_path(body: bytes) -> bool:
    """True when the Arrow path took the page (and then gave exactly the general path's answer)."""
    converter = RecordConverter()
    page = read_page(body, converter)
    if page is None:
        return False
    batch, token, total, counts = general_path(body)
    assert page.payload.equals(batch, check_metadata=True)
    assert page.token == token and page.received == batch.num_rows and page.total == total
    assert page.span_ms == records_span(orjson.loads(body)["records"])
    assert converter.counts() == counts
    return True


def page_body(records: list[Any], token: str | None = "tok") -> bytes:
    return orjson.dumps({"records": records, "total": len(records), "page": 1, "search_token": token})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page=WELL_TYPED, token=st.one_of(st.none(), st.text(min_size=1, max_size=5)))
def test_well_typed_pages_give_the_general_paths_batch(page: list[Any], token: str | None) -> None:
    assert_same_as_general_path(page_body(page, token))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page=any_records)
def test_any_page_the_arrow_path_takes_gives_the_general_paths_batch(page: list[Any]) -> None:
    body = page_body(page)
    try:
        general_path(body)
    except ValueError:  # a record the general path refuses: the Arrow path must not take it either
        assert read_page(body, RecordConverter()) is None
        return
    assert_same_as_general_path(body)


NUMBER_TEXT = st.one_of(
    st.integers(-(10**6), 10**6).map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr)
)
# Well-typed records with the drift the Arrow path reads: numbers as strings (also not numbers at all),
# floats for integers, unknown fields of strings or integers on some records.
DRIFTED = st.lists(
    st.fixed_dictionaries(
        {"uuid": st.uuids().map(str), "timestamp": st.just("2024-07-31T12:43:09.000-03:00")},
        optional={
            "agent_id": st.one_of(
                st.none(), st.integers(-(2**63), 2**63 - 1), NUMBER_TEXT, st.floats(-1e6, 1e6), st.just("n/a")
            ),
            "num_segments": st.one_of(
                st.none(), st.integers(-(2**33), 2**33), NUMBER_TEXT, st.floats(-1e3, 1e3)
            ),
            "cpc": st.one_of(
                st.none(), st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6), NUMBER_TEXT, STRINGS
            ),
            "agent": STRINGS,
            "duration": HMS,
            "recording_url": st.text(max_size=12),
            "score": st.integers(-(2**63), 2**63 - 1),
        },
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page=DRIFTED)
def test_drifted_pages_the_arrow_path_takes_give_the_general_paths_batch(page: list[Any]) -> None:
    assert_same_as_general_path(page_body(page))


def test_the_stand_ins_drifted_pages_take_the_arrow_path(make_stand_in: Any) -> None:
    """Drift as the stand-in makes it (numbers as strings, floats for integers, unknown and missing
    fields): every page still goes through Arrow, and gives the general path's batch."""
    api = make_stand_in(type_drift=0.05)
    params = {"key": api.api_key, "start_date": "2024-03-05", "end_date": "2024-03-05", "per_page": "500"}
    taken, bodies = 0, b""
    for page in (1, 2, 3):
        body = requests.get(f"{api.url}/api/v2/cdr", params={**params, "page": str(page)}, timeout=30).content
        bodies += body
        taken += assert_same_as_general_path(body)
    assert taken == 3
    # The drift was there: an unknown field, a number sent as a string, a float for an integer.
    assert b'"recording_url":' in bodies
    assert b'"cpc":"' in bodies or b'"agent_id":"' in bodies
    assert re.search(rb'"num_segments":-?\d+\.', bodies)


def test_drifted_pages_with_spaces_in_the_json_land_the_same_rows(make_stand_in: Any) -> None:
    """The renames need compact JSON (`"cpc":"`); a server that writes `"cpc": "0.1"` must still be
    read exactly: such a page leaves the Arrow path instead of being misread."""
    api = make_stand_in(type_drift=0.05)
    params = {"key": api.api_key, "start_date": "2024-03-05", "end_date": "2024-03-05", "per_page": "500"}
    body = requests.get(f"{api.url}/api/v2/cdr", params=params, timeout=30).content
    spaced = json.dumps(orjson.loads(body), indent=1, ensure_ascii=False).encode()
    assert b'"cpc": "' in spaced or b'"agent_id": "' in spaced
    batch = CDRBatches().read(spaced).payload
    assert batch.equals(general_path(spaced)[0])


def test_the_references_sample_response_takes_the_arrow_path() -> None:
    assert assert_same_as_general_path(SAMPLE_RESPONSE)


def test_the_stand_ins_pages_take_the_arrow_path(api: Any) -> None:
    """The fast path is not dead code: a real day from the stand-in, page after page, goes through it."""
    params = {"key": api.api_key, "start_date": "2024-03-05", "end_date": "2024-03-05", "per_page": "1000"}
    taken = 0
    for page in (1, 2, 3):
        body = requests.get(f"{api.url}/api/v2/cdr", params={**params, "page": str(page)}, timeout=30).content
        taken += assert_same_as_general_path(body)
    assert taken == 3


# Drift the Arrow path reads (made readable in the bytes first): the same batch as the general path.
READABLE_DRIFT = {
    "a string for an integer": [call(1, agent_id="56215"), call(2)],
    "a float for an integer": [call(1, agent_id=2.0), call(2, agent_id=7)],
    "a fractional float for an integer": [call(1, num_segments=2.5), call(2)],
    "a string for a number": [call(1, cpc="0.1"), call(2)],
    "a string that is no number": [call(1, cpc="n/a"), call(2, agent_id="x")],
    "an integer for a number": [call(1, cpc=1)],
    "an unknown field": [call(1, brand_new=1), call(2)],
    "an unknown text field on some records": [call(1, recording_url="https://r/1.mp3"), call(2)],
    "missing fields": [{"uuid": "u-1", "timestamp": "2024-07-31T12:43:09.000-03:00"}, call(2)],
}


@pytest.mark.parametrize("records", READABLE_DRIFT.values(), ids=READABLE_DRIFT.keys())
def test_drift_arrow_can_read_stays_on_the_arrow_path(records: list[Any]) -> None:
    assert assert_same_as_general_path(page_body(records))


DRIFT = {
    "a number for a string": [call(1, wrapup_code=101)],
    "a boolean": [call(1, cpc=True)],
    "an unknown field sent as null": [call(1, brand_new=None), call(2, brand_new=1)],
    "an unknown nested field": [call(1, brand_new={"a": 1})],
    "an unknown field of ints and floats": [call(1, brand_new=1), call(2, brand_new=1.5)],
    "an unknown sla key": [call(1, sla={"time_to_reply": "00:00:01", "x": "y"})],
    "sla as an array": [call(1, sla=[{"time_to_reply": "00:00:01"}])],
    "an integer beyond int64": [call(1, agent_id=2**64 - 1)],
    "segments beyond int32": [call(1, num_segments=2**40)],
    "a record that is not an object": [call(1), 5],
    "a null record": [call(1), None],
    "a null uuid": [call(1, uuid=None)],
    "an empty uuid": [call(1, uuid="")],
    "an integer uuid": [call(1, uuid=7)],
    "a key named like the renames": [call(1, **{"cpc~as-string": "1"})],
}


@pytest.mark.parametrize("records", DRIFT.values(), ids=DRIFT.keys())
def test_drift_goes_the_general_way(records: list[Any]) -> None:
    assert read_page(page_body(records), RecordConverter()) is None


ODD_BODIES = {
    "invalid JSON": b'{"records": [{"uuid": "a"}',
    "two documents": page_body([call(1)]) + b"\n" + page_body([call(2)]),
    "a duplicated key": b'{"records": [{"uuid": "a", "uuid": "b"}], "search_token": null}',
    "invalid UTF-8": b'{"records": [{"uuid": "a", "agent": "\xff\xfe"}], "search_token": null}',
    "a lone surrogate": b'{"records": [{"uuid": "a", "agent": "\\ud800"}], "search_token": null}',
    "no records list": b'{"records": null, "search_token": null}',
    "a list, not an object": b"[]",
    "an empty token": page_body([call(1)], token=""),
    "a number as token": b'{"records": [], "search_token": 5}',
    "an unknown field sent as null, a space before its colon": page_body(
        [call(1, brand_new="x"), call(2, brand_new="y")]
    ).replace(b'"brand_new":"y"', b'"brand_new" :null'),
}


@pytest.mark.parametrize("body", ODD_BODIES.values(), ids=ODD_BODIES.keys())
def test_odd_bodies_go_the_general_way(body: bytes) -> None:
    assert read_records(body) is None


def test_a_pretty_printed_page_still_takes_the_arrow_path() -> None:
    body = orjson.dumps({"records": [call(1), call(2)], "search_token": None}, option=orjson.OPT_INDENT_2)
    assert assert_same_as_general_path(body)


def test_key_positions_of_another_body_are_refused() -> None:
    """The scan's key positions are reused by the read only for the very body they were found in."""
    body, other = page_body([call(1, agent_id="7")]), page_body([call(2, agent_id="8")])
    with pytest.raises(ValueError, match="another body"):
        read_records(body, keys=PageKeys(other))
    given_keys = read_page(body, RecordConverter(), keys=PageKeys(body))
    assert given_keys is not None and given_keys.payload.equals(read_page(body, RecordConverter()).payload)
