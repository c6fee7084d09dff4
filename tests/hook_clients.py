"""Both hooks behind one call, so a test can prove they behave the same: `fetch(conn_id, params)`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_cdr.hooks.cdr import CDRHook
from airflow_provider_cdr.hooks.cdr_async import CDRAsyncHook

Fetch = Callable[[str, dict[str, str]], Any]


def sync_fetch(conn_id: str, params: dict[str, str]) -> Any:
    """One records request through CDRHook (what poke() and the operator use)."""
    return CDRHook(cdr_conn_id=conn_id).fetch_page(params)


def async_fetch(conn_id: str, params: dict[str, str]) -> Any:
    """One records request through CDRAsyncHook (what the deferrable sensor's trigger uses)."""
    return asyncio.run(CDRAsyncHook(cdr_conn_id=conn_id).fetch_page(params))


BOTH_HOOKS = pytest.mark.parametrize("fetch", [sync_fetch, async_fetch], ids=["CDRHook", "CDRAsyncHook"])


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, host: str, key: str, **extra: Any) -> str:
    """A `cdr` connection through the environment, as a deployment would give it; returns its id."""
    extra.setdefault("timezone", "America/Sao_Paulo")
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "cdr", "host": host, "password": key, "extra": extra}),
    )
    return conn_id
