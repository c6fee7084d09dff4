"""The connection form as the UI gets it: Airflow's own ``GET /ui/connections/hook_meta``, for type ``cdr``.

Asked of a freshly started API app (Airflow's FastAPI app in a TestClient, with a signed-in
admin), in a process of its own: the hook metadata is built once per process and cached, so a
test process that has already used the providers manager would answer from that, not as a new
API server does. Airflow 3.2+ builds the form from the provider info (``conn-fields``,
``ui-field-behaviour``); Airflow 3.1 from ``CDRHook.get_connection_form_widgets`` and
``get_ui_field_behaviour``, with stand-ins for WTForms' field classes (WTForms is not installed in
the oldest test venv: the form must not need it). Both are derived from ``api.extras``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airflow_provider_cdr.api.extras import EXTRAS, ui_field_behaviour
from airflow_provider_cdr.hooks.cdr import CDRHook
from tests.airflow_compat import READS_PROVIDER_FORM_METADATA
from tests.airflow_db import ensure_airflow_db

ROOT = Path(__file__).resolve().parents[1]
MARK = "HOOK_META "
HOOK_META = textwrap.dedent(
    f"""
    import json
    import warnings

    from airflow.api_fastapi.app import create_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.providers_manager import ProvidersManager
    from fastapi.testclient import TestClient

    warnings.simplefilter("always")
    app = create_app(apps="core")
    token = app.state.auth_manager.generate_jwt(SimpleAuthManagerUser(username="ui", role="admin"))
    client = TestClient(app, headers={{"Authorization": f"Bearer {{token}}"}})
    warnings.simplefilter("always")
    response = client.get("/ui/connections/hook_meta")
    # Then CDRHook imported as a task, a connection test or the CLI imports it, and every hook's form.
    manager = ProvidersManager()
    assert manager.hooks["cdr"] is not None
    assert manager.connection_form_widgets is not None
    print({MARK!r} + json.dumps({{"status": response.status_code, "body": response.json()}}))
    """
)
# What a field of each kind hands the connection on Airflow 3.1 (the hook's WTForms classes).
WTFORMS_TYPES = {("integer",): "integer", ("boolean",): "boolean"}


@pytest.fixture(scope="module")
def hook_meta() -> tuple[dict[str, Any], str]:
    """The `cdr` entry of the UI's hook metadata, and what the API process logged."""
    ensure_airflow_db()  # Airflow 3.3 looks up revoked tokens in the metadata DB
    env = {
        **os.environ,  # AIRFLOW_HOME: the test session's
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", HOOK_META], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    log = done.stdout + done.stderr
    assert done.returncode == 0 and lines, log[-6000:]
    answer = json.loads(lines[-1].removeprefix(MARK))
    assert answer["status"] == 200, (answer, log[-6000:])
    (cdr,) = [entry for entry in answer["body"] if entry["connection_type"] == "cdr"]
    return cdr, log


def test_the_cdr_connection_type_is_offered_with_its_hook(hook_meta: tuple[dict[str, Any], str]) -> None:
    cdr, _ = hook_meta
    assert cdr["hook_name"] == CDRHook.hook_name == "CDR API (v2)"
    assert cdr["hook_class_name"] == "airflow_provider_cdr.hooks.cdr.CDRHook"


def test_every_extra_has_a_field_with_its_label_and_help(hook_meta: tuple[dict[str, Any], str]) -> None:
    fields = hook_meta[0]["extra_fields"]
    assert list(fields) == [spec.name for spec in EXTRAS], "one field per extra, in EXTRAS' order"
    for spec in EXTRAS:
        field = fields[spec.name]
        assert field["schema"]["title"] == spec.label
        assert field["description"] == spec.description() and spec.help in field["description"]
        assert field["value"] is None  # an empty field: the extra is left out, its default applies


def test_every_field_takes_what_the_connection_reads(hook_meta: tuple[dict[str, Any], str]) -> None:
    """From the provider info (3.2+): the extra's JSON types and bounds. From the hook (3.1): an
    integer or boolean field for an integer or boolean extra, else text, which the connection reads
    as it reads JSON (`"60"` as 60 s, `"false"` as false, a path, a proxy URL)."""
    fields = hook_meta[0]["extra_fields"]
    for spec in EXTRAS:
        schema = fields[spec.name]["schema"]
        if READS_PROVIDER_FORM_METADATA:
            assert {key: value for key, value in schema.items() if key != "title"} == spec.schema()
            jsonschema.validate(spec.default, schema)
        else:
            assert schema["type"] == [WTFORMS_TYPES.get(spec.types, "string"), "null"]


def test_the_standard_fields_are_hidden_and_relabelled(hook_meta: tuple[dict[str, Any], str]) -> None:
    standard = hook_meta[0]["standard_fields"]
    behaviour = ui_field_behaviour()
    hidden = {"url_schema" if name == "schema" else name for name in behaviour["hidden-fields"]}
    assert hidden == {"url_schema", "login", "port"}  # the UI's name for the schema field
    assert {name for name, field in standard.items() if field and field["hidden"]} == hidden
    assert standard["host"] == {
        "hidden": False,
        "title": "Base URL",
        "placeholder": behaviour["placeholders"]["host"],
    }
    assert standard["password"] == {
        "hidden": False,
        "title": "API key",
        "placeholder": behaviour["placeholders"]["password"],
    }
    assert standard["description"] is None


def test_the_form_is_declared_once_and_loads_without_conflict(hook_meta: tuple[dict[str, Any], str]) -> None:
    """No field added twice, no field or behaviour rejected, also once the hook is imported; and
    no deprecation warning for the hook's form methods (Airflow 3.2+ calls them, and warns, only
    for a connection type whose provider info declares no form: the provider info takes
    precedence)."""
    _, log = hook_meta
    for complaint in (
        "already added",
        "has already been added",
        "Unknown form widget",
        "Failed to add field behaviour",
        "Error when loading customized fields",
        "unsupported class",
        "defines get_connection_form_widgets",
        "defines get_ui_field_behaviour",
    ):
        assert complaint not in log, complaint


def test_the_hook_and_the_provider_info_declare_the_same_form() -> None:
    """What Airflow 3.1 reads (the hook) and 3.2+ reads (the provider info) agree, from one source."""
    from airflow_provider_cdr.get_provider_info import get_provider_info

    (connection_type,) = get_provider_info()["connection-types"]
    behaviour = connection_type["ui-field-behaviour"]
    assert CDRHook.get_ui_field_behaviour() == {
        "hidden_fields": behaviour["hidden-fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }
    assert connection_type["conn-fields"] == {spec.name: spec.form_field() for spec in EXTRAS}
