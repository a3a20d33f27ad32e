"""The runtime's side of approvals, on both stores (PostgreSQL, and MongoDB through the
emulation) and with Celery workers: a run that pauses is parked (status awaiting_approval,
lease released, its status event, an approval_requested webhook), a decision resumes it once,
expiry applies `on_timeout`, a halt ends a waiting run, and a worker killed while the run waits
loses nothing. The executor (tests/runtime/approval_executor.py) pauses like the engine does;
tests/runtime/test_approvals.py covers the engine and the API end to end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.domain.approvals import ToolApproval
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.errors import Conflict
from tbd_agents.runtime.events import RunEvent
from tbd_agents.runtime.service import Runtime
from tbd_agents.runtime.webhooks import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from tbd_agents.services import approvals
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import Query, eq
from tests.runtime.conftest import RtBackend, WorkerPool, make_workflow
from tests.runtime.test_webhooks import Receiver, receiver  # noqa: F401  (the fixture)

EXECUTOR = "tests.runtime.approval_executor:build_executor"


async def collect(runtime: Runtime, task_id: str, timeout: float = 30) -> list[RunEvent]:
    async def gather() -> list[RunEvent]:
        return [e async for e in runtime.follow(task_id)]

    return await asyncio.wait_for(gather(), timeout)


async def wait_status(rt: RtBackend, task_id: str, status: TaskStatus, timeout: float = 30) -> Any:
    async def poll() -> Any:
        while (task := await rt.task(task_id)).status is not status:
            await asyncio.sleep(0.05)
        return task

    return await asyncio.wait_for(poll(), timeout)


async def the_approval(rt: RtBackend, task_id: str) -> ToolApproval:
    async with rt.store.unit_of_work(readonly=True) as repos:
        page = await repos.for_model(ToolApproval).list(Query(filters=(eq("task_id", task_id),)))
    (approval,) = page.items
    return approval


async def decide(runtime: Runtime, approval: ToolApproval, **kw: Any) -> None:
    store = runtime.store
    assert store is not None
    decided = await approvals.decide(store, approval, **kw)
    await runtime.approval_decided(decided.task_id, {"approval_id": decided.id})


async def test_a_paused_run_is_parked_and_resumes_once_decided(rt: RtBackend) -> None:
    runtime = await rt.runtime(rt.settings(run_executor=EXECUTOR))
    try:
        workflow = await make_workflow(rt, webhook_url="http://127.0.0.1:9/hook", owner="ann")
        task = await runtime.start_run(workflow, "ask")
        parked = await wait_status(rt, task.id, TaskStatus.AWAITING_APPROVAL)
        assert parked.worker is None and parked.heartbeat_at is None
        assert parked.paused_state["approval_ids"]
        approval = await the_approval(rt, task.id)
        assert approval.owner == "ann" and approval.status.value == "pending"
        deliveries = await runtime.webhooks.list_deliveries(task_id=task.id)
        assert [d.event for d in deliveries] == [f"approval_requested/{approval.id}"]
        assert deliveries[0].workflow_id == workflow
        # The reaper leaves a waiting run alone, however long it waits.
        await runtime.maintain_once()
        assert (await rt.task(task.id)).status is TaskStatus.AWAITING_APPROVAL

        await decide(runtime, approval, approve=True, by="ann", arguments={"path": "/tmp/x"})
        events = await collect(runtime, task.id)
        done = await rt.task(task.id)
        assert done.status is TaskStatus.COMPLETED
        assert done.response == 'approved {"path": "/tmp/x"} ann None'
        assert done.paused_state is None
        types = [e.type for e in events]
        statuses = [e.data["status"] for e in events if e.type == "status"]
        assert statuses == ["running", "awaiting_approval", "pending", "running", "completed"]
        assert types.index("approval_requested") < types.index("approval_decided")
        # Resuming again does nothing: the run is not waiting any more.
        assert await runtime.resume_run(task.id, "again") is False
        again = await the_approval(rt, task.id)
        with pytest.raises(Conflict, match="already approved"):
            await approvals.decide(rt.store, again, approve=False, by="x")
    finally:
        await runtime.aclose(drain_seconds=2)


async def test_expiry_denies_or_fails_per_on_timeout(rt: RtBackend) -> None:
    runtime = await rt.runtime(rt.settings(run_executor=EXECUTOR))
    try:
        workflow = await make_workflow(rt)
        denied = await runtime.start_run(workflow, "ask:1:deny")
        events = await collect(runtime, denied.id)
        assert events[-1].data["status"] == "completed"
        assert (await rt.task(denied.id)).response == "expired null None None"
        assert (await the_approval(rt, denied.id)).status.value == "expired"

        failed = await runtime.start_run(workflow, "ask:1:fail")
        events = await collect(runtime, failed.id)
        assert events[-1].data["status"] == "failed"
        error = (await rt.task(failed.id)).error
        assert error is not None and "on_timeout is `fail`" in error
    finally:
        await runtime.aclose(drain_seconds=2)


async def test_halting_a_waiting_run_ends_it_on_the_spot(rt: RtBackend) -> None:
    runtime = await rt.runtime(rt.settings(run_executor=EXECUTOR))
    try:
        workflow = await make_workflow(rt)
        task = await runtime.start_run(workflow, "ask")
        await wait_status(rt, task.id, TaskStatus.AWAITING_APPROVAL)
        result = await runtime.halt(task.id, requested_by="ann")
        assert result.value == "halted"
        halted = await rt.task(task.id)
        assert halted.status is TaskStatus.HALTED
        assert halted.error == "halted while it awaited approval"
        store = runtime.store
        assert store is not None
        waiting = await the_approval(rt, task.id)
        with pytest.raises(Conflict, match="halted"):
            await approvals.ensure_run_waits(store, waiting)
        assert await runtime.resume_run(task.id, "late") is False
    finally:
        await runtime.aclose(drain_seconds=2)


async def test_a_celery_worker_killed_while_the_run_waits_loses_nothing(
    db: AsyncEngine, module_db: URL, worker_pool: WorkerPool
) -> None:
    rt = RtBackend("pg", PostgresStore(db, url=module_db, owns_engine=False), db, module_db)
    config = worker_pool.config.model_copy(update={"run_executor": EXECUTOR})
    worker_pool.config = config
    first = worker_pool.start("first")
    runtime = await Runtime.open(config, rt.db, role="api", store=rt.store)
    await runtime.start()
    try:
        workflow = await make_workflow(rt)
        task = await runtime.start_run(workflow, "ask")
        parked = await wait_status(rt, task.id, TaskStatus.AWAITING_APPROVAL)
        assert parked.worker is None
        first.kill()  # kill -9: the process that ran the run is gone
        worker_pool.start("second")
        await decide(runtime, await the_approval(rt, task.id), approve=True, by="ann")
        events = await collect(runtime, task.id, timeout=60)
        assert events[-1].data["status"] == "completed"
        done = await rt.task(task.id)
        assert done.response == "approved null ann None"
        assert done.worker is not None and f":{worker_pool.workers[1].proc.pid}:" in done.worker
    finally:
        await runtime.aclose(drain_seconds=2)


async def test_the_approval_requested_webhook_is_sent_signed(
    rt: RtBackend,
    receiver: Receiver,  # noqa: F811  (the fixture of test_webhooks.py)
) -> None:
    config = rt.settings(run_executor=EXECUTOR, webhook_allowed_hosts="127.0.0.1")
    runtime = await rt.runtime(config)
    try:
        workflow = await make_workflow(rt, webhook_url=receiver.url())
        task = await runtime.start_run(workflow, "ask")
        await wait_status(rt, task.id, TaskStatus.AWAITING_APPROVAL)
        approval = await the_approval(rt, task.id)

        async def delivered() -> None:
            while not receiver.requests:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(delivered(), 20)
        secret = await runtime.webhooks.secret(workflow)
        await decide(runtime, approval, approve=False, by="ann", reason="no")
        await collect(runtime, task.id)
    finally:
        await runtime.aclose(drain_seconds=2)
    headers, body, _path = receiver.requests[0]
    assert headers[EVENT_HEADER] == "approval_requested"
    assert verify_signature(secret, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    payload = json.loads(body)
    assert payload["event"] == "approval_requested"
    assert payload["approval_id"] == approval.id and payload["task_id"] == task.id
    assert payload["tool"] == "delete_file" and payload["arguments"] == {"path": "/etc/passwd"}
    assert payload["deny_url"] == f"/api/approvals/{approval.id}/deny"
    assert payload["decide_url"].startswith(f"/api/approvals/{approval.id}/decide?token=")
