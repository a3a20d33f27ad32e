"""Schedules from the dashboard: the interval/cron editor, enable/disable, next run, history."""

from __future__ import annotations

import uuid

from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, create, fill_form, goto, rendered


def test_create_an_interval_schedule_then_switch_to_cron_and_disable(
    page: Page, dashboard: Dashboard
) -> None:
    agent = api(
        dashboard, "POST", "/api/agents", json={"name": f"cron-{uuid.uuid4().hex[:6]}"}
    ).json()
    workflow = api(
        dashboard, "POST", "/api/workflows", json={"title": "morning", "agent_id": agent["id"]}
    ).json()
    sign_in(page, dashboard)
    goto(page, dashboard, "scheduled-agents/new")
    # The cron field only shows in cron mode.
    expect(page.get_by_label("Cron expression")).to_be_hidden()
    expect(page.get_by_label("Every", exact=True)).to_be_visible()
    name = f"every-15-{uuid.uuid4().hex[:6]}"
    schedule_id = create(
        page,
        dashboard,
        "scheduled-agents",
        "schedule",
        {
            "Name": name,
            "Workflow": "morning",
            "Prompt": "Summarise the overnight alerts.",
            "Every": "15",
            "Unit": "minutes",
        },
    )
    saved = api(dashboard, "GET", f"/api/scheduled-agents/{schedule_id}").json()
    assert (saved["interval_value"], saved["interval_unit"], saved["cron_expression"]) == (
        15,
        "minutes",
        None,
    )
    assert saved["workflow_id"] == workflow["id"]
    assert saved["enabled"] is True
    expect(page.get_by_text("This schedule is enabled.")).to_be_visible()
    # Switch to a cron expression in a time zone.
    fill_form(page, {"Repeat": "on a cron expression"})
    expect(page.get_by_label("Every", exact=True)).to_be_hidden()
    fill_form(page, {"Cron expression": "0 9 * * 1-5", "Time zone": "Europe/Paris"})
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    saved = api(dashboard, "GET", f"/api/scheduled-agents/{schedule_id}").json()
    assert (saved["cron_expression"], saved["timezone"]) == ("0 9 * * 1-5", "Europe/Paris")
    page.reload()
    rendered(page)
    expect(page.get_by_label("Repeat")).to_have_value("cron")
    expect(page.get_by_label("Cron expression")).to_have_value("0 9 * * 1-5")
    shot(page, "schedule")
    # Disable it.
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_text("This schedule is disabled.")).to_be_visible()
    assert api(dashboard, "GET", f"/api/scheduled-agents/{schedule_id}").json()["enabled"] is False
    # Back to an interval: the cron expression is cleared.
    fill_form(page, {"Repeat": "every N minutes / hours / days", "Every": "2", "Unit": "hours"})
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    saved = api(dashboard, "GET", f"/api/scheduled-agents/{schedule_id}").json()
    assert (saved["interval_value"], saved["interval_unit"], saved["cron_expression"]) == (
        2,
        "hours",
        None,
    )
    assert saved["enabled"] is False
    goto(page, dashboard, "scheduled-agents")
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_contain_text("every 2 hours")
    expect(row).to_contain_text("no")
    shot(page, "list-schedules")


def test_a_bad_interval_is_reported_on_its_field(page: Page, dashboard: Dashboard) -> None:
    agent = api(
        dashboard, "POST", "/api/agents", json={"name": f"badint-{uuid.uuid4().hex[:6]}"}
    ).json()
    api(dashboard, "POST", "/api/workflows", json={"title": "w-badint", "agent_id": agent["id"]})
    sign_in(page, dashboard)
    goto(page, dashboard, "scheduled-agents/new")
    fill_form(page, {"Name": "broken", "Workflow": "w-badint", "Prompt": "x", "Every": "0"})
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator(".field-interval_value .field-error")).to_contain_text(
        "greater than or equal to 1"
    )
    expect(page.get_by_label("Every", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Every", exact=True)).to_be_focused()
