"""Runs whose dispatch failed (issue #16, point 3): a run the hub accepted either runs after the
fault or fails with a clear reason, never stays `pending`.

- Over HTTP with the run queue (a Redis of the test's own) stopped: the API accepts the run as
  usual (202 / 201, marked `X-Run-Dispatch: deferred`, not 500); once Redis is back the run is
  queued again and executed once by a real worker, and the workflow accepts prompts again.
- Redis stays down: after RUN_DISPATCH_DEADLINE_SECONDS the run fails with the reason, its error
  event and its error webhook (PostgreSQL and MongoDB).
- In-process (no Redis): a run left pending by a process that stopped before it started is
  started by the next runtime, or failed once its deadline has passed (both stores).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.runtime import leases
from tbd_agents.runtime.events import RunEvent
from tbd_agents.runtime.service import Runtime
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.live import live_server
from tests.faults.redis_support import (  # noqa: F401  (fixtures)
    Processes,
    RedisServer,
    eventually,
    fault_settings,
    module_db,
    redis_server,
)
from tests.runtime.conftest import RtBackend, make_workflow, rt  # noqa: F401  (fixture)
from tests.support.webhook_receiver import webhook_receiver


@pytest.fixture
async def api_key(db: AsyncEngine) -> tuple[str, str]:
    store = PostgresStore(db, owns_engine=False)
    async with store.unit_of_work() as repos:
        created = await ApiKeys(repos).create("dispatch-user", scope=KeyScope.USER, name="faults")
    return created.plaintext, "dispatch-user"


def running_events(events: list[RunEvent]) -> int:
    """How many times the run was started (its `running` status events)."""
    return sum(1 for e in events if e.type == "status" and e.data.get("status") == "running")


async def ended(rt_or_db: RtBackend | AsyncEngine, task_id: str, timeout: float) -> Any:
    async def check() -> Any:
        if isinstance(rt_or_db, RtBackend):
            task = await rt_or_db.task(task_id)
        else:
            task = await leases.load(rt_or_db, task_id)
        assert task is not None
        return task if task.status not in (TaskStatus.PENDING, TaskStatus.RUNNING) else None

    return await eventually(check, timeout, f"run {task_id} to end")


async def test_runs_accepted_while_redis_is_down_run_once_it_is_back(
    db: AsyncEngine,
    module_db: URL,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    api_key: tuple[str, str],
    tmp_path: Path,
) -> None:
    key, owner = api_key
    config = fault_settings(module_db, redis_server.url, data_dir=tmp_path / "api")
    processes = Processes(config, tmp_path)
    try:
        worker = processes.worker("dispatch")
        first = await make_workflow(db, owner=owner)
        second = await make_workflow(db, owner=owner)
        with live_server(config) as base:
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as client:
                redis_server.stop()
                run = await client.post(f"/api/workflows/{first}/runs", json={"prompt": "emit:2"})
                assert run.status_code == 202, run.text
                assert run.headers.get("x-run-dispatch") == "deferred"
                assert run.json()["status"] == "pending"

                prompt = await client.post(f"/api/workflows/{second}/prompt", json={"prompt": "x"})
                assert prompt.status_code == 201, prompt.text
                assert prompt.headers.get("x-run-dispatch") == "deferred"
                # The accepted run holds its workflow, as any pending run does ...
                busy = await client.post(f"/api/workflows/{second}/prompt", json={"prompt": "y"})
                assert busy.status_code == 400, busy.text

                await asyncio.sleep(1.5)  # a few sweeps fail meanwhile: still pending
                ids = [run.json()["id"], prompt.json()["task_id"]]
                for task_id in ids:
                    task = await leases.load(db, task_id)
                    assert task is not None and task.status is TaskStatus.PENDING

                redis_server.start()
                for task_id in ids:
                    done = await ended(db, task_id, 60)
                    assert done.status is TaskStatus.COMPLETED, (done.error, worker.output())
                    assert f":{worker.proc.pid}:" in (done.worker or "")

                # ... and once it ran, the workflow accepts the next prompt.
                again = await client.post(f"/api/workflows/{second}/prompt", json={"prompt": "z"})
                assert again.status_code == 201, again.text
                assert "x-run-dispatch" not in again.headers
                await ended(db, again.json()["task_id"], 60)

        # Sent again after recovery (the sweep, a late message): still executed once.
        runtime = await Runtime.open(config, db, role="api")
        try:
            assert await runtime.dispatch(ids[0]) is True
            await asyncio.sleep(1.0)
            for task_id in ids:
                events = await runtime.events.read(task_id)
                assert running_events(events) == 1, [(e.seq, e.type, e.data) for e in events]
        finally:
            await runtime.aclose(drain_seconds=1)
        assert worker.proc.poll() is None
    finally:
        processes.stop_all()


async def test_a_run_that_cannot_be_queued_fails_with_the_reason_at_its_deadline(
    rt: RtBackend,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> None:
    with webhook_receiver() as receiver:
        config = fault_settings(
            rt.url,
            redis_server.url,
            run_dispatch_retry_seconds=0.3,
            run_dispatch_deadline_seconds=2.0,
            webhook_allowed_hosts="127.0.0.1",
        )
        workflow = await make_workflow(rt, error_webhook_url=receiver.url("/failed"))
        runtime = await Runtime.open(config, rt.db, role="api", store=rt.store)
        await runtime.start()
        try:
            redis_server.stop()
            task = await runtime.start_run(workflow, "emit:1")  # does not raise
            assert runtime.dispatch_deferred(task.id)
            failed = await ended(rt, task.id, 30)
            assert failed.status is TaskStatus.FAILED
            assert failed.error.startswith("could not be queued since "), failed.error
            assert "RUN_DISPATCH_DEADLINE_SECONDS (2 s)" in failed.error
            assert "Connection refused" in failed.error  # the last error this process met

            # on MongoDB the events follow the status through the task's outbox: wait for both
            async def both_events() -> list[Any] | None:
                found = await rt.runs.events.read(task.id)
                return found if len(found) >= 2 else None

            events = await eventually(both_events, 10, "the run's error and status events")
            assert [e.type for e in events] == ["error", "status"]
            assert events[0].data["message"] == failed.error
            assert events[1].data["status"] == "failed"
            assert running_events(events) == 0

            await eventually(lambda: asyncio.sleep(0, receiver.requests), 30, "error webhook")
            [hook] = receiver.requests
            body = json.loads(hook.body)
            assert body["task_id"] == task.id and body["status"] == "failed", body

            # Redis back: the failed run is not queued any more; it stays failed.
            redis_server.start()
            await asyncio.sleep(1.0)
            assert (await rt.task(task.id)).status is TaskStatus.FAILED
        finally:
            await runtime.aclose(drain_seconds=1)


async def test_a_run_left_pending_by_a_stopped_process_is_started_or_failed(
    rt: RtBackend,  # noqa: F811
) -> None:
    """No Redis (in-process runs): the process that accepted these runs stopped before they
    started (simulated by storing them without dispatching). The next runtime on the database
    starts the recent one and fails the one past its deadline."""
    config = rt.settings(run_dispatch_retry_seconds=0.3, run_dispatch_deadline_seconds=60.0)
    workflow = await make_workflow(rt)
    recent = await rt.runs.create_run(workflow, "emit:1")
    stale = await rt.runs.create_run(workflow, "emit:1")
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    await rt.set_fields("task_executions", stale.id, created_at=long_ago)

    runtime = await Runtime.open(config, rt.db, role="api", store=rt.store)
    await runtime.start()
    try:
        started = await ended(rt, recent.id, 30)
        assert started.status is TaskStatus.COMPLETED, started.error
        gone = await ended(rt, stale.id, 30)
        assert gone.status is TaskStatus.FAILED
        assert gone.error.startswith("could not be queued since "), gone.error
        assert "not started within RUN_DISPATCH_DEADLINE_SECONDS" in gone.error
        assert running_events(await rt.runs.events.read(stale.id)) == 0
    finally:
        await runtime.aclose(drain_seconds=1)
