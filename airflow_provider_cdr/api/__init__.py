"""The CDR API client, free of Airflow: connection settings, queries, paging, retries, extraction."""
