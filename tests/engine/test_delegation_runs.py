"""Delegated (agent-as-tool) child runs behave like every other run (engine/delegated_run.py):
a real parent and child executed by the runtime in-process, through the engine and the real
`openai` SDK against the scripted protocol server, on PostgreSQL and on the MongoDB emulation.

- A client following the child run (opened from the parent's `delegation_started`) receives
  its events live, before the child finishes, on the in-process bus and over Redis, and so
  does one following the child of a chat turn in the app (whose chat engine uses the bus of
  the app's runtime): the follower's store polling is set far longer than the scripted child
  waits for it, so only the bus can bring the events in time.
- The child inherits its chain's workflow tool policy (an `ask` pauses the child, in place,
  until a person decides, and a halt reaches it there at once; a `never` refuses), the
  workflow's guardrails (input ones redact the stored task) and bypass_memory. (The session
  bound it inherits is not tested here: the calling run's, as long and started earlier, always
  ends first.)
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tbd_agents.api import create_app
from tbd_agents.api.routers.agent_chat import engine_for
from tbd_agents.config import Settings
from tbd_agents.domain.approvals import ToolApproval
from tbd_agents.domain.enums import (
    GuardrailAction,
    GuardrailType,
    OutputFormat,
    ProviderType,
    TaskStatus,
)
from tbd_agents.domain.models import Agent, Guardrail, Provider, TaskExecution, Token, Workflow
from tbd_agents.engine.chat import chat_stream, open_session
from tbd_agents.runtime.bus import EventBus, InProcessBus, RedisBus
from tbd_agents.runtime.events import RunEvent, follow
from tbd_agents.runtime.service import Runtime, default_cipher
from tbd_agents.runtime.webhooks import keyed_event
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.services import approvals
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import Query, eq
from tests.api.conftest import make_settings
from tests.engine.protocol_server import ProtocolServer, Recorded, Turn
from tests.runtime.conftest import REDIS_TEST_URL, redis_available
from tests.support import pg
from tests.support.mongo import make_mongo_store

FERNET = f"1:{Fernet.generate_key().decode()}"
OWNER = "dana"
TODOS = [{"id": 1, "title": "Look it up", "status": "in-progress"}]
#: A card number (a test Visa number) an input guardrail redacts.
CARD = "4111 1111 1111 1111"
#: How long the scripted child waits for the follower before it answers anyway.
CHILD_WAITS = 20.0
#: The follower's store polling: longer than CHILD_WAITS, so a follower that only polls the
#: store would see the child's events after the child ended, never while it waits.
FOLLOWER_POLL = 60.0


@pytest.fixture(scope="module")
def model() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@asynccontextmanager
async def hub(
    backend: str, bus_kind: str, pg18_server: str, tmp: Any, **overrides: Any
) -> AsyncIterator[Runtime]:
    """A runtime executing runs in-process on `backend` ("pg" / "mongo") whose events travel
    on `bus_kind` ("inprocess", or "redis": Redis pub/sub without the Celery backend)."""
    url = pg.create_migrated_database(pg18_server, prefix="deleg_runs") if backend == "pg" else None
    values: dict[str, Any] = {
        "postgres_uri": url.render_as_string(hide_password=False) if url else None,
        "db_backend": "postgres" if url else "mongo", "token_encryption_key": FERNET,
        "outbound_allowed_hosts": "127.0.0.1", "redis_url": None, "run_lease_seconds": 5.0,
        "embedding_provider": "hashing", "data_dir": tmp, "memory_expiry_sweep_seconds": 0,
    }  # fmt: skip
    settings = Settings(**(values | overrides))
    engine = None
    if url is not None:
        engine = create_engine(url, application_name="delegation-runs-tests", pool_size=4)
        store: Any = PostgresStore(engine, owns_engine=False)
    else:
        store = await make_mongo_store()
    if bus_kind == "redis" and not redis_available():
        pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL}")
    bus: EventBus = RedisBus(REDIS_TEST_URL) if bus_kind == "redis" else InProcessBus()
    rt = Runtime(
        settings, engine or store, bus, role="api", store=store, cipher=default_cipher(settings)
    )
    await rt.start()
    try:
        yield rt
    finally:
        await rt.aclose(drain_seconds=5)
        if engine is not None:
            await engine.dispose()
            assert url is not None
            pg.drop_database(url)
        else:
            await store.close()


async def seed(
    rt: Runtime, model: ProtocolServer, *, child: dict[str, Any] | None = None,
    workflow: dict[str, Any] | None = None,
) -> Workflow:  # fmt: skip
    """Agents `lead` and `helper` (lead lists helper as a tool) and a workflow of lead."""
    store: Any = rt.store
    cipher = KeyRingProvider(rt.settings).cipher()
    key = f"key-{uuid.uuid4().hex[:8]}"
    async with store.unit_of_work() as repos:
        value, version = cipher.encrypt("sk-dana")
        await repos.tokens.create(
            Token(name=key, encrypted_value=value, key_version=version, created_by=OWNER)
        )
        provider = await repos.providers.create(
            Provider(name=f"p-{key}", provider_type=ProviderType.OPENAI, api_key_token_name=key,
                     base_url=f"{model.url}/v1", created_by=OWNER)
        )  # fmt: skip
        common = {"model": "gpt-4o", "provider_id": provider.id, "created_by": OWNER,
                  "max_turns": 5}  # fmt: skip
        helper = await repos.agents.create(
            Agent(name="helper", system_prompt="You are helper.", **common, **(child or {}))
        )
        lead = await repos.agents.create(
            Agent(name="lead", system_prompt="You are lead.", agent_tool_ids=[helper.id],
                  **common)
        )  # fmt: skip
        created: Workflow = await repos.workflows.create(
            Workflow(agent_id=lead.id, title="delegation", github_user=OWNER,
                     output_format=OutputFormat.TEXT, **(workflow or {}))
        )  # fmt: skip
    return created


def who(rec: Recorded) -> str:
    system = rec.conversation()[0]["text"]
    return system.split("You are ", 1)[1].split(".", 1)[0]


def tool_results(rec: Recorded) -> list[str]:
    return [text for e in rec.conversation() for _, text in e["tool_results"]]


def calls_of(model: ProtocolServer, name: str) -> list[Recorded]:
    return [r for r in model.requests if who(r) == name]


async def events_of(rt: Runtime, task_id: str) -> list[RunEvent]:
    async def gather() -> list[RunEvent]:
        return [e async for e in rt.follow(task_id, 0)]

    return await asyncio.wait_for(gather(), 90)


async def task_of(rt: Runtime, task_id: str) -> TaskExecution:
    store: Any = rt.store
    async with store.unit_of_work(readonly=True) as repos:
        task: TaskExecution = await repos.task_executions.get(task_id)
    return task


async def child_id_of(rt: Runtime, task_id: str) -> str:
    """The child run's id, from the parent's `delegation_started` (as a client learns it)."""

    async def first() -> str:
        async with aclosing(rt.follow(task_id, 0)) as events:
            async for event in events:
                if event.type == "delegation_started":
                    return str(event.data["child_task_id"])
        raise AssertionError("the parent ended without delegating")

    return await asyncio.wait_for(first(), 60)


def lead_then_answer(
    helper: Callable[[Recorded], Turn], task: str = "look it up"
) -> Callable[[Recorded], Turn]:
    """lead calls helper with `task`, then answers "lead done"; helper's turns come from
    `helper`."""

    def respond(rec: Recorded) -> Turn:
        if who(rec) == "helper":
            return helper(rec)
        if tool_results(rec):
            return Turn(text="lead done")
        return Turn(tool_calls=[("helper", {"task": task})])

    return respond


class LiveProbe:
    """helper's scripted turns and a follower of its run that tell whether the follower
    received the child's events while the child ran: helper's first model call waits until the
    follower listens, then calls a tool; its second waits until the follower has received the
    tool's result (each at most CHILD_WAITS) and records whether it did."""

    def __init__(self) -> None:
        self.subscribed, self.received = threading.Event(), threading.Event()
        self.released: list[bool] = []

    def helper(self, rec: Recorded) -> Turn:
        if not tool_results(rec):
            self.subscribed.wait(CHILD_WAITS)
            return Turn(tool_calls=[("manage_todo_list", {"todoList": TODOS})])
        self.released.append(self.received.wait(CHILD_WAITS))
        return Turn(text="helper done")

    async def follow(self, rt: Runtime, child_id: str) -> list[RunEvent]:
        """The child's events as a client following it gets them (`follow` on the runtime's
        store and bus, which subscribes before it replays)."""
        seen: list[RunEvent] = []
        async for event in follow(rt.events, rt.bus, child_id, 0, poll_seconds=FOLLOWER_POLL):
            seen.append(event)
            self.subscribed.set()
            if event.type == "tool_result":
                self.received.set()
        return seen


