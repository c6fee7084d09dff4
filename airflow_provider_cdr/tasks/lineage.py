"""OpenLineage facets of a landing: the API endpoint in (without the key), the dataset out."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow_provider_cdr.api.endpoints import RECORDS_PATH
from airflow_provider_cdr.api.errors import redact
from airflow_provider_cdr.tasks.output import asset_uri


def operator_lineage(base_url: str | None, location: str | None) -> Any:
    """OperatorLineage, or None when the OpenLineage provider is not installed or nothing ran."""
    try:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    if not base_url or not location:
        return None
    api = urlsplit(redact(base_url))
    output = urlsplit(asset_uri(location))
    return OperatorLineage(
        inputs=[Dataset(namespace=f"{api.scheme}://{api.hostname}", name=RECORDS_PATH)],
        outputs=[Dataset(namespace=f"{output.scheme}://{output.hostname or ''}", name=output.path)],
    )
