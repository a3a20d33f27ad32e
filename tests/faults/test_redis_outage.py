"""Redis outages (issue #16, points 1 and 2, and self-healing processes).

Each test stops a Redis server of its own (SIGTERM, as `docker stop` does) and starts it again on
the same port, with real `tbd-agents worker` / `tbd-agents scheduler` processes pointed at it:

- a worker outlives the outage, even with a run in progress, and consumes again by itself;
- a worker that truly cannot go on exits non-zero, saying why;
- a run goes on while Redis is down: its events are stored, its followers read them from the
  database and miss nothing, a halt still reaches it;
- the scheduler process outlives the outage, and the run it fired meanwhile executes once Redis
  is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import ScheduledAgent
from tbd_agents.runtime import leases
from tbd_agents.runtime.bus import RedisBus
from tbd_agents.runtime.events import RunEvent
from tbd_agents.runtime.service import Runtime
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.faults.redis_support import (  # noqa: F401  (fixtures)
    Processes,
    RedisServer,
    eventually,
    fault_settings,
    module_db,
    redis_server,
)
from tests.runtime.conftest import RtBackend, make_workflow, rt  # noqa: F401  (fixture)


@pytest.fixture
def processes(
    module_db: URL,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Processes]:
    started = Processes(fault_settings(module_db, redis_server.url), tmp_path)
    yield started
    started.stop_all()


async def wait_for_file(path: Path, timeout: float = 30.0) -> None:
    await eventually(lambda: asyncio.sleep(0, path.exists()), timeout, f"{path.name} to appear")


async def status_of(db: AsyncEngine, task_id: str) -> TaskStatus:
    task = await leases.load(db, task_id)
    assert task is not None
    return task.status


async def wait_until_ended(db: AsyncEngine, task_id: str, timeout: float) -> TaskStatus:
    async def ended() -> TaskStatus | None:
        status = await status_of(db, task_id)
        return status if status not in (TaskStatus.PENDING, TaskStatus.RUNNING) else None

    result: TaskStatus = await eventually(ended, timeout, f"run {task_id} to end")
    return result


# --- point 1: the worker -----------------------------------------------------------------------
async def test_a_worker_outlives_a_redis_outage_and_consumes_again(
    db: AsyncEngine,
    processes: Processes,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A run is in progress (its message unacknowledged) when Redis stops: the case where kombu
    used to stop the worker with exit code 0."""
    worker = processes.worker("outage")
    runtime = await Runtime.open(processes.config, db, role="api")
    await runtime.start()
    try:
        workflow = await make_workflow(db)
        marker = tmp_path / "started"
        during = await runtime.start_run(workflow, f"marker:{marker};sleep:2.5;emit:2")
        await wait_for_file(marker)

        redis_server.stop()
        await asyncio.sleep(4.0)  # the run ends meanwhile; Celery has retried to connect
        assert worker.proc.poll() is None, f"the worker exited:\n{worker.output()[-4000:]}"
        redis_server.start()

        after = await runtime.start_run(workflow, "emit:1")
        assert await wait_until_ended(db, after.id, 60) is TaskStatus.COMPLETED, worker.output()
        done = await leases.load(db, after.id)
        assert done is not None and f":{worker.proc.pid}:" in (done.worker or "")
        assert worker.proc.poll() is None  # the same process, never restarted
        assert await status_of(db, during.id) is TaskStatus.COMPLETED
        assert "Unrecoverable error" not in worker.output()
    finally:
        await runtime.aclose(drain_seconds=2)


async def test_a_worker_that_cannot_reconnect_exits_non_zero(
    module_db: URL,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
    db: AsyncEngine,
) -> None:
    """BROKER_RECONNECT_MAX_RETRIES=1 and Redis stays down: the worker gives up, and says so
    with a non-zero exit code (a supervisor restarts it), not the 0 of a clean stop."""
    config = fault_settings(module_db, redis_server.url, broker_reconnect_max_retries=1)
    processes = Processes(config, tmp_path)
    try:
        worker = processes.worker("giving-up")
        runtime = await Runtime.open(config, db, role="api")
        try:
            marker = tmp_path / "started"
            await runtime.start_run(await make_workflow(db), f"marker:{marker};sleep:1")
            await wait_for_file(marker)
            redis_server.stop()
            code = await asyncio.to_thread(worker.proc.wait, 60)
        finally:
            await runtime.aclose(drain_seconds=1)
        output = worker.output()
        assert code != 0, output[-4000:]
        assert "stopped on an error (exit code 1)" in output, output[-4000:]
    finally:
        processes.stop_all()


# --- point 2: runs and their followers -----------------------------------------------------------
async def _collect(runtime: Runtime, task_id: str, timeout: float = 60) -> list[RunEvent]:
    async def gather() -> list[RunEvent]:
        return [event async for event in runtime.follow(task_id)]

    return await asyncio.wait_for(gather(), timeout)


