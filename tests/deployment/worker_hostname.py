"""``[core] hostname_callable`` of the Celery test's workers: each records its own name on the task
instances it runs, so a test can tell which worker ran what (both run on this one machine)."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("CDR_TEST_WORKER_HOSTNAME") or socket.getfqdn()
