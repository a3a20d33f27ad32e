"""Retention (services/retention.py) on both backends: runs by age and by count per owner (never
an unfinished run), chat sessions by age and per owner with their messages and attached files'
source, chat summaries, webhook deliveries, usage calls (totals kept), dry runs, batches, the
upkeep loop and `tbd-agents db prune`."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update

from tbd_agents.domain.approvals import ApprovalStatus, ToolApproval
from tbd_agents.domain.enums import MessageRole, TaskStatus, TaskTrigger
from tbd_agents.domain.models import (
    ChatMessage,
    ChatSession,
    KnowledgeItem,
    KnowledgeSource,
    TaskExecution,
)
from tbd_agents.engine.compaction import SUMMARY_PREFIX
from tbd_agents.observability.usage.records import UsageCall, UsageFilter
from tbd_agents.observability.usage.store import usage_store_for
from tbd_agents.runtime.contracts import RunOutcome
from tbd_agents.services.retention import Retention, RetentionPolicy, retention_for
from tbd_agents.storage.mongo.runtime_schema import WEBHOOK_DELIVERIES
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.postgres.schema_runtime import webhook_deliveries
from tbd_agents.storage.protocol import Query, asc, eq
from tests.faults.redis_support import eventually
from tests.runtime.conftest import TBD_AGENTS, RtBackend, make_workflow, settings_env
from tests.support import pg
from tests.support.mongo import make_mongo_store

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


@pytest.fixture(params=("pg", "mongo"))
async def be(request: pytest.FixtureRequest) -> AsyncIterator[RtBackend]:
    """A database of its own per test (retention looks at every record), on each backend."""
    if request.param == "mongo":
        store = await make_mongo_store()
        yield RtBackend("mongo", store)
        await store.close()
        return
    async with pg_backend(request.getfixturevalue("pg18_server")) as backend:
        yield backend


@asynccontextmanager
async def pg_backend(server: str) -> AsyncIterator[RtBackend]:
    """A fresh migrated PostgreSQL database (from the migrated template: quick)."""
    url = pg.create_migrated_database(server, "ret")
    engine = create_engine(url, application_name="retention-tests", pool_size=3)
    try:
        yield RtBackend("pg", PostgresStore(engine, url=url, owns_engine=False), engine, url)
    finally:
        await engine.dispose()
        pg.drop_database(url)


def retention(be: RtBackend, **rules: Any) -> Retention:
    return Retention(
        be.store,
        RetentionPolicy(**rules),
        webhooks=be.runs.webhooks,
        usage=usage_store_for(be.store),
    )


async def ended_run(
    be: RtBackend,
    workflow_id: str,
    *,
    ended_days_ago: float,
    status: TaskStatus = TaskStatus.COMPLETED,
) -> str:
    """A run through the run store (claimed, finished: its events and webhook delivery stored),
    its end moved back `ended_days_ago` days."""
    task = await be.runs.create_run(workflow_id, "p")
    assert await be.runs.claim(task.id, "worker@t") is not None
    assert await be.runs.finish(task.id, "worker@t", RunOutcome(status, result="ok")) is not None
    ended = NOW - timedelta(days=ended_days_ago)
    await be.set_fields("task_executions", task.id, finished_at=ended, created_at=ended)
    return str(task.id)


async def live_run(be: RtBackend, workflow_id: str, status: TaskStatus) -> str:
    """A pending or running run created long ago (retention must never touch it)."""
    task = await be.runs.create_run(workflow_id, "p")
    if status is TaskStatus.RUNNING:
        assert await be.runs.claim(task.id, "worker@t") is not None
    old = NOW - 400 * DAY
    await be.set_fields("task_executions", task.id, created_at=old, updated_at=old)
    return str(task.id)


async def run_ids(be: RtBackend) -> set[str]:
    async with be.store.unit_of_work(readonly=True) as repos:
        return {t.id async for t in repos.task_executions.iterate(Query())}


async def test_runs_ended_before_the_cutoff_go_with_their_events_and_deliveries(
    be: RtBackend,
) -> None:
    wf = await make_workflow(be, webhook_url="http://hooks.invalid/x")
    old = [await ended_run(be, wf, ended_days_ago=100, status=s)
           for s in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.HALTED)]  # fmt: skip
    recent = await ended_run(be, wf, ended_days_ago=5)
    pending = await live_run(be, wf, TaskStatus.PENDING)
    running = await live_run(be, wf, TaskStatus.RUNNING)
    assert await be.runs.events.read(old[0]) != []
    assert await be.runs.webhooks.list_deliveries(workflow_id=None, task_id=old[0], limit=5)

    report = await retention(be, run_days=30, batch_size=2).prune(now=NOW)

    assert report.counts["runs"] == 3
    assert await run_ids(be) == {recent, pending, running}
    for task_id in old:
        assert await be.runs.events.read(task_id) == []
        assert (
            await be.runs.webhooks.list_deliveries(workflow_id=None, task_id=task_id, limit=5) == []
        )
    assert await be.runs.events.read(recent) != []
    # idempotent: a second pass finds nothing
    assert (await retention(be, run_days=30).prune(now=NOW)).total == 0


async def test_a_pruned_runs_decided_approvals_go_with_it(be: RtBackend) -> None:
    wf = await make_workflow(be)
    old = await ended_run(be, wf, ended_days_ago=100)
    recent = await ended_run(be, wf, ended_days_ago=5)
    async with be.store.unit_of_work() as repos:
        approvals = repos.for_model(ToolApproval)
        for task_id, status in ((old, ApprovalStatus.APPROVED), (old, ApprovalStatus.DENIED),
                                (recent, ApprovalStatus.APPROVED)):  # fmt: skip
            await approvals.create(
                ToolApproval(task_id=task_id, workflow_id=wf, tool_name="add", status=status,
                             expires_at=NOW + DAY)
            )  # fmt: skip

    await retention(be, run_days=30).prune(now=NOW)

    async with be.store.unit_of_work(readonly=True) as repos:
        left = [a.task_id async for a in repos.for_model(ToolApproval).iterate(Query())]
    assert left == [recent]


async def test_runs_beyond_the_newest_n_of_an_owner_go(be: RtBackend) -> None:
    alice = [await make_workflow(be, owner="alice") for _ in range(2)]
    bob = await make_workflow(be, owner="bob")
    runs = {
        days: await ended_run(be, alice[days % 2], ended_days_ago=days) for days in range(1, 7)
    }  # alice: 6 runs over her two workflows, newest = 1 day ago
    bobs = [await ended_run(be, bob, ended_days_ago=d) for d in (50, 60)]
    running = await live_run(be, alice[0], TaskStatus.RUNNING)

    dry = await retention(be, runs_per_owner=3).prune(dry_run=True, now=NOW)
    report = await retention(be, runs_per_owner=3, batch_size=2).prune(now=NOW)

    assert dry.counts["runs"] == report.counts["runs"] == 3
    assert await run_ids(be) == {runs[1], runs[2], runs[3], *bobs, running}


async def delegated_run(be: RtBackend, root: str, parent: str, workflow_id: str) -> str:
    """A finished run an agent of `parent`'s chain delegated to (engine/delegated_run.py),
    created just after its parent, as a call of an agent tool creates it."""
    async with be.store.unit_of_work(readonly=True) as repos:
        above: TaskExecution = await repos.task_executions.get(parent)
    async with be.store.unit_of_work() as repos:
        child = await repos.task_executions.create(
            TaskExecution(workflow_id=workflow_id, status=TaskStatus.COMPLETED,
                          trigger=TaskTrigger.DELEGATION, parent_task_id=parent,
                          root_task_id=root, delegation_depth=above.delegation_depth + 1)
        )  # fmt: skip
        await repos.for_model(ToolApproval).create(
            ToolApproval(task_id=child.id, workflow_id=workflow_id, tool_name="add",
                         status=ApprovalStatus.APPROVED, expires_at=NOW + DAY)
        )  # fmt: skip
    created = above.created_at + timedelta(seconds=1)
    await be.set_fields("task_executions", child.id, created_at=created, finished_at=created)
    return str(child.id)


async def test_runs_an_agent_delegated_to_go_with_their_chain_and_do_not_count(
    be: RtBackend,
) -> None:
    """Keeping alice's 2 newest runs keeps them with the runs their agents delegated to (not
    counted: they are part of the run that called them); the older run's chain goes whole,
    with its children's decided approvals."""
    wf = await make_workflow(be, owner="alice")
    roots = [await ended_run(be, wf, ended_days_ago=d) for d in (3, 2, 1)]  # oldest first
    chains: dict[str, list[str]] = {}
    for root in roots:
        child = await delegated_run(be, root, root, wf)
        chains[root] = [child, await delegated_run(be, root, child, wf)]

    report = await retention(be, runs_per_owner=2, batch_size=2).prune(now=NOW)

    kept = {roots[1], roots[2], *chains[roots[1]], *chains[roots[2]]}
    assert await run_ids(be) == kept
    assert report.counts["runs"] == 3  # the oldest run and its two delegated runs
    async with be.store.unit_of_work(readonly=True) as repos:
        left = {a.task_id async for a in repos.for_model(ToolApproval).iterate(Query())}
    assert left == set(chains[roots[1]] + chains[roots[2]])


