"""Provider metadata that Airflow's ProvidersManager reads through the entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_cdr import __version__


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
                "conn-fields": {
                    "timezone": {
                        "label": "Account time zone",
                        "description": "IANA name of the contact centre's time zone; the API reads "
                        "start_date/end_date and datetimes in it. Default UTC.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "per_page": {
                        "label": "Records per page",
                        "description": "1 to 10000 (the API's maximum). Default 10000.",
                        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000},
                    },
                    "timeout": {
                        "label": "Request timeout (s)",
                        "schema": {"type": ["number", "null"]},
                    },
                    "request_deadline": {
                        "label": "Request deadline (s)",
                        "description": "Longest one attempt may take, slow body included; then it is "
                        "retried. Default 300.",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    },
                    "max_retries": {
                        "label": "Retries per request",
                        "description": "On 429, 5xx, connection errors and timeouts. Default 8.",
                        "schema": {"type": ["integer", "null"]},
                    },
                    "max_retry_wait": {
                        "label": "Longest total wait for one request (s)",
                        "schema": {"type": ["number", "null"]},
                    },
                    "rate_limit": {
                        "label": "Requests per second (cap)",
                        "description": "Shared by every concurrent request of one extraction.",
                        "schema": {"type": ["number", "null"]},
                    },
                    "allow_insecure_http": {
                        "label": "Allow plain http:// to a non-loopback host",
                        "schema": {"type": ["boolean", "null"]},
                    },
                },
            }
        ],
    }
