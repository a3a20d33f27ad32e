"""Real Celery worker processes: queued work goes to a free worker, a worker killed with
SIGKILL leaves no run "running", and SIGTERM lets the run in progress finish."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.runtime import leases
from tbd_agents.runtime.service import Runtime
from tests.runtime.conftest import WorkerPool, make_workflow
from tests.runtime.test_runs import collect


async def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        await asyncio.sleep(0.05)


async def test_queued_work_goes_to_a_second_worker_and_a_killed_worker_run_fails(
    db: AsyncEngine, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    first = worker_pool.start("first")
    runtime = await Runtime.open(worker_pool.config, db, role="api")
    await runtime.start()
    try:
        workflow = await make_workflow(db)
        marker = tmp_path / "blocking-started"
        blocking = await runtime.start_run(workflow, f"marker:{marker};block")
        await wait_for(marker)

        queued = await runtime.start_run(workflow, "emit:2")
        await asyncio.sleep(1.0)  # the only worker is busy: the run stays queued
        assert (await leases.load(db, queued.id)).status is TaskStatus.PENDING  # type: ignore[union-attr]

        second = worker_pool.start("second")
        events = await collect(runtime, queued.id, timeout=30)
        assert events[-1].data["status"] == "completed"
        done = await leases.load(db, queued.id)
        assert done is not None and done.worker is not None
        assert f":{second.proc.pid}:" in done.worker

        follower = asyncio.create_task(collect(runtime, blocking.id, timeout=30))
        await asyncio.sleep(0.2)
        first.kill()
        killed = time.monotonic()
        events = await follower
        elapsed = time.monotonic() - killed
        lease = worker_pool.config.run_lease_seconds
        assert events[-1].data["status"] == "failed"
        # expiry (<= lease after the last heartbeat) + one reaper round (1 s) + slack for a busy box
        assert elapsed <= lease + 3.0, f"failed {elapsed:.1f}s after the kill (lease {lease}s)"
        failed = await leases.load(db, blocking.id)
        assert failed is not None and failed.status is TaskStatus.FAILED
        assert failed.error is not None and "stopped renewing its lease" in failed.error
        async with db.connect() as conn:
            running = (
                await conn.execute(
                    select(func.count())
                    .select_from(leases.tasks)
                    .where(leases.tasks.c.status == "running")
                )
            ).scalar_one()
        assert running == 0
    finally:
        await runtime.aclose(drain_seconds=2)


async def test_sigterm_lets_the_run_in_progress_finish(
    db: AsyncEngine, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    worker = worker_pool.start("draining")
    runtime = await Runtime.open(worker_pool.config, db, role="api")
    try:
        workflow = await make_workflow(db)
        marker = tmp_path / "started"
        task = await runtime.start_run(workflow, f"marker:{marker};sleep:1.5;emit:1")
        await wait_for(marker)
        exit_code = await asyncio.to_thread(worker.terminate, 30.0)
        assert exit_code == 0, worker.output()
        finished = await leases.load(db, task.id)
        assert finished is not None and finished.status is TaskStatus.COMPLETED
    finally:
        await runtime.aclose(drain_seconds=2)


@pytest.mark.parametrize("pool", ["threads", "prefork"])
async def test_threads_and_prefork_pools_run_several_runs_at_once(
    db: AsyncEngine, worker_pool: WorkerPool, pool: str
) -> None:
    worker_pool.start(f"pool-{pool}", pool=pool, concurrency=2)
    runtime = await Runtime.open(worker_pool.config, db, role="api")
    try:
        workflow = await make_workflow(db)
        first = await runtime.start_run(workflow, "sleep:1.5;emit:1")
        second = await runtime.start_run(workflow, "sleep:1.5;emit:1")
        for task in (first, second):
            events = await collect(runtime, task.id, timeout=30)
            assert events[-1].data["status"] == "completed"
        a, b = await leases.load(db, first.id), await leases.load(db, second.id)
        assert a is not None and b is not None
        assert a.started_at and a.finished_at and b.started_at and b.finished_at
        # side by side, not one after the other: their running periods overlap
        assert a.started_at < b.finished_at and b.started_at < a.finished_at
        if pool == "prefork":  # one child process per slot
            assert a.worker.split(":")[1] != b.worker.split(":")[1]  # type: ignore[union-attr]
    finally:
        await runtime.aclose(drain_seconds=2)
