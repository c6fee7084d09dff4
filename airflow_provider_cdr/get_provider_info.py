"""Provider metadata that Airflow's ProvidersManager reads through the entry point.

Cheap to import (no Airflow, requests or pyarrow): the connection form's fields come from the
specs of the extras in `airflow_provider_cdr.api.extras`, a standard-library module.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_cdr import __version__
from airflow_provider_cdr.api.extras import conn_fields


def get_provider_info() -> dict[str, Any]:
    """Describe the package, its connection type and its modules to Airflow."""
    return {
        "package-name": "airflow-provider-cdr",
        "name": "CDR (Call Detail Records)",
        "description": "Lands a contact centre's Call Detail Records (CDR API v2) in day-partitioned Parquet.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "CDR API",
                "external-doc-url": "https://github.com/airflow-provider-cdr/airflow-provider-cdr",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": "CDR API", "python-modules": ["airflow_provider_cdr.hooks.cdr"]},
        ],
        "operators": [
            {
                "integration-name": "CDR API",
                "python-modules": ["airflow_provider_cdr.operators.cdr_to_parquet"],
            },
        ],
        "sensors": [
            {"integration-name": "CDR API", "python-modules": ["airflow_provider_cdr.sensors.cdr"]},
        ],
        "triggers": [
            {"integration-name": "CDR API", "python-modules": ["airflow_provider_cdr.triggers.cdr"]},
        ],
        "connection-types": [
            {
                "connection-type": "cdr",
                "hook-class-name": "airflow_provider_cdr.hooks.cdr.CDRHook",
                "hook-name": "CDR API (v2)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "Base URL", "password": "API key"},
                    "placeholders": {
                        "host": "https://cc-ams03.voiso.com",
                        "password": "contact-centre or user API key",
                        "extra": '{"timezone": "America/Sao_Paulo", "per_page": 10000}',
                    },
                },
                "conn-fields": conn_fields(),
            }
        ],
    }
