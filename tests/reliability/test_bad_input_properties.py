"""Property-based tests: arbitrary filters and arbitrary JSON records give a clear error or a typed result.

Never a crash deep inside (TypeError, KeyError, ArrowInvalid...), never a filter or a record dropped
silently. Example counts are modest to keep CI quick; failures shrink to a minimal example.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_cdr.api.errors import CDRQueryError
from airflow_provider_cdr.api.query import FILTER_NAMES, CDRQuery, build_query
from airflow_provider_cdr.convert.records import RecordConverter
from airflow_provider_cdr.convert.schema import CDR_SCHEMA
from airflow_provider_cdr.tasks.arguments import check_filters

QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", "0", "0.1", "12:34:56", "48:16:27", "-1", "1e400", "2024-07-31T12:43:09.000-03:00"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
python_values = st.one_of(
    json_values,
    st.floats(),  # NaN and infinities too
    st.dates(),
    st.datetimes(timezones=st.none() | st.just(timezone.utc) | st.just(timezone(timedelta(hours=-3)))),
    st.binary(max_size=8),
    st.sets(st.integers(min_value=-5, max_value=5), max_size=3),
    st.tuples(st.text(max_size=5), st.integers()),
    st.builds(object),
)
filter_names = st.one_of(st.sampled_from(sorted(FILTER_NAMES)), st.text(max_size=12))


@QUICK
@given(filters=st.dictionaries(filter_names, python_values, max_size=4))
def test_any_filters_give_a_query_or_a_clear_error(filters: dict[str, Any]) -> None:
    try:
        query = build_query(filters, "America/Sao_Paulo")
    except CDRQueryError as err:
        assert str(err).startswith("Invalid CDR filters: ")
        return
    assert isinstance(query, CDRQuery)
    params = query.as_params()
    assert set(params) == {name for name, value in filters.items() if value is not None}, "no filter dropped"
    assert all(isinstance(value, str) and value for value in params.values())


@QUICK
@given(filters=st.one_of(python_values, st.dictionaries(filter_names, python_values, max_size=3)))
def test_the_operators_filters_argument_of_any_shape_gives_a_clear_error(filters: Any) -> None:
    """A templated `filters` renders to whatever the template gave: a string, a list, a number."""
    try:
        check_filters(filters)
    except CDRQueryError as err:
        assert "filters" in str(err)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../../etc/passwd", "UTC\x00"])
def test_an_unknown_time_zone_is_a_clear_query_error(zone: str) -> None:
    with pytest.raises(CDRQueryError, match="time zone"):
        build_query({"type": "inbound"}, zone)


KNOWN_FIELDS = [
    name for name in CDR_SCHEMA.names if name not in ("extra_fields", "raw_values", "utc_offset_minutes")
]
record_values = st.one_of(json_values, st.just(math.inf).map(lambda _: 1e308))
records = st.lists(
    st.fixed_dictionaries(
        {"uuid": st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=20), json_values)},
        optional={
            **{name: record_values for name in KNOWN_FIELDS if name != "uuid"},
            "sla": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {},
                    optional={k: json_values for k in ("time_to_first_response", "time_to_resolution", "x")},
                ),
            ),
            "brand_new_field": json_values,
        },
    ),
    max_size=6,
).map(lambda page: orjson.loads(orjson.dumps(page)))  # exactly what the hook hands over


@QUICK
@given(page=records)
@example(page=[{"uuid": "u1", "duration": 1e308, "sla": {"time_to_resolution": 2**64 - 1}}])  # int64 overflow
@example(page=[{"uuid": "u1", "duration": "99999999999999999999:00:00"}])
def test_any_json_records_give_typed_rows_or_a_clear_error(page: list[Any]) -> None:
    converter = RecordConverter()
    try:
        batch = converter.to_batch(page)
    except ValueError as err:
        assert "CDR record" in str(err) and "of the page" in str(err)
        assert converter.rows == 0
        return
    assert isinstance(batch, pa.RecordBatch) and batch.schema.equals(CDR_SCHEMA)
    assert batch.num_rows == len(page) == converter.rows, "rows in == rows out"
    assert batch.column("uuid").null_count == 0
    for row, record in enumerate(page):
        for name in ("agent", "text", "queue", "from", "to", "destination_name", "type", "disposition"):
            value = record.get(name)
            if isinstance(value, str):
                assert batch.column(name)[row].as_py() == value, "a text is stored as sent"
        stored = {**orjson.loads(batch.column("extra_fields")[row].as_py() or "{}")}
        if "brand_new_field" in record:
            assert stored["brand_new_field"] == record["brand_new_field"], "an unknown field is kept"


@QUICK
@given(
    value=st.one_of(
        st.text(max_size=12),
        st.dates().map(date.isoformat),
        st.integers(),
        st.datetimes().map(datetime.isoformat),
    )
)
def test_the_day_argument_is_a_day_or_a_clear_error(value: Any) -> None:
    from airflow_provider_cdr.tasks.arguments import parse_day

    try:
        day = parse_day(value)
    except CDRQueryError as err:
        assert "is not a day in YYYY-MM-DD form" in str(err)
        return
    assert isinstance(day, date) and f"date={day.isoformat()}" == f"date={str(value).strip()}"
