"""The CDR API v2's paths: the records search and the lookups beside it."""

from __future__ import annotations

RECORDS_PATH = "/api/v2/cdr"
LOOKUP_PATHS = {
    "agents": "/api/v2/cdr/agents",
    "queues": "/api/v2/cdr/queues",
    "teams": "/api/v2/cdr/teams",
    "wrapup_codes": "/api/v2/cdr/wrapup_codes",
    "campaigns": "/api/v2/cdr/campaigns",
    "deleted_agents": "/api/v2/cdr/deleted_agents",
}
"""Lookup name -> path; the names are what :meth:`CDRHook.lookup` takes."""
