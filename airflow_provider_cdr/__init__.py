"""Airflow provider for contact-centre Call Detail Records (CDR API v2)."""

__version__ = "0.1.0"
