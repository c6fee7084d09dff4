"""Airflow finds the provider, and its metadata passes Airflow's own schema."""

from __future__ import annotations

import importlib
import json
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema

from airflow_provider_cdr.get_provider_info import get_provider_info


def test_provider_info_matches_airflows_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


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
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManager()
    assert "airflow-provider-cdr" in manager.providers
    hook_info = ProvidersManagerTaskRuntime().hooks["cdr"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_provider_cdr.hooks.cdr.CDRHook"
    assert hook_info.connection_testable
    assert manager.field_behaviours["cdr"]["relabeling"]["password"] == "API key"
    assert "extra__cdr__timezone" in manager.connection_form_widgets
