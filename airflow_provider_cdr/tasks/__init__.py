"""What the operator and the sensor share on the Airflow side: arguments, output location, lineage."""
