"""Run behaviour, the same for every execution backend and database: in-process (no Redis) on
PostgreSQL and on MongoDB, and real Celery workers on PostgreSQL.

Each test starts runs through `Runtime` as the API does, follows their events the way the SSE
endpoint does, and checks the stored task execution.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tbd_agents.domain.enums import TaskStatus, TaskTrigger
from tbd_agents.domain.models import ScheduledAgent
from tbd_agents.errors import Conflict
from tbd_agents.runtime.events import RunEvent
from tbd_agents.runtime.halt import HaltResult
from tbd_agents.runtime.service import Runtime
from tests.runtime.conftest import (
    RtBackend,
    WorkerPool,
    celery_settings,
    make_workflow,
    open_backend,
)


@dataclass
class Harness:
    runtime: Runtime
    rt: RtBackend
    backend: str


@pytest.fixture(scope="module")
def celery_workers(
    module_db: URL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerPool]:
    pool = WorkerPool(celery_settings(module_db), tmp_path_factory.mktemp("workers"))
    try:
        pool.start("runs-a")
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(params=["inprocess-pg", "inprocess-mongo", "celery-pg"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    backend, database = request.param.split("-")
    async with open_backend(request, database) as rt:
        if backend == "celery":
            config = request.getfixturevalue("celery_workers").config
        else:
            config = rt.settings()
        runtime = await rt.runtime(config)
        harness = Harness(runtime, rt, backend)
        yield harness
        await harness.runtime.aclose(drain_seconds=5)


async def collect(
    runtime: Runtime, task_id: str, after: int = 0, timeout: float = 20
) -> list[RunEvent]:
    async def gather() -> list[RunEvent]:
        return [e async for e in runtime.follow(task_id, after)]

    return await asyncio.wait_for(gather(), timeout)


async def test_run_completes_and_its_events_arrive_in_order(harness: Harness) -> None:
    workflow = await make_workflow(harness.rt)
    task = await harness.runtime.start_run(workflow, "emit:5")
    events = await collect(harness.runtime, task.id)

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events] == ["status"] + ["message_delta"] * 5 + ["message", "status"]
    assert [e.data["text"] for e in events if e.type == "message_delta"] == [
        "d1",
        "d2",
        "d3",
        "d4",
        "d5",
    ]
    assert events[0].data["status"] == "running"
    assert events[-1].data["status"] == "completed"
    assert events[-1].data["result"] == "done: emit:5"

    stored = await harness.rt.task(task.id)
    assert stored.status is TaskStatus.COMPLETED
    assert stored.response == "done: emit:5"
    assert stored.usage is not None
    assert stored.usage["input_tokens"] == 3 and stored.usage["output_tokens"] == 5
    # the existing TBD Agents UsageStats fields too
    assert stored.usage["total_input_tokens"] == 3 and stored.usage["total_output_tokens"] == 5
    assert stored.usage["total_cost"] == 0.0 and stored.usage["total_premium_requests"] == 0
    assert stored.started_at is not None and stored.finished_at is not None
    expected_role = "worker@" if harness.backend == "celery" else "api@"
    assert stored.worker is not None and stored.worker.startswith(expected_role)
    if harness.backend == "celery":
        assert stored.celery_task_id == task.id
    async with harness.rt.store.unit_of_work() as repos:
        # the outcome is the task's; the workflow takes the next prompt
        assert (await repos.workflows.get(workflow)).status == "active"


async def test_a_follower_connected_during_the_run_gets_every_event_once(harness: Harness) -> None:
    workflow = await make_workflow(harness.rt)
    task = await harness.runtime.start_run(workflow, "emit:3;sleep:0.4;emit:3;sleep:0.2;emit:3")
    events = await collect(harness.runtime, task.id)
    assert [e.seq for e in events] == list(range(1, 13))
    assert [e.data.get("text") for e in events if e.type == "message_delta"] == [
        f"d{i}" for i in range(1, 10)
    ]


async def test_replay_after_the_run_and_resume_with_last_event_id(harness: Harness) -> None:
    workflow = await make_workflow(harness.rt)
    task = await harness.runtime.start_run(workflow, "emit:6")
    everything = await collect(harness.runtime, task.id)
    assert everything[-1].is_terminal

    again = await collect(harness.runtime, task.id)  # connects after the run finished
    assert [(e.seq, e.type, e.data) for e in again] == [(e.seq, e.type, e.data) for e in everything]

    resumed = await collect(harness.runtime, task.id, after=4)  # Last-Event-ID: 4
    assert [e.seq for e in resumed] == [e.seq for e in everything if e.seq > 4]


async def test_halt_stops_a_running_run(harness: Harness, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    workflow = await make_workflow(harness.rt)
    task = await harness.runtime.start_run(workflow, f"marker:{marker};block")

    async def halt_when_started() -> HaltResult:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert time.monotonic() < deadline, "the run never started"
            await asyncio.sleep(0.05)
        return await harness.runtime.halt(task.id, requested_by="tester")

    events, result = await asyncio.gather(collect(harness.runtime, task.id), halt_when_started())
    assert result is HaltResult.HALTING
    assert events[-1].data["status"] == "halted"
    assert any(e.type == "log" and e.data["message"] == "halted by request" for e in events)
    stored = await harness.rt.task(task.id)
    assert stored.status is TaskStatus.HALTED
    with pytest.raises(Conflict, match="already ended"):
        await harness.runtime.halt(task.id)


async def test_halting_a_queued_run_means_it_never_starts(harness: Harness) -> None:
    workflow = await make_workflow(harness.rt)
    task = await harness.rt.runs.create_run(workflow, "emit:1")
    assert await harness.runtime.halt(task.id) is HaltResult.HALTED
    await harness.runtime.dispatch(task.id)  # a late delivery of the queued run
    events = await collect(harness.runtime, task.id)
    assert [e.data.get("status") for e in events] == ["halted"]
    await asyncio.sleep(0.5)
    stored = await harness.rt.task(task.id)
    assert stored.status is TaskStatus.HALTED and stored.started_at is None


async def test_an_executor_error_fails_the_run_with_the_message(harness: Harness) -> None:
    workflow = await make_workflow(harness.rt)
    task = await harness.runtime.start_run(workflow, "emit:1;fail")
    events = await collect(harness.runtime, task.id)
    assert events[-1].data["status"] == "failed"
    assert events[-1].data["error"] == "RuntimeError: scripted failure"
    assert (await harness.rt.task(task.id)).status is TaskStatus.FAILED


async def test_a_run_whose_worker_vanished_is_failed_by_the_reaper(harness: Harness) -> None:
    workflow = await make_workflow(harness.rt)
    task = await harness.rt.runs.create_run(workflow, "never executed")
    claimed = await harness.rt.runs.claim(task.id, "worker@gone:1:abc")
    assert claimed is not None and claimed.task.status is TaskStatus.RUNNING
    await harness.rt.set_fields(  # its last heartbeat was long ago
        "task_executions", task.id, heartbeat_at=datetime.now(UTC) - timedelta(minutes=5)
    )
    started = time.monotonic()
    events = await collect(harness.runtime, task.id)  # the runtime's upkeep loop reaps it
    assert time.monotonic() - started < harness.runtime.settings.run_lease_seconds + 2
    assert [e.type for e in events] == ["status", "error", "status"]
    assert events[0].data == {"status": "running", "worker": "worker@gone:1:abc"}
    assert events[-1].data["status"] == "failed"
    stored = await harness.rt.task(task.id)
    assert stored.status is TaskStatus.FAILED
    assert (
        stored.error is not None and "worker@gone:1:abc stopped renewing its lease" in stored.error
    )


async def test_a_scheduled_run_never_dispatched_is_picked_up(harness: Harness) -> None:
    workflow = await make_workflow(harness.rt)
    async with harness.rt.store.unit_of_work() as repos:
        schedule = await repos.scheduled_agents.create(
            ScheduledAgent(workflow_id=workflow, enabled=False)
        )
    task = await harness.rt.runs.create_run(
        workflow, "emit:1", trigger=TaskTrigger.SCHEDULE, scheduled_agent_id=schedule.id
    )
    await harness.rt.set_fields(  # its scheduler died before dispatching it, two minutes ago
        "task_executions", task.id, created_at=datetime.now(UTC) - timedelta(minutes=2)
    )
    await harness.runtime.aclose(drain_seconds=1)  # restart: the first upkeep round sweeps
    harness.runtime = await harness.rt.runtime(harness.runtime.settings)
    events = await collect(harness.runtime, task.id)
    assert events[-1].data["status"] == "completed"


async def test_a_due_schedule_fires_once_and_its_run_completes(harness: Harness) -> None:
    workflow = await make_workflow(harness.rt)
    async with harness.rt.store.unit_of_work() as repos:
        schedule = await repos.scheduled_agents.create(
            ScheduledAgent(
                workflow_id=workflow,
                prompt="emit:2",
                interval_value=1,
                interval_unit="hours",
                next_run_at=datetime.now(UTC) - timedelta(seconds=5),
            )
        )
    scheduler = harness.runtime.scheduler()
    first = await scheduler.tick()
    second = await scheduler.tick()
    fired = [c for c in first.fired if c.schedule_id == schedule.id]
    assert len(fired) == 1 and fired[0].task_id is not None
    assert [c for c in second.claimed if c.schedule_id == schedule.id] == []
    events = await collect(harness.runtime, fired[0].task_id)
    assert events[-1].data["status"] == "completed"
    history = await harness.rt.runs.schedule_history(schedule.id)
    assert [(h.outcome, h.task_status) for h in history] == [("fired", "completed")]


async def test_a_run_left_running_before_a_migration_is_failed_without_a_webhook(
    harness: Harness,
) -> None:
    # An existing deployment stopped with a run `running`: it was never leased by this hub (no
    # heartbeat), so the reaper fails it but does not call the workflow's old error webhook.
    workflow = await make_workflow(harness.rt, error_webhook_url="https://hooks.example/failed")
    task = await harness.rt.runs.create_run(workflow, "from the old system")
    await harness.rt.set_fields(
        "task_executions",
        task.id,
        status=TaskStatus.RUNNING.value,
        started_at=datetime.now(UTC) - timedelta(days=3),
    )
    events = await collect(harness.runtime, task.id)  # the upkeep loop reaps it
    assert events[-1].data["status"] == "failed"
    assert (await harness.rt.task(task.id)).status is TaskStatus.FAILED
    assert await harness.runtime.webhooks.list_deliveries(task_id=task.id) == []
