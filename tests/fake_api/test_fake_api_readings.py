"""Every reading of the undocumented paging, played by the stand-in over real HTTP, switch by switch.

In-process stand-ins (cheap to start); `set_profile` switches the reading of one
server between tests. Ground truth is the in-process dataset, newest first.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from airflow_provider_cdr.fake_api import cli
from airflow_provider_cdr.fake_api.dataset import CDRDataset
from airflow_provider_cdr.fake_api.filters import Cursor, decode_token
from airflow_provider_cdr.fake_api.filters import truth as ground_truth
from airflow_provider_cdr.fake_api.profile import ServerProfile
from airflow_provider_cdr.fake_api.server import StandIn

DEFAULTS: dict[str, Any] = {
    "seed": 7,
    "records_per_day": 2500,
    "timezone": "America/Sao_Paulo",
    "now": "2024-03-20T12:00:00Z",
}
DAY = {"start_date": "2024-03-05", "end_date": "2024-03-05"}  # 2,500 records
TWO_DAYS = {"start_date": "2024-03-04", "end_date": "2024-03-05"}  # 5,000
NINE_DAYS = {"start_date": "2024-03-01", "end_date": "2024-03-09"}  # 22,500
REFUSED = {"errors": {"page": ["must be 1 when search_token is given"]}}


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    with StandIn(**DEFAULTS, in_process=True) as stand_in:
        yield stand_in


@pytest.fixture
def api(server: StandIn) -> StandIn:
    """The module's stand-in back at the default reading, without faults."""
    server.set_profile()
    server.clear_faults()
    server.reset_stats()
    return server


@pytest.fixture(scope="module")
def tied_server() -> Iterator[StandIn]:
    with StandIn(**DEFAULTS, tie_group=3, in_process=True) as stand_in:
        yield stand_in


@pytest.fixture
def tied(tied_server: StandIn) -> StandIn:
    """A stand-in whose records come in runs of 3 sharing one millisecond, at the default reading."""
    tied_server.set_profile()
    return tied_server


