"""The event store and `follow`: numbering, replay, holes left by lost notifications, purge — on
PostgreSQL and on MongoDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from tbd_agents.errors import NotFound
from tbd_agents.runtime.bus import EventBus, InProcessBus, RedisBus
from tbd_agents.runtime.contracts import EventType
from tbd_agents.runtime.events import PersistingEventSink, RunEvent, follow
from tests.runtime.conftest import REDIS_TEST_URL, RtBackend, make_workflow, redis_available


@pytest.fixture(params=["inprocess", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    if request.param == "redis":
        if not redis_available():
            pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL}")
        redis_bus = RedisBus(REDIS_TEST_URL)
        yield redis_bus
        await redis_bus.aclose()
    else:
        yield InProcessBus()


async def new_task(rt: RtBackend) -> str:
    workflow = await make_workflow(rt)
    task = await rt.runs.create_run(workflow, "p")
    return task.id


async def test_concurrent_appends_number_a_run_from_one_without_gaps(rt: RtBackend) -> None:
    store = rt.runs.events
    task_id = await new_task(rt)
    await asyncio.gather(*(store.append(task_id, "log", {"i": i}) for i in range(60)))
    events = await store.read(task_id)
    assert [e.seq for e in events] == list(range(1, 61))
    assert sorted(e.data["i"] for e in events) == list(range(60))


async def test_a_follower_reading_during_concurrent_appends_never_skips_a_number(
    rt: RtBackend,
) -> None:
    """Whatever a reader sees is a prefix 1..n: no event becomes visible before the ones
    numbered below it (so `follow` never jumps over one)."""
    store = rt.runs.events
    task_id = await new_task(rt)
    seen: list[list[int]] = []

    async def reader() -> None:
        for _ in range(40):
            seen.append([e.seq for e in await store.read(task_id)])
            await asyncio.sleep(0)

    await asyncio.gather(reader(), *(store.append(task_id, "log", {"i": i}) for i in range(30)))
    assert all(s == list(range(1, len(s) + 1)) for s in seen)


async def test_appending_to_an_unknown_run_is_not_found(rt: RtBackend) -> None:
    with pytest.raises(NotFound):
        await rt.runs.events.append("no-such-task", "log", {})


async def test_follow_fills_the_hole_left_by_an_unpublished_event(
    rt: RtBackend, bus: EventBus
) -> None:
    store = rt.runs.events
    task_id = await new_task(rt)
    sink = PersistingEventSink(store, bus, task_id)
    received: list[RunEvent] = []

    async def follower() -> None:
        async for event in follow(store, bus, task_id, poll_seconds=30):
            received.append(event)

    running = asyncio.create_task(follower())
    await asyncio.sleep(0.3)  # subscribed and replayed (nothing yet)
    await store.append(task_id, "log", {"lost": True})  # stored, never published
    await sink.emit(EventType.LOG, {"n": 2})  # published as seq 2: follower sees the hole
    await sink.emit(EventType.STATUS, {"status": "completed"})
    await asyncio.wait_for(running, 10)
    assert [(e.seq, e.data) for e in received] == [
        (1, {"lost": True}),
        (2, {"n": 2}),
        (3, {"status": "completed"}),
    ]


async def test_follow_reads_the_store_when_the_bus_stays_silent(rt: RtBackend) -> None:
    store = rt.runs.events
    task_id = await new_task(rt)
    bus = InProcessBus()

    async def writer() -> None:
        await asyncio.sleep(0.2)
        for i in range(3):
            await store.append(task_id, "log", {"i": i})  # nothing is published
        await store.append(task_id, "status", {"status": "failed"})

    events, _ = await asyncio.wait_for(
        asyncio.gather(_all(follow(store, bus, task_id, poll_seconds=0.2)), writer()), 10
    )
    assert [e.seq for e in events] == [1, 2, 3, 4]


async def test_follow_ends_for_a_finished_run_without_a_final_event(rt: RtBackend) -> None:
    store = rt.runs.events
    task_id = await new_task(rt)
    await store.append(task_id, "log", {"i": 1})
    await rt.set_fields("task_executions", task_id, status="failed")
    events = await asyncio.wait_for(
        _all(follow(store, InProcessBus(), task_id, poll_seconds=0.1)), 5
    )
    assert [e.seq for e in events] == [1]


async def test_follow_of_an_unknown_run_is_not_found(rt: RtBackend) -> None:
    with pytest.raises(NotFound):
        await _all(follow(rt.runs.events, InProcessBus(), "missing"))


async def test_purge_keeps_running_runs_and_recent_ones(rt: RtBackend) -> None:
    store = rt.runs.events
    old_id, recent_id, running_id = [await new_task(rt) for _ in range(3)]
    for task_id in (old_id, recent_id, running_id):
        await store.append(task_id, "log", {})
    now = datetime.now(UTC)
    for task_id, status, ended in (
        (old_id, "completed", now - timedelta(days=40)),
        (recent_id, "completed", now - timedelta(days=1)),
        (running_id, "running", None),
    ):
        await rt.set_fields(
            "task_executions",
            task_id,
            status=status,
            finished_at=ended,
            updated_at=now - timedelta(days=50),
        )
    # On MongoDB only events older than the cut-off are candidates: make them old.
    if rt.name == "mongo":
        events = rt.store.database.get_collection("run_events")  # type: ignore[attr-defined]
        await events.update_many({}, {"$set": {"created_at": now - timedelta(days=45)}})
    assert await store.purge(now - timedelta(days=30)) == 1
    assert await store.read(old_id) == []
    assert len(await store.read(recent_id)) == 1
    assert len(await store.read(running_id)) == 1


async def _all(events: AsyncIterator[RunEvent]) -> list[RunEvent]:
    return [e async for e in events]