async def test_a_dry_run_counts_and_deletes_nothing(be: RtBackend) -> None:
    wf = await make_workflow(be, webhook_url="http://hooks.invalid/x")
    for days in (100, 200):
        await ended_run(be, wf, ended_days_ago=days)
    await add_calls(be, [NOW - 100 * DAY, NOW - 1 * DAY])
    before = await run_ids(be)

    report = await retention(be, run_days=30, usage_call_days=30, webhook_delivery_days=30).prune(
        dry_run=True, now=NOW
    )

    assert report.dry_run and report.counts["runs"] == 2 and report.counts["usage_calls"] == 1
    assert "would delete" in report.describe()
    assert await run_ids(be) == before
    assert len(await calls(be)) == 2


# --- chats -------------------------------------------------------------------------------------
async def chat(be: RtBackend, owner: str | None, idle_days: float, messages: int = 2) -> str:
    """A chat session of `owner` with messages and an attached file's knowledge source, last
    active `idle_days` ago."""
    async with be.store.unit_of_work() as repos:
        source = await repos.knowledge_sources.create(KnowledgeSource(name=f"chat-{owner}"))
        await repos.knowledge_items.create(KnowledgeItem(source_id=source.id, title="notes.md"))
        session = await repos.chat_sessions.create(
            ChatSession(agent_id="a1", github_user=owner,
                        metadata={"knowledge_source_id": source.id})
        )  # fmt: skip
        for i in range(messages):
            role = MessageRole.USER if i % 2 == 0 else MessageRole.ASSISTANT
            await repos.chat_messages.create(
                ChatMessage(session_id=session.id, role=role, content=f"message {i}")
            )
    await be.set_fields("chat_sessions", session.id, updated_at=NOW - timedelta(days=idle_days))
    return str(session.id)