def get(server: StandIn, **params: Any) -> dict[str, Any]:
    response = requests.get(server.url + "/api/v2/cdr", params={"key": server.api_key, **params}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def uuids(body: dict[str, Any]) -> list[str]:
    return [record["uuid"] for record in body["records"]]


def ordered(server: StandIn, **filters: str) -> list[str]:
    """Every matching uuid, newest first: the order searches and pages cut."""
    return ground_truth(server.dataset, **filters)


def cursor_of(server: StandIn, uuid: str, **filters: str) -> Cursor:
    """The cursor a token pointing just after this record holds."""
    (record,) = get(server, uuid=uuid, **filters)["records"]
    return Cursor(round(datetime.fromisoformat(record["timestamp"]).timestamp() * 1000), uuid)


def token_cursor(body: dict[str, Any]) -> Cursor | None:
    token = body["search_token"]
    return None if token is None else decode_token(token)


def walk_search(server: StandIn, per_page: int, token: str | None, **filters: Any) -> list[dict[str, Any]]:
    """Pages 1, 2, ... of one search up to and including the first empty page."""
    bodies = []
    for page in range(1, 10_000):
        extra = {"search_token": token} if token else {}
        bodies.append(get(server, per_page=per_page, page=page, **extra, **filters))
        if not bodies[-1]["records"]:
            return bodies
    raise AssertionError("a search never ended")


def collect(server: StandIn, per_page: int, **filters: Any) -> list[str]:
    """A client for every reading: walk each search to its empty page, then follow that page's token."""
    collected: list[str] = []
    token = None
    for _ in range(50):
        bodies = walk_search(server, per_page, token, **filters)
        collected += [uuid for body in bodies for uuid in uuids(body)]
        token = bodies[-1]["search_token"]
        if token is None:
            return collected
    raise AssertionError("tokens never ended")


# -- page sizes and offsets ------------------------------------------------------------------------------
def test_page_cap_serves_gap_free_pages_smaller_than_asked(api: StandIn) -> None:
    api.set_profile(page_cap=1000)
    pages = [get(api, per_page=10000, page=page, **NINE_DAYS) for page in range(1, 12)]
    assert [len(body["records"]) for body in pages] == [1000] * 10 + [0]
    assert [uuid for body in pages for uuid in uuids(body)] == ordered(api, **NINE_DAYS)[:10000]
    assert {body["total"] for body in pages} == {10}
    assert len({body["search_token"] for body in pages}) == 1 and pages[0]["search_token"]


def test_asked_offset_skips_what_the_cap_withheld(api: StandIn) -> None:
    truth = ordered(api, **NINE_DAYS)
    api.set_profile(page_cap=1000, page_offset="asked", search_size=None)
    assert uuids(get(api, per_page=10000, page=1, **NINE_DAYS)) == truth[:1000]
    assert uuids(get(api, per_page=10000, page=2, **NINE_DAYS)) == truth[10000:11000]  # 1000..9999 lost
    exact = [uuids(get(api, per_page=1000, page=page, **NINE_DAYS)) for page in (1, 2, 3)]
    assert [uuid for page in exact for uuid in page] == truth[:3000]
    api.set_profile(page_cap=1000, page_offset="asked")  # 10,000-record searches: page 2 is past the end
    assert get(api, per_page=10000, page=2, **NINE_DAYS)["records"] == []


def test_varying_sizes_partition_the_search_and_repeat(api: StandIn) -> None:
    api.set_profile(page_sizes="varying", page_cap=150)
    bodies = walk_search(api, 200, None, **DAY)
    sizes = [len(body["records"]) for body in bodies[:-1]]
    assert [uuid for body in bodies for uuid in uuids(body)] == ordered(api, **DAY)
    assert max(sizes) <= 150 and sizes.count(1) >= 2 and len(set(sizes)) > 10
    assert {body["total"] for body in bodies} == {len(sizes)}
    assert get(api, per_page=200, page=7, **DAY) == bodies[6]
    api.set_profile(page_sizes="varying")  # no cap: up to per_page
    sizes = [len(body["records"]) for body in walk_search(api, 100, None, **DAY)[:-1]]
    assert max(sizes) <= 100 and 1 in sizes and sum(sizes) == 2500


def test_unbounded_search_pages_past_10000_records(api: StandIn) -> None:
    api.set_profile(search_size=None)
    pages = [get(api, per_page=5000, page=page, **NINE_DAYS) for page in range(1, 7)]
    assert [len(body["records"]) for body in pages] == [5000] * 4 + [2500, 0]
    assert [uuid for body in pages for uuid in uuids(body)] == ordered(api, **NINE_DAYS)
    assert {body["search_token"] for body in pages} == {None}
    assert {body["total"] for body in pages} == {5}


# -- tokens --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token_on", "token_points", "expected"),
    [
        ("every", "search", ["search", "search", "search", "search"]),
        ("last", "search", [None, None, "search", "search"]),
        ("every", "page", [999, 1999, "search", "search"]),
        ("last", "page", [None, None, "search", "search"]),
    ],
)
def test_which_pages_carry_a_token_and_where_it_points(
    api: StandIn, token_on: str, token_points: str, expected: list[Any]
) -> None:
    """Pages 1-4 of a 3,000-record search at per_page 1000: page 3 is its last, page 4 beyond it."""
    truth = ordered(api, **TWO_DAYS)
    api.set_profile(search_size=3000, token_on=token_on, token_points=token_points)
    pages = [get(api, per_page=1000, page=page, **TWO_DAYS) for page in (1, 2, 3, 4)]
    wanted = [
        None if where is None else cursor_of(api, truth[2999 if where == "search" else where], **TWO_DAYS)
        for where in expected
    ]
    assert [token_cursor(body) for body in pages] == wanted


