"""``docs/reference.md`` is generated from the code (issue 15): every canonical column and
aspect with its type, checks and meaning. A column or aspect added in code without a meaning,
or a changed check, fails here until the file is regenerated."""

from __future__ import annotations

from pathlib import Path

from custsync_pipeline.domain import aspects, canonical
from custsync_pipeline.domain.reference import ASPECT_MEANINGS, COLUMN_MEANINGS, render

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python -m custsync_pipeline.domain.reference > docs/reference.md"


def test_every_canonical_column_and_aspect_has_a_meaning() -> None:
    assert set(canonical.VALIDATED_COLUMNS) - set(COLUMN_MEANINGS) == set()
    assert set(aspects.ASPECTS) - set(ASPECT_MEANINGS) == set()
    # no meaning left for a column that is gone
    assert set(COLUMN_MEANINGS) - set(canonical.VALIDATED_COLUMNS) == set()


def test_reference_doc_is_up_to_date() -> None:
    text = (ROOT / "docs" / "reference.md").read_text()
    assert text == render(), f"docs/reference.md is stale: run `{REGENERATE}`"
    for col in canonical.CANONICAL_COLUMNS:
        assert f"| `{col}` |" in text


def test_readme_points_mappings_at_the_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/reference.md" in readme
