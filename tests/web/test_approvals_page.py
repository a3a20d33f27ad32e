"""The run detail page of a run awaiting approval: the waiting call with its arguments
(editable JSON) and Approve / Deny, and the runs list's `awaiting approval` status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from playwright.sync_api import Page, expect

from tbd_agents.domain.approvals import ToolApproval
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.support import pg
from tests.web.conftest import Dashboard, sign_in
from tests.web.ui import api, rendered


def seed(dashboard: Dashboard, task: TaskExecution, approval: ToolApproval) -> None:
    async def write() -> None:
        store = PostgresStore(
            create_engine(dashboard.url, pool_size=1, max_overflow=0), url=dashboard.url
        )
        try:
            async with store.unit_of_work() as repos:
                await repos.task_executions.create(task)
                await repos.for_model(ToolApproval).create(approval)
        finally:
            await store.close()

    pg.run(write())


def test_a_waiting_call_is_shown_and_decided_on_the_run_page(
    page: Page, dashboard: Dashboard
) -> None:
    suffix = uuid.uuid4().hex[:6]
    agent = api(dashboard, "POST", "/api/agents", json={"name": f"gated-{suffix}"}).json()
    flow = api(dashboard, "POST", "/api/workflows",
               json={"agent_id": agent["id"], "title": f"gated-{suffix}"}).json()  # fmt: skip
    owner = flow["github_user"]
    now = datetime.now(UTC)
    task = TaskExecution(
        workflow_id=flow["id"], agent_id=agent["id"], prompt="clean up",
        status=TaskStatus.AWAITING_APPROVAL, started_at=now,
    )  # fmt: skip
    approval = ToolApproval(
        task_id=task.id, workflow_id=flow["id"], owner=owner, tool_name="delete_file",
        call_id="c1", origin="mcp:files", arguments={"path": "/etc/passwd"},
        rule="agent rule 0: tool=delete_* → ask", expires_at=now + timedelta(hours=1),
    )  # fmt: skip
    seed(dashboard, task, approval)
    sign_in(page, dashboard)
    page.goto(f"{dashboard.base}/#/runs?status=awaiting_approval")
    rendered(page, "#/runs?status=awaiting_approval")
    expect(page.locator("main table.runs tbody tr[data-status='awaiting_approval']")).to_have_count(
        1
    )
    expect(page.get_by_label("Status")).to_have_value("awaiting_approval")

    page.goto(f"{dashboard.base}/#/runs/{task.id}")
    rendered(page, f"#/runs/{task.id}")
    section = page.get_by_role("region", name="Awaiting approval")
    expect(section).to_contain_text("delete_file")
    expect(section).to_contain_text("mcp:files")
    arguments = section.get_by_label("Arguments (edit before approving if needed)")
    expect(arguments).to_have_value('{\n  "path": "/etc/passwd"\n}')
    arguments.fill("{not json")
    section.get_by_role("button", name="Approve").click()
    expect(section.get_by_role("alert")).to_contain_text("not valid JSON")
    section.get_by_label("Reason").fill("too risky")
    section.get_by_role("button", name="Deny").click()
    expect(page.get_by_text("Denied: the run resumes without the call.")).to_be_visible()
    decided = api(dashboard, "GET", f"/api/approvals/{approval.id}").json()
    assert decided["status"] == "denied"
    assert decided["reason"] == "too risky"