async def chat_state(be: RtBackend) -> tuple[set[str], int, int, int]:
    async with be.store.unit_of_work(readonly=True) as repos:
        sessions = {s.id async for s in repos.chat_sessions.iterate(Query())}
        return (
            sessions,
            await repos.chat_messages.count(),
            await repos.knowledge_sources.count(),
            await repos.knowledge_items.count(),
        )


async def chat_child(be: RtBackend, session_id: str) -> str:
    """A finished run a turn of the chat session delegated to (a chat chain's child)."""
    async with be.store.unit_of_work() as repos:
        child = await repos.task_executions.create(
            TaskExecution(workflow_id="", status=TaskStatus.COMPLETED, prompt="look it up",
                          trigger=TaskTrigger.DELEGATION, chat_session_id=session_id,
                          delegation_depth=1, started_at=NOW, finished_at=NOW)
        )  # fmt: skip
    return str(child.id)


async def test_idle_chats_go_with_their_messages_and_attached_files(be: RtBackend) -> None:
    old = await chat(be, "alice", idle_days=40, messages=3)
    kept = await chat(be, "alice", idle_days=2)
    children = {await chat_child(be, old), await chat_child(be, kept)}

    assert (await retention(be).prune(now=NOW)).total == 0  # chats are kept by default
    report = await retention(be, chat_days=30, batch_size=10).prune(now=NOW)

    assert report.counts["chat_sessions"] == 1
    assert await chat_state(be) == ({kept}, 2, 1, 1)
    assert old not in (await chat_state(be))[0]
    # the runs the deleted chat's turns delegated to went with it; the kept chat's stayed
    async with be.store.unit_of_work(readonly=True) as repos:
        left = {t.id async for t in repos.task_executions.iterate(Query())}
    assert len(left) == 1 and left < children, left
    (survivor,) = left
    async with be.store.unit_of_work(readonly=True) as repos:
        assert (await repos.task_executions.get(survivor)).chat_session_id == kept


