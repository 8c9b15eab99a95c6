"""README's "Errors you can expect" is what the entry points print today."""

from __future__ import annotations

from pathlib import Path

from errors_catalogue import README, readme_section, section


def test_readme_lists_the_messages_the_entry_points_print(tmp_path: Path) -> None:
    produced = section(tmp_path)
    documented = readme_section(README.read_text())
    assert documented == produced, "README is stale: run `make docs-errors`"
