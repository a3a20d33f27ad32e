"""The Usage page: totals, the chart and the table of groups from the usage API, the CSV export
(carrying the key like every download), the empty state and a refused range, a user's own view,
and the budgets panel (admins create, edit and delete; users see the budgets that apply to them).

Usage is written with the usage ledger's own store (`UsageStore.record`, as the engine does after
each model call) into the dashboard's database. The web suite shares one database, and other tests'
runs record usage "now", so the exact figures here use days of their own in the past: each test
reads a week of 2025 nobody else writes to. Budgets measure the current period, so the budget test
records its calls today, on agents of its own.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tbd_agents.observability.usage.records import UsageCall
from tbd_agents.observability.usage.store import usage_store_for
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.support import pg
from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, goto, rendered


def record(dashboard: Dashboard, calls: list[UsageCall]) -> None:
    """Write `calls` to the ledger of the dashboard's database."""

    async def write() -> None:
        store = PostgresStore(
            create_engine(dashboard.url, pool_size=1, max_overflow=0), url=dashboard.url
        )
        try:
            usage = usage_store_for(store)
            for call in calls:
                assert await usage.record(call)
        finally:
            await store.close()

    pg.run(write())


def call(at: datetime, cost: str, tokens: tuple[int, int], **ids: str) -> UsageCall:
    return UsageCall(
        call_key=uuid.uuid4().hex,
        at=at,
        model=ids.pop("model", "gpt-4o"),
        purpose="turn",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=Decimal(cost),
        provider_type="openai",
        **ids,
    )


