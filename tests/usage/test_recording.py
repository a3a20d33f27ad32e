"""The usage ledger records every model call once, on both backends: a workflow run's two calls
(a tool call turn and the answer), a chat turn with its session, a retried write, a write that
fails after it was stored, and a ledger that is down (logged, counted, the run goes on)."""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.engine import URL

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import ChatSession
from tbd_agents.engine.chat import chat_stream, open_session
from tbd_agents.engine.inprocess import engine_services
from tbd_agents.observability import metrics
from tbd_agents.observability.usage import meter as meter_module
from tbd_agents.observability.usage.records import UsageCall, as_cost
from tbd_agents.observability.usage.store import UsageStore
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.usage.conftest import BACKENDS, call
from tests.usage.runs import PRICE, Hub, hub, now, today_filter

TODOS = [{"id": 1, "title": "a", "status": "in-progress"}]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, URL | None]:
    url = request.getfixturevalue("usage_db") if request.param == "pg" else None
    return request.param, url


async def run_workflow(h: Hub, model: ProtocolServer, owner: str) -> tuple[Any, Any]:
    wf = await h.seed(model.url, owner)
    model.script(Turn(tool_calls=[("manage_todo_list", {"todoList": TODOS})]), Turn(text="done"))
    task = await h.rt.start_run(wf.id, "work")
    await h.events(task.id)
    return wf, await h.rt.runs.load(task.id)


async def test_a_runs_two_model_calls_are_two_rows_and_one_daily_row_of_their_sums(
    backend: tuple[str, URL | None], model: ProtocolServer
) -> None:
    owner = f"alice-{uuid.uuid4().hex[:6]}"
    async with hub(*backend) as h:
        wf, task = await run_workflow(h, model, owner)
        assert task.status is TaskStatus.COMPLETED, task.error
        calls = await h.usage.calls(today_filter(workflow=(wf.id,)), 10, None)
        daily = await h.usage.grouped(today_filter(workflow=(wf.id,)), "workflow_id", "day")
    assert len(calls) == 2
    cost = as_cost(PRICE.cost(100, 20))
    for c in calls:
        assert (c.task_id, c.workflow_id, c.agent_id, c.user_id) == (
            task.id,
            wf.id,
            wf.agent_id,
            owner,
        )
        assert (c.model, c.purpose, c.provider_type) == ("gpt-4o", "turn", "openai")
        assert c.provider_id and c.schedule_id is None and c.session_id is None
        assert (c.input_tokens, c.output_tokens, c.cost_usd) == (100, 20, cost)
    assert sorted(c.call_key for c in calls) == [f"{task.id}:1", f"{task.id}:2"]
    [row] = daily
    assert (row.totals.calls, row.totals.input_tokens, row.totals.output_tokens) == (2, 200, 40)
    assert row.totals.cost_usd == sum((c.cost_usd for c in calls), Decimal(0))
    assert task.usage["cost_usd"] == pytest.approx(float(row.totals.cost_usd))


async def test_a_chat_turn_is_recorded_with_its_session(
    backend: tuple[str, URL | None], model: ProtocolServer
) -> None:
    owner = f"carol-{uuid.uuid4().hex[:6]}"
    async with hub(*backend) as h:
        wf = await h.seed(model.url, owner)
        async with h.store.unit_of_work() as repos:
            agent = await repos.agents.get(wf.agent_id)
        services = await engine_services(h.settings, h.store)
        try:
            for _ in range(2):  # two turns of one session: keys do not clash
                model.script(Turn(text="hello", usage=(50, 5)))
                session, history = await open_session(services, agent, None, owner, "hi")
                frames = [f async for f in chat_stream(services, agent, session, history, "hi")]
                assert "event: done" in frames[-1]
        finally:
            await services.aclose()
        calls = await h.usage.calls(today_filter(user=(owner,)), 10, None)
    assert len(calls) == 2
    assert all(c.session_id and c.workflow_id is None and c.task_id is None for c in calls)
    assert all((c.agent_id, c.input_tokens, c.output_tokens) == (agent.id, 50, 5) for c in calls)
    assert isinstance(session, ChatSession) and session.id == calls[0].session_id


async def test_a_retried_write_is_not_counted_twice(backend: tuple[str, URL | None]) -> None:
    async with hub(*backend) as h:
        user = f"dan-{uuid.uuid4().hex[:6]}"
        once = call(at=now(), cost="0.25", user_id=user)
        assert await h.usage.record(once) is True
        again = call(once.call_key, at=now(), cost="0.25", user_id=user)
        assert await h.usage.record(again) is False
        [row] = await h.usage.grouped(today_filter(user=(user,)), None, None)
        assert (row.totals.calls, row.totals.cost_usd) == (1, Decimal("0.25"))
        assert len(await h.usage.calls(today_filter(user=(user,)), 10, None)) == 1


class Flaky:
    """A usage store whose writes fail: after storing (`after=True`: the commit's answer was
    lost) or without storing, `failures` times."""

    def __init__(self, inner: UsageStore, failures: int, *, after: bool) -> None:
        self.inner, self.failures, self.after = inner, failures, after

    async def record(self, c: UsageCall) -> bool:
        if self.failures > 0:
            self.failures -= 1
            if self.after:
                await self.inner.record(c)
            raise ConnectionError("connection lost")
        return await self.inner.record(c)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _count(outcome: str) -> float:
    return metrics.USAGE_RECORDS.labels(outcome)._value.get()


async def test_a_write_retried_after_it_was_stored_counts_once_and_a_dead_ledger_is_logged(
    backend: tuple[str, URL | None],
    model: ProtocolServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(meter_module, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    async with hub(*backend) as h:
        executor: Any = await h.rt.services()
        services = executor.executor.services
        real = services.usage
        services.usage = Flaky(real, 1, after=True)
        owner = f"erin-{uuid.uuid4().hex[:6]}"
        wf, task = await run_workflow(h, model, owner)
        assert task.status is TaskStatus.COMPLETED
        assert len(await real.calls(today_filter(workflow=(wf.id,)), 10, None)) == 2
        [row] = await real.grouped(today_filter(workflow=(wf.id,)), None, None)
        assert row.totals.calls == 2
        failed = _count("failed")
        services.usage = Flaky(real, 100, after=False)
        with caplog.at_level(logging.ERROR, logger="tbd_agents.observability.usage.meter"):
            wf2, task2 = await run_workflow(h, model, owner)
        services.usage = real
        assert task2.status is TaskStatus.COMPLETED  # the run goes on without its ledger
        assert _count("failed") == failed + 2
        assert sum("NOT RECORDED" in r.getMessage() for r in caplog.records) == 2
        assert await real.calls(today_filter(workflow=(wf2.id,)), 10, None) == []
