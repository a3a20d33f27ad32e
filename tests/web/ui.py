"""Helpers that drive the dashboard the way a person does (labels, buttons, links)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard


def goto(page: Page, dashboard: Dashboard, route: str) -> None:
    """Open `#/<route>` in the signed-in dashboard and wait for its heading."""
    page.evaluate("(h) => { window.location.hash = h; }", f"#/{route}")
    rendered(page, f"#/{route}")


def rendered(page: Page, hash_: str | None = None) -> None:
    """Wait until the screen at `hash_` (default: the current one) has finished rendering."""
    target = hash_ or "#" + page.url.split("#", 1)[1]
    expect(page.locator("#main")).to_have_attribute("data-rendered", target)


def fill_form(page: Page, values: dict[str, Any]) -> None:
    """Fill fields by their visible label. Values: str (text/textarea/select by label), bool
    (checkbox), list[str] (check these options of a picker)."""
    record_form = page.locator("main form.record-form")
    form = record_form if record_form.count() else page.locator("main form").first
    for label, value in values.items():
        if isinstance(value, list):
            group = form.get_by_role("group", name=label, exact=True, include_hidden=True)
            reveal(page, group)
            for option in value:
                group.get_by_label(option, exact=True).check()
            continue
        field = form.get_by_label(label, exact=True)
        reveal(page, field)
        if isinstance(value, bool):
            field.set_checked(value)
        elif field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(label=value)
        else:
            field.fill(str(value))


def reveal(page: Page, field: Any) -> None:
    """Open the tab holding `field` when it sits in a hidden tab panel (the agent builder)."""
    panel = field.evaluate(
        "e => { const p = e.closest('[role=tabpanel]'); return p && p.hidden ? p.id : null; }"
    )
    if panel:
        page.locator(f'[role="tab"][aria-controls="{panel}"]').click()


def create(
    page: Page, dashboard: Dashboard, route: str, singular: str, values: dict[str, Any]
) -> str:
    """Create a record through its form; return its id (from the address the page moves to)."""
    goto(page, dashboard, f"{route}/new")
    fill_form(page, values)
    page.get_by_role("button", name=f"Create {singular}").click()
    page.wait_for_url(re.compile(rf"#/{re.escape(route)}/[0-9a-f-]{{36}}$"))
    rendered(page)
    return page.url.rsplit("/", 1)[1]


def api(dashboard: Dashboard, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Call the API as the dashboard's admin (to check what the screens did)."""
    return httpx.request(
        method,
        dashboard.base + path,
        headers={"Authorization": f"Bearer {dashboard.key}"},
        timeout=30,
        **kwargs,
    )
