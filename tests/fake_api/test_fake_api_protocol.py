"""The stand-in's wire protocol over real HTTP: auth, errors, body shape, lookups, admin routes."""

from __future__ import annotations

import threading
from datetime import date

import pytest
import requests

from airflow_provider_cdr.fake_api.server import StandIn

DAY = {"start_date": "2024-03-05", "end_date": "2024-03-05"}


def get(server: StandIn, path: str = "/api/v2/cdr", **params: object) -> requests.Response:
    return requests.get(server.url + path, params={"key": server.api_key, **params}, timeout=30)


@pytest.mark.parametrize(
    "path", ["/api/v2/cdr", "/api/v2/cdr/agents", "/api/v2/cdr/wrapup_codes", "/api/v2/cdr/deleted_agents"]
)
@pytest.mark.parametrize("key", [None, "", "wrong"])
def test_wrong_or_missing_key_is_401(api: StandIn, path: str, key: str | None) -> None:
    params = {} if key is None else {"key": key}
    response = requests.get(api.url + path, params=params, timeout=30)
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid api_key"}


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"page": "0"}, "page"),
        ({"page": "x"}, "page"),
        ({"per_page": "0"}, "per_page"),
        ({"per_page": "10001"}, "per_page"),
        ({"per_page": "1.5"}, "per_page"),
        ({"start_date": "2024-3-5"}, "start_date"),
        ({"end_date": "2024-02-30"}, "end_date"),
        ({"start_datetime": "2024-03-05 10:00:00"}, "start_datetime"),
        ({"end_datetime": "2024-03-05T10:00:00-03:00"}, "end_datetime"),
        ({"type": "inbound,fax"}, "type"),
        ({"disposition": "ANSWERED"}, "disposition"),
        ({"event": "sneeze"}, "event"),
        ({"end_reason": "agent disconnect"}, "end_reason"),
        ({"agent_ids": "1,x"}, "agent_ids"),
        ({"queue_ids": ","}, "queue_ids"),
        ({"wrapup_codes": "01a1"}, "wrapup_codes"),
        ({"duration_from": "ten"}, "duration_from"),
        ({"queue_time_to": "1.5"}, "queue_time_to"),
        ({"first_seen": "yes"}, "first_seen"),
        ({"search_token": "not-a-token"}, "search_token"),
        ({"search_token": "WzEsMl0"}, "search_token"),  # decodes to [1,2]: not ours
    ],
)
def test_malformed_parameter_is_422_naming_it(api: StandIn, params: dict, bad: str) -> None:
    response = get(api, **params)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert list(errors) == [bad]
    assert errors[bad] and all(isinstance(message, str) for message in errors[bad])


def test_422_lists_every_bad_parameter_and_range_message(api: StandIn) -> None:
    response = get(api, per_page="20000", type="fax", start_date="yesterday")
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert errors["per_page"] == ["must be between 1 and 10000"]
    assert set(errors) == {"per_page", "type", "start_date"}


def test_unknown_parameters_and_empty_values_are_ignored(api: StandIn) -> None:
    plain = get(api, **DAY, per_page=50).json()
    noisy = get(api, **DAY, per_page=50, colour="blue", type="", agent_ids="").json()
    assert noisy == plain


def test_records_body_headers_and_keep_alive(api: StandIn) -> None:
    with requests.Session() as session:
        first = session.get(api.url + "/api/v2/cdr", params={"key": api.api_key, **DAY, "per_page": 5})
        second = session.get(api.url + "/api/v2/cdr", params={"key": api.api_key, **DAY, "per_page": 5})
    assert first.raw.version == 11
    assert first.headers["Content-Type"] == "application/json"
    assert int(first.headers["Content-Length"]) == len(first.content)
    body = first.json()
    assert list(body) == ["records", "total", "page", "search_token"]
    assert len(body["records"]) == 5 and body["page"] == 1 and body["total"] == 500
    assert body["search_token"] is None
    assert second.json() == body
    assert api.stats()["requests"] == 2


