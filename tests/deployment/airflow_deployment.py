"""A real Airflow 3 deployment in a throwaway AIRFLOW_HOME, for end-to-end tests.

api-server, scheduler (LocalExecutor), dag-processor and triggerer run as separate processes,
as in production: deferred sensors go through the triggerer, tasks through the executor and
the execution API, backfills through the scheduler. dag.test() runs all of it in one process
and so cannot show that the provider and the example DAGs survive serialisation, a fresh
import in the triggerer, or resuming in a new task instance.

The metadata database is PostgreSQL (see postgres.py); ``CDR_TEST_DB=sqlite`` uses SQLite in
AIRFLOW_HOME instead, for a quick local run.

With `CeleryWorkers`, the executor is CeleryExecutor on a Redis broker, and each named worker is
an ``airflow celery worker`` process of its own with a hostname of its own (its Celery node name,
and the hostname Airflow records on the task instances it runs: see worker_hostname.py).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.deployment.processes import Service, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags_examples"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
EXAMPLE_DAGS = ("cdr_daily", "cdr_backfill_range", "cdr_lookups")
STARTUP_TIMEOUT = 300.0


@dataclass(frozen=True)
class CeleryWorkers:
    """CeleryExecutor: the broker, and the workers to start (their hostnames)."""

    broker_url: str
    names: tuple[str, ...] = ("worker-a", "worker-b")
    concurrency: int = 2


class AirflowDeployment:
    """The four Airflow services on one metadata database; `env` is what every component sees."""

    def __init__(
        self, database_url: str | None, extra_env: Mapping[str, str], celery: CeleryWorkers | None = None
    ) -> None:
        """`database_url`: a SQLAlchemy URL, or None for SQLite in the throwaway AIRFLOW_HOME."""
        self.celery = celery
        self.home = Path(tempfile.mkdtemp(prefix="cdr-deploy-airflow-home-"))
        # SQLite: one writer at a time; wait for the lock instead of failing with "database is locked".
        database_url = database_url or f"sqlite:///{self.home / 'airflow.db'}?timeout=60"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.services: dict[str, Service] = {}
        self.env = self._environment(database_url, extra_env)
        self.http = requests.Session()
        self.http.trust_env = False  # loopback: never through a developer's proxy
        self._token: str | None = None

    def _environment(self, database_url: str, extra_env: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "6",  # 2 cores: more processes only thrash
                "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                # Workers reach the execution API here; it must follow the api-server's port.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                # One secret for every component: the scheduler signs task tokens the api-server checks.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        if self.celery is not None:
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                    "AIRFLOW__CELERY__BROKER_URL": self.celery.broker_url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url,
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.celery.concurrency),
                    # A task whose worker died is failed (and retried) after this long without heartbeat.
                    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
                }
            )
        env.update(extra_env)
        return env

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> AirflowDeployment:
        """Migrate the database, start the four services, return once all are healthy and parsed."""
        try:
            self.airflow("db", "migrate", timeout=600)
            self._sqlite_wal()
            for component in COMPONENTS:
                log = self.home / f"{component}.log"
                self.services[component] = Service(component, [AIRFLOW, component], self.env, log)
            for name in self.celery.names if self.celery else ():
                self.services[name] = Service(
                    name, self._worker_argv(name), self._worker_env(name), self.home / f"{name}.log"
                )
            wait_for("all components healthy", self._healthy, STARTUP_TIMEOUT, pause=1.0)
            wait_for("the example DAGs parsed", self._dags_parsed, STARTUP_TIMEOUT, pause=1.0)
            if self.celery:
                wait_for("the Celery workers ready", self._workers_ready, STARTUP_TIMEOUT, pause=1.0)
        except BaseException:
            print(self.diagnostics())
            self.stop()
            raise
        return self

    def _worker_argv(self, name: str) -> list[str]:
        assert self.celery is not None
        return [
            AIRFLOW, "celery", "worker",
            "--celery-hostname", f"{name}@%h",
            "--concurrency", str(self.celery.concurrency),
            "--pid", str(self.home / f"{name}.pid"),  # two workers, one AIRFLOW_HOME: a pid file each
        ]  # fmt: skip

    def _worker_env(self, name: str) -> dict[str, str]:
        """The worker's hostname on its task instances (worker_hostname.py reads it)."""
        return {
            **self.env,
            "CDR_TEST_WORKER_HOSTNAME": name,
            # Each worker serves its task logs on a port of its own (one machine).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.deployment.worker_hostname.hostname",
        }

    def _workers_ready(self) -> bool:
        """Every worker has said it is ready (Celery's "<node> ready." line)."""
        assert self.celery is not None
        return all(
            f"{name}@" in self.services[name].tail(400) and " ready." in self.services[name].tail(400)
            for name in self.celery.names
        )

    def kill(self, name: str) -> None:
        """SIGKILL a service's whole process tree at once (a worker host lost, tasks and all)."""
        self.services.pop(name).kill()

    def _sqlite_wal(self) -> None:
        """On SQLite, write-ahead logging (kept in the file): readers stop blocking the one writer."""
        database = self.home / "airflow.db"
        if self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite") and database.exists():
            with sqlite3.connect(database) as connection:
                connection.execute("PRAGMA journal_mode=WAL")

    def stop(self) -> None:
        """Stop every service (whole process trees), then remove AIRFLOW_HOME."""
        for service in reversed(list(self.services.values())):
            service.stop()
        self.services.clear()
        self.http.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def _healthy(self) -> bool:
        for service in self.services.values():
            if not service.alive():
                raise RuntimeError(f"{service.name} exited:\n{service.tail()}")
        health = self.http.get(f"{self.base_url}/api/v2/monitor/health", timeout=10).json()
        return all(
            health.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        )

    def _dags_parsed(self) -> bool:
        found = {dag["dag_id"] for dag in self.get("/api/v2/dags", limit=100)["dags"]}
        errors = self.get("/api/v2/importErrors")["import_errors"]
        if errors:
            raise AssertionError(f"DAG import errors: {errors}")
        return found >= set(EXAMPLE_DAGS)

    def service_log(self, name: str) -> str:
        """The whole log of a running service (the scheduler's, the triggerer's...)."""
        return self.services[name].log.read_text(errors="replace")

    def diagnostics(self) -> str:
        """The last lines of each service's log, for a failing test's message."""
        return "\n".join(f"--- {s.name} ---\n{s.tail()}" for s in self.services.values())

    # -- CLI and REST API -------------------------------------------------------------------------

    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run an `airflow` CLI command against this deployment; its stdout, or an error with both streams."""
        done = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            # SimpleAuthManager with all_admins hands out an admin token without credentials.
            reply = self.http.get(f"{self.base_url}/auth/token", timeout=30)
            reply.raise_for_status()
            self._token = reply.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        reply = self.http.request(
            method, self.base_url + path, json=json, params=params, headers=self._headers(), timeout=60
        )
        if reply.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {reply.status_code} {reply.text[:2000]}")
        return reply.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, **params)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any], logical_date: str | None = None) -> str:
        """A manual run; its run_id."""
        body = {"logical_date": logical_date, "conf": conf}
        return str(self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str = "~", **params: Any) -> list[dict[str, Any]]:
        """Task instances of one run (or of every run: run_id "~"), all pages."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                limit=100,
                offset=len(found),
                **params,
            )
            found += page["task_instances"]
            if len(found) >= page["total_entries"] or not page["task_instances"]:
                return found

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """Poll until the run is success or failed; its final record from the REST API."""

        def finished() -> dict[str, Any] | None:
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        try:
            return wait_for(f"run {dag_id}/{run_id}", finished, timeout, pause=2.0)
        except TimeoutError:
            print(self.diagnostics())
            raise