def day(text: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(text).replace(hour=hour, tzinfo=UTC)


def agent(dashboard: Dashboard, name: str) -> dict:  # type: ignore[type-arg]
    response = api(dashboard, "POST", "/api/agents", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


def totals(page: Page) -> dict[str, str]:
    strip = page.locator("dl.totals")
    return {
        item.get_attribute("data-total") or "": item.locator("dd").inner_text()
        for item in strip.locator(".total").all()
    }


def wait_ready(page: Page) -> None:
    expect(page.locator("section.usage-results")).to_have_attribute("data-state", "ready")


def table_rows(page: Page, selector: str) -> list[list[str]]:
    rows = page.locator(f"{selector} tbody tr")
    return [
        [cell.inner_text().strip() for cell in row.locator("th, td").all()] for row in rows.all()
    ]


def test_totals_chart_groups_and_csv_for_an_admin(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    alpha, beta = agent(dashboard, f"alpha-{tag}"), agent(dashboard, f"beta-{tag}")
    ana, ben = f"ana-{tag}", f"ben-{tag}"
    record(dashboard, [
        call(day("2025-03-03"), "0.0125", (1000, 200), agent_id=alpha["id"], user_id=ana),
        call(day("2025-03-03", 15), "0.0075", (600, 100), agent_id=beta["id"], user_id=ben,
             model="claude-sonnet"),
        call(day("2025-03-05"), "0.0300", (2500, 500), agent_id=alpha["id"], user_id=ana),
        call(day("2025-03-06"), "0.0020", (150, 50), agent_id=beta["id"], user_id=ben,
             model="claude-sonnet"),
    ])  # fmt: skip
    sign_in(page, dashboard)
    route = "usage?range=custom&start=2025-03-01&end=2025-03-07&group_by=agent&metric=cost"
    goto(page, dashboard, route)
    wait_ready(page)
    expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Usage")).to_have_attribute("aria-current", "page")
    assert totals(page) == {
        "cost_usd": "$0.0520",
        "total_tokens": "5,100",
        "input_tokens": "4,250",
        "output_tokens": "850",
        "calls": "4",
    }
    # The groups, by cost, with their share.
    assert table_rows(page, "table.usage-groups") == [
        [f"alpha-{tag}", "$0.0425", "4,200", "3,500", "700", "2", "81.7 %"],
        [f"beta-{tag}", "$0.0095", "900", "750", "150", "2", "18.3 %"],
    ]
    # The chart: one bar per day (gaps included), one segment per agent, the values of the API.
    chart = page.get_by_role("img", name="Cost per day")
    label = chart.get_attribute("aria-label") or ""
    assert "2025-03-01 to 2025-03-07: $0.0520 in total" in label
    assert "highest 2025-03-05 with $0.0300" in label
    groups = page.locator("svg.chart g.bar-group")
    assert groups.count() == 7
    assert [g.get_attribute("data-total") for g in groups.all()] == [
        "0", "0", "0.02", "0", "0.03", "0.002", "0",
    ]  # fmt: skip
    march_3 = page.locator('svg.chart g.bar-group[data-date="2025-03-03"] rect')
    assert sorted((r.get_attribute("data-series"), r.get_attribute("data-value"))
                  for r in march_3.all()) == sorted(
        [(alpha["id"], "0.0125"), (beta["id"], "0.0075")]
    )  # fmt: skip
    # The same numbers as a table (the chart's text alternative).
    page.get_by_text("Show the chart's numbers as a table").click()
    data = table_rows(page, "table.chart-table")
    assert data[2] == ["2025-03-03", "$0.0125", "$0.0075", "$0.0200"]
    assert data[0] == ["2025-03-01", "$0.00", "$0.00", "$0.00"]
    shot(page, "usage-admin-cost")

    # Tokens instead of cost; the address follows the choices.
    page.get_by_label("Tokens", exact=True).check()
    wait_ready(page)
    expect(page.get_by_role("img", name="Tokens per day")).to_be_visible()
    assert "metric=tokens" in page.url
    march_5 = page.locator('svg.chart g.bar-group[data-date="2025-03-05"]')
    assert march_5.get_attribute("data-total") == "3000"
    # Grouped by model.
    page.get_by_label("Group by").select_option(label="Model")
    wait_ready(page)
    assert "group_by=model" in page.url
    assert [row[0] for row in table_rows(page, "table.usage-groups")] == [
        "gpt-4o", "claude-sonnet",
    ]  # fmt: skip
    assert [row[-1] for row in table_rows(page, "table.usage-groups")] == ["82.4 %", "17.6 %"]

    # The CSV export: the API's file, fetched with the key, with the page's parameters.
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename == "usage-2025-03-01-2025-03-07.csv"
    saved = tmp_path / "usage.csv"
    download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert {(r["day"], r["model"], r["calls"]) for r in rows} == {
        ("2025-03-03", "gpt-4o", "1"), ("2025-03-03", "claude-sonnet", "1"),
        ("2025-03-05", "gpt-4o", "1"), ("2025-03-06", "claude-sonnet", "1"),
    }  # fmt: skip
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal("0.052")
    # Every model call instead of daily rows.
    page.get_by_label("CSV holds").select_option(label="every model call")
    wait_ready(page)
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    info.value.save_as(saved)
    calls = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert sorted(r["user_id"] for r in calls) == sorted([ana, ana, ben, ben])
    assert sum(int(r["input_tokens"]) for r in calls) == 4250
    href = page.get_by_role("link", name="Export CSV").get_attribute("href") or ""
    assert href.startswith("/api/usage/export.csv?") and "level=calls" in href

    # The choices survive a reload (they are in the address).
    page.reload()
    rendered(page)
    wait_ready(page)
    expect(page.get_by_label("Group by")).to_have_value("model")
    expect(page.get_by_label("Tokens", exact=True)).to_be_checked()
    # Chart, totals and tables fit a small laptop screen.
    page.set_viewport_size({"width": 1024, "height": 640})
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the Usage page is wider than the window by {overflow}px"
    shot(page, "usage-laptop-1024")


def test_a_user_sees_only_their_usage_and_the_budgets_on_it(
    page: Page, dashboard: Dashboard
) -> None:
    tag = uuid.uuid4().hex[:6]
    cleo = f"cleo-{tag}"
    key = dashboard.new_key(cleo)
    record(dashboard, [
        call(day("2025-04-08"), "0.5", (10_000, 2_000), user_id=cleo),
        call(day("2025-04-09"), "1.25", (20_000, 4_000), user_id=cleo),
        call(day("2025-04-09"), "7", (1, 1), user_id=f"someone-else-{tag}"),
    ])  # fmt: skip
    budget = api(dashboard, "POST", "/api/budgets", json={
        "name": f"cleo-daily-{tag}", "scope": "user", "target_id": cleo, "metric": "tokens",
        "period": "day", "limit": 1000,
    })  # fmt: skip
    assert budget.status_code == 201, budget.text
    sign_in(page, dashboard, key)
    goto(page, dashboard, "usage?range=custom&start=2025-04-07&end=2025-04-13&group_by=agent")
    wait_ready(page)
    assert totals(page)["cost_usd"] == "$1.75"
    assert totals(page)["calls"] == "2"
    # Users cannot group by user; they see their own usage only.
    options = page.get_by_label("Group by").locator("option").all_inner_texts()
    assert "User" not in options and "Agent" in options
    # The budget on them, read-only.
    panel = page.locator("section.budgets-panel")
    expect(panel.locator(".budgets-body")).to_have_attribute("data-state", "ready")
    row = panel.locator(f"tr[data-budget-id='{budget.json()['id']}']")
    expect(row).to_contain_text(f"User: {cleo}")
    expect(row).to_contain_text("1,000 tokens per day")
    expect(row).to_contain_text("0 of 1,000 (0 %)")
    expect(row.locator(".badge")).to_have_text("ok")
    expect(panel.get_by_role("button", name="New budget")).to_have_count(0)
    expect(row.get_by_role("button")).to_have_count(0)
    api(dashboard, "DELETE", f"/api/budgets/{budget.json()['id']}")


def test_empty_state_and_a_refused_range(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard, dashboard.new_key(f"dora-{uuid.uuid4().hex[:6]}"))
    goto(page, dashboard, "usage")
    wait_ready(page)
    expect(page.locator("section.usage-results")).to_contain_text("No model calls in this period.")
    expect(page.locator("svg.chart")).to_have_count(0)
    expect(page.get_by_label("Period")).to_have_value("30")
    today = datetime.now(UTC).date()
    expect(page.locator("#usage-results-title")).to_have_text(
        f"{today - timedelta(days=29)} to {today}"
    )
    # A range the API refuses (end before start): its message, not a broken page.
    goto(page, dashboard, "usage?range=custom&start=2025-05-09&end=2025-05-01")
    results = page.locator("section.usage-results")
    expect(results).to_have_attribute("data-state", "error")
    expect(results.get_by_role("alert")).to_contain_text("Start must not be after end.")


def test_an_admin_creates_edits_and_deletes_a_budget(page: Page, dashboard: Dashboard) -> None:
    tag = uuid.uuid4().hex[:6]
    target = agent(dashboard, f"capped-{tag}")
    now = datetime.now(UTC)
    record(dashboard, [
        call(now - timedelta(minutes=5), "0.0060", (500, 100), agent_id=target["id"]),
        call(now - timedelta(minutes=1), "0.0030", (200, 50), agent_id=target["id"]),
    ])  # fmt: skip
    sign_in(page, dashboard)
    goto(page, dashboard, "usage")
    wait_ready(page)
    panel = page.locator("section.budgets-panel")
    panel.get_by_role("button", name="New budget").click()
    dialog = page.get_by_role("dialog", name="New budget")
    dialog.get_by_label("Name", exact=True).fill(f"capped-daily-{tag}")
    dialog.get_by_label("Applies to").select_option(label="Agent")
    expect(dialog.get_by_label("User", exact=True)).to_be_hidden()
    dialog.get_by_label("Agent", exact=True).select_option(label=f"capped-{tag}")
    dialog.get_by_label("Measure").select_option(label="Cost (US dollars)")
    dialog.get_by_label("Period").select_option(label="Day (UTC)")
    # A limit the API refuses is reported on its field.
    dialog.get_by_label("Limit").fill("0")
    dialog.get_by_role("button", name="Create budget").click()
    limit_error = dialog.locator(".field-limit .field-error")
    expect(limit_error).to_contain_text("Limit must be a number > 0.")
    dialog.get_by_label("Limit").fill("0.01")
    dialog.get_by_role("button", name="Create budget").click()
    expect(dialog).to_have_count(0)
    expect(page.locator(".notice-success").last).to_contain_text("Budget created.")

    made = [
        b
        for b in api(dashboard, "GET", "/api/budgets").json()
        if b["name"] == f"capped-daily-{tag}"
    ]
    assert len(made) == 1
    budget = made[0]
    assert (budget["scope"], budget["target_id"], budget["metric"], budget["period"]) == (
        "agent", target["id"], "cost_usd", "day",
    )  # fmt: skip
    assert (budget["limit"], budget["warn_ratio"], budget["enabled"]) == (0.01, 0.8, True)
    row = panel.locator(f"tr[data-budget-id='{budget['id']}']")
    expect(row).to_contain_text(f"Agent: capped-{tag}")
    expect(row).to_contain_text("$0.0100 per day")
    expect(row).to_contain_text("$0.0090 of $0.0100 (90 %)")
    expect(row.locator(".badge")).to_have_text("warning")
    assert row.locator("progress").get_attribute("value") == "0.9"
    shot(page, "usage-budgets")

    # Edit: a lower limit puts it over.
    row.get_by_role("button", name=f"Edit budget capped-daily-{tag}").click()
    dialog = page.get_by_role("dialog", name=f"Edit budget “capped-daily-{tag}”")
    expect(dialog.get_by_label("Agent", exact=True)).to_have_value(target["id"])
    expect(dialog.get_by_label("Limit")).to_have_value("0.01")
    dialog.get_by_label("Limit").fill("0.005")
    dialog.get_by_role("button", name="Save budget").click()
    expect(dialog).to_have_count(0)
    expect(row).to_contain_text("$0.0090 of $0.0050 (180 %)")
    expect(row.locator(".badge")).to_have_text("exceeded")
    saved = api(dashboard, "GET", f"/api/budgets/{budget['id']}").json()
    assert saved["limit"] == 0.005 and saved["status"]["state"] == "exceeded"

    # Delete, after a confirmation.
    row.get_by_role("button", name=f"Delete budget capped-daily-{tag}").click()
    page.get_by_role("dialog", name="Delete budget").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert api(dashboard, "GET", f"/api/budgets/{budget['id']}").status_code == 404


def test_a_run_through_the_engine_shows_on_the_usage_page(
    page: Page, dashboard: Dashboard, model_server: ProtocolServer
) -> None:
    """End to end: a workflow run against the local model server is recorded by the engine
    (two model calls: a tool call, then the answer) and shows on the Usage page. The admin owns
    the records (only admins' providers may reach a local address); other tests' runs land in
    the same days, so the figures checked are the workflow's own row, bar segment and filter."""
    tag = uuid.uuid4().hex[:6]

    def create(path: str, body: dict) -> dict:  # type: ignore[type-arg]
        response = api(dashboard, "POST", path, json=body)
        assert response.is_success, response.text
        return response.json()  # type: ignore[no-any-return]

    model_server.reset()
    provider = create("/api/providers", {
        "name": f"usage-{tag}", "provider_type": "custom", "base_url": f"{model_server.url}/v1",
        "auth_type": "none", "default_model": "llama3.1",
    })  # fmt: skip
    bot = create("/api/agents", {
        "name": f"counted-{tag}", "provider_id": provider["id"], "model": "llama3.1",
        "builtin_tools": ["update_todos"],
    })  # fmt: skip
    workflow = create("/api/workflows", {"title": f"metered-{tag}", "agent_id": bot["id"]})
    model_server.script(
        Turn(tool_calls=[("update_todos", {"todos": [{"title": "count", "status": "done"}]})],
             usage=(50, 10)),
        Turn(text="Counted.", usage=(80, 12)),
    )  # fmt: skip
    sign_in(page, dashboard)
    goto(page, dashboard, f"workflows/{workflow['id']}")
    page.get_by_label("Prompt", exact=True).fill("Count the calls.")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator(".live .run-head .badge")).to_have_text("completed", timeout=30_000)

    goto(page, dashboard, "usage?range=7&group_by=workflow&metric=tokens")
    wait_ready(page)
    row = page.locator(f"table.usage-groups tbody tr[data-key='{workflow['id']}']")
    expect(row).to_be_visible()
    cells = [cell.strip() for cell in row.locator("th, td").all_inner_texts()]
    assert cells[:6] == [f"metered-{tag}", "$0.00", "152", "130", "22", "2"]
    today = datetime.now(UTC).date().isoformat()
    # Today's bar holds it (other workflows' runs today may share the bar, or fold it into
    # "Other" past the chart's eight colours).
    bar = page.locator(f'svg.chart g.bar-group[data-date="{today}"]')
    assert float(bar.get_attribute("data-total") or 0) >= 152
    usage = api(dashboard, "GET", "/api/usage/summary",
                params={"workflow_id": workflow["id"]}).json()  # fmt: skip
    assert (usage["totals"]["calls"], usage["totals"]["total_tokens"]) == (2, 152)


def test_many_groups_fold_into_other_in_the_chart_but_not_in_the_table(
    page: Page, dashboard: Dashboard
) -> None:
    tag = uuid.uuid4().hex[:6]
    models = [f"m{i:02d}-{tag}" for i in range(10)]
    # Model i costs (i + 1) cents and 10 * (10 - i) + 1 tokens on 2025-06-03: by cost the three
    # cheapest fold into "Other", by tokens the three most expensive.
    record(dashboard, [
        call(day("2025-06-03"), f"{(i + 1) / 100:.2f}", (10 * (10 - i), 1), model=m)
        for i, m in enumerate(models)
    ])  # fmt: skip
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/usage/timeseries" in r.url else None)
    sign_in(page, dashboard)
    goto(page, dashboard, "usage?range=custom&start=2025-06-02&end=2025-06-04&group_by=model")
    wait_ready(page)
    # The server keeps the top 7 by the charted metric and sums the rest ("_other", 3 groups).
    assert asked and "limit=7" in asked[-1] and "metric=cost_usd" in asked[-1], asked
    legend = page.locator(".chart-legend li").all_inner_texts()
    assert legend == [*reversed(models[3:]), "Other (3)"]
    segments = page.locator('svg.chart g.bar-group[data-date="2025-06-03"] rect')
    values = {r.get_attribute("data-series"): r.get_attribute("data-value") for r in segments.all()}
    assert float(values["_other"] or 0) == pytest.approx(0.06)
    assert len(values) == 8
    # The table keeps every model, by cost.
    names = [row[0] for row in table_rows(page, "table.usage-groups")]
    assert names == list(reversed(models))
    assert totals(page)["cost_usd"] == "$0.5500"
    page.get_by_label("Tokens", exact=True).check()
    expect(page.locator(".chart-legend li").last).to_have_text("Other (3)")
    expect(page.locator(".chart-legend li").first).to_have_text(models[0])
    wait_ready(page)
    assert "metric=total_tokens" in asked[-1], asked
    assert page.locator(".chart-legend li").all_inner_texts() == [*models[:7], "Other (3)"]
    other = page.locator('svg.chart g.bar-group[data-date="2025-06-03"] rect[data-series="_other"]')
    assert float(other.get_attribute("data-value") or 0) == 31 + 21 + 11