def test_lookups_shapes_and_consistency_with_records(api: StandIn) -> None:
    lookups = {name: get(api, f"/api/v2/cdr/{name}").json() for name in api.dataset.lookups()}
    assert lookups == api.dataset.lookups()
    assert all(set(a) == {"id", "name", "email", "team_id"} for a in lookups["agents"])
    assert all(set(a) == {"id", "name", "deleted_at"} for a in lookups["deleted_agents"])
    assert all(set(q) == {"id", "name"} for name in ("queues", "teams", "campaigns") for q in lookups[name])
    assert all(isinstance(w["id"], str) and len(w["id"]) == 4 for w in lookups["wrapup_codes"])
    records = get(api, **DAY, per_page=10000).json()["records"]
    agent_ids = {a["id"] for a in lookups["agents"] + lookups["deleted_agents"]}
    assert {r["agent_id"] for r in records if r["agent_id"] is not None} <= agent_ids
    assert {r["queue"] for r in records if r.get("queue")} <= {q["name"] for q in lookups["queues"]}
    assert {r["wrapup_code"] for r in records if r["wrapup_code"]} <= {
        w["id"] for w in lookups["wrapup_codes"]
    }
    # The id lists filter the records they name.
    queue = lookups["queues"][0]
    by_queue = get(api, **DAY, per_page=10000, queue_ids=str(queue["id"]), type="inbound").json()["records"]
    assert by_queue and {r["queue"] for r in by_queue} == {queue["name"]}


def test_unknown_routes_are_404(api: StandIn) -> None:
    assert get(api, "/api/v2/cdr/nothing").status_code == 404
    assert requests.get(api.url + "/elsewhere", timeout=30).status_code == 404
    assert requests.post(api.url + "/api/v2/cdr", params={"key": api.api_key}, timeout=30).status_code == 405


def test_admin_health_stats_reset(api: StandIn) -> None:
    assert requests.get(api.url + "/_admin/health", timeout=30).json() == {"ok": True}
    get(api, per_page=1, **DAY)
    # A day asked from a second before its midnight (an exclusive start) is still that day.
    get(api, per_page=1, start_datetime="2024-03-05T23:59:59", end_datetime="2024-03-07T00:00:00")
    get(api, "/api/v2/cdr/teams")
    requests.get(api.url + "/api/v2/cdr", params={"key": "wrong"}, timeout=30)
    stats = api.stats()
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 3, "401": 1}
    assert stats["by_path"] == {"/api/v2/cdr": 3, "/api/v2/cdr/teams": 1}
    assert sum(stats["per_second"].values()) == 4
    # Requests with a window are also counted under the day it is about (a range's tasks).
    by_day = stats["per_second_by_day"]
    assert sorted(by_day) == ["2024-03-05", "2024-03-06"]
    assert [sum(seconds.values()) for _, seconds in sorted(by_day.items())] == [1, 1]
    assert stats["max_per_second"] >= 1 and stats["max_in_flight"] == 1
    api.reset_stats()
    assert api.stats()["requests"] == 0


def test_stats_count_concurrent_requests_in_flight(api: StandIn) -> None:
    api.set_faults(latency_ms=300)
    threads = [threading.Thread(target=get, args=(api,), kwargs={"per_page": 1, **DAY}) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert api.stats()["max_in_flight"] >= 2


def test_admin_faults_round_trip_and_validation(api: StandIn) -> None:
    config = api.set_faults(rate_429=0.25, edge_repeat=True)
    assert config["rate_429"] == 0.25 and config["edge_repeat"] is True
    assert requests.get(api.url + "/_admin/faults", timeout=30).json() == config
    bad = requests.post(api.url + "/_admin/faults", json={"rate_428": 1}, timeout=30)
    assert bad.status_code == 400 and "rate_428" in bad.json()["error"]
    assert requests.post(api.url + "/_admin/faults", json={"rate_5xx": 2}, timeout=30).status_code == 400
    api.clear_faults()
    assert api.faults_config()["rate_429"] == 0.0


def test_admin_truth_ignores_faults_and_paging(api: StandIn) -> None:
    api.set_faults(rate_429=1.0)
    truth = requests.get(
        api.url + "/_admin/truth", params={**DAY, "per_page": 3, "page": 9}, timeout=30
    ).json()
    assert truth["count"] == 2500 == len(set(truth["uuids"]))
    records = api.dataset.records_for_day(date(2024, 3, 5))
    assert api.truth(**DAY, type="whatsapp") == {r["uuid"] for r in records if r["type"] == "whatsapp"}
    bad = requests.get(api.url + "/_admin/truth", params={"type": "fax"}, timeout=30)
    assert bad.status_code == 422


def test_admin_clock_moves_what_the_server_has_ingested(make_stand_in: object) -> None:
    """A frozen clock moved forward lets a day's records "arrive" while a client waits."""
    server = make_stand_in(now="2024-03-05T02:00:00Z", timezone="America/Sao_Paulo")  # type: ignore[operator]
    try:
        assert server.truth(**DAY) == set()
        assert server.set_clock(now="2024-03-06T04:00:00Z") == {
            "now": "2024-03-06T04:00:00+00:00",
            "ingest_lag_s": 0.0,
        }
        assert len(server.truth(**DAY)) > 0
        assert get(server, **DAY).json()["records"]
    finally:
        server.set_clock(now="2024-03-05T02:00:00Z")