async def test_only_the_most_recently_active_chats_of_a_user_are_kept(be: RtBackend) -> None:
    alice = [await chat(be, "alice", idle_days=d) for d in (1, 2, 3, 4)]
    bob = await chat(be, "bob", idle_days=9)
    nobody = await chat(be, None, idle_days=9)

    report = await retention(be, chats_per_owner=2).prune(now=NOW)

    assert report.counts["chat_sessions"] == 2
    assert (await chat_state(be))[0] == {alice[0], alice[1], bob, nobody}


async def test_a_long_chat_keeps_a_summary_and_its_recent_messages(be: RtBackend) -> None:
    session_id = await chat(be, "alice", idle_days=0, messages=10)
    seen: list[list[str]] = []

    async def summariser(session: ChatSession, older: list[ChatMessage]) -> str:
        seen.append([m.content for m in older])
        return "they talked about six things"

    rules = RetentionPolicy(summary_after_messages=8, summary_keep_recent=4)
    dry = await Retention(be.store, rules).prune(dry_run=True)
    report = await Retention(be.store, rules, summariser=summariser).prune()

    assert dry.counts["chat_messages"] == report.counts["chat_messages"] == 5
    assert seen == [[f"message {i}" for i in range(6)]]
    async with be.store.unit_of_work(readonly=True) as repos:
        query = Query(filters=(eq("session_id", session_id),), sort=(asc("seq"),))
        left = [m async for m in repos.chat_messages.iterate(query)]
        session = await repos.chat_sessions.get(session_id)
    assert [m.content for m in left] == [
        SUMMARY_PREFIX + "they talked about six things",
        *(f"message {i}" for i in range(6, 10)),
    ]
    assert left[0].role is MessageRole.ASSISTANT and session.message_count == 5
    # the summarised session is below the threshold now: nothing more to do
    assert (await Retention(be.store, rules, summariser=summariser).prune()).total == 0


async def test_without_a_summariser_long_chats_are_reported_and_left(be: RtBackend) -> None:
    await chat(be, "alice", idle_days=0, messages=6)
    report = await Retention(be.store, RetentionPolicy(summary_after_messages=4)).prune()
    assert report.total == 0 and "no summariser" in report.skipped[0]
    assert (await chat_state(be))[1] == 6


# --- webhook deliveries and usage -----------------------------------------------------------------
async def age_deliveries(be: RtBackend, days: float, status: str) -> None:
    moved = NOW - timedelta(days=days)
    if be.engine is not None:
        async with be.engine.begin() as conn:
            await conn.execute(update(webhook_deliveries).values(created_at=moved, status=status))
        return
    database: Any = be.store.database  # type: ignore[attr-defined]
    await database.get_collection(WEBHOOK_DELIVERIES).update_many(
        {}, {"$set": {"created_at": moved, "status": status}}
    )


async def test_old_deliveries_go_unless_still_pending(be: RtBackend) -> None:
    wf = await make_workflow(be, webhook_url="http://hooks.invalid/x")
    task_ids = [await ended_run(be, wf, ended_days_ago=1) for _ in range(3)]
    hooks = be.runs.webhooks

    await age_deliveries(be, 40, "pending")
    assert (await retention(be, webhook_delivery_days=30).prune(now=NOW)).total == 0
    await age_deliveries(be, 40, "delivered")
    report = await retention(be, webhook_delivery_days=30, batch_size=2).prune(now=NOW)

    assert report.counts["webhook_deliveries"] == 3
    assert await hooks.list_deliveries(workflow_id=wf, task_id=None, limit=10) == []
    assert await run_ids(be) == set(task_ids)  # the runs themselves are younger than any rule


async def add_calls(be: RtBackend, moments: list[datetime]) -> None:
    usage = usage_store_for(be.store)
    for i, at in enumerate(moments):
        await usage.record(
            UsageCall(call_key=f"k{i}-{at.timestamp()}", at=at, model="m", purpose="turn",
                      input_tokens=10, output_tokens=5, cost_usd=Decimal("0.01"),
                      user_id="alice")
        )  # fmt: skip


