"""The day's ``_manifest.json``: what a commit writes, and what it keeps from the version it replaces."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from upath import UPath

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
MAX_VERSIONS = 20
_SECRET_KEYS = frozenset(
    {"key", "api_key", "apikey", "password", "passwd", "secret", "token", "access_token", "authorization"}
)


def redact_credentials(value: Any) -> Any:
    """A copy with the values of credential-named keys replaced, at any depth."""
    if isinstance(value, Mapping):
        redacted = {}
        for key, item in value.items():
            if str(key).lower().replace("-", "_") in _SECRET_KEYS:
                log.warning("Redacting %r in the CDR partition manifest: it names a credential", key)
                redacted[key] = "***"
            else:
                redacted[key] = redact_credentials(item)
        return redacted
    if isinstance(value, list | tuple):
        return [redact_credentials(item) for item in value]
    return value


def earlier_versions(previous: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The history the previous manifest kept; one entry made from it if it kept none (older releases)."""
    if not previous:
        return []
    if isinstance(previous.get("versions"), list):
        return list(previous["versions"])
    return [
        {
            "committed_at": previous.get("committed_at"),
            "run_id": previous.get("run_id"),
            "rows": previous.get("rows"),
            "complete": previous.get("complete", True),
        }
    ]


def file_names(manifest: Mapping[str, Any] | None) -> list[str]:
    if not manifest:
        return []
    return [entry["name"] for entry in manifest.get("files", []) if isinstance(entry, Mapping)]


def read_manifest(partition: UPath | str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a committed partition directory (e.g. ``{base}/date=2024-07-31``)."""
    if isinstance(partition, UPath):
        manifest = partition / MANIFEST_NAME
        # A listing cached earlier would give an older version's size (and a cut read). adlfs
        # forgets only the exact path it is given, so the partition's listing goes too.
        manifest.fs.invalidate_cache(manifest.path)
        manifest.fs.invalidate_cache(partition.path)
        text = manifest.read_text()
    else:
        text = Path(partition, MANIFEST_NAME).read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result
