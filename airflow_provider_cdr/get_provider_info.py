"""Provider metadata that Airflow's ProvidersManager reads through the entry point.

Cheap to import (no Airflow, requests or pyarrow): the connection form's fields and standard-field
behaviour come from `airflow_provider_cdr.api.extras`, a standard-library module. Airflow 3.2+
reads them here (`conn-fields`, `ui-field-behaviour`); Airflow 3.1 asks the hook, whose
`get_connection_form_widgets` / `get_ui_field_behaviour` derive the same from the same module.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_cdr import __version__
from airflow_provider_cdr.api.extras import conn_fields, ui_field_behaviour


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
                "ui-field-behaviour": ui_field_behaviour(),
                "conn-fields": conn_fields(),
            }
        ],
    }