async def calls(be: RtBackend) -> list[UsageCall]:
    where = UsageFilter(start=(NOW - 400 * DAY).date(), end=NOW.date())
    return await usage_store_for(be.store).calls(where, 100, None)


async def test_old_usage_calls_go_and_the_totals_stay(be: RtBackend) -> None:
    await add_calls(be, [NOW - 100 * DAY, NOW - 95 * DAY, NOW - 30 * DAY, NOW - 1 * DAY])
    usage = usage_store_for(be.store)
    where = UsageFilter(start=(NOW - 400 * DAY).date(), end=NOW.date())
    totals = await usage.grouped(where, None, "month")

    report = await retention(be, usage_call_days=60, batch_size=1).prune(now=NOW)

    assert report.counts["usage_calls"] == 2
    left = await calls(be)
    assert len(left) == 2 and all(c.at > NOW - 31 * DAY for c in left)
    assert await usage.grouped(where, None, "month") == totals


# --- the product's entry points -------------------------------------------------------------------
async def test_the_upkeep_loop_applies_the_settings(be: RtBackend) -> None:
    wf = await make_workflow(be)
    old = await ended_run(be, wf, ended_days_ago=100)
    recent = await ended_run(be, wf, ended_days_ago=1)
    runtime = await be.runtime(be.settings(retention_run_days=30), start=False)
    try:
        report = await runtime.prune()
    finally:
        await runtime.aclose()
    assert report is not None and report.counts["runs"] == 1
    assert await run_ids(be) == {recent}
    assert old not in await run_ids(be)


async def test_a_started_runtime_prunes_in_its_upkeep_loop(be: RtBackend) -> None:
    wf = await make_workflow(be)
    old = await ended_run(be, wf, ended_days_ago=100)
    recent = await ended_run(be, wf, ended_days_ago=1)
    # the first pass comes one interval after start (the shortest allowed: 10 s)
    runtime = await be.runtime(be.settings(retention_run_days=30, retention_interval_seconds=10))

    async def pruned() -> bool:
        return old not in await run_ids(be)

    try:
        await eventually(pruned, 60, "the upkeep loop's retention pass")
    finally:
        await runtime.aclose()
    assert await run_ids(be) == {recent}


async def test_settings_build_the_policy(be: RtBackend) -> None:
    config = be.settings(retention_runs_per_owner=7, retention_chat_days=12.5)
    policy = retention_for(config, be.store).policy
    assert policy.runs_per_owner == 7 and policy.chat_days == 12.5
    assert policy.run_days == 90 and policy.webhook_delivery_days == 30
    assert policy.chats_per_owner == 0 and policy.summary_after_messages == 0


async def test_db_prune_prints_what_it_deletes_and_dry_run_deletes_nothing(
    pg18_server: str, tmp_path: Any
) -> None:
    """On PostgreSQL (the command opens the database the settings name; the emulated MongoDB
    lives only in the test's process)."""
    async with pg_backend(pg18_server) as be:
        await _db_prune(be, tmp_path)


async def _db_prune(be: RtBackend, tmp_path: Any) -> None:
    wf = await make_workflow(be)
    await ended_run(be, wf, ended_days_ago=100)
    recent = await ended_run(be, wf, ended_days_ago=1)
    env = settings_env(be.settings(data_dir=tmp_path)) | {"RETENTION_RUN_DAYS": "30"}

    def prune(*args: str) -> str:
        done = subprocess.run(
            [*TBD_AGENTS, "db", "prune", *args], env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "runs: 1 would delete" in prune("--dry-run")
    assert len(await run_ids(be)) == 2
    assert "runs: 1 deleted" in prune()
    assert await run_ids(be) == {recent}


async def test_a_run_without_finished_at_counts_from_its_last_update(be: RtBackend) -> None:
    wf = await make_workflow(be)
    async with be.store.unit_of_work() as repos:
        legacy = await repos.task_executions.create(
            TaskExecution(workflow_id=wf, status=TaskStatus.COMPLETED)
        )
    await be.set_fields("task_executions", legacy.id, updated_at=NOW - 100 * DAY)
    report = await retention(be, run_days=30).prune(now=NOW)
    assert report.counts["runs"] == 1 and await run_ids(be) == set()
