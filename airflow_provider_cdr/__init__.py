"""Airflow provider for contact-centre Call Detail Records (CDR API v2)."""

# The one place the version is written: pyproject.toml reads it (setuptools' `attr:`, without
# importing the package) and get_provider_info() reports it. Keep this module import-light.
__version__ = "0.1.0"