def test_the_last_search_points_nowhere_but_its_pages_still_do(api: StandIn) -> None:
    truth = ordered(api, **TWO_DAYS)
    api.set_profile(search_size=3000, token_points="page")
    token = get(api, per_page=1000, **TWO_DAYS)["search_token"]  # after record 999
    token = get(api, per_page=3000, search_token=token, **TWO_DAYS)["search_token"]  # after 3999: the last
    pages = [get(api, per_page=600, page=page, search_token=token, **TWO_DAYS) for page in (1, 2, 3)]
    assert [uuid for body in pages for uuid in uuids(body)] == truth[4000:]
    assert [token_cursor(body) for body in pages] == [cursor_of(api, truth[4599], **TWO_DAYS), None, None]


def test_a_page_token_with_page_1_continues_right_after_the_page(api: StandIn) -> None:
    api.set_profile(search_size=3000, token_points="page")
    collected, token = [], None
    for _ in range(20):
        body = get(api, per_page=700, **TWO_DAYS, **({"search_token": token} if token else {}))
        collected += uuids(body)
        token = body["search_token"]
        if token is None:
            break
    assert collected == ordered(api, **TWO_DAYS)


@pytest.mark.parametrize(
    ("token_on", "token_points", "sizes"),
    list(itertools.product(("every", "last"), ("search", "page"), ("constant", "varying"))),
)
def test_following_tokens_collects_exactly_the_truth(
    api: StandIn, token_on: str, token_points: str, sizes: str
) -> None:
    api.set_profile(
        search_size=2000, token_on=token_on, token_points=token_points, page_sizes=sizes, page_cap=800
    )
    collected = collect(api, 1000, **TWO_DAYS)
    assert collected == ordered(api, **TWO_DAYS)
    assert set(collected) == api.truth(**TWO_DAYS)


# -- total, page with token, edge ties ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reading", "expected"),
    [("pages", [4, 4, 1]), ("records", [10000, 10000, 2500]), ("matches", [22500, 12500, 2500])],
)
def test_total_readings(api: StandIn, reading: str, expected: list[int]) -> None:
    api.set_profile(total=reading)
    totals, token = [], None
    for _ in range(3):
        body = get(api, per_page=3000, **NINE_DAYS, **({"search_token": token} if token else {}))
        totals.append(body["total"])
        token = body["search_token"]
    assert totals == expected and token is None


def test_total_absent_leaves_the_key_out(api: StandIn) -> None:
    api.set_profile(total="absent")
    assert list(get(api, per_page=5, **DAY)) == ["records", "page", "search_token"]


def test_page_with_token_refused_only_past_page_1(api: StandIn) -> None:
    api.set_profile(search_size=100)
    token = get(api, per_page=10, **DAY)["search_token"]
    assert get(api, per_page=10, page=2, search_token=token, **DAY)["records"]  # accepted by default
    api.set_profile(search_size=100, page_with_token="refuse")
    params = {"key": api.api_key, "per_page": 10, "search_token": token, **DAY}
    refused = requests.get(api.url + "/api/v2/cdr", params={**params, "page": 2}, timeout=30)
    assert refused.status_code == 422 and refused.json() == REFUSED
    assert get(api, per_page=10, page=1, search_token=token, **DAY)["records"]
    assert get(api, per_page=10, page=2, **DAY)["records"]


@pytest.mark.parametrize(("edge_ties", "resumes_at"), [("skip", 1000), ("resend", 999)])
def test_edge_ties_resend_the_tokens_millisecond(tied: StandIn, edge_ties: str, resumes_at: int) -> None:
    """Runs of 3 from the newest: a 1,000-record search ends on the first of a run of ties (999-1001)."""
    tied.set_profile(search_size=1000, edge_ties=edge_ties)
    truth = ordered(tied, **DAY)
    first = get(tied, per_page=1000, **DAY)
    second = get(tied, per_page=1000, search_token=first["search_token"], **DAY)
    assert uuids(first) == truth[:1000]
    assert uuids(second) == truth[resumes_at : resumes_at + 1000]
    stamps = [r["timestamp"] for r in first["records"][-1:] + second["records"][:3]]
    assert len(set(stamps)) == (1 if edge_ties == "resend" else 2)


