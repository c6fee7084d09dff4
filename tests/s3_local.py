"""Helpers for tests that write to the local S3-compatible server (the `s3_endpoint` fixture)."""

from __future__ import annotations

import json


def aws_connection_json(endpoint: str) -> str:
    """An `aws` connection to the local S3 server, in AIRFLOW_CONN_* JSON form."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    )


def create_bucket(endpoint: str, name: str) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
