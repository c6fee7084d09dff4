"""Airflow finds the provider, and its metadata passes Airflow's own schema."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_cdr.api.extras import EXTRAS, SPECS
from airflow_provider_cdr.get_provider_info import get_provider_info
from tests.airflow_compat import READS_PROVIDER_FORM_METADATA, task_runtime_hooks

AIRFLOW = Path(airflow.__file__).parent


def conn_fields() -> dict[str, dict[str, object]]:
    fields: dict[str, dict[str, object]] = get_provider_info()["connection-types"][0]["conn-fields"]
    return fields


def test_provider_info_matches_airflows_schema() -> None:
    schema = json.loads((AIRFLOW / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_conn_fields_match_airflows_provider_yaml_schema() -> None:
    """Airflow 3.2+ declares conn-fields and ui-field-behaviour; 3.1 knows neither and lets them be."""
    schema = json.loads((AIRFLOW / "provider.yaml.schema.json").read_text())
    items = schema["properties"]["connection-types"]["items"]
    if READS_PROVIDER_FORM_METADATA:
        jsonschema.validate(conn_fields(), items["properties"]["conn-fields"])
    else:
        assert "conn-fields" not in items["properties"]
        assert items.get("additionalProperties", True) is not False
    jsonschema.validate(get_provider_info()["connection-types"][0], items)


def test_every_extra_has_a_form_field_with_its_label_and_a_schema_that_accepts_its_default() -> None:
    fields = conn_fields()
    assert list(fields) == [spec.name for spec in EXTRAS]
    for spec in EXTRAS:
        field = fields[spec.name]
        assert field["label"] == spec.label
        assert field["description"] == spec.description() and spec.help in spec.description()
        schema = field["schema"]
        assert isinstance(schema, dict) and schema["type"] == [*spec.types, "null"]
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(spec.default, schema)
        jsonschema.validate(None, schema)  # a field left blank


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("verify", ["/etc/ssl/private-ca.pem", False, True], [0, {"path": "x"}]),
        ("cert", ["client.pem", ["client.pem", "client.key"]], [["client.pem"], [1, 2]]),
        ("proxies", ["http://proxy:3128", {"https": "http://proxy:3128"}], [{"https": 3128}, 5]),
        ("per_page", [1, 10000], [0, 10001, 2.5, "many"]),
        ("rate_limit", [0.5], [0, -1]),
    ],
)
def test_the_form_accepts_what_the_connection_reads(name: str, good: list[object], bad: list[object]) -> None:
    schema = conn_fields()[name]["schema"]
    validator = jsonschema.Draft202012Validator(schema)  # type: ignore[arg-type]
    assert SPECS[name].schema() == schema
    assert all(validator.is_valid(value) for value in good)
    assert not any(validator.is_valid(value) for value in bad)


def test_get_provider_info_imports_no_heavy_module() -> None:
    heavy = ["airflow", "requests", "pyarrow", "pandas", "numpy", "orjson", "aiohttp"]
    code = (
        "import sys, airflow_provider_cdr.get_provider_info as m; m.get_provider_info(); "
        f"print(sorted(n for n in {heavy!r} if n in sys.modules))"
    )
    root = str(Path(__file__).resolve().parents[1])  # this checkout's package, not an installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=root
    )
    assert result.stdout.strip() == "[]"


def test_connection_form_passes_airflows_field_schema() -> None:
    behaviour_schema = json.loads(
        (Path(airflow.__file__).parent / "customized_form_field_behaviours.schema.json").read_text()
    )
    behaviour = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
    jsonschema.validate(
        {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        },
        behaviour_schema,
    )


def test_every_module_named_in_the_metadata_imports() -> None:
    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    hook_path = info["connection-types"][0]["hook-class-name"]
    module, _, name = hook_path.rpartition(".")
    assert getattr(importlib.import_module(module), name).conn_type == "cdr"


def test_entry_point_is_registered_under_the_distribution_name() -> None:
    (entry,) = [
        e for e in entry_points(group="apache_airflow_provider") if e.dist.name == "airflow-provider-cdr"
    ]
    assert entry.load()()["package-name"] == "airflow-provider-cdr"


def test_providers_manager_discovers_the_provider_and_the_cdr_connection_type() -> None:
    """The connection form Airflow builds from it, fields and all: tests/test_connection_form.py."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-cdr" in manager.providers
    hook_info = task_runtime_hooks()["cdr"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_provider_cdr.hooks.cdr.CDRHook"
    assert hook_info.connection_testable