# -- lookups -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hourly_server() -> Iterator[StandIn]:
    with StandIn(**DEFAULTS, hour_edges=True, in_process=True) as stand_in:
        yield stand_in


@pytest.mark.parametrize(
    ("start_bound", "end_bound", "at_start", "at_end"),
    [
        ("inclusive", "second", True, True),
        ("exclusive", "second", False, True),
        ("inclusive", "instant", True, True),
        ("inclusive", "exclusive", True, False),
        ("exclusive", "exclusive", False, False),
    ],
)
def test_datetime_bounds_and_records_on_the_hour(
    hourly_server: StandIn, start_bound: str, end_bound: str, at_start: bool, at_end: bool
) -> None:
    """A record at exactly 10:00:00.000 and one at 12:00:00.000, asked 10:00:00..12:00:00."""
    hourly_server.set_profile(start_bound=start_bound, end_bound=end_bound)
    local = ZoneInfo(DEFAULTS["timezone"])
    on_the_hour = {
        hour: record["uuid"]
        for record in hourly_server.dataset.records_for_day(date(2024, 3, 5))
        for hour in (10, 12)
        if datetime.fromisoformat(record["timestamp"]).astimezone(local).time() == time(hour)
    }
    assert set(on_the_hour) == {10, 12}, "hour_edges puts a record on each hour"
    window = {
        "start_datetime": "2024-03-05T10:00:00",
        "end_datetime": "2024-03-05T12:00:00",
        "per_page": 10000,
    }
    got = set(uuids(get(hourly_server, **window)))
    assert (on_the_hour[10] in got, on_the_hour[12] in got) == (at_start, at_end)
    hourly_server.set_profile()


def lookup(server: StandIn, **params: Any) -> requests.Response:
    return requests.get(
        server.url + "/api/v2/cdr/agents", params={"key": server.api_key, **params}, timeout=30
    )


def test_lookup_paging_honoured_or_ignored(api: StandIn) -> None:
    agents = api.dataset.lookups()["agents"]
    assert lookup(api, per_page=5, page=2).json() == agents  # ignored by default
    api.set_profile(lookup_paging="honour")
    pages = [lookup(api, per_page=25, page=page).json() for page in (1, 2, 3, 4)]
    assert [len(page) for page in pages] == [25, 25, 10, 0]
    assert [agent for page in pages for agent in page] == agents
    assert lookup(api).json() == agents  # per_page defaults to 1000
    bad = lookup(api, per_page=0)
    assert bad.status_code == 422 and list(bad.json()["errors"]) == ["per_page"]
    api.set_profile(lookup_paging="honour", page_cap=10)
    assert lookup(api, per_page=25, page=2).json() == agents[10:20]


# -- the tie_group dataset knob -------------------------------------------------------------------------------
def test_tie_group_runs_share_one_millisecond_and_keep_the_day_edges(tied: StandIn) -> None:
    stamps = [r["timestamp"] for r in get(tied, per_page=10000, **DAY)["records"]]
    runs = [stamps[k : k + 3] for k in range(0, len(stamps), 3)]
    assert len(stamps) == 2500 and all(len(set(run)) == 1 for run in runs)
    assert len({run[0] for run in runs}) == len(runs)  # each run a millisecond of its own
    assert (stamps[0], stamps[-1]) == ("2024-03-05T23:59:59.999-03:00", "2024-03-05T00:00:00.000-03:00")


