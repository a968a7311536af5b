from pathlib import Path

from lth_tune.docs import render


def test_study_file_reference_is_up_to_date():
    doc = Path(__file__).parents[1] / "docs" / "study-files.md"
    assert doc.read_text() == render(), "regenerate with: python -m lth_tune.docs > docs/study-files.md"
