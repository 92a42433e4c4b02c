"""The README's settings table lists exactly the settings the daemon reads."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from serving.settings import PREFIX, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_table_matches_settings_struct() -> None:
    documented = set(re.findall(r"^\| `(SERVING_[A-Z_]+)` \|", README.read_text(), flags=re.M))
    fields = {f"{PREFIX}{f.name.upper()}" for f in msgspec.structs.fields(Settings)}
    assert documented - fields == set(), "documented but not read by the daemon"
    assert fields - documented == set(), "read by the daemon but missing from README.md"


def test_readme_shows_the_fresh_machine_commands() -> None:
    text = README.read_text()
    assert "make run" in text
    assert "make test" in text