def test_tie_group_1_leaves_the_data_as_it_was() -> None:
    day = date(2024, 3, 5)
    plain = CDRDataset(7, 2500, "America/Sao_Paulo").day_table(day)
    explicit = CDRDataset(7, 2500, "America/Sao_Paulo", tie_group=1).day_table(day)
    assert explicit.blob == plain.blob
    # Pinned from the generator before tie_group existed.
    assert hashlib.sha256(plain.blob).hexdigest().startswith("0fd9c5fd8fd68d03")
    records = plain.records()
    assert [(records[k]["uuid"], records[k]["timestamp"]) for k in (0, 1234, -1)] == [
        ("51c64e6f-99ed-430b-a58f-a8e93eaaaf88", "2024-03-05T23:59:59.999-03:00"),
        ("e912017e-bb03-4c23-b5e8-5b8c03a0a007", "2024-03-05T12:14:48.330-03:00"),
        ("2737ecd6-dbd6-4166-81e0-05baec79ca74", "2024-03-05T00:00:00.000-03:00"),
    ]


# -- the new faults, and old faults under other readings ---------------------------------------------------
def test_backward_token_points_an_hour_newer_than_the_one_sent(api: StandIn) -> None:
    api.set_profile(search_size=500)
    api.set_faults(rate_backward_token=1.0)
    first = get(api, per_page=500, **DAY)
    assert token_cursor(first) == cursor_of(api, ordered(api, **DAY)[499], **DAY)  # no token sent: normal
    sent = token_cursor(first)
    assert sent is not None
    backward = token_cursor(get(api, per_page=500, search_token=first["search_token"], **DAY))
    assert backward == Cursor(sent.ms + 3_600_000, sent.uuid)


def test_drop_record_leaves_a_page_one_short_and_offsets_unchanged(api: StandIn) -> None:
    truth = ordered(api, **DAY)
    api.set_profile(total="records")
    api.set_faults(rate_drop_record=1.0)
    pages = [get(api, per_page=100, page=page, **DAY) for page in (2, 3)]
    assert [uuids(body) for body in pages] == [truth[100:199], truth[200:299]]
    assert {body["total"] for body in pages} == {2500}


def test_an_oversized_page_carries_the_next_pages_first_record(api: StandIn) -> None:
    truth = ordered(api, **DAY)
    api.set_faults(rate_oversized_page=1.0)
    pages = [get(api, per_page=100, page=page, **DAY) for page in (1, 2)]
    assert [uuids(body) for body in pages] == [truth[0:101], truth[100:201]]
    last = get(api, per_page=100, page=len(truth) // 100 + 1, **DAY)
    assert uuids(last) == truth[len(truth) // 100 * 100 :]  # nothing beyond the search to add


def test_repeat_page_repeats_the_previous_varying_page(api: StandIn) -> None:
    api.set_profile(page_sizes="varying", page_cap=300)
    pages = [get(api, per_page=300, page=page, **DAY) for page in (2, 3)]
    api.set_faults(rate_repeat_page=1.0)
    repeated = get(api, per_page=300, page=3, **DAY)
    assert repeated["records"] == pages[0]["records"] != pages[1]["records"]


def test_empty_token_page_restarts_a_page_token_search(api: StandIn) -> None:
    api.set_profile(search_size=1000, token_points="page", token_on="last")
    normal = get(api, per_page=1000, **DAY)
    api.set_faults(rate_empty_token_page=1.0)
    empty = get(api, per_page=1000, search_token=normal["search_token"], **DAY)
    api.clear_faults()
    resumed = get(api, per_page=1000, search_token=empty["search_token"], **DAY)
    assert empty["records"] == [] and uuids(resumed) == ordered(api, **DAY)[1000:2000]


# -- switches: CLI, StandIn, admin routes -----------------------------------------------------------------
EVERY_FLAG = [
    "--page-cap", "1000", "--page-sizes", "varying", "--search-size", "none", "--token-on", "last",
    "--token-points", "page", "--total", "matches", "--page-with-token", "refuse", "--edge-ties", "resend",
    "--lookup-paging", "honour", "--tie-group", "4",
]  # fmt: skip


def test_cli_flags_map_onto_the_profile() -> None:
    server = cli.build_server(cli.build_parser().parse_args(["--port", "0", *EVERY_FLAG]))
    try:
        assert server.app.profile == ServerProfile(
            page_cap=1000,
            page_sizes="varying",
            search_size=None,
            token_on="last",
            token_points="page",
            total="matches",
            page_with_token="refuse",
            edge_ties="resend",
            lookup_paging="honour",
        )
        assert server.app.dataset.tie_group == 4
    finally:
        server.server_close()
    plain = cli.build_server(cli.build_parser().parse_args(["--port", "0"]))
    try:
        assert plain.app.profile == ServerProfile() and plain.app.dataset.tie_group == 1
    finally:
        plain.server_close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--page-cap", "0"], "page_cap"),
        (["--page-cap", "many"], "page_cap"),
        (["--search-size", "10001"], "search_size"),
        (["--page-sizes", "random"], "constant, varying"),
        (["--total", "count"], "pages, records, matches, absent"),
        (["--lookup-paging", "honor"], "ignore, honour"),
        (["--tie-group", "0"], "--tie-group"),
    ],
)
def test_bad_flags_exit_2_naming_the_problem(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["--port", "0", *argv])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_a_bad_combination_of_flags_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--port", "0", "--page-sizes", "varying", "--page-offset", "asked"]) == 2
    assert "page_offset=asked" in capsys.readouterr().err


