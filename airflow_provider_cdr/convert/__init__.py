"""From API pages to Arrow batches of the declared schema, free of Airflow."""