async def test_a_run_goes_on_through_a_redis_outage_and_its_follower_misses_nothing(
    rt: RtBackend,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Events published while Redis is down fail to publish; the run must not fail because of
    that, and a follower (the SSE stream) gets every event, in order, from the database."""
    config = rt.settings()  # no REDIS_URL: the run executes here, but on a Redis bus
    runtime = Runtime(config, rt.db, RedisBus(redis_server.url), role="api", store=rt.store)
    await runtime.start()
    try:
        workflow = await make_workflow(rt)
        marker = tmp_path / "outage-now"
        task = await runtime.start_run(
            workflow, f"emit:2;marker:{marker};sleep:1;emit:3;sleep:2;emit:1"
        )
        follower = asyncio.create_task(_collect(runtime, task.id))
        await wait_for_file(marker)
        redis_server.stop()  # the 3 events after the first sleep are emitted during the outage
        await asyncio.sleep(2.0)
        redis_server.start()
        events = await follower
        finished = await rt.task(task.id)
        assert finished.status is TaskStatus.COMPLETED, finished.error
        stored = await rt.runs.events.read(task.id)
        assert [(e.seq, e.type) for e in events] == [(e.seq, e.type) for e in stored]
        assert [e.data["text"] for e in events if e.type == "message_delta"] == [
            f"d{i}" for i in range(1, 7)
        ]
        assert events[-1].data["status"] == "completed"

        # Live fan-out is back: a new follower hears the next run over Redis.
        again = await runtime.start_run(workflow, "emit:1")
        assert (await _collect(runtime, again.id))[-1].data["status"] == "completed"
    finally:
        await runtime.aclose(drain_seconds=2)


async def test_a_halt_reaches_a_run_while_redis_is_down(
    rt: RtBackend,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The halt cannot be announced on Redis; it is stored, and the run's heartbeat reads it."""
    config = rt.settings()
    runtime = Runtime(config, rt.db, RedisBus(redis_server.url), role="api", store=rt.store)
    await runtime.start()
    try:
        marker = tmp_path / "blocking"
        task = await runtime.start_run(await make_workflow(rt), f"marker:{marker};block")
        await wait_for_file(marker)
        redis_server.stop()
        result = await runtime.halt(task.id, requested_by="fault-test")
        assert result.value == "halting"

        async def halted() -> bool:
            return (await rt.task(task.id)).status is TaskStatus.HALTED

        await eventually(halted, 30, "the run to stop on its halt")
    finally:
        await runtime.aclose(drain_seconds=2)


# --- self-healing: the scheduler process ----------------------------------------------------------
async def test_the_scheduler_outlives_a_redis_outage_and_its_run_executes_after_it(
    db: AsyncEngine,
    processes: Processes,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """The occurrence falls due while Redis is down: the scheduler stores the run, cannot queue
    it, stays up, and the run is queued and executed once Redis is back (within seconds, not
    after the minute the old orphan sweep waited)."""
    processes.config = processes.config.model_copy(update={"scheduler_poll_seconds": 0.3})
    worker = processes.worker("sched-worker")
    scheduler = processes.spawn("scheduler", "scheduler")
    await eventually(
        lambda: asyncio.sleep(0, "polling every" in scheduler.output()), 60, "the scheduler"
    )
    workflow = await make_workflow(db)
    redis_server.stop()
    store = PostgresStore(db, owns_engine=False)
    async with store.unit_of_work() as repos:
        schedule = await repos.scheduled_agents.create(
            ScheduledAgent(
                workflow_id=workflow,
                prompt="emit:1",
                interval_value=1,
                interval_unit="hours",
                start_at=datetime.now(UTC) + timedelta(seconds=2),
            )
        )
    tasks = leases.tasks

    async def fired() -> str | None:
        async with db.connect() as conn:
            found: str | None = (
                await conn.execute(
                    select(tasks.c.id).where(tasks.c.scheduled_agent_id == schedule.id)
                )
            ).scalar_one_or_none()
        return found

    task_id: str = await eventually(fired, 60, "the schedule to fire during the outage")
    await asyncio.sleep(1.0)
    assert await status_of(db, task_id) is TaskStatus.PENDING  # not queued: Redis is down
    assert scheduler.proc.poll() is None, scheduler.output()[-4000:]

    back = time.monotonic()
    redis_server.start()
    assert await wait_until_ended(db, task_id, 30) is TaskStatus.COMPLETED, scheduler.output()
    assert time.monotonic() - back < 30
    assert scheduler.proc.poll() is None and worker.proc.poll() is None
    output = scheduler.output()
    assert "is accepted but not queued yet" in output, output[-4000:]
