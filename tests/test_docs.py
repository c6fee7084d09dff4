"""The user documentation agrees with the repository and the code.

Every relative link in README.md and docs/*.md leads to a file that exists (and to a heading of
it, when the link has an anchor); every column of the schema, every connection extra, every
operator and sensor argument (and which of them are templated), every exception class of
api/errors.py and every setting of the example DAGs (with its default) is documented.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cdr.api import errors
from airflow_provider_cdr.api.extras import EXTRAS
from airflow_provider_cdr.convert.schema import CDR_SCHEMA
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator
from airflow_provider_cdr.sensors.cdr import CDRRecordsSensor

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
SETTINGS = ROOT / "dags_examples" / "cdr_settings.py"

_FENCE = re.compile(r"^(```|~~~)")
_CODE_SPAN = re.compile(r"`+[^`\n]*`+")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor GitHub makes for the headings of `page` (repeats get -1, -2, ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = _slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    """The link targets of `page` that are neither URLs nor mail addresses, outside code."""
    targets = []
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                targets.append(target)
    return targets


def table_row(page: Path, name: str) -> list[str]:
    """The cells of the table row of `page` whose first cell is `name` in backticks."""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"| `{name}` |"):
            return [cell.strip() for cell in line.strip().strip("|").split(" | ")]
    raise AssertionError(f"{page.name}: no table row for `{name}`")


def arguments(cls: type[Any]) -> list[str]:
    """The keyword arguments of `cls.__init__`, without self and **kwargs."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD]


def templated_rows(page: Path) -> set[str]:
    """The arguments whose table row on `page` says "(templated)"."""
    rows = re.findall(r"^\| `(\w+)` \|.*\(templated\) \|$", page.read_text(encoding="utf-8"), re.M)
    return set(rows)


def example_settings() -> dict[str, str | None]:
    """Each environment variable `cdr_settings.py` reads, with its default as text: the literal given
    to `_env` (or the module constant it names), "none" for `os.environ.get` without one, None when
    the default is computed (a path)."""
    tree = ast.parse(SETTINGS.read_text(encoding="utf-8"))
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found: dict[str, str | None] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        name = node.args[0].value
        if not (isinstance(name, str) and re.fullmatch(r"CDR_[A-Z0-9_]+", name)):
            continue
        default = node.args[1] if len(node.args) > 1 else None
        if default is None:
            found[name] = "none"
        elif isinstance(default, ast.Constant):
            found[name] = str(default.value)
        elif isinstance(default, ast.Name) and default.id in constants:
            found[name] = str(constants[default.id])
        else:
            found[name] = None
    return found


def test_the_pages_exist_and_the_readme_links_the_index() -> None:
    names = {page.name for page in DOCS.glob("*.md")}
    assert {
        "index.md",
        "connection.md",
        "operator.md",
        "sensor.md",
        "hook.md",
        "example-dags.md",
        "schema.md",
        "api-ambiguities.md",
        "upgrading.md",
    } <= names
    assert "docs/index.md" in relative_links(ROOT / "README.md")
    assert "docs/api-ambiguities.md" in relative_links(ROOT / "README.md")
    assert "../CHANGELOG.md" in relative_links(DOCS / "index.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no file {destination.relative_to(ROOT)}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.relative_to(ROOT)}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_every_column_is_in_the_schema_reference_with_its_type_and_nullability() -> None:
    page = DOCS / "schema.md"
    for field in CDR_SCHEMA:
        cells = table_row(page, field.name)
        assert f"`{field.type}`" in cells[1], f"{field.name}: type {field.type} not in {cells[1]!r}"
        assert cells[3] == ("yes" if field.nullable else "no"), f"{field.name}: nullable {field.nullable}"
    text = page.read_text(encoding="utf-8")
    for child in CDR_SCHEMA.field("sla").type:
        assert f"`sla.{child.name}`" in text
    assert f"{len(CDR_SCHEMA)} columns" in (DOCS / "upgrading.md").read_text(encoding="utf-8")


def test_every_extra_is_in_the_connection_page_with_its_default() -> None:
    page = DOCS / "connection.md"
    for spec in EXTRAS:
        cells = table_row(page, spec.name)
        assert cells[2] == spec.default_text, (
            f"{spec.name}: default {spec.default_text}, documented {cells[2]}"
        )
        missing = [json_type for json_type in spec.types if json_type not in cells[1]]
        assert not missing, f"{spec.name}: type {missing} not in {cells[1]!r}"


def test_every_operator_argument_is_in_the_operator_page() -> None:
    text = (DOCS / "operator.md").read_text(encoding="utf-8")
    names = arguments(CDRToParquetOperator)
    assert "output_path" in names and "check_offsets" in names  # the signature is the real one
    missing = [name for name in names if f"| `{name}` |" not in text]
    assert not missing, f"operator.md does not document {missing}"


def test_every_sensor_argument_is_in_the_sensor_page() -> None:
    text = (DOCS / "sensor.md").read_text(encoding="utf-8")
    names = arguments(CDRRecordsSensor)
    assert "on_empty" in names and "deferrable" in names
    missing = [name for name in names if f"| `{name}` |" not in text]
    assert not missing, f"sensor.md does not document {missing}"


@pytest.mark.parametrize(
    ("page", "cls"), [("operator.md", CDRToParquetOperator), ("sensor.md", CDRRecordsSensor)]
)
def test_the_templated_arguments_are_the_template_fields(page: str, cls: type[Any]) -> None:
    fields = set(cls.template_fields)
    assert templated_rows(DOCS / page) == fields, f"{page}: rows marked (templated) differ from {fields}"
    text = (DOCS / page).read_text(encoding="utf-8")
    listed = re.search(r"Templated \(`template_fields`\): ([^.]*)\.", text)
    assert listed, f"{page}: no sentence listing the template fields"
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == fields


def test_every_exception_class_is_in_the_hook_page_with_its_bases() -> None:
    page = DOCS / "hook.md"
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    ]
    assert {"CDRError", "CDRTLSError", "CDRRetriesExhaustedError"} <= {cls.__name__ for cls in classes}
    for cls in classes:
        cells = table_row(page, cls.__name__)
        missing = [base.__name__ for base in cls.__bases__ if f"`{base.__name__}`" not in cells[1]]
        assert not missing, f"{cls.__name__}: base {missing} not in {cells[1]!r}"


def test_every_example_setting_is_in_the_example_dags_page_with_its_default() -> None:
    page = DOCS / "example-dags.md"
    settings = example_settings()
    assert {"CDR_TIMEZONE", "CDR_START_DATE", "CDR_TASK_TIMEOUT_MIN"} <= set(settings)
    for name, default in settings.items():
        cells = table_row(page, name)
        if default == "none":
            assert cells[2] == "none", f"{name}: no default, documented {cells[2]!r}"
        elif default is not None:
            assert cells[2] == f"`{default}`", f"{name}: default {default}, documented {cells[2]!r}"
