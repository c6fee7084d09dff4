"""Stand-ins for the conformance tests: in-process, one per dataset, the reading switched per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from airflow_provider_cdr.fake_api.server import StandIn
from tests.conformance.readings import BIG_DAY, BIG_DAY_SIZE, DAYS, NOW, SEED, TIMEZONE


def _start(tie_group: int) -> StandIn:
    return StandIn(
        seed=SEED,
        records_per_day=100,
        timezone=TIMEZONE,
        now=NOW,
        day_profiles={**DAYS, BIG_DAY: BIG_DAY_SIZE},
        tie_group=tie_group,
        hour_edges=True,
        in_process=True,
    ).start()


@pytest.fixture(scope="session")
def readings_stand_ins() -> Iterator[dict[int, StandIn]]:
    """Two datasets of the same days: every record on its own millisecond, and runs of 7 records
    sharing one millisecond (so search and page edges fall inside groups of ties); both with a record
    on the first millisecond of every hour, where a day's slices meet."""
    servers = {tie_group: _start(tie_group) for tie_group in (1, 7)}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def reading_stand_in(readings_stand_ins: dict[int, StandIn]) -> Callable[..., StandIn]:
    """The stand-in of a dataset, playing a reading, with faults off and counters zeroed."""

    def play(fields: dict, tie_group: int = 1) -> StandIn:
        server = readings_stand_ins[tie_group]
        server.set_profile(**fields)
        server.clear_faults()
        server.reset_stats()
        return server

    return play
