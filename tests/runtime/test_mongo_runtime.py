"""What the MongoDB run store does in place of transactions and foreign keys: the outbox that
finishes a state change's writes after a crash, the cleanup of run-time documents when a run,
workflow or schedule is deleted, the indexes, and the worker/scheduler process runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tbd_agents.config import Settings
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import ScheduledAgent
from tbd_agents.runtime.contracts import RunOutcome
from tbd_agents.runtime.mongo_store import MongoRunStore
from tbd_agents.runtime.scheduler import Outcome
from tbd_agents.runtime.service import process_runtime
from tbd_agents.storage.mongo.repository import MongoStore
from tbd_agents.storage.mongo.runtime_schema import OUTBOX_FIELD, RUNTIME_INDEXES
from tests.runtime.conftest import FERNET, make_workflow
from tests.support.mongo import EmulatedClient, make_mongo_store


class Crash(Exception):
    """Stands for the process dying at that point."""


@pytest.fixture
async def store() -> AsyncIterator[MongoStore]:
    opened = await make_mongo_store()
    yield opened
    await opened.close()


def raw(store: MongoStore, name: str) -> Any:
    return store.database.get_collection(name)


async def running_task(store: MongoStore, runs: MongoRunStore, webhook: bool = True) -> str:
    workflow = await make_workflow(store, webhook_url="http://hooks.invalid/x" if webhook else None)
    task = await runs.create_run(workflow, "p")
    assert await runs.claim(task.id, "worker@a") is not None
    return task.id


async def test_a_finish_whose_writer_died_gets_its_final_event_and_webhook_later(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = MongoRunStore(store.database)
    task_id = await running_task(store, runs)

    async def die(*_: Any) -> Any:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(MongoRunStore, "_follow_up", die)
        with pytest.raises(Crash):
            await runs.finish(task_id, "worker@a", RunOutcome(TaskStatus.COMPLETED, result="ok"))
    # The end of the run is stored, and what it still owes with it.
    stored = await raw(store, "task_executions").find_one({"_id": task_id})
    assert stored["status"] == "completed" and stored["response"] == "ok"
    assert [e["type"] for e in stored[OUTBOX_FIELD]["events"]] == ["status"]
    assert [e.type for e in await runs.events.read(task_id)] == ["status"]  # only "running"
    assert await runs.complete_followups(stale_seconds=30) == []  # not stale yet: its writer's

    done = await runs.complete_followups(stale_seconds=0)
    # Another test's reaper sharing this database may have completed it first; either way the
    # final event is stored once, as event 2.
    assert [(e.seq, e.type, e.data["status"]) for e in done] in ([(2, "status", "completed")], [])
    events = [(e.seq, e.type, e.data.get("status")) for e in await runs.events.read(task_id)]
    assert events == [(1, "status", "running"), (2, "status", "completed")]
    deliveries = await runs.webhooks.list_deliveries(workflow_id=None, task_id=task_id, limit=5)
    assert [d.event for d in deliveries] == ["task.completed"]
    assert OUTBOX_FIELD not in await raw(store, "task_executions").find_one({"_id": task_id})
    assert await runs.complete_followups(stale_seconds=0) == []
    assert (await runs.load(task_id)).extras == {}  # type: ignore[union-attr]


async def test_a_follow_up_cut_short_is_resumed_without_repeating_an_event(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = MongoRunStore(store.database)
    task_id = await running_task(store, runs)
    await raw(store, "task_executions").update_one(
        {"_id": task_id}, {"$set": {"heartbeat_at": datetime.now(UTC) - timedelta(minutes=5)}}
    )
    append = runs.events.append
    calls = 0

    async def append_once(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the reaper dies after the error event, before the final one
            raise Crash
        return await append(*args)

    with monkeypatch.context() as patch:
        patch.setattr(runs.events, "append", append_once)
        with pytest.raises(Crash):
            await runs.reap_expired(lease_seconds=3)
    assert [e.type for e in await runs.events.read(task_id)] == ["status", "error"]

    done = await runs.complete_followups(stale_seconds=0)
    assert [e.type for e in done] == ["status"]
    events = await runs.events.read(task_id)
    assert [(e.seq, e.type) for e in events] == [(1, "status"), (2, "error"), (3, "status")]
    assert events[-1].data["status"] == "failed"
    assert await runs.reap_expired(lease_seconds=3) == []  # reaped once


async def test_two_reapers_and_a_late_heartbeat(store: MongoStore) -> None:
    runs = MongoRunStore(store.database)
    alive, dead = await running_task(store, runs), await running_task(store, runs)
    old = datetime.now(UTC) - timedelta(minutes=5)
    for task_id in (alive, dead):
        await raw(store, "task_executions").update_one(
            {"_id": task_id}, {"$set": {"heartbeat_at": old}}
        )
    assert (await runs.heartbeat(alive, "worker@a")).owned  # renewed just in time
    first = await runs.reap_expired(lease_seconds=3)
    second = await runs.reap_expired(lease_seconds=3)
    assert [t.task.id for t in first] == [dead] and second == []
    assert not (await runs.heartbeat(dead, "worker@a")).owned  # its lease is gone
    assert (await runs.load(alive)).status is TaskStatus.RUNNING  # type: ignore[union-attr]
    assert await runs.finish(dead, "worker@a", RunOutcome(TaskStatus.COMPLETED)) is None


async def test_deleting_a_run_a_workflow_or_a_schedule_removes_their_runtime_documents(
    store: MongoStore,
) -> None:
    runs = MongoRunStore(store.database)
    workflow = await make_workflow(store, webhook_url="http://hooks.invalid/x")
    async with store.unit_of_work() as repos:
        schedule = await repos.scheduled_agents.create(ScheduledAgent(workflow_id=workflow))
    kept = await runs.create_run(workflow, "kept")
    task = await runs.create_run(workflow, "deleted")
    for run in (kept, task):
        await runs.events.append(run.id, "log", {})
        await runs.halt(run.id, "tester")  # queued: halted, flag stored
    halted = await runs.load(task.id)
    assert halted is not None and await runs.webhooks.enqueue(halted) is not None
    await runs.webhooks.save_secret(workflow, "encrypted", replace=False)
    async with runs.scheduling() as session:
        assert await session.claim(
            schedule, datetime(2026, 1, 1, tzinfo=UTC), Outcome.SKIPPED_MISSED, 1, "s"
        )
    [due] = await runs.webhooks.claim_due(5, timedelta(seconds=1))
    await runs.webhooks.record_attempt(due, 500, "HTTP 500", 1.0, exhausted=False, retry_after=None)
    await raw(store, "schedule_occurrences").update_many({}, {"$set": {"task_id": task.id}})

    async with store.unit_of_work() as repos:
        assert await repos.task_executions.delete(task.id)
    assert await raw(store, "run_events").count_documents({"task_id": task.id}) == 0
    assert await raw(store, "run_halts").count_documents({"_id": task.id}) == 0
    assert await raw(store, "webhook_deliveries").count_documents({"task_id": task.id}) == 0
    assert await raw(store, "webhook_attempts").count_documents({}) == 0
    [occurrence] = await raw(store, "schedule_occurrences").find({}).to_list(None)
    assert occurrence["task_id"] is None  # the history keeps the occurrence, without its run
    assert await raw(store, "run_events").count_documents({"task_id": kept.id}) == 2

    async with store.unit_of_work() as repos:
        assert await repos.workflows.delete(workflow)  # its runs and schedules go with it
    for name in ("run_events", "run_halts", "schedule_occurrences", "webhook_secrets"):
        assert await raw(store, name).count_documents({}) == 0, name


async def test_the_store_creates_the_runtime_indexes(store: MongoStore) -> None:
    for collection, specs in RUNTIME_INDEXES.items():
        info = await raw(store, collection).index_information()
        for spec in specs:
            assert info[spec.name].get("unique", False) is spec.unique, spec.name


async def test_worker_and_scheduler_processes_open_the_runtime_on_mongodb(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    client = EmulatedClient(tz_aware=True)
    monkeypatch.setattr("tbd_agents.storage.mongo.connect.mongo_client", lambda settings: client)
    settings = Settings(
        db_backend="mongo",
        mongo_db_name="proc_runtime",
        token_encryption_key=FERNET,
        redis_url=None,
        data_dir=tmp_path,
        run_executor="tests.runtime.scripted:build_executor",
    )
    async with process_runtime(settings, "scheduler") as runtime:
        assert runtime.runs.backend == "mongo" and runtime.db is None
        workflow = await make_workflow(runtime.store)  # type: ignore[arg-type]
        task = await runtime.start_run(workflow, "emit:2")
        events = [e async for e in runtime.follow(task.id)]
        assert events[-1].data["status"] == "completed"
        await runtime.aclose()
    indexes = (
        await client.get_database("proc_runtime").get_collection("run_events").index_information()
    )
    assert "uq_run_events_task_id_seq" in indexes
