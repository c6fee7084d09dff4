"""A local stand-in for the CDR API v2, for the demo, the tests and the benchmarks.

`StandIn` runs the server in a subprocess (``cdr-fake-api`` on the command line);
`CDRDataset` recomputes, in-process, exactly what it serves.
"""

from airflow_provider_cdr.fake_api.dataset import CDRDataset
from airflow_provider_cdr.fake_api.faults import FaultConfig
from airflow_provider_cdr.fake_api.server import StandIn

__all__ = ["CDRDataset", "FaultConfig", "StandIn"]
