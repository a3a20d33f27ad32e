"""Workflows from the dashboard: create one, run a prompt, watch its events live (progress, tool
calls, the answer, usage, status), halt a run, and see the history of runs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.engine.protocol_server import ProtocolServer, Turn
from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, create, rendered


@pytest.fixture
def agent(dashboard: Dashboard, model_server: ProtocolServer) -> dict[str, Any]:
    model_server.reset()
    provider = api(
        dashboard,
        "POST",
        "/api/providers",
        json={
            "name": f"wf-{uuid.uuid4().hex[:6]}",
            "provider_type": "custom",
            "base_url": f"{model_server.url}/v1",
            "auth_type": "none",
            "default_model": "llama3.1",
        },
    ).json()
    return api(
        dashboard,
        "POST",
        "/api/agents",
        json={
            "name": f"worker-{uuid.uuid4().hex[:6]}",
            "provider_id": provider["id"],
            "model": "llama3.1",
            "builtin_tools": ["update_todos"],
        },
    ).json()


def test_create_run_and_watch_a_workflow(
    page: Page, dashboard: Dashboard, model_server: ProtocolServer, agent: dict[str, Any]
) -> None:
    sign_in(page, dashboard)
    name = f"digest-{uuid.uuid4().hex[:6]}"
    workflow_id = create(
        page,
        dashboard,
        "workflows",
        "workflow",
        {"Title": name, "Agent": agent["name"], "Max turns": "4"},
    )
    expect(page.locator(".runs, .muted").filter(has_text="No runs yet")).to_be_visible()
    model_server.script(
        Turn(tool_calls=[("update_todos", {"todos": [{"title": "read", "status": "done"},
                                                     {"title": "write", "status": "pending"}]})],
             usage=(50, 10)),
        Turn(text="The **digest** is ready.", chunk_chars=4, delay=0.02, usage=(80, 12)),
    )  # fmt: skip
    page.get_by_label("Prompt", exact=True).fill("Summarise today's news.")
    page.get_by_role("button", name="Run", exact=True).click()
    live = page.locator(".live")
    expect(live.locator(".run-head .badge")).to_have_text("completed", timeout=30_000)
    expect(live.locator(".answer strong")).to_have_text("digest")
    events = live.locator(".events .event")
    types = events.evaluate_all("els => els.map(e => e.dataset.type)")
    assert types[0] == "status"
    assert "tool_call" in types and "progress" in types
    expect(live.locator(".event-progress")).to_contain_text("1 of 2 steps done")
    expect(live.locator(".event-tool_call summary")).to_contain_text("update_todos")
    expect(live.locator(".event-tool_call .tool-result")).to_contain_text("1/2 done")
    expect(live.locator(".usage")).to_contain_text("130 in / 22 out")
    shot(page, "workflow-run")
    # History: the run with its status, duration and tokens.
    row = page.locator("table.runs tbody tr").first
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("130 in / 22 out")
    expect(row).to_contain_text("Summarise today's news.")
    tasks = api(dashboard, "GET", "/api/tasks", params={"workflow_id": workflow_id}).json()
    assert [t["status"] for t in tasks] == ["completed"]
    # Opening a past run replays its stored events.
    page.reload()
    rendered(page)
    page.locator("table.runs tbody tr").first.get_by_role("button").first.click()
    expect(page.locator(".live .answer strong")).to_have_text("digest")
    expect(page.locator(".live .run-head .badge")).to_have_text("completed")


def test_halt_a_running_workflow(
    page: Page, dashboard: Dashboard, model_server: ProtocolServer, agent: dict[str, Any]
) -> None:
    workflow = api(
        dashboard, "POST", "/api/workflows", json={"title": "slow", "agent_id": agent["id"]}
    ).json()
    sign_in(page, dashboard)
    page.evaluate("(h) => { window.location.hash = h; }", f"#/workflows/{workflow['id']}")
    rendered(page, f"#/workflows/{workflow['id']}")
    model_server.script(Turn(text="word " * 400, chunk_chars=5, delay=0.05))
    page.get_by_label("Prompt", exact=True).fill("Write a very long essay.")
    page.get_by_role("button", name="Run", exact=True).click()
    halt = page.get_by_role("button", name="Halt")
    expect(halt).to_be_visible()
    expect(page.locator(".live .answer")).to_contain_text("word word")
    halt.click()
    expect(page.locator(".live .run-head .badge")).to_have_text("halted", timeout=20_000)
    expect(halt).to_be_hidden()
    expect(page.locator("table.runs tbody tr").first).to_contain_text("halted")
    shot(page, "workflow-halted")
    tasks = api(dashboard, "GET", "/api/tasks", params={"workflow_id": workflow["id"]}).json()
    assert tasks[0]["status"] == "halted"
    # A run can be deleted from the history.
    page.locator("table.runs tbody tr").first.get_by_role("button", name="Delete this run").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("#hist-title + div")).to_contain_text("No runs yet")
    assert api(dashboard, "GET", f"/api/tasks/{tasks[0]['id']}").status_code == 404


def test_a_prompt_is_required(page: Page, dashboard: Dashboard, agent: dict[str, Any]) -> None:
    workflow = api(
        dashboard, "POST", "/api/workflows", json={"title": "idle", "agent_id": agent["id"]}
    ).json()
    sign_in(page, dashboard)
    page.evaluate("(h) => { window.location.hash = h; }", f"#/workflows/{workflow['id']}")
    rendered(page, f"#/workflows/{workflow['id']}")
    page.get_by_role("button", name="Run", exact=True).click()
    prompt = page.get_by_label("Prompt", exact=True)
    expect(prompt).to_have_attribute("aria-invalid", "true")
    expect(prompt).to_be_focused()
    assert api(dashboard, "GET", "/api/tasks", params={"workflow_id": workflow["id"]}).json() == []