def assert_followed_live(probe: LiveProbe, seen: list[RunEvent]) -> None:
    assert probe.released == [True], "the follower did not receive the child's tool result live"
    kinds = [e.type for e in seen]
    assert kinds[0] == "status" and seen[0].data["status"] == "running"
    assert "tool_call" in kinds and "tool_result" in kinds
    assert seen[-1].type == "status" and seen[-1].data["status"] == "completed"
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))  # each once, in order


@pytest.mark.parametrize("bus_kind", ["inprocess", "redis"])
@pytest.mark.parametrize("backend", ["pg", "mongo"])
async def test_a_follower_of_the_child_receives_its_events_while_it_runs(
    backend: str, bus_kind: str, pg18_server: str, model: ProtocolServer, tmp_path: Any
) -> None:
    probe = LiveProbe()
    model.reset()
    model.responder = lead_then_answer(probe.helper)
    async with hub(backend, bus_kind, pg18_server, tmp_path) as rt:
        workflow = await seed(rt, model, child={"builtin_tools": ["manage_todo_list"]})
        task = await rt.start_run(workflow.id, "go")
        child_id = await child_id_of(rt, task.id)
        seen = await asyncio.wait_for(probe.follow(rt, child_id), 2 * FOLLOWER_POLL)
        parent = await events_of(rt, task.id)
        child = await task_of(rt, child_id)

    assert_followed_live(probe, seen)
    assert child.status is TaskStatus.COMPLETED and child.response == "helper done"
    assert parent[-1].data["status"] == "completed"
    [finished] = [e.data for e in parent if e.type == "delegation_finished"]
    assert finished["child_task_id"] == child_id and finished["status"] == "completed"


