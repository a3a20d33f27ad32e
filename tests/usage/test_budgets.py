"""Budgets: the CRUD API (admin writes, what users read, bad values), the warning at its ratio
once per period, THE ACCEPTANCE TEST (a schedule's daily cost limit stops its next run: status
failed, events, failure webhook reason, usage totals = the calls made) and a user's token budget
stopping a chat reply — on PostgreSQL and the MongoDB emulation."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL

from tbd_agents.domain.enums import IntervalUnit, TaskStatus
from tbd_agents.domain.models import Agent, ScheduledAgent
from tbd_agents.engine.chat import chat_stream, open_session
from tbd_agents.engine.inprocess import engine_services
from tbd_agents.observability import metrics
from tbd_agents.observability.usage.records import Budget, as_cost
from tbd_agents.storage.postgres.schema_runtime import webhook_deliveries
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.usage.conftest import BACKENDS, UsageApi, call
from tests.usage.runs import PRICE, Hub, hub, now, today_filter


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, URL | None]:
    url = request.getfixturevalue("usage_db") if request.param == "pg" else None
    return request.param, url


# --- the API --------------------------------------------------------------------------------
async def test_budget_crud_is_admin_only_and_users_read_the_budgets_that_apply_to_them(
    uapi: UsageApi,
) -> None:
    owner, other = f"olga-{uuid.uuid4().hex[:6]}", f"pete-{uuid.uuid4().hex[:6]}"
    async with uapi.store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name="budgeted", created_by=owner))
    body = {"name": "agent cap", "scope": "agent", "target_id": agent.id, "metric": "cost_usd",
            "period": "month", "limit": 2.5}  # fmt: skip
    async with (
        await uapi.client(admin=True) as admin,
        await uapi.client(owner) as user,
        await uapi.client(other) as stranger,
    ):
        assert (await user.post("/api/budgets", json=body)).status_code == 403
        made = await admin.post("/api/budgets", json=body)
        assert made.status_code == 201, made.text
        budget = made.json()
        assert budget["limit"] == 2.5 and budget["warn_ratio"] == 0.8 and budget["enabled"]
        assert budget["status"]["state"] == "ok" and budget["status"]["used"] == 0
        today = datetime.now(UTC).date()
        assert budget["status"]["period_start"] == today.replace(day=1).isoformat()
        await uapi.usage.record(call(at=now(), cost="2.0", agent_id=agent.id, user_id=owner))
        bid = budget["id"]
        seen = (await user.get(f"/api/budgets/{bid}")).json()
        assert seen["status"] == {**seen["status"], "used": 2.0, "ratio": 0.8, "state": "warning"}
        assert [b["id"] for b in (await user.get("/api/budgets")).json()] == [bid]
        assert (await stranger.get(f"/api/budgets/{bid}")).status_code == 404
        assert bid not in [b["id"] for b in (await stranger.get("/api/budgets")).json()]
        listed = await admin.get("/api/budgets", params={"scope": "agent", "target_id": agent.id})
        assert [b["id"] for b in listed.json()] == [bid]
        assert (await user.put(f"/api/budgets/{bid}", json={"limit": 9})).status_code == 403
        changed = await admin.put(f"/api/budgets/{bid}", json={"limit": 2, "enabled": False})
        assert changed.status_code == 200, changed.text
        assert changed.json()["limit"] == 2 and changed.json()["status"]["state"] == "exceeded"
        full = await admin.put(f"/api/budgets/{bid}", json=changed.json() | {"name": "renamed"})
        assert full.status_code == 200 and full.json()["name"] == "renamed"
        assert (await user.delete(f"/api/budgets/{bid}")).status_code == 403
        assert (await admin.delete(f"/api/budgets/{bid}")).status_code == 204
        assert (await admin.get(f"/api/budgets/{bid}")).status_code == 404
        assert (await admin.delete(f"/api/budgets/{bid}")).status_code == 404


async def test_bad_budgets_are_422_and_unknown_targets_404(uapi: UsageApi) -> None:
    good = {"name": "n", "scope": "user", "target_id": "someone", "metric": "tokens",
            "period": "day", "limit": 1000}  # fmt: skip
    async with await uapi.client(admin=True) as admin:
        for change, name in [
            ({"scope": "team"}, "scope"), ({"metric": "euros"}, "metric"),
            ({"period": "week"}, "period"), ({"limit": 0}, "limit"), ({"limit": "x"}, "limit"),
            ({"warn_ratio": 1}, "warn_ratio"), ({"warn_ratio": 0}, "warn_ratio"),
            ({"name": ""}, "name"), ({"enabled": "yes"}, "enabled"), ({"colour": 1}, "colour"),
        ]:  # fmt: skip
            got = await admin.post("/api/budgets", json=good | change)
            assert got.status_code == 422, (change, got.text)
            assert name in got.json()["detail"]
        missing = {k: v for k, v in good.items() if k != "limit"}
        assert (await admin.post("/api/budgets", json=missing)).status_code == 422
        for scope in ("agent", "workflow", "schedule"):
            got = await admin.post(
                "/api/budgets", json=good | {"scope": scope, "target_id": "nope"}
            )
            assert got.status_code == 404, got.text
        assert (await admin.get("/api/budgets", params={"scope": "team"})).status_code == 422
        assert (await admin.post("/api/budgets", json=good)).status_code == 201


# --- runs ----------------------------------------------------------------------------------
def _types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


async def test_a_warning_at_the_ratio_is_sent_once_per_period(
    backend: tuple[str, URL | None], model: ProtocolServer
) -> None:
    async with hub(*backend) as h:
        wf = await h.seed(model.url, f"wendy-{uuid.uuid4().hex[:6]}")
        budget = await h.usage.create_budget(
            Budget(name="wf tokens", scope="workflow", target_id=wf.id, metric="tokens",
                   period="day", limit=Decimal(100_000), warn_ratio=0.5)
        )  # fmt: skip
        await h.usage.record(call(at=now(), tokens=(49_000, 0), workflow_id=wf.id))
        before = metrics.BUDGET_WARNINGS.labels("workflow")._value.get()
        warned: list[list[Any]] = []
        for _ in range(2):
            model.script(Turn(text="ok", usage=(1000, 500)))  # the first run passes 50 %
            task = await h.rt.start_run(wf.id, "go")
            events = await h.events(task.id)
            assert (await h.rt.runs.load(task.id)).status is TaskStatus.COMPLETED
            warned.append([e for e in events if e.type == "budget_warning"])
    assert len(warned[0]) == 1 and warned[1] == []
    data = warned[0][0].data
    assert data | {"used": 0} == {
        "budget_id": budget.id, "name": "wf tokens", "scope": "workflow", "target_id": wf.id,
        "metric": "tokens", "period": "day", "used": 0, "limit": 100_000,
    }  # fmt: skip
    assert data["used"] == 50_500
    assert metrics.BUDGET_WARNINGS.labels("workflow")._value.get() == before + 1


async def _webhook_payload(h: Hub, task_id: str) -> dict[str, Any]:
    engine = getattr(h.store, "engine", None)
    if engine is not None:
        async with engine.connect() as conn:
            payload = await conn.scalar(
                select(webhook_deliveries.c.payload).where(webhook_deliveries.c.task_id == task_id)
            )
        return dict(payload)
    database: Any = h.store.database  # type: ignore[attr-defined]
    doc = await database.get_collection("webhook_deliveries").find_one({"task_id": task_id})
    assert doc is not None
    return dict(doc["payload"])


async def test_acceptance_a_schedule_runs_until_its_daily_cost_limit_then_its_next_run_stops(
    backend: tuple[str, URL | None], model: ProtocolServer
) -> None:
    owner = f"sam-{uuid.uuid4().hex[:6]}"
    per_run = as_cost(PRICE.cost(2000, 500))  # one model call per run
    async with hub(*backend) as h:
        wf = await h.seed(model.url, owner, error_webhook_url="http://127.0.0.1:9/failed")
        start = datetime.now(UTC) - timedelta(hours=1)
        async with h.store.unit_of_work() as repos:
            schedule = await repos.scheduled_agents.create(
                ScheduledAgent(workflow_id=wf.id, name="nightly", prompt="scheduled work",
                               interval_value=1, interval_unit=IntervalUnit.MINUTES,
                               start_at=start, next_run_at=start, github_user=owner,
                               created_at=start - timedelta(days=1))
            )  # fmt: skip
        budget = await h.usage.create_budget(
            Budget(name="nightly cap", scope="schedule", target_id=schedule.id,
                   metric="cost_usd", period="day", limit=per_run * 2)
        )  # fmt: skip
        exceeded = metrics.BUDGET_EXCEEDED.labels("schedule")._value.get()
        tasks: list[Any] = []
        events: list[Any] = []
        for i in range(3):
            due = start + timedelta(minutes=10 * i)
            async with h.store.unit_of_work() as repos:
                await repos.scheduled_agents.update(schedule.id, {"next_run_at": due})
            model.script(Turn(text=f"run {i}", usage=(2000, 500)))
            report = await h.rt.scheduler().tick(due + timedelta(seconds=1))
            [task_id] = [c.task_id for c in report.claimed if c.task_id]
            events = await h.events(task_id)
            tasks.append(await h.rt.runs.load(task_id))
        assert [t.status for t in tasks] == [
            TaskStatus.COMPLETED,
            TaskStatus.COMPLETED,
            TaskStatus.FAILED,
        ]
        stopped = tasks[2]
        assert stopped.scheduled_agent_id == schedule.id
        limit = float(per_run * 2)
        assert stopped.error == (
            f"budget_exceeded: nightly cap: used {limit} of {limit} cost_usd this day"
        )
        [refusal] = [e.data for e in events if e.type == "budget_exceeded"]
        assert refusal == {
            "budget_id": budget.id, "name": "nightly cap", "scope": "schedule",
            "target_id": schedule.id, "metric": "cost_usd", "period": "day", "used": limit,
            "limit": limit,
        }  # fmt: skip
        errors = [e.data for e in events if e.type == "error"]
        assert [e["code"] for e in errors] == ["budget_exceeded"]
        assert _types(events)[-1] == "status" and events[-1].data["status"] == "failed"
        payload = await _webhook_payload(h, stopped.id)
        assert payload["reason"] == "budget_exceeded" and payload["status"] == "failed"
        assert payload["error"] == stopped.error
        assert len(model.requests) == 2  # the third run made no model call
        assert metrics.BUDGET_EXCEEDED.labels("schedule")._value.get() == exceeded + 1
        # the usage totals equal the sum of the calls made
        calls = await h.usage.calls(today_filter(schedule=(schedule.id,)), 100, None)
        [total] = await h.usage.grouped(today_filter(schedule=(schedule.id,)), None, None)
        assert len(calls) == 2 == total.totals.calls
        assert total.totals.cost_usd == sum((c.cost_usd for c in calls), Decimal(0)) == per_run * 2
        runs_cost = sum(t.usage["cost_usd"] for t in tasks[:2])
        assert float(total.totals.cost_usd) == pytest.approx(runs_cost)


async def test_a_users_token_budget_stops_a_chat_reply(
    backend: tuple[str, URL | None], model: ProtocolServer
) -> None:
    owner = f"tina-{uuid.uuid4().hex[:6]}"
    async with hub(*backend) as h:
        wf = await h.seed(model.url, owner)
        async with h.store.unit_of_work() as repos:
            agent = await repos.agents.get(wf.agent_id)
        await h.usage.create_budget(
            Budget(name="tina daily", scope="user", target_id=owner, metric="tokens",
                   period="day", limit=Decimal(1000))
        )  # fmt: skip
        await h.usage.record(call(at=now(), tokens=(900, 100), user_id=owner))
        services = await engine_services(h.settings, h.store)
        try:
            model.script(Turn(text="never sent"))
            session, history = await open_session(services, agent, None, owner, "hi")
            frames = [f async for f in chat_stream(services, agent, session, history, "hi")]
        finally:
            await services.aclose()
    parsed = [json.loads(f.split("data: ", 1)[1]) for f in frames]
    kinds = [p["type"] for p in parsed]
    assert kinds[-3:] == ["budget_exceeded", "error", "done"], kinds
    assert parsed[-3]["scope"] == "user" and parsed[-3]["used"] == 1000
    assert parsed[-2]["code"] == "budget_exceeded"
    assert parsed[-2]["message"] == "budget_exceeded: tina daily: used 1000 of 1000 tokens this day"
    assert parsed[-1]["status"] == "failed"
    assert model.requests == []


async def test_a_call_whose_prompt_would_pass_the_limit_is_refused(
    backend: tuple[str, URL | None],
) -> None:
    """Under the limit, but the prompt's own tokens would pass it: refused before the call."""
    from tbd_agents.engine.messages import ChatRequest, Message
    from tbd_agents.observability.usage.budgets import BudgetExceeded
    from tbd_agents.observability.usage.meter import UsageMeter
    from tbd_agents.observability.usage.records import UsageScope

    owner = f"uma-{uuid.uuid4().hex[:6]}"
    async with hub(*backend) as h:
        await h.usage.create_budget(
            Budget(name="tight", scope="user", target_id=owner, metric="tokens", period="month",
                   limit=Decimal(1000))
        )  # fmt: skip
        await h.usage.record(call(at=now(), tokens=(990, 0), user_id=owner))
        meter = UsageMeter(h.usage, UsageScope(user_id=owner), None, None, None, "gpt-4o", PRICE)
        sent: list[tuple[str, dict[str, Any]]] = []

        async def emit(kind: Any, data: dict[str, Any]) -> None:
            sent.append((str(kind), data))

        await meter.before_call(ChatRequest("gpt-4o", [Message("user", "hi")]), emit)
        long = ChatRequest("gpt-4o", [Message("user", "word " * 50)])
        with pytest.raises(BudgetExceeded) as refused:
            await meter.before_call(long, emit)
    assert refused.value.message == "budget_exceeded: tight: used 990 of 1000 tokens this month"
    assert [k for k, _ in sent] == ["budget_warning", "budget_exceeded"]
