"""The agent builder (#18): an agent opens in tabs (keyboard: arrows, Home, End); an unsaved
prompt edit is what the live test chat sends the model; the context view shows each part with
its token count, following the draft; two saves make versions, the diff shows the prompt's
change line by line, and a restore (confirmed) brings the old prompt back as a new version.
At 390 x 844 the test chat is a drawer that opens on demand."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect

from tests.engine.protocol_server import ProtocolServer, Turn
from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, goto, rendered


def _agent(dashboard: Dashboard, model_server: ProtocolServer) -> str:
    suffix = uuid.uuid4().hex[:6]
    assert (
        api(
            dashboard, "POST", "/api/tokens", json={"name": f"bk-{suffix}", "value": "sk-x"}
        ).status_code
        == 201
    )
    provider = api(
        dashboard, "POST", "/api/providers",
        json={"name": f"bp-{suffix}", "provider_type": "custom", "base_url": f"{model_server.url}/v1",
              "api_key_token_name": f"bk-{suffix}", "default_model": "llama3.1"},
    )  # fmt: skip
    assert provider.status_code == 201, provider.text
    agent = api(
        dashboard, "POST", "/api/agents",
        json={"name": f"builder-{suffix}", "system_prompt": "First line.\nSaved prompt.",
              "provider_id": provider.json()["id"], "builtin_tools": ["update_todos"]},
    )  # fmt: skip
    assert agent.status_code == 201, agent.text
    return str(agent.json()["id"])


def _prompt_tokens(page: Page) -> int:
    cell = page.locator('.context-parts tr[data-kind="prompt"] td.num')
    return int(cell.inner_text().replace(",", "").replace("\u202f", "").replace(" ", ""))


def test_builder_tabs_test_chat_context_and_versions(
    page: Page, dashboard: Dashboard, model_server: ProtocolServer
) -> None:
    model_server.reset()
    sign_in(page, dashboard)
    agent_id = _agent(dashboard, model_server)
    path = f"/api/agents/{agent_id}"
    goto(page, dashboard, f"agents/{agent_id}")

    # Tabs by keyboard.
    tablist = page.get_by_role("tablist", name="Agent settings")
    basics = tablist.get_by_role("tab", name="Basics")
    expect(basics).to_have_attribute("aria-selected", "true")
    basics.focus()
    page.keyboard.press("ArrowRight")
    model_tab = tablist.get_by_role("tab", name="Model")
    expect(model_tab).to_be_focused()
    expect(model_tab).to_have_attribute("aria-selected", "true")
    expect(page.get_by_label("Provider", exact=True)).to_be_visible()
    expect(page.get_by_label("System prompt", exact=True)).to_be_hidden()
    page.keyboard.press("End")
    expect(tablist.get_by_role("tab", name="Versions")).to_be_focused()
    page.keyboard.press("Home")
    expect(basics).to_be_focused()

    # An unsaved prompt edit drives the test chat.
    prompt = page.get_by_label("System prompt", exact=True)
    prompt.fill("First line.\nYou are the DRAFT prompt.")
    expect(page.get_by_text("Unsaved changes")).to_be_visible()
    model_server.script(Turn(text="Hello from the **draft**."))
    box = page.get_by_label("Test message")
    box.fill("Who are you?")
    box.press("Enter")
    log = page.get_by_role("log", name="Test conversation")
    expect(log).to_contain_text("Hello from the draft.")
    sent = model_server.requests[-1].conversation()
    assert sent[0]["role"] == "system" and "You are the DRAFT prompt." in sent[0]["text"]
    assert sent[-1]["text"] == "Who are you?"
    assert api(dashboard, "GET", path).json()["system_prompt"] == "First line.\nSaved prompt."
    assert api(dashboard, "GET", f"{path}/chat/sessions").json() == []

    # Leaving with unsaved changes asks first.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Agents").click()
    leave = page.get_by_role("dialog", name="Leave without saving?")
    leave.get_by_role("button", name="Cancel").click()
    expect(leave).to_have_count(0)
    assert page.url.endswith(f"#/agents/{agent_id}")
    expect(prompt).to_have_value("First line.\nYou are the DRAFT prompt.")

    # The context view: parts with token counts, following the draft.
    page.get_by_role("tab", name="Context").click()
    parts = page.locator(".context-parts")
    expect(parts.locator('tr[data-kind="prompt"]')).to_contain_text("System prompt")
    expect(parts.locator('tr[data-kind="format"]')).to_be_visible()
    expect(page.locator(".context-tools")).to_contain_text("update_todos")
    expect(page.locator(".context-total")).to_contain_text("context window")
    before = _prompt_tokens(page)
    assert before > 0
    page.get_by_role("tab", name="Basics").click()
    prompt.fill("First line.\nYou are the DRAFT prompt. " + "Always cite your sources. " * 15)
    page.get_by_role("tab", name="Context").click()
    page.get_by_role("button", name="Show context").click()
    expect(parts.locator('tr[data-kind="prompt"] td.num')).not_to_have_text(str(before))
    assert _prompt_tokens(page) > before + 50
    shot(page, "builder-context")

    # Two saves, then the versions and their diff.
    page.get_by_role("tab", name="Basics").click()
    prompt.fill("First line.\nSecond version.")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    prompt.fill("First line.\nThird version.")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    expect(page.get_by_text("Unsaved changes")).to_have_count(0)
    page.get_by_role("tab", name="Versions").click()
    rows = page.locator("table.versions tbody tr")
    expect(rows).to_have_count(3)
    diff = page.locator(".version-diff")
    expect(diff).to_contain_text("Changes from version 2 to version 3")
    expect(diff.locator(".line-diff .del")).to_have_text(re.compile(r"Second version\."))
    expect(diff.locator(".line-diff .ins")).to_have_text(re.compile(r"Third version\."))
    expect(diff.locator(".line-diff .same")).to_contain_text("First line.")
    shot(page, "builder-versions")

    # Restore version 1, confirmed.
    page.get_by_role("button", name="Restore version 1").click()
    dialog = page.get_by_role("dialog", name="Restore version 1?")
    dialog.get_by_role("button", name="Restore").click()
    expect(page.locator(".notice-success").last).to_contain_text("Restored version 1")
    stored = api(dashboard, "GET", path).json()
    assert stored["system_prompt"] == "First line.\nSaved prompt."
    versions = api(dashboard, "GET", f"{path}/versions").json()
    assert versions[0]["number"] == 4 and versions[0]["summary"] == "restored from 1"
    expect(page.get_by_label("System prompt", exact=True)).to_have_value(
        "First line.\nSaved prompt."
    )

    # The Schedules tab lists the schedules of the agent's workflows.
    workflow = api(
        dashboard, "POST", "/api/workflows", json={"title": "nightly-wf", "agent_id": agent_id}
    ).json()
    schedule = api(
        dashboard, "POST", "/api/scheduled-agents",
        json={"workflow_id": workflow["id"], "name": "nightly-run", "prompt": "go", "enabled": False},
    ).json()  # fmt: skip
    page.get_by_role("tab", name="Schedules").click()
    panel = page.get_by_role("tabpanel", name="Schedules settings")
    expect(panel.get_by_role("link", name="nightly-run")).to_have_attribute(
        "href", f"#/scheduled-agents/{schedule['id']}"
    )
    expect(panel.get_by_role("link", name="New schedule for “nightly-wf”")).to_be_visible()

    # On a phone the test chat is a drawer.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    rendered(page, f"#/agents/{agent_id}")
    toggle = page.get_by_role("button", name="Test chat")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(page.get_by_label("Test message")).to_be_hidden()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_label("Test message")).to_be_visible()
    shot(page, "builder-phone")
