"""A workflow's conversation lives on its runs (`TaskExecution.run_messages`): the workflow row
keeps the last run's messages only and no longer grows with every run, while the next run still
continues the whole conversation (engine executor, scripted model server, real PostgreSQL)."""

from __future__ import annotations

from typing import Any

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.types import utcnow
from tbd_agents.services.retention import Retention, RetentionPolicy
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.test_workflow_runs import finish, runs_db, runtime_of, seed  # noqa: F401


def said(request: Any) -> list[str]:
    """The user and assistant texts of a model request, in order."""
    return [
        m["content"]
        for m in request.body["messages"]
        if m["role"] in ("user", "assistant") and isinstance(m.get("content"), str)
    ]


async def test_each_run_keeps_its_messages_and_the_workflow_only_the_last_runs(
    runs_db: Any,  # noqa: F811 - the fixture imported above
    protocol_server: ProtocolServer,
) -> None:
    protocol_server.reset()
    async with runtime_of(runs_db) as (rt, store):
        wf = await seed(store, protocol_server.url, "alice")
        protocol_server.script(Turn(text="one"), Turn(text="two"), Turn(text="three"))
        sizes, tasks = [], []
        for prompt, answer in (("first", "one"), ("second", "two"), ("third", "three")):
            task = await rt.start_run(wf.id, prompt)
            await finish(rt, task.id)
            async with store.unit_of_work(readonly=True) as repos:
                row = await repos.workflows.get(wf.id)
                tasks.append(await repos.task_executions.get(task.id))
            sizes.append(len(row.messages))
            assert [m["content"] for m in row.messages] == [prompt, answer]
            assert all(m["task_id"] == task.id for m in tasks[-1].run_messages)
    assert all(t.status is TaskStatus.COMPLETED for t in tasks)
    assert sizes == [2, 2, 2]  # the row does not grow with the runs
    # ...and the third run still continued the whole conversation
    assert said(protocol_server.requests[2])[-5:] == ["first", "one", "second", "two", "third"]
    # the task's existing `messages` view: the last 20 of the conversation, as before
    assert [m["content"] for m in tasks[2].messages] == [
        "first",
        "one",
        "second",
        "two",
        "third",
        "three",
    ]


async def test_a_reset_starts_a_new_conversation_and_pruned_runs_drop_out(
    runs_db: Any,  # noqa: F811
    protocol_server: ProtocolServer,
) -> None:
    protocol_server.reset()
    async with runtime_of(runs_db) as (rt, store):
        wf = await seed(store, protocol_server.url, "bob")
        protocol_server.script(*(Turn(text=t) for t in "abcd"))

        async def run(prompt: str) -> None:
            task = await rt.start_run(wf.id, prompt)
            await finish(rt, task.id)

        await run("before the reset")
        async with store.unit_of_work() as repos:  # what POST /api/workflows/{id}/reset writes
            await repos.workflows.update(
                wf.id, {"messages": [], "logs": [], "conversation_reset_at": utcnow()}
            )
        await run("after the reset")
        await run("then")
        # retention keeps bob's newest run only: the next run continues from it alone
        await Retention(store, RetentionPolicy(runs_per_owner=1)).prune()
        await run("later")
    assert said(protocol_server.requests[1]) == ["after the reset"]
    assert said(protocol_server.requests[2])[:1] == ["after the reset"]
    assert said(protocol_server.requests[3])[0] == "then"


async def test_a_conversation_recorded_on_the_workflow_row_is_carried_onto_the_runs(
    runs_db: Any,  # noqa: F811
    protocol_server: ProtocolServer,
) -> None:
    """A workflow whose runs were recorded before runs kept their messages: its row holds the
    whole conversation; the next runs continue it."""
    protocol_server.reset()
    legacy = [
        {"role": "user", "content": "old question", "task_id": "t-old"},
        {"role": "assistant", "content": "old answer", "task_id": "t-old"},
    ]
    async with runtime_of(runs_db) as (rt, store):
        wf = await seed(store, protocol_server.url, "carol", workflow={"messages": legacy})
        protocol_server.script(Turn(text="new 1"), Turn(text="new 2"))
        for prompt in ("new question", "next question"):
            task = await rt.start_run(wf.id, prompt)
            await finish(rt, task.id)
        async with store.unit_of_work(readonly=True) as repos:
            row = await repos.workflows.get(wf.id)
    for request in protocol_server.requests:
        assert said(request)[:2] == ["old question", "old answer"]
    assert said(protocol_server.requests[1])[2:] == ["new question", "new 1", "next question"]
    assert [m["content"] for m in row.messages] == ["next question", "new 2"]
