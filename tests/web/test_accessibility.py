"""axe-core (vendored, tests/web/vendor/) on every screen of the dashboard, at a laptop's and a
phone's size, in light and dark mode: no serious or critical violation anywhere.

axe is loaded as an init script of the browser context (run by the browser itself before the
page's own code, so the page's Content-Security-Policy stays as served). Each screen is opened
once; the four size/scheme combinations are checked on it without reloading: every rule at both
sizes in light mode, the colour rules in dark mode (the scheme changes nothing else)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tests.web.conftest import Dashboard, sign_in
from tests.web.test_runs_page import seed
from tests.web.ui import api, goto, rendered

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
SIZES = [{"width": 1366, "height": 768}, {"width": 390, "height": 844}]
SCHEMES = ["light", "dark"]
RESOURCES = [
    "agents", "skills", "mcps", "custom-tools", "guardrails", "providers", "tokens",
    "knowledge-sources", "knowledge-items", "memories", "workflows", "scheduled-agents",
]  # fmt: skip

#: What a colour scheme can change: the rules that read colours (the rest is checked in light).
COLOUR_RULES = ["color-contrast", "link-in-text-block"]

RUN_AXE = """async (rules) => {
  const options = { resultTypes: ["violations"] };
  if (rules) options.runOnly = { type: "rule", values: rules };
  const result = await window.axe.run(document, options);
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({
      rule: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => ({
        target: n.target.join(" "), summary: (n.failureSummary || "").replace(/\\s+/g, " "),
      })),
      more: Math.max(0, v.nodes.length - 5),
    }));
}"""


def check(page: Page, screen: str, found: list[str]) -> None:
    """Run axe on the current screen in every size and scheme; add readable lines to `found`."""
    for size in SIZES:
        page.set_viewport_size(size)
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
            rules = None if scheme == "light" else COLOUR_RULES
            violations: list[dict[str, Any]] = page.evaluate(RUN_AXE, rules)
            for v in violations:
                where = f"{screen} @ {size['width']}x{size['height']} {scheme}"
                found.append(f"{where}: [{v['impact']}] {v['rule']}: {v['help']}")
                for node in v["nodes"]:
                    found.append(f"    {node['target']}: {node['summary']}")
                if v["more"]:
                    found.append(f"    … and {v['more']} more elements")
    page.set_viewport_size(SIZES[0])
    page.emulate_media(color_scheme="light")


def report(found: list[str]) -> str:
    return "serious/critical accessibility violations:\n" + "\n".join(found)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def records(dashboard: Dashboard) -> dict[str, str]:
    """One record of every resource (made through the API), by resource route."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = api(dashboard, "POST", path, json=body)
        assert response.status_code == 201, (path, response.text)
        return response.json()

    token = post("/api/tokens", {"name": unique("a11y-key"), "value": "sk-a11y"})
    provider = post(
        "/api/providers",
        {"name": unique("a11y"), "provider_type": "openai", "api_key_token_name": token["name"]},
    )
    skill = post("/api/skills", {"name": unique("a11y-skill"), "instructions": "Be brief."})
    agent = post(
        "/api/agents",
        {"name": unique("a11y-agent"), "provider_id": provider["id"], "skill_ids": [skill["id"]]},
    )
    source = post("/api/knowledge-sources", {"name": unique("a11y-src")})
    item = post(
        "/api/knowledge-items",
        {"source_id": source["id"], "name": "Notes", "text_content": "Some notes."},
    )
    workflow = post("/api/workflows", {"title": unique("a11y-wf"), "agent_id": agent["id"]})
    made = {
        "agents": agent,
        "skills": skill,
        "tokens": token,
        "providers": provider,
        "knowledge-sources": source,
        "knowledge-items": item,
        "workflows": workflow,
        "mcps": post(
            "/api/mcps",
            {"name": unique("a11y-mcp"), "connection_config": {"command": "true", "args": []}},
        ),
        "custom-tools": post(
            "/api/custom-tools",
            {"name": unique("a11y_tool"), "source_code": "def run(a):\n    return a\n"},
        ),
        "guardrails": post("/api/guardrails", {"name": unique("a11y-g"), "patterns": ["x"]}),
        "memories": post(
            "/api/memories", {"agent_id": agent["id"], "key": "k1", "value": "remember this"}
        ),
        "scheduled-agents": post(
            "/api/scheduled-agents",
            {"workflow_id": workflow["id"], "name": unique("a11y-s"), "prompt": "go"},
        ),
    }
    return {route: record["id"] for route, record in made.items()}


