"""OpenLineage facets of a landing: the API endpoint in (without the key), the table out, the day a partition.

The output is the table root, the dataset of the operator's Asset, named by the OpenLineage
provider's own Asset conversion (``translate_airflow_asset``), so the task's lineage and its Asset
events join on one dataset. Its facets are standard OpenLineage ones:

- ``schema``: ``SchemaDatasetFacet``, every column of ``CDR_SCHEMA`` with its Arrow type;
- ``outputStatistics``: ``OutputStatisticsOutputDatasetFacet``, the day's rows, bytes and files;
- ``subset``: ``OutputSubsetOutputDatasetFacet`` with a ``PartitionSubsetCondition``, the spec's
  facet for "this run wrote these partitions": one partition, dimension ``date`` = the day
  (the ``date=YYYY-MM-DD`` directory), identified by the day.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_cdr.api.endpoints import RECORDS_PATH
from airflow_provider_cdr.api.errors import redact
from airflow_provider_cdr.convert.schema import CDR_SCHEMA

PARTITION_DIMENSION = "date"


def table_dataset(table_uri: str) -> Any:
    """The OpenLineage Dataset of an Asset URI, as the OpenLineage provider converts it.

    Schemes without an installed converter (e.g. ``gs://`` without the Google provider) get what
    the providers' converters give: namespace ``<scheme>://<host>``, name the path.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.common.compat.openlineage.utils.utils import translate_airflow_asset
    from airflow.sdk import Asset

    converted = translate_airflow_asset(Asset(table_uri), None)
    if converted is not None:
        return converted
    parts = urlsplit(table_uri)
    return Dataset(namespace=f"{parts.scheme}://{parts.hostname or ''}", name=parts.path.lstrip("/") or "/")


def operator_lineage(
    base_url: str | None, table_uri: str | None, landed: Mapping[str, Any] | None = None
) -> Any:
    """OperatorLineage, or None when the OpenLineage provider is not installed or nothing ran.

    `table_uri` is the Asset URI of the table root; `landed` the task's summary (day, rows, files, bytes).
    """
    try:
        from airflow.providers.common.compat.openlineage.facet import (
            Dataset,
            OutputDataset,
            OutputStatisticsOutputDatasetFacet,
            SchemaDatasetFacet,
            SchemaDatasetFacetFields,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.generated.base_subset_dataset import (
            OutputSubsetOutputDatasetFacet,
            Partition,
            PartitionSubsetCondition,
        )
    except ImportError:
        return None
    if not base_url or not table_uri:
        return None
    api = urlsplit(redact(base_url))
    table = table_dataset(table_uri)
    schema = SchemaDatasetFacet(
        fields=[SchemaDatasetFacetFields(name=field.name, type=str(field.type)) for field in CDR_SCHEMA]
    )
    output_facets: dict[str, Any] = {}
    if landed:
        day = str(landed["day"])
        output_facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(
            rowCount=landed["rows"], size=landed["bytes"], fileCount=landed["files"]
        )
        output_facets["subset"] = OutputSubsetOutputDatasetFacet(
            outputCondition=PartitionSubsetCondition(
                partitions=[Partition(dimensions={PARTITION_DIMENSION: day}, identifier=day)]
            )
        )
    output = OutputDataset(
        namespace=table.namespace,
        name=table.name,
        facets={**(table.facets or {}), "schema": schema},
        outputFacets=output_facets,
    )
    return OperatorLineage(
        inputs=[Dataset(namespace=f"{api.scheme}://{api.hostname}", name=RECORDS_PATH)],
        outputs=[output],
    )