async def test_the_child_of_a_chat_turn_in_the_app_is_followed_live(
    model: ProtocolServer, tmp_path: Any
) -> None:
    """The app's chat engine publishes on the bus of the app's runtime (`engine_for`): a
    client following the child of a chat turn sees its events live (MongoDB profile)."""
    store = await make_mongo_store()
    settings = make_settings(
        tmp_path, db_backend="mongo", postgres_uri=None, token_encryption_key=FERNET,
        outbound_allowed_hosts="127.0.0.1",
    )  # fmt: skip
    app = create_app(settings, store)
    probe = LiveProbe()
    model.reset()
    model.responder = lead_then_answer(probe.helper)
    child: list[str] = []
    started = asyncio.Event()
    try:
        async with app.router.lifespan_context(app):
            ctx = app.state.ctx
            rt: Runtime = ctx.services["runtime"]
            workflow = await seed(rt, model, child={"builtin_tools": ["manage_todo_list"]})
            async with store.unit_of_work() as repos:
                lead = await repos.agents.get(workflow.agent_id)
            services = await engine_for(ctx)
            session, history = await open_session(services, lead, None, OWNER, "go")

            async def turn() -> list[str]:
                frames: list[str] = []
                async for frame in chat_stream(services, lead, session, history, "go"):
                    frames.append(frame)
                    if "delegation_started" in frame and not child:
                        child.append(json.loads(frame.split("data: ", 1)[1])["child_task_id"])
                        started.set()
                return frames

            chat = asyncio.create_task(turn())
            await asyncio.wait_for(started.wait(), 60)
            seen = await asyncio.wait_for(probe.follow(rt, child[0]), 2 * FOLLOWER_POLL)
            frames = await asyncio.wait_for(chat, 60)
    finally:
        await store.close()

    assert_followed_live(probe, seen)
    assert "event: done" in frames[-1] and '"status": "completed"' in frames[-1], frames[-1]


