"""The schedule form's "Next runs" list: the next fire times of the unsaved schedule."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.conftest import VIEWPORT, Dashboard, sign_in
from tests.web.ui import fill_form, goto


@pytest.fixture
def new_york_page(browser: Browser) -> Iterator[Page]:
    """A page whose browser lives in New York (so local times are known), failing on JS errors."""
    context = browser.new_context(viewport=VIEWPORT, timezone_id="America/New_York", locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_typing_a_cron_expression_previews_the_next_runs(
    new_york_page: Page, dashboard: Dashboard
) -> None:
    page = new_york_page
    sign_in(page, dashboard)
    goto(page, dashboard, "scheduled-agents/new")
    runs = page.locator(".next-runs")
    # The default (every 1 hours) is previewed at once.
    expect(runs.locator("li")).to_have_count(5)
    fill_form(page, {"Repeat": "on a cron expression"})
    expect(runs).to_contain_text("Enter a cron expression")
    fill_form(page, {"Cron expression": "30 9 * * *", "Time zone": "Europe/London"})
    items = runs.locator("li")
    expect(items).to_have_count(5)
    # 09:30 in London is 09:30 UTC in winter, 08:30 UTC in summer; New York is 4 or 5 h behind.
    for i in range(5):
        text = items.nth(i).inner_text()
        assert re.search(r"\b0[89]:30 UTC$", text), text
        assert re.search(r"\b0[345]:30 AM\b", text), text
    # A bad expression: the API's message appears under the cron field, the list goes away.
    fill_form(page, {"Cron expression": "every tuesday"})
    field_note = page.locator('[data-field="cron_expression"] .preview-error')
    expect(field_note).to_contain_text("not valid")
    expect(runs.locator("li")).to_have_count(0)
    expect(runs).to_contain_text("Cannot preview")
    # Fixing it clears the note.
    fill_form(page, {"Cron expression": "0 12 * * *", "Time zone": "UTC"})
    expect(items).to_have_count(5)
    expect(field_note).to_have_count(0)
    expect(items.first).to_contain_text("12:00 UTC")
