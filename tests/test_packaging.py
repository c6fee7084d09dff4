"""The wheel users install: what it holds, what its metadata says, what Airflow finds in it.

One wheel is built (from a copy of the checkout, so that no build/ or *.egg-info is left here and
no stale build/ can leak into it) and shared by every test of the module.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import airflow_provider_cdr
from airflow_provider_cdr.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "airflow_provider_cdr"
REPOSITORY = "https://github.com/airflow-provider-cdr/airflow-provider-cdr"
NOT_SHIPPED = ("tests", "benchmarks", "dags_examples", "scripts", "docs", "docker")
LEFT_OUT_OF_THE_COPY = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".demo", ".airflow", "out"
)


def build_requires() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(text) for text in pyproject["build-system"]["requires"]]


def installed(requirement: Requirement) -> bool:
    try:
        return requirement.specifier.contains(version(requirement.name), prereleases=True)
    except PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    source = tmp_path_factory.mktemp("source") / "airflow-provider-cdr"
    shutil.copytree(ROOT, source, ignore=LEFT_OUT_OF_THE_COPY)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)]
    # The dev group brings the setuptools the build asks for: then no download, a quicker build.
    # Otherwise pip's isolated build fetches it from the package index.
    if all(installed(requirement) for requirement in build_requires()):
        command.insert(4, "--no-build-isolation")
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    (path,) = out.glob("*.whl")
    with zipfile.ZipFile(path) as built:
        yield built


@pytest.fixture(scope="module")
def dist_info(wheel: zipfile.ZipFile) -> str:
    (name,) = {name.split("/")[0] for name in wheel.namelist() if name.split("/")[0].endswith(".dist-info")}
    return name


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile, dist_info: str) -> Message:
    return message_from_bytes(wheel.read(f"{dist_info}/METADATA"))


def test_wheel_holds_every_module_of_the_package_and_the_typed_marker(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / PACKAGE).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules <= names, sorted(modules - names)
    assert f"{PACKAGE}/py.typed" in names
    assert wheel.read(f"{PACKAGE}/py.typed") == b""


def test_wheel_ships_the_stand_in_so_users_can_test_their_own_dags(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert {f"{PACKAGE}/fake_api/__init__.py", f"{PACKAGE}/fake_api/cli.py"} <= names
    assert "StandIn" in wheel.read(f"{PACKAGE}/fake_api/__init__.py").decode()


def test_wheel_holds_only_the_package_and_its_metadata(wheel: zipfile.ZipFile, dist_info: str) -> None:
    assert {name.split("/")[0] for name in wheel.namelist()} == {PACKAGE, dist_info}
    for name in wheel.namelist():
        assert not set(name.split("/")) & set(NOT_SHIPPED), name
    assert not any(name.endswith((".pyc", ".parquet")) for name in wheel.namelist())


def test_wheel_carries_the_license_text(wheel: zipfile.ZipFile, dist_info: str) -> None:
    text = wheel.read(f"{dist_info}/licenses/LICENSE").decode()
    assert text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_version_is_the_packages_own(metadata: Message) -> None:
    assert metadata["Name"] == "airflow-provider-cdr"
    assert metadata["Version"] == airflow_provider_cdr.__version__
    assert get_provider_info()["versions"] == [airflow_provider_cdr.__version__]
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]  # written once, in __init__.py


def test_metadata_license_is_a_pep_639_expression(metadata: Message) -> None:
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["License"] is None
    assert not [c for c in metadata.get_all("Classifier", []) if c.startswith("License ::")]


def test_metadata_classifiers(metadata: Message) -> None:
    classifiers = set(metadata.get_all("Classifier", []))
    assert {
        "Framework :: Apache Airflow",
        "Framework :: Apache Airflow :: Provider",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Typing :: Typed",
    } <= classifiers
    assert metadata["Requires-Python"] == ">=3.10"
    assert "airflow" in metadata["Keywords"].split(",")


def test_metadata_urls(metadata: Message) -> None:
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL", []))
    assert set(urls) == {"Homepage", "Documentation", "Source", "Changelog", "Issues"}
    assert all(url.startswith(REPOSITORY) for url in urls.values()), urls
    assert urls["Changelog"].endswith("/CHANGELOG.md")
    integration_url = get_provider_info()["integrations"][0]["external-doc-url"]
    assert integration_url == urls["Homepage"]


def test_dev_tools_are_not_published(metadata: Message) -> None:
    assert metadata.get_all("Provides-Extra") == ["s3", "redis", "delta", "gcs", "azure"]
    requires = [Requirement(text) for text in metadata.get_all("Requires-Dist", [])]
    names = {requirement.name for requirement in requires}
    assert not names & {"pytest", "hypothesis", "ruff", "mypy", "import-linter", "moto", "matplotlib"}
    assert {"apache-airflow", "apache-airflow-providers-http", "pyarrow"} <= names
    s3 = [r for r in requires if r.marker is not None and r.marker.evaluate({"extra": "s3"})]
    assert [r.name for r in s3] == ["apache-airflow-providers-amazon"]
    azure = [r for r in requires if r.marker is not None and r.marker.evaluate({"extra": "azure"})]
    assert [r.name for r in azure] == ["adlfs"]


def test_the_oldest_airflow_tested_is_the_oldest_the_metadata_allows(metadata: Message) -> None:
    """`make test-oldest` installs the pyproject's lower bound of Airflow, not some later release."""
    requires = {r.name: r for r in (Requirement(text) for text in metadata.get_all("Requires-Dist", []))}
    (lower,) = requires["apache-airflow"].specifier
    assert lower.operator == ">="
    pins = [
        Requirement(line)
        for line in (ROOT / ".ci" / "oldest-airflow.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert str(pins[0]) == f"apache-airflow=={lower.version}"
    assert "oldest-airflow.txt" in (ROOT / "Makefile").read_text()


def test_entry_points_register_the_provider_and_the_stand_in(wheel: zipfile.ZipFile, dist_info: str) -> None:
    entry_points = configparser.ConfigParser(delimiters=("=",))
    entry_points.optionxform = str  # type: ignore[assignment,method-assign]
    entry_points.read_string(wheel.read(f"{dist_info}/entry_points.txt").decode())
    assert dict(entry_points["apache_airflow_provider"]) == {
        "provider_info": "airflow_provider_cdr.get_provider_info:get_provider_info"
    }
    assert entry_points["console_scripts"]["cdr-fake-api"] == "airflow_provider_cdr.fake_api.cli:main"
