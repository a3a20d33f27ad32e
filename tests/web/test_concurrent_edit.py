"""Two people editing one record (#16 point 7): the edit form saves over the version it showed
(If-Match). Someone else's change of the same field is not undone: the form says so and saves
nothing. A change of other fields meanwhile (a run, a test, another tab) does not stop the save."""

from __future__ import annotations

import uuid

from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, fill_form, goto


def _agent(dashboard: Dashboard) -> str:
    created = api(
        dashboard,
        "POST",
        "/api/agents",
        json={"name": f"shared-{uuid.uuid4().hex[:6]}", "description": "as opened"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_a_save_does_not_undo_someone_elses_change(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    agent_id = _agent(dashboard)
    path = f"/api/agents/{agent_id}"
    goto(page, dashboard, f"agents/{agent_id}")
    # Someone else saves a new description while the form is open.
    assert api(dashboard, "PATCH", path, json={"description": "theirs"}).status_code == 200
    fill_form(page, {"Description": "mine"})
    page.get_by_role("button", name="Save changes").click()
    errors = page.locator(".form-errors")
    expect(errors).to_contain_text("changed by someone else")
    expect(errors).to_contain_text("description")
    shot(page, "stale-edit")
    assert api(dashboard, "GET", path).json()["description"] == "theirs"


def test_a_change_of_other_fields_meanwhile_does_not_stop_the_save(
    page: Page, dashboard: Dashboard
) -> None:
    sign_in(page, dashboard)
    agent_id = _agent(dashboard)
    path = f"/api/agents/{agent_id}"
    goto(page, dashboard, f"agents/{agent_id}")
    assert api(dashboard, "PATCH", path, json={"system_prompt": "theirs"}).status_code == 200
    fill_form(page, {"Description": "mine"})
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    fill_form(page, {"Description": "mine again"})  # the form now holds the saved version
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    stored = api(dashboard, "GET", path).json()
    assert (stored["description"], stored["system_prompt"]) == ("mine again", "theirs")
    assert stored["version"] == 4
