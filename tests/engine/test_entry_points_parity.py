"""One agent, three entry points, the same engine path: chat, a workflow prompt and a
schedule-fired run each get the built-in tools (`manage_todo_list`, `write`, `read`) and the
operator's `slack` plugin, against the real `openai` SDK talking to the scripted protocol server
and the Slack fake — nothing a workflow run can do is missing from chat or from a schedule.

Each run: the model asks for a todo list, Slack's channel list and a file write in one turn,
reads the file back in the next, then answers. Every tool result must be a success, the plugin
must have reached Slack with the operator's token, the file must have been read back from the
run's workspace, and a `progress` event must carry the todo list (workflow and schedule runs
also store it on the task)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tbd_agents.config import Settings
from tbd_agents.domain.enums import IntervalUnit, ProviderType, TaskStatus
from tbd_agents.domain.models import (
    Agent,
    CustomTool,
    Provider,
    ScheduledAgent,
    TaskExecution,
    Token,
    Workflow,
)
from tbd_agents.domain.types import utcnow
from tbd_agents.engine.chat import chat_stream, open_session
from tbd_agents.engine.inprocess import engine_services
from tbd_agents.plugins.loader import sync_plugins
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import Query, eq
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.plugins.fakes import SLACK_TOKEN, SlackFake
from tests.support import pg

FERNET = f"1:{Fernet.generate_key().decode()}"
OWNER = "erin"
TODOS = [
    {"id": 1, "title": "Look up the channels", "status": "completed"},
    {"id": 2, "title": "Write the note", "status": "in-progress"},
]


@pytest.fixture(scope="module")
def model() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    with SlackFake().running() as fake:
        yield fake


@pytest.fixture
async def world(
    pg18_server: str, model: ProtocolServer, slack: SlackFake, tmp_path: Any
) -> AsyncIterator[dict[str, Any]]:
    url = pg.create_migrated_database(pg18_server, prefix="parity")
    settings = Settings(
        postgres_uri=url.render_as_string(hide_password=False),
        token_encryption_key=FERNET,
        outbound_allowed_hosts="127.0.0.1",  # the scripted model and the Slack fake
        redis_url=None,
        run_lease_seconds=5.0,
        embedding_provider="hashing",
        data_dir=tmp_path,
    )
    engine = create_engine(url, application_name="parity-tests", pool_size=4)
    store = PostgresStore(engine, owns_engine=False)
    cipher = KeyRingProvider(settings).cipher()
    async with store.unit_of_work() as repos:
        for name, secret, owner in (
            ("openai-key", "sk-erin", OWNER),
            ("slack-bot-token", SLACK_TOKEN, None),  # the operator's token
        ):
            value, version = cipher.encrypt(secret)
            await repos.tokens.create(
                Token(name=name, encrypted_value=value, key_version=version, created_by=owner)
            )
        await repos.custom_tools.create(
            CustomTool(
                name="slack", is_plugin=True,
                env_config={"SLACK_BOT_TOKEN": "{{token:slack-bot-token}}",
                            "SLACK_API_URL": f"{slack.url}/api"},
            )
        )  # fmt: skip
    await sync_plugins(store, settings)  # start-up: the operator's plugin record is current
    async with store.unit_of_work() as repos:
        [plugin] = (await repos.custom_tools.list(Query(filters=(eq("name", "slack"),)))).items
        provider = await repos.providers.create(
            Provider(name="p", provider_type=ProviderType.OPENAI, api_key_token_name="openai-key",
                     base_url=f"{model.url}/v1", created_by=OWNER)
        )  # fmt: skip
        agent = await repos.agents.create(
            Agent(name="parity", model="gpt-4o", provider_id=provider.id, created_by=OWNER,
                  custom_tool_ids=[plugin.id], max_turns=5,
                  builtin_tools=["manage_todo_list", "write", "read"])
        )  # fmt: skip
        workflow = await repos.workflows.create(
            Workflow(agent_id=agent.id, title="parity", github_user=OWNER, max_turns=5)
        )
    rt = await Runtime.open(settings, engine, role="api", store=store)
    await rt.start()
    yield {"rt": rt, "store": store, "settings": settings, "agent": agent, "workflow": workflow}
    await rt.aclose(drain_seconds=5)
    await engine.dispose()
    pg.drop_database(url)


def script(model: ProtocolServer) -> None:
    model.reset()
    model.script(
        Turn(tool_calls=[
            ("manage_todo_list", {"todoList": TODOS}),
            ("slack", {"operation": "list_channels"}),
            ("write", {"path": "note.txt", "content": "channels: general, ops"}),
        ]),
        Turn(tool_calls=[("read", {"path": "note.txt"})]),
        Turn(text="Noted the channels."),
    )  # fmt: skip


def check(
    events: list[tuple[str, dict[str, Any]]], model: ProtocolServer, slack: SlackFake
) -> None:
    """What every entry point must show for the scripted run."""
    results = {d["name"]: d for kind, d in events if kind == "tool_result"}
    assert set(results) == {"manage_todo_list", "slack", "write", "read"}, results
    failed = {n: d["content"] for n, d in results.items() if d["is_error"]}
    assert not failed, failed
    assert results["slack"]["source"] == "plugin:slack"
    assert "general" in results["slack"]["content"]
    assert "channels: general, ops" in results["read"]["content"]
    assert slack.seen and slack.seen[-1].headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    progress = [d for kind, d in events if kind == "progress" and d.get("todos")]
    assert progress, "no progress event carried the todo list"
    assert [t["title"] for t in progress[-1]["todos"]] == [t["title"] for t in TODOS]
    assert progress[-1]["current_step"] == 2 and progress[-1]["percent_complete"] == 0.5
    # the read result reached the model in its third turn
    assert "channels: general, ops" in model.requests[2].all_text()


async def task_events(rt: Runtime, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    async def collect() -> list[tuple[str, dict[str, Any]]]:
        return [(e.type, dict(e.data)) async for e in rt.follow(task_id, 0)]

    return await asyncio.wait_for(collect(), 90)


async def stored_task(store: PostgresStore, task_id: str) -> TaskExecution:
    async with store.unit_of_work(readonly=True) as repos:
        task: TaskExecution = await repos.task_executions.get(task_id)
    return task


def check_task(task: TaskExecution) -> None:
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.progress is not None
    assert [t["title"] for t in task.progress["todos"]] == [t["title"] for t in TODOS]


async def test_chat(world: dict[str, Any], model: ProtocolServer, slack: SlackFake) -> None:
    services = await engine_services(world["settings"], world["store"])
    try:
        session, history = await open_session(services, world["agent"], None, OWNER, "go")
        script(model)
        events: list[tuple[str, dict[str, Any]]] = []
        async for frame in chat_stream(services, world["agent"], session, history, "go"):
            name = frame.split("event: ", 1)[1].split("\n", 1)[0]
            events.append((name, json.loads(frame.split("data: ", 1)[1])))
    finally:
        await services.aclose()
    assert events[-1][0] == "done" and events[-1][1]["status"] == "completed", events[-3:]
    check(events, model, slack)


async def test_workflow_prompt(
    world: dict[str, Any], model: ProtocolServer, slack: SlackFake
) -> None:
    script(model)
    task = await world["rt"].start_run(world["workflow"].id, "go")
    events = await task_events(world["rt"], task.id)
    check(events, model, slack)
    check_task(await stored_task(world["store"], task.id))


async def test_schedule_fired_run(
    world: dict[str, Any], model: ProtocolServer, slack: SlackFake
) -> None:
    store: PostgresStore = world["store"]
    now = utcnow()
    async with store.unit_of_work() as repos:
        schedule = await repos.scheduled_agents.create(
            ScheduledAgent(
                workflow_id=world["workflow"].id, prompt="go", interval_value=1,
                interval_unit=IntervalUnit.HOURS, start_at=now - timedelta(seconds=5),
                next_run_at=now - timedelta(seconds=5), github_user=OWNER,
            )
        )  # fmt: skip
    script(model)
    rt: Runtime = world["rt"]
    await rt.scheduler().tick()
    task_id = None
    for _ in range(600):  # this tick or the runtime's own scheduler fired it: one run
        async with store.unit_of_work(readonly=True) as repos:
            page = await repos.task_executions.list(
                Query(filters=(eq("scheduled_agent_id", schedule.id),))
            )
        if page.items:
            assert len(page.items) == 1
            task_id = page.items[0].id
            break
        await asyncio.sleep(0.05)
    assert task_id is not None, "the schedule never fired"
    events = await task_events(rt, task_id)
    check(events, model, slack)
    check_task(await stored_task(store, task_id))
