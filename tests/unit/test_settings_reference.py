"""The configuration page lists every setting, as the code defines it."""

from __future__ import annotations

from pathlib import Path

from tbd_agents.config import Settings
from tbd_agents.tools.settings_reference import rewrite

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_page_is_current() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert page == rewrite(page), "regenerate: python -m tbd_agents.tools.settings_reference"


def test_every_setting_is_documented_with_a_description() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for name, field in Settings.model_fields.items():
        assert f"`{name.upper()}`" in page
        assert field.description, f"setting {name} has no description"