@pytest.mark.parametrize("backend", ["pg", "mongo"])
async def test_the_workflows_ask_rule_pauses_the_child_until_a_person_approves(
    backend: str, pg18_server: str, model: ProtocolServer, tmp_path: Any
) -> None:
    """The child agent has no policy of its own: the workflow's `ask` rule is the chain's."""

    def helper(rec: Recorded) -> Turn:
        results = tool_results(rec)
        if not results:
            return Turn(tool_calls=[("manage_todo_list", {"todoList": TODOS})])
        return Turn(text="helper saw: " + results[0][:40])

    model.reset()
    model.responder = lead_then_answer(helper)
    policy = {"rules": [{"tool": "manage_todo_list", "action": "ask"}]}
    async with hub(backend, "inprocess", pg18_server, tmp_path) as rt:
        workflow = await seed(
            rt, model, child={"builtin_tools": ["manage_todo_list"]},
            workflow={"tool_policy": policy, "webhook_url": "http://127.0.0.1:9/hook"},
        )  # fmt: skip
        task = await rt.start_run(workflow.id, "go")
        waiting: list[dict[str, Any]] = []
        helper_calls_before: list[int] = []
        status_before: list[TaskStatus] = []

        async def approve_when_asked() -> list[RunEvent]:
            seen: list[RunEvent] = []
            async for event in rt.follow(task.id, 0):
                seen.append(event)
                if event.type == "approval_requested":
                    waiting.append(dict(event.data))
                    child = await task_of(rt, event.data["child_task_id"])
                    status_before.append(child.status)
                    helper_calls_before.append(len(calls_of(model, "helper")))
                    # as POST /api/approvals/{id}/approve does
                    store: Any = rt.store
                    approval = await approvals.get(store, event.data["approval_id"])
                    await approvals.ensure_run_waits(store, approval)
                    decided = await approvals.decide(store, approval, approve=True, by=OWNER)
                    await rt.approval_decided(
                        decided.task_id, {"approval_id": decided.id, "status": "approved"}
                    )
            return seen

        parent = await asyncio.wait_for(approve_when_asked(), 90)
        [started] = [e.data for e in parent if e.type == "delegation_started"]
        child_id = started["child_task_id"]
        child_events = await events_of(rt, child_id)
        child = await task_of(rt, child_id)
        store: Any = rt.store
        async with store.unit_of_work(readonly=True) as repos:
            records = (
                await repos.for_model(ToolApproval).list(Query(filters=(eq("task_id", child_id),)))
            ).items
        hooks = await rt.runs.webhooks.list_deliveries(workflow_id=None, task_id=child_id, limit=10)

    assert len(waiting) == 1, "the child did not ask for approval"
    assert waiting[0]["child_task_id"] == child_id and waiting[0]["tool"] == "manage_todo_list"
    # it waited in place: still running, its tool not run and its model not called again
    assert status_before == [TaskStatus.RUNNING] and helper_calls_before == [1]
    [record] = records
    assert (record.workflow_id, record.owner, record.status.value) == (
        workflow.id, OWNER, "approved",
    )  # fmt: skip
    [hook] = hooks  # the workflow's approval_requested webhook, about the child run
    assert hook.event == keyed_event("approval_requested", record.id)
    assert [e.data["approval_id"] for e in child_events if e.type == "approval_requested"] == [
        record.id
    ]
    assert [e.data["status"] for e in child_events if e.type == "approval_decided"] == ["approved"]
    [result] = [e.data for e in child_events if e.type == "tool_result"]
    assert result["name"] == "manage_todo_list" and not result["is_error"], result
    assert child.status is TaskStatus.COMPLETED and child.response is not None
    assert child.response.startswith("helper saw:") and "approval" not in child.response
    assert parent[-1].data["status"] == "completed"


async def test_halting_a_child_that_waits_for_approval_ends_it_at_once(
    pg18_server: str, model: ProtocolServer, tmp_path: Any
) -> None:
    """The halt reaches the waiting child on the bus: its lease is renewed far too rarely
    (RUN_LEASE_SECONDS=600) for a heartbeat to bring it within the test's bound."""

    def helper(rec: Recorded) -> Turn:
        return Turn(tool_calls=[("manage_todo_list", {"todoList": TODOS})])

    model.reset()
    model.responder = lead_then_answer(helper)
    policy = {"rules": [{"tool": "manage_todo_list", "action": "ask"}]}
    async with hub("pg", "inprocess", pg18_server, tmp_path, run_lease_seconds=600.0) as rt:
        workflow = await seed(
            rt, model, child={"builtin_tools": ["manage_todo_list"]},
            workflow={"tool_policy": policy},
        )  # fmt: skip
        task = await rt.start_run(workflow.id, "go")

        async def halt_when_asked() -> list[RunEvent]:
            seen: list[RunEvent] = []
            async for event in rt.follow(task.id, 0):
                seen.append(event)
                if event.type == "approval_requested":
                    await rt.halt(event.data["child_task_id"])
            return seen

        parent = await asyncio.wait_for(halt_when_asked(), 90)
        [finished] = [e.data for e in parent if e.type == "delegation_finished"]
        child = await task_of(rt, finished["child_task_id"])

    assert finished["status"] == "halted"
    assert child.status is TaskStatus.HALTED and child.error == "halted while it awaited approval"
    assert len(calls_of(model, "helper")) == 1  # its tool never ran, its model was not asked again
    [result] = [e.data for e in parent if e.type == "tool_result"]
    assert result["is_error"] and "did not complete" in result["content"]
    assert parent[-1].data["status"] == "completed"


