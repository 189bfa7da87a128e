"""The README's strategy table is what the code computes for a 1024×768 image, so it cannot drift."""

from pathlib import Path

from gridvlm.cli import compare_rows, markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- strategy-table 1024x768: python -m gridvlm compare 1024x768 --markdown -->", "<!-- /strategy-table -->"


def test_the_readme_table_equals_the_plans():
    text = README.read_text()
    assert START in text and END in text, "the README lost its strategy table markers"
    table = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == markdown_table(*compare_rows((1024, 768), None))
