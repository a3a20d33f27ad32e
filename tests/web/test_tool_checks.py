"""The "try it" panels: MCP test connection + allowlist, custom tool validate / run, guardrail try."""

from __future__ import annotations

import re
import sys
import uuid

from playwright.sync_api import Page, expect

from tests.engine.mcp_fixtures import SERVERS
from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, goto


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_mcp_test_connection_lists_tools_and_saves_the_allowlist(
    page: Page, dashboard: Dashboard
) -> None:
    config = {"command": sys.executable, "args": [str(SERVERS / "demo_mcp.py"), "stdio"]}
    server = api(
        dashboard, "POST", "/api/mcps", json={"name": _name("mcp"), "connection_config": config}
    ).json()
    sign_in(page, dashboard)
    goto(page, dashboard, f"mcps/{server['id']}")
    page.get_by_role("button", name="Test connection").click()
    tools = page.get_by_role("group", name="Tools offered to agents")
    expect(tools.get_by_label("add", exact=True)).to_be_checked()
    expect(tools.get_by_label("lookup_order", exact=True)).to_be_checked()
    expect(page.get_by_text("Connected in")).to_be_visible()
    for name in ("lookup_order", "environment", "slow", "crash", "secret_admin_tool"):
        box = tools.get_by_label(name, exact=True)
        if box.count():
            box.uncheck()
    page.get_by_role("button", name="Save allowed tools").click()
    # The toast, not the panel's "Tick the tools agents may use" line (get_by_text ignores case).
    expect(page.get_by_text(re.compile(r"^Agents may use 1 of \d+ tools\.$"))).to_be_visible()
    shot(page, "mcp-test-connection")
    saved = api(dashboard, "GET", f"/api/mcps/{server['id']}").json()
    assert "add" in saved["allowed_tools"]
    assert "lookup_order" not in saved["allowed_tools"]
    assert saved["status"] == "connected"
    expect(page.get_by_label("Allowed tools", exact=True)).to_have_value(
        "\n".join(saved["allowed_tools"])
    )


def test_custom_tool_validate_and_run_with_arguments(page: Page, dashboard: Dashboard) -> None:
    tool = api(
        dashboard,
        "POST",
        "/api/custom-tools",
        json={"name": _name("mul"), "source_code": "def run(a, b):\n    return a * b\n"},
    ).json()
    sign_in(page, dashboard)
    goto(page, dashboard, f"custom-tools/{tool['id']}")
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_text("Valid: entry point run().")).to_be_visible()
    page.get_by_label("Source code (Python)").fill("def run(:\n  pass\n")
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_role("alert").filter(has_text="syntax error at line 1")).to_be_visible()
    page.get_by_label("Arguments (JSON)").fill('{"a": 6, "b": 7}')
    page.get_by_role("button", name="Run with arguments").click()
    expect(page.locator("pre.result")).to_have_text("42")
    page.get_by_label("Arguments (JSON)").fill('{"a": 6}')
    page.get_by_role("button", name="Run with arguments").click()
    expect(page.get_by_role("alert").filter(has_text="Failed after")).to_be_visible()
    shot(page, "custom-tool-run")


def test_guardrail_try_it_box_uses_the_form(page: Page, dashboard: Dashboard) -> None:
    guard = api(
        dashboard,
        "POST",
        "/api/guardrails",
        json={"name": _name("g"), "action": "redact", "prompt_config": {"pii": ["email"]}},
    ).json()
    sign_in(page, dashboard)
    goto(page, dashboard, f"guardrails/{guard['id']}")
    page.get_by_label("Text to try").fill("write to bob@example.com")
    page.get_by_role("button", name="Try it").click()
    expect(page.locator("pre.result")).to_have_text("write to [REDACTED:email]")
    expect(page.get_by_text("contains email (1)")).to_be_visible()
    # Unsaved edits are tried as they stand.
    page.get_by_label("Action", exact=True).select_option(label="block")
    page.get_by_role("button", name="Try it").click()
    expect(page.locator("pre.result")).to_contain_text("Blocked by guardrail")
    shot(page, "guardrail-try")