async def test_the_workflows_never_rule_and_guardrails_hold_in_the_child(
    pg18_server: str, model: ProtocolServer, tmp_path: Any
) -> None:
    """The workflow refuses manage_todo_list, redacts card numbers from prompts and blocks
    answers naming "s3cr3t": the child, whose agent has none of these rules, gets its task
    with the card number redacted (as its record shows it), is refused the tool and has its
    answer blocked."""

    def helper(rec: Recorded) -> Turn:
        results = tool_results(rec)
        if not results:
            return Turn(tool_calls=[("manage_todo_list", {"todoList": TODOS})])
        return Turn(text="the code is s3cr3t; " + results[0][:80])

    model.reset()
    model.responder = lead_then_answer(helper, task=f"charge {CARD} for the order")
    async with hub("pg", "inprocess", pg18_server, tmp_path) as rt:
        store: Any = rt.store
        async with store.unit_of_work() as repos:
            rail = await repos.guardrails.create(
                Guardrail(name="no-secrets", guardrail_type=GuardrailType.OUTPUT,
                          action=GuardrailAction.BLOCK, created_by=OWNER,
                          output_config={"forbidden_patterns": ["s3cr3t"]})
            )  # fmt: skip
            cards = await repos.guardrails.create(
                Guardrail(name="cards", guardrail_type=GuardrailType.INPUT,
                          action=GuardrailAction.REDACT, created_by=OWNER,
                          prompt_config={"pii": ["credit_card"]})
            )  # fmt: skip
        workflow = await seed(
            rt, model, child={"builtin_tools": ["manage_todo_list"]},
            workflow={"tool_policy": {"rules": [{"tool": "manage_todo_list", "action": "never"}]},
                      "guardrail_ids": [rail.id, cards.id]},
        )  # fmt: skip
        task = await rt.start_run(workflow.id, "go")
        parent = await events_of(rt, task.id)
        [started] = [e.data for e in parent if e.type == "delegation_started"]
        child_events = await events_of(rt, started["child_task_id"])
        child = await task_of(rt, started["child_task_id"])

    [helper_first, *_] = calls_of(model, "helper")
    received = helper_first.conversation()[-1]["text"]
    assert received.startswith("charge ") and "1111" not in received, received
    assert child.prompt == received and "1111" not in started["task"]
    [result] = [e.data for e in child_events if e.type == "tool_result"]
    assert result["is_error"] and "refused by policy" in result["content"], result
    assert child.status is TaskStatus.FAILED, child.response
    assert child.error is not None and "no-secrets" in child.error
    assert child.response is None or "s3cr3t" not in child.response
    assert parent[-1].data["status"] == "completed"


async def test_the_workflows_bypass_memory_holds_in_the_child(
    pg18_server: str, model: ProtocolServer, tmp_path: Any
) -> None:
    """helper lists store_memory (memory is available: pgvector, hashing embedder): its run
    offers it under a workflow that uses memory, and not under one with bypass_memory."""

    def helper(rec: Recorded) -> Turn:
        return Turn(text="helper done")

    offered: dict[bool, list[str]] = {}
    async with hub("pg", "inprocess", pg18_server, tmp_path) as rt:
        for bypass in (False, True):
            model.reset()
            model.responder = lead_then_answer(helper)
            workflow = await seed(
                rt, model, child={"builtin_tools": ["store_memory"], "memory_enabled": True},
                workflow={"bypass_memory": bypass},
            )  # fmt: skip
            task = await rt.start_run(workflow.id, "go")
            parent = await events_of(rt, task.id)
            assert parent[-1].data["status"] == "completed"
            [first] = calls_of(model, "helper")
            offered[bypass] = first.tool_names()

    assert "store_memory" in offered[False]
    assert "store_memory" not in offered[True]
