"""The runs page: every run with filters kept in the address, paging, and a run's detail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from playwright.sync_api import Page, expect

from tbd_agents.domain.enums import TaskStatus, TaskTrigger
from tbd_agents.domain.models import TaskExecution
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.support import pg
from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, rendered

STATUSES = [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.RUNNING, TaskStatus.HALTED,
            TaskStatus.PENDING]  # fmt: skip


def seed(dashboard: Dashboard, runs: list[TaskExecution]) -> None:
    async def write() -> None:
        store = PostgresStore(
            create_engine(dashboard.url, pool_size=1, max_overflow=0), url=dashboard.url
        )
        try:
            async with store.unit_of_work() as repos:
                for run in runs:
                    await repos.task_executions.create(run)
        finally:
            await store.close()

    pg.run(write())


def rows(page: Page) -> int:
    return page.locator("main table.runs tbody tr").count()


def test_runs_filters_paging_and_detail(page: Page, dashboard: Dashboard) -> None:
    suffix = uuid.uuid4().hex[:6]
    agents = [api(dashboard, "POST", "/api/agents", json={"name": f"runner-{n}-{suffix}"}).json()
              for n in (1, 2)]  # fmt: skip
    flows = [api(dashboard, "POST", "/api/workflows",
                 json={"agent_id": a["id"], "title": f"flow-{n}-{suffix}"}).json()
             for n, a in enumerate(agents, 1)]  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)
    old_day = (now - timedelta(days=3)).date()
    runs = []
    for i in range(50):
        n = i % 2  # 25 runs each
        status = STATUSES[i % 5]
        runs.append(
            TaskExecution(
                workflow_id=flows[n]["id"],
                agent_id=agents[n]["id"],
                prompt=f"job {i}" + (" with the Needle inside" if i == 16 else ""),
                status=status,
                error="quota exceeded at the provider" if status is TaskStatus.FAILED else None,
                trigger=TaskTrigger.SCHEDULE if i % 3 == 0 else TaskTrigger.MANUAL,
                created_at=(
                    datetime.combine(old_day, datetime.min.time(), UTC)
                    + timedelta(hours=12, minutes=i)
                    if i < 4
                    else now - timedelta(minutes=i)
                ),
                started_at=now - timedelta(minutes=i),
                finished_at=now - timedelta(minutes=i) + timedelta(seconds=5),
                usage={"input_tokens": 100 + i, "output_tokens": 10, "cost_usd": 0.001},
                logs=[
                    {
                        "timestamp": now.isoformat(),
                        "event": "tool_call",
                        "detail": f"looked up {i}",
                        "tool_input": {"q": i},
                    }
                ],
            )
        )
    seed(dashboard, runs)
    first = agents[0]["id"]
    sign_in(page, dashboard)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Runs").click()
    rendered(page, "#/runs")
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()

    # agent filter, then paging: 20 of its 25 runs, then the rest
    page.get_by_label("Agent").select_option(label=f"runner-1-{suffix}")
    page.get_by_role("button", name="Apply filters").click()
    rendered(page, f"#/runs?agent_id={first}")
    expect(page.locator("main table.runs tbody tr")).to_have_count(20)
    expect(page.get_by_role("cell", name=f"runner-2-{suffix}")).to_have_count(0)
    page.get_by_role("button", name="Load more runs").click()
    expect(page.locator("main table.runs tbody tr")).to_have_count(25)
    expect(page.get_by_text("25 runs shown.")).to_be_visible()
    shot(page, "runs")

    # status and trigger as well: failed runs are i % 5 == 1, agent 1 is even i -> i = 6, 16, 26,
    # 36, 46; of those, scheduled ones (i % 3 == 0): 6, 36
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("Trigger").select_option("schedule")
    page.get_by_role("button", name="Apply filters").click()
    expected = f"#/runs?status=failed&agent_id={first}&trigger=schedule"
    rendered(page, expected)
    expect(page.locator("main table.runs tbody tr")).to_have_count(2)
    expect(page.locator("main table.runs tbody tr[data-status='failed']")).to_have_count(2)

    # the address is the view: opened afresh, the same filters and runs
    page.goto(dashboard.base + "/" + expected)
    rendered(page, expected)
    expect(page.get_by_label("Status")).to_have_value("failed")
    expect(page.get_by_label("Trigger")).to_have_value("schedule")
    expect(page.locator("main table.runs tbody tr")).to_have_count(2)

    # text search (any case) in the prompt or the error, and a date range
    page.get_by_label("Trigger").select_option("")
    page.get_by_label("Search").fill("needle")
    page.get_by_role("button", name="Apply filters").click()
    rendered(page, f"#/runs?status=failed&agent_id={first}&q=needle")
    expect(page.locator("main table.runs tbody tr")).to_have_count(1)
    page.get_by_role("link", name="Clear filters").click()
    rendered(page, "#/runs")
    page.get_by_label("Search").fill("QUOTA EXCEEDED")
    page.get_by_label("Workflow").select_option(label=f"flow-2-{suffix}")
    page.get_by_role("button", name="Apply filters").click()
    rendered(page)
    expect(page.locator("main table.runs tbody tr")).to_have_count(5)  # i = 1, 11, 21, 31, 41
    page.get_by_label("From (day)").fill(old_day.isoformat())
    page.get_by_label("To (day, included)").fill(old_day.isoformat())
    page.get_by_role("button", name="Apply filters").click()
    rendered(page)
    expect(page.locator("main table.runs tbody tr")).to_have_count(1)  # i = 1 (3 days ago)
    page.get_by_label("From (day)").fill(now.date().isoformat())
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_role("alert")).to_contain_text("“From” is after “To”")

    # a run's detail: summary, error, prompt, events
    page.get_by_role("link", name="Clear filters").click()
    rendered(page, "#/runs")
    page.get_by_label("Search").fill("needle")
    page.get_by_role("button", name="Apply filters").click()
    rendered(page, "#/runs?q=needle")
    page.locator("main table.runs tbody tr").first.get_by_role("link").click()
    rendered(page)
    assert "#/runs/" in page.url
    expect(page.get_by_role("heading", name="Error")).to_be_visible()
    expect(page.get_by_text("quota exceeded at the provider")).to_be_visible()
    expect(page.get_by_text("job 16 with the Needle inside")).to_be_visible()
    expect(page.get_by_role("heading", name="Events (1)")).to_be_visible()
    expect(page.get_by_text("looked up 16")).to_be_visible()
    expect(page.get_by_role("link", name=f"runner-1-{suffix}")).to_be_visible()
    expect(page.get_by_text("116 in / 10 out")).to_be_visible()
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_role("heading", name="Summary")).to_be_visible()
    shot(page, "run-detail-phone")
