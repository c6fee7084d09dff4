"""A local stand-in for the CDR API v2, for the demo, the tests and the benchmarks.

`StandIn` runs the server in a subprocess (``cdr-fake-api`` on the command line) or a
thread; `CDRDataset` recomputes, in-process, exactly what it serves; `ServerProfile`
chooses which reading of the API's undocumented paging it plays.
"""

from airflow_provider_cdr.fake_api.dataset import CDRDataset
from airflow_provider_cdr.fake_api.faults import FaultConfig
from airflow_provider_cdr.fake_api.profile import ServerProfile
from airflow_provider_cdr.fake_api.server import StandIn

__all__ = ["CDRDataset", "FaultConfig", "ServerProfile", "StandIn"]
