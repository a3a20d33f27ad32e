"""The agent builder's "Offer as an MCP tool" checkbox (Tools tab) saves `mcp_exposed`, which
puts the agent among its owner's tools at /mcp (tests/api/test_mcp_server.py)."""

from __future__ import annotations

import uuid

from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard, sign_in
from tests.web.ui import api, goto


def test_the_builder_offers_an_agent_as_an_mcp_tool(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    created = api(dashboard, "POST", "/api/agents", json={"name": f"mcp-{uuid.uuid4().hex[:6]}"})
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    assert created.json()["mcp_exposed"] is False
    goto(page, dashboard, f"agents/{agent_id}")

    page.get_by_role("tablist", name="Agent settings").get_by_role("tab", name="Tools").click()
    offer = page.get_by_label("Offer as an MCP tool")
    expect(offer).not_to_be_checked()
    offer.check()
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    assert api(dashboard, "GET", f"/api/agents/{agent_id}").json()["mcp_exposed"] is True
