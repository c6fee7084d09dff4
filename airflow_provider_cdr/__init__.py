"""Airflow provider for contact-centre Call Detail Records (CDR API v2)."""

# The one place the version is written: pyproject.toml reads it (setuptools' `attr:`, without
# importing the package) and get_provider_info() reports it. Keep this module import-light.
__version__ = "0.1.0"

# Arrow's C++ code that takes no memory pool (the Parquet writer's encoders among it) allocates
# from Arrow's process default, chosen once, when pyarrow is first used: mimalloc in the wheels,
# whose per-thread heaps held about 20 MiB more at the peak of a 1,000,000-record day than the
# system allocator (benchmarks/, landing/memory.py). So unless the environment already chose,
# the system allocator is asked for here, before this package imports pyarrow. A process that
# imported pyarrow first keeps its choice; the operator then says so in its log.
import os as _os

_os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
