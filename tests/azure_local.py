"""A real Azure Blob Storage emulator for the tests: Azurite (npm, pinned in .ci/azurite; `make
azurite` installs it), started on a free loopback port with a throwaway workspace, and stopped at
the end; plus its connection string and containers.

The account is Azurite's well-known development account: its key is published by Microsoft and
opens nothing but a local emulator. The connection string is still handled as a secret would be
(never logged, never put in a URL).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AZURITE_BLOB = ROOT / ".ci" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (https://learn.microsoft.com/azure/storage/common/storage-use-azurite).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(endpoint: str) -> str:
    """The connection string of Azurite's development account at ``endpoint`` (http://127.0.0.1:port)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={endpoint}/{ACCOUNT};"
    )


def _binary() -> str:
    if AZURITE_BLOB.exists():
        return str(AZURITE_BLOB)
    found = shutil.which("azurite-blob")
    assert found, "Azurite is not installed: run `make azurite` (npm ci in .ci/azurite; make test does)"
    return found


@contextmanager
def azurite_blob() -> Iterator[str]:
    """Run one azurite-blob; yields its connection string."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace = tempfile.mkdtemp(prefix="cdr-tests-azurite-")
    command = [
        _binary(),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        workspace,
        "--silent",
        # adlfs' azure-storage-blob speaks a newer API version than Azurite 3.35 knows.
        "--skipApiVersionCheck",
        "--disableTelemetry",  # no network here, and none wanted
    ]
    log = open(os.path.join(workspace, "azurite.log"), "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workspace)
    conn = connection_string(f"http://127.0.0.1:{port}")
    try:
        _wait_until_it_answers(conn, process, Path(workspace) / "azurite.log")
        yield conn
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        shutil.rmtree(workspace, ignore_errors=True)


def _wait_until_it_answers(conn: str, process: subprocess.Popen[bytes], log: Path) -> None:
    from azure.core.exceptions import ServiceRequestError
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(conn, retry_total=0)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"azurite-blob exited with {process.returncode}: {log.read_text()}"
        try:
            client.get_service_properties(timeout=2)
            return
        except ServiceRequestError:  # not listening yet
            assert time.monotonic() < deadline, "azurite-blob did not answer within 60 s"
            time.sleep(0.05)  # polling for the port, not waiting for time to pass


def create_container(conn: str, name: str) -> None:
    """Create container ``name`` unless it is there already."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    with suppress(ResourceExistsError):
        BlobServiceClient.from_connection_string(conn).create_container(name)
