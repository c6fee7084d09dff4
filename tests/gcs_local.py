"""The local GCS of the tests: gcp-storage-emulator in this process, and gcsfs pointed at it.

gcsfs reads three things from the environment, so the fixtures set them (and restore them after):
``STORAGE_EMULATOR_HOST`` (where GCS is), ``FSSPEC_GS_TOKEN=anon`` (no credentials: fsspec's
config for ``gs``, which child processes read when they import fsspec; this process gets the same
through ``fsspec.config.conf``), and ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``: gcsfs 2026.10
otherwise first asks the bucket's type over gRPC, which the emulator does not serve, and every
call waits for that probe's 60 s timeout. gcsfs reads that flag when it is imported, so it must be
set before the first ``import gcsfs`` of the process.

What the emulator does not do that GCS does (found against gcp-storage-emulator 2026.7.19):
``ifGenerationMatch`` preconditions are ignored (a create-only upload replaces the object), and a
resumable upload cannot be cancelled (DELETE of its session answers 501).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

GCS_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "FSSPEC_GS_TOKEN": "anon"}


@contextlib.contextmanager
def gcs_emulator() -> Iterator[str]:
    """The emulator on a free loopback port, in memory; yields its URL."""
    from gcp_storage_emulator.server import create_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def point_gcsfs(patch: pytest.MonkeyPatch, endpoint: str) -> None:
    """gcsfs (here and in child processes) at the emulator, anonymous, without the gRPC probe."""
    for name, value in GCS_ENV.items():
        patch.setenv(name, value)
    import fsspec.config
    import gcsfs

    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
        raise RuntimeError(
            "gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false was set: every call "
            "to the emulator would wait out a 60 s gRPC probe"
        )
    patch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    patch.setitem(fsspec.config.conf, "gs", {**fsspec.config.conf.get("gs", {}), "token": "anon"})
    gcsfs.GCSFileSystem.clear_instance_cache()  # none made for another endpoint is reused


def create_bucket(name: str) -> None:
    """A bucket on the emulator gcsfs points at (point_gcsfs first); there already is fine."""
    import fsspec

    fs = fsspec.filesystem("gs")
    fs.invalidate_cache()
    if not fs.exists(name):
        fs.mkdir(name)
