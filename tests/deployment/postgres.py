"""A throwaway PostgreSQL server on loopback: the metadata database production runs on.

Started from Debian's `postgresql` package binaries (`initdb`, `pg_ctl`) in a temporary data
directory, on a free port, with durability switched off (a test database need not survive a
power cut). `initdb` refuses to run as root, so as root the server runs as the `postgres`
user the package creates, owning its data directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.deployment.processes import free_port

# Speed over durability: this cluster lives for one test session.
_FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"


def find_pg_bin(name: str) -> str:
    """A PostgreSQL server binary: on PATH, or in Debian's versioned directory (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version, reverse=True)
    if not candidates:
        raise FileNotFoundError(f"{name} not found: install Debian's `postgresql` package")
    return candidates[0]


def _version(path: str) -> float:
    try:
        return float(Path(path).parts[-3])
    except ValueError:
        return 0.0


class LocalPostgres:
    """One PostgreSQL cluster with database `airflow` (user `airflow`, trust auth, loopback only)."""

    user = "airflow"
    database = "airflow"

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cdr-deploy-pg-"))
        self.data_dir = self.root / "data"
        self._run_as = self._service_user()

    @staticmethod
    def _service_user() -> list[str]:
        """`runuser -u postgres --` as root (initdb refuses root), nothing otherwise."""
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._run_as, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> LocalPostgres:
        if self._run_as:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            find_pg_bin("initdb"), "-D", str(self.data_dir), "-U", self.user, "-A", "trust", "--no-sync"
        )
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} {_FAST}"
        log = self.root / "postgres.log"
        self._run(
            find_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(log), "-o", options, "-w", "start"
        )
        self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                connection = psycopg2.connect(
                    host="127.0.0.1", port=self.port, user=self.user, dbname="postgres"
                )
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {self.database}")
        connection.close()

    def stop(self) -> None:
        """Stop the server (immediate: nothing to keep) and remove its data directory."""
        if (self.data_dir / "postmaster.pid").exists():
            try:
                self._run(find_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            except subprocess.SubprocessError:
                _kill_postmaster(self.data_dir / "postmaster.pid")
        shutil.rmtree(self.root, ignore_errors=True)


def _kill_postmaster(pid_file: Path) -> None:
    """Last resort when pg_ctl cannot stop it: SIGKILL the postmaster named in its pid file."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 9)
    except (OSError, ValueError, IndexError):
        pass