def test_sign_in_and_shell_screens_have_no_serious_violations(
    page: Page, dashboard: Dashboard
) -> None:
    page.context.add_init_script(path=str(AXE))
    found: list[str] = []
    page.goto(dashboard.base + "/")
    expect(page.get_by_label("API key")).to_be_visible()
    check(page, "sign-in", found)
    # A refused key: the sign-in screen with its error.
    page.get_by_label("API key").fill("tbd_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    check(page, "sign-in (error)", found)

    agent = api(dashboard, "POST", "/api/agents", json={"name": unique("a11y-chat")}).json()
    session = api(
        dashboard,
        "POST",
        "/api/chat/sessions",
        json={"agent_id": agent["id"], "title": "Accessibility"},
    ).json()
    for role, content in (("user", "Hi there"), ("assistant", "Hello **you**:\n\n- one\n- `two`")):
        api(
            dashboard,
            "POST",
            f"/api/chat/sessions/{session['id']}/messages",
            json={"role": role, "content": content},
        )
    workflow = api(
        dashboard, "POST", "/api/workflows", json={"agent_id": agent["id"], "title": "a11y runs"}
    ).json()
    run = TaskExecution(
        workflow_id=workflow["id"],
        agent_id=agent["id"],
        prompt="Summarise the notes",
        status=TaskStatus.FAILED,
        error="the provider refused the key",
        result="Partial summary",
        usage={"input_tokens": 120, "output_tokens": 30, "cost_usd": 0.002},
        logs=[{"timestamp": "2026-12-07T10:00:00+00:00", "event": "tool_call", "detail": "x"}],
    )
    seed(dashboard, [run])
    sign_in(page, dashboard)
    check(page, "start", found)
    for route in ("chat", f"chat/{agent['id']}", f"chat/{agent['id']}/{session['id']}",
                  "keys", "usage", "transfer", "status", "runs", f"runs/{run.id}",
                  "setup/provider", "no-such-page"):  # fmt: skip
        goto(page, dashboard, route)
        if route.count("/") == 2:
            expect(page.locator(".messages .message")).to_have_count(2)
        if route.startswith("runs/"):  # the run's detail, not "not found"
            expect(page.locator("#main")).to_contain_text("the provider refused the key")
        check(page, f"#/{route}", found)
    # A newcomer's Start page: the first-run wizard.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, dashboard, dashboard.new_key(f"a11y-new-{uuid.uuid4().hex[:6]}", KeyScope.ADMIN))
    expect(page.get_by_role("region", name="Set up your hub")).to_be_visible()
    check(page, "start (first-run wizard)", found)
    assert not found, report(found)


def test_resource_screens_have_no_serious_violations(page: Page, dashboard: Dashboard) -> None:
    ids = records(dashboard)
    page.context.add_init_script(path=str(AXE))
    sign_in(page, dashboard)
    found: list[str] = []
    for resource in RESOURCES:
        for route in (resource, f"{resource}/new", f"{resource}/{ids[resource]}"):
            goto(page, dashboard, route)
            rendered(page, f"#/{route}")
            check(page, f"#/{route}", found)
            if route == f"agents/{ids['agents']}":  # every tab of the agent builder
                tabs = page.get_by_role("tab")
                assert tabs.count() >= 7  # Basics … Versions
                for i in range(tabs.count()):
                    tab = tabs.nth(i)
                    tab.click()
                    expect(tab).to_have_attribute("aria-selected", "true")
                    check(page, f"#/{route} tab {tab.inner_text().strip()}", found)
                tabs.first.click()
            if route == f"agents/{ids['agents']}":  # and a modal dialog over a record
                page.get_by_role("button", name="Delete", exact=True).click()
                expect(page.get_by_role("dialog")).to_be_visible()
                check(page, f"#/{route} delete dialog", found)
                page.keyboard.press("Escape")
                expect(page.get_by_role("dialog")).to_be_hidden()
    assert not found, report(found)
