"""The user documentation agrees with the repository and the code.

Every relative link in README.md and docs/*.md leads to a file that exists (and to a heading of
it, when the link has an anchor); every column of the schema, every connection extra and every
operator argument is documented.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from airflow_provider_cdr.api.extras import EXTRAS
from airflow_provider_cdr.convert.schema import CDR_SCHEMA
from airflow_provider_cdr.operators.cdr_to_parquet import CDRToParquetOperator

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

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
    parameters = inspect.signature(CDRToParquetOperator.__init__).parameters.values()
    names = [p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD]
    assert "output_path" in names and "check_offsets" in names  # the signature is the real one
    missing = [name for name in names if f"| `{name}` |" not in text]
    assert not missing, f"operator.md does not document {missing}"