def test_stand_in_passes_only_changed_fields_on_its_command_line() -> None:
    argv = StandIn(profile={"page_cap": "1000", "search_size": None, "total": "pages"}, tie_group=3).argv()
    tail = argv[argv.index("--tie-group") :]
    assert tail == ["--tie-group", "3", "--page-cap", "1000", "--search-size", "none"]
    assert "--tie-group" not in StandIn().argv() and "--page-cap" not in StandIn().argv()
    with pytest.raises(ValueError, match="token_on"):
        StandIn(profile={"token_on": "first"})


def test_a_subprocess_stand_in_starts_with_its_profile() -> None:
    profile = ServerProfile(page_cap=7, token_on="last")
    with StandIn(**DEFAULTS, profile=profile, tie_group=2) as server:
        assert ServerProfile.from_mapping(server.profile_config()) == profile
        records = get(server, per_page=10000, **DAY)["records"]
        assert len(records) == 7 and records[0]["timestamp"] == records[1]["timestamp"]


def test_admin_profile_round_trip_and_validation(api: StandIn) -> None:
    changed = api.set_profile(page_cap=500, total="records")
    assert changed == {**ServerProfile().to_dict(), "page_cap": 500, "total": "records"}
    assert api.profile_config() == changed
    assert api.set_profile(token_on="last") == {**ServerProfile().to_dict(), "token_on": "last"}
    for payload, named in (
        ({"page_capp": 5}, "page_capp"),
        ({"page_cap": 20000}, "page_cap"),
        ({"edge_ties": True}, "edge_ties"),
        ({"page_sizes": "varying", "page_offset": "asked"}, "page_offset"),
        ([1], "JSON object"),
    ):
        bad = requests.post(api.url + "/_admin/profile", json=payload, timeout=30)
        assert bad.status_code == 400 and named in bad.json()["error"]
    assert api.profile_config()["token_on"] == "last"  # a refused change changes nothing


def test_a_profile_change_applies_to_the_next_request(api: StandIn) -> None:
    assert len(get(api, per_page=2000, **DAY)["records"]) == 2000  # and its search is now cached
    api.set_profile(page_cap=300, search_size=1000)
    body = get(api, per_page=2000, **DAY)
    assert len(body["records"]) == 300 and body["total"] == 4 and body["search_token"]


def test_in_process_stand_in_lifecycle() -> None:
    server = StandIn(**DEFAULTS, in_process=True, profile={"total": "absent"})
    assert not server.running
    with server:
        assert server.running and server.url.startswith("http://127.0.0.1:")
        assert "total" not in get(server, per_page=1, **DAY)
        assert server.truth(**DAY) == set(ordered(server, **DAY))
    assert not server.running
    server.stop()  # a second stop is harmless
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/_admin/health", timeout=5)
