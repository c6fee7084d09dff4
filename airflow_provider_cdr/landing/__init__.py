"""A day's Parquet partition on local disk or object storage, replaced atomically; free of Airflow."""
