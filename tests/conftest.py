"""Session-wide test setup: an isolated AIRFLOW_HOME and the CDR API stand-in as fixtures.

AIRFLOW_HOME is set at import time, before any test module imports airflow, so
no test reads or writes the developer's ~/airflow.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

# This module runs twice in a session: as pytest's conftest, and as `tests.conftest` for the
# modules that share its helpers. The second run keeps the first's AIRFLOW_HOME: Airflow has read
# that one, and a subprocess given os.environ (an API server, a task) must find the same DB.
_AIRFLOW_HOME = os.environ.get("CDR_TESTS_AIRFLOW_HOME", "")
if not _AIRFLOW_HOME:
    _AIRFLOW_HOME = tempfile.mkdtemp(prefix="cdr-tests-airflow-home-")
    atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
    os.environ["CDR_TESTS_AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
# gcsfs reads this once, when first imported (by whichever test that is): without it every call to
# the local GCS emulator first waits out a 60 s gRPC probe (tests/gcs_local.py).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
# The stand-in listens on loopback: a developer's HTTP proxy must not see (or break) that traffic.
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name), "127.0.0.1", "localhost"]))

import pytest  # noqa: E402

from airflow_provider_cdr.fake_api.server import StandIn  # noqa: E402

STAND_IN_DEFAULTS: dict[str, Any] = {
    "seed": 7,
    "records_per_day": 2500,
    "timezone": "America/Sao_Paulo",
    "now": "2024-03-20T12:00:00Z",
}


@pytest.fixture(scope="session")
def stand_in() -> Iterator[StandIn]:
    """The session's stand-in: seed 7, 2,500 records a day, São Paulo time, clock frozen at 2024-03-20 12:00Z."""
    with StandIn(**STAND_IN_DEFAULTS) as server:
        yield server


@pytest.fixture
def api(stand_in: StandIn) -> StandIn:
    """The session's stand-in with faults cleared, its default paging, and stats (and the fault request
    counter) reset."""
    stand_in.clear_faults()
    stand_in.set_profile()
    stand_in.reset_stats()
    return stand_in


@pytest.fixture(scope="session")
def make_stand_in() -> Iterator[Callable[..., StandIn]]:
    """Factory of further stand-ins (other time zone, day profiles, drift...), one per distinct params.

    Call as make_stand_in(timezone="America/New_York", day_profiles={...}); omitted
    params default to the session stand-in's. Servers are shared by equal params
    and stopped at session end; every call resets stats and restores the faults
    and the paging reading the server was started with (none unless `faults=` /
    `profile=` was given).
    """
    servers: dict[str, StandIn] = {}

    def make(**params: Any) -> StandIn:
        merged = {**STAND_IN_DEFAULTS, **params}
        key = repr(sorted((name, repr(value)) for name, value in merged.items()))
        if key not in servers:
            servers[key] = StandIn(**merged).start()
        server = servers[key]
        server.set_faults(**(server.faults.to_dict() if server.faults else {}))
        server.set_profile(**server.profile.changed())
        server.reset_stats()
        return server

    yield make
    for server in servers.values():
        server.stop()


def connection_json(server: StandIn, **extra: Any) -> str:
    """The `cdr_default` connection for a stand-in, as Airflow's AIRFLOW_CONN_* JSON form."""
    return json.dumps(
        {
            "conn_type": "cdr",
            "host": server.url,
            "password": server.api_key,
            "extra": {"timezone": server.timezone, **extra},
        }
    )


@pytest.fixture
def cdr_conn(api: StandIn, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """Point connection `cdr_default` at the session stand-in (faults cleared); yields the stand-in."""
    monkeypatch.setenv("AIRFLOW_CONN_CDR_DEFAULT", connection_json(api))
    return api


@pytest.fixture
def cdr_conn_for(monkeypatch: pytest.MonkeyPatch) -> Callable[..., StandIn]:
    """Point a connection (default `cdr_default`) at any stand-in, e.g. one from make_stand_in.

    Usage: cdr_conn_for(server, per_page=500) or cdr_conn_for(server, conn_id="cdr_ny").
    """

    def point(server: StandIn, conn_id: str = "cdr_default", **extra: Any) -> StandIn:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(server, **extra))
        return server

    return point


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A local S3-compatible server (moto in server mode) on a free loopback port."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """A local GCS (gcp-storage-emulator) on a free loopback port; `tests.gcs_local.point_gcsfs` aims
    gcsfs at it."""
    from tests.gcs_local import gcs_emulator

    with gcs_emulator() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A local Redis server (Debian's redis-server), for the shared rate limit."""
    from tests.redis_local import redis_server

    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """A local Azure Blob Storage emulator (Azurite, `make azurite`) with container ``cdr``; yields
    its connection string (Azurite's published development account: still never log it)."""
    from tests.azure_local import azurite_blob, create_container

    with azurite_blob() as conn:
        create_container(conn, "cdr")
        yield conn
