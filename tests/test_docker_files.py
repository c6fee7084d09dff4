"""docker/: the compose file parses, names only things that exist, and configures what the provider accepts.

No Docker engine is needed: these tests read the files. What they cannot prove (that the
images build and the services start) is left to `docker compose up`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.models.connection import Connection

from airflow_provider_cdr.api.settings import CDRConnectionSettings
from airflow_provider_cdr.fake_api.cli import build_parser
from airflow_provider_cdr.hooks.cdr import CDRHook

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yaml"
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def airflow_env(compose: dict[str, Any]) -> dict[str, str]:
    """The environment every Airflow component gets (the scheduler's stands for all)."""
    return {
        name: str(value) for name, value in compose["services"]["airflow-scheduler"]["environment"].items()
    }


def host_path(text: str) -> Path:
    """A path as compose resolves it: relative to the compose file's folder."""
    return (DOCKER / text).resolve()


def test_compose_has_the_production_layout(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {
        *AIRFLOW_SERVICES,
        "airflow-init",
        "postgres",
        "redis",
        "cdr-api",
        "minio",
        "minio-init",
    }
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command, name
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["cdr-api"]["entrypoint"] == ["cdr-fake-api"]


def test_every_build_context_dockerfile_and_mount_exists(compose: dict[str, Any]) -> None:
    builds = [service["build"] for service in compose["services"].values() if "build" in service]
    assert builds
    for build in builds:
        context = host_path(build["context"])
        assert context.is_dir(), context
        assert (context / build["dockerfile"]).is_file()
    mounts = [
        volume.split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if volume.startswith((".", "/"))
    ]
    assert "../dags_examples" in mounts
    for mount in mounts:
        assert host_path(mount).exists(), mount
    named = {
        volume.split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/"))
    }
    assert named <= set(compose["volumes"])


def dockerfile_sources(dockerfile: str) -> list[str]:
    """Every source of the COPY lines: not the flags, not the destination."""
    return [
        word
        for line in dockerfile.splitlines()
        if line.startswith("COPY")
        for word in line.split()[1:-1]
        if not word.startswith("--")
    ]


def test_dockerfile_builds_on_the_official_airflow_3_image_and_copies_existing_files() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    version = re.search(r"^ARG AIRFLOW_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert version and version.group(1).startswith("3.")
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}", dockerfile, re.MULTILINE)
    sources = dockerfile_sources(dockerfile)
    assert sources
    allowed = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for source in sources:
        assert (ROOT / source).exists(), source
        assert f"!{source}" in allowed, f"{source} is excluded from the build context"


def test_dockerfile_copies_every_file_the_package_build_reads() -> None:
    """`pip install /opt/cdr-provider` reads the readme and the license files pyproject.toml names."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", "airflow_provider_cdr", project["readme"], *project["license-files"]}
    assert needed <= set(dockerfile_sources((DOCKER / "Dockerfile").read_text()))


def test_stand_in_service_arguments_are_accepted(
    compose: dict[str, Any], airflow_env: dict[str, str]
) -> None:
    args = build_parser().parse_args(compose["services"]["cdr-api"]["command"])
    assert args.host == "0.0.0.0"
    assert args.timezone == airflow_env["CDR_TIMEZONE"]


def test_cdr_connection_is_accepted_by_the_provider(
    airflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = Connection.from_json(airflow_env["AIRFLOW_CONN_CDR_DEFAULT"], conn_id="cdr_default")
    assert connection.conn_type == "cdr"
    settings = CDRConnectionSettings.from_extras(connection.extra_dejson)
    assert settings.timezone == airflow_env["CDR_TIMEZONE"]
    # The hook's own path: URL built from the host, plain http allowed by the extra.
    monkeypatch.setenv("AIRFLOW_CONN_CDR_DEFAULT", airflow_env["AIRFLOW_CONN_CDR_DEFAULT"])
    hook = CDRHook()
    assert hook.settings == settings
    assert hook.base_url == "http://cdr-api:8080"


def test_aws_connection_points_at_the_bucket_the_init_creates(
    compose: dict[str, Any], airflow_env: dict[str, str]
) -> None:
    from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper

    connection = Connection.from_json(airflow_env["AIRFLOW_CONN_AWS_CDR"], conn_id="aws_cdr")
    assert connection.conn_type == "aws"
    wrapper = AwsConnectionWrapper(connection)
    assert wrapper.get_service_endpoint_url("s3") == "http://minio:9000"
    assert airflow_env["CDR_OUTPUT_CONN_ID"] == "aws_cdr"
    bucket = airflow_env["CDR_OUTPUT_PATH"].removeprefix("s3://").split("/")[0]
    assert f"mc mb --ignore-existing lake/{bucket}" in " ".join(compose["services"]["minio-init"]["command"])


def test_pool_the_dags_use_is_created(compose: dict[str, Any], airflow_env: dict[str, str]) -> None:
    init = " ".join(compose["services"]["airflow-init"]["command"])
    assert f"airflow pools set {airflow_env['CDR_POOL']} " in init


def test_dags_parse_with_the_compose_settings(
    airflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import BundleDagBag

    for name, value in airflow_env.items():
        if name.startswith("CDR_"):
            monkeypatch.setenv(name, value)
    dags = ROOT / "dags_examples"
    bag = BundleDagBag(dag_folder=str(dags), bundle_path=dags, bundle_name="dags-folder")
    assert bag.import_errors == {}
    land = bag.dags["cdr_daily"].get_task("land_day")
    assert land.output_path == airflow_env["CDR_OUTPUT_PATH"] + "/cdr"
    assert land.output_conn_id == "aws_cdr" and land.pool == airflow_env["CDR_POOL"]


def test_connection_values_are_single_line_json(airflow_env: dict[str, str]) -> None:
    """Folded YAML must still give valid JSON (Airflow reads AIRFLOW_CONN_* as JSON or URI)."""
    for name, value in airflow_env.items():
        if name.startswith("AIRFLOW_CONN_"):
            assert isinstance(json.loads(value), dict), name
