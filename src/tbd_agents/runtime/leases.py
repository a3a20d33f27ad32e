"""Task-execution state on PostgreSQL: claim, lease heartbeat, finish and the reaper.

A run moves pending → running → completed / failed / halted / max_turns_reached, and every move is
one conditional UPDATE, so two processes can never both own a run:

- `claim` takes a pending run for one worker (status running, `worker`, `heartbeat_at`).
  A run that is not pending (already taken, halted while queued, finished) is not claimed.
- `heartbeat` renews the lease while the worker still owns the run, and reports a halt request.
- `finish` records the outcome only if the worker still owns the run.
- `reap_expired` marks failed every running run whose lease ran out (its worker died or lost the
  database). It never re-executes a run: tool calls may have had side effects already.
- `park_on` pauses a running run for approval (awaiting_approval, lease released) and
  `resume_on` makes it pending again once decided (docs/approvals.md).

Times come from the database clock (`now()`), so the workers' clocks do not matter.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tbd_agents.domain.enums import TaskStatus, WorkflowStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.runtime.contracts import RunOutcome
from tbd_agents.storage.postgres.schema import TABLES
from tbd_agents.storage.postgres.schema_runtime import run_halts

tasks = TABLES["task_executions"]
workflows = TABLES["workflows"]


def new_worker_id(role: str = "worker") -> str:
    """A worker id that names the host and process: `role@host:pid:random`."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def task_from_row(row: Any) -> TaskExecution:
    return TaskExecution.model_validate(dict(row._mapping))


async def _set_workflow_status(
    conn: AsyncConnection, workflow_id: str, status: WorkflowStatus, *, ran: bool = False
) -> None:
    """Set the workflow's status (running while a run executes, active once it ended), except
    on an `inactive` workflow: its owner switched it off, and that stays until they switch it
    back on (services/workflow_runs.py)."""
    values: dict[str, Any] = {
        "status": status.value,
        "updated_at": func.now(),
        "version": workflows.c.version + 1,  # every change of a record raises its version
    }
    if ran:
        values["last_run_at"] = func.now()
    await conn.execute(
        update(workflows)
        .where(workflows.c.id == workflow_id)
        .where(workflows.c.status != WorkflowStatus.INACTIVE.value)
        .values(**values)
    )


async def claim_on(conn: AsyncConnection, task_id: str, worker_id: str) -> TaskExecution | None:
    """Take the pending run `task_id` for `worker_id` on `conn` (the caller's transaction);
    None if it is not pending any more."""
    stmt = (
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.PENDING.value)
        .values(
            status=TaskStatus.RUNNING.value,
            worker=worker_id,
            heartbeat_at=func.now(),
            started_at=func.coalesce(tasks.c.started_at, func.now()),
            updated_at=func.now(),
            version=tasks.c.version + 1,
        )
        .returning(*tasks.c)
    )
    row = (await conn.execute(stmt)).one_or_none()
    if row is None:
        return None
    await _set_workflow_status(conn, row.workflow_id, WorkflowStatus.RUNNING, ran=True)
    return task_from_row(row)


async def claim(engine: AsyncEngine, task_id: str, worker_id: str) -> TaskExecution | None:
    """`claim_on` in a transaction of its own."""
    async with engine.begin() as conn:
        return await claim_on(conn, task_id, worker_id)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    owned: bool  # False: the lease was lost (reaped, or the run was ended elsewhere)
    halt_requested: bool


async def heartbeat(engine: AsyncEngine, task_id: str, worker_id: str) -> Heartbeat:
    """Renew the lease of a run this worker owns; say whether a halt was requested."""
    halted = exists().where(run_halts.c.task_id == task_id)
    stmt = (
        update(tasks)
        .where(
            tasks.c.id == task_id,
            tasks.c.worker == worker_id,
            tasks.c.status == TaskStatus.RUNNING.value,
        )
        .values(heartbeat_at=func.now(), version=tasks.c.version + 1)
        .returning(select(halted).scalar_subquery())
    )
    async with engine.begin() as conn:
        row = (await conn.execute(stmt)).one_or_none()
    if row is None:
        return Heartbeat(owned=False, halt_requested=False)
    return Heartbeat(owned=True, halt_requested=bool(row[0]))


async def _update_owned(
    conn: AsyncConnection, task_id: str, worker_id: str, **values: Any
) -> Any | None:
    """Apply `values` to the run, on `conn`, only while `worker_id` owns it and it is running
    (one conditional UPDATE; `updated_at` and `version` move with it); the updated row, or None
    when the worker lost the run."""
    stmt = (
        update(tasks)
        .where(
            tasks.c.id == task_id,
            tasks.c.worker == worker_id,
            tasks.c.status == TaskStatus.RUNNING.value,
        )
        .values(**values, updated_at=func.now(), version=tasks.c.version + 1)
        .returning(*tasks.c)
    )
    return (await conn.execute(stmt)).one_or_none()


async def finish_on(
    conn: AsyncConnection, task_id: str, worker_id: str, outcome: RunOutcome
) -> TaskExecution | None:
    """Record how the run ended, on `conn`, if `worker_id` still owns it; the updated run."""
    row = await _update_owned(
        conn,
        task_id,
        worker_id,
        status=outcome.status.value,
        response=outcome.result,
        error=outcome.error,
        turns=outcome.turns,
        tool_calls=outcome.tool_calls,
        usage=outcome.usage.stats(),
        finished_at=func.now(),
        caller_credential=None,  # the caller's sealed GitHub token ends with the run
    )
    if row is None:
        return None
    # The outcome stays on the task; the workflow accepts the next prompt again.
    await _set_workflow_status(conn, row.workflow_id, WorkflowStatus.ACTIVE)
    return task_from_row(row)


async def park_on(
    conn: AsyncConnection, task_id: str, worker_id: str, outcome: RunOutcome
) -> TaskExecution | None:
    """Pause the run for approval, on `conn`, if `worker_id` still owns it: status
    awaiting_approval, the lease released (no worker holds a waiting run; the reaper, which
    only looks at running runs, leaves it alone). The workflow stays `running`."""
    row = await _update_owned(
        conn,
        task_id,
        worker_id,
        status=TaskStatus.AWAITING_APPROVAL.value,
        worker=None,
        heartbeat_at=None,
        turns=outcome.turns,
        tool_calls=outcome.tool_calls,
        usage=outcome.usage.stats(),
    )
    return task_from_row(row) if row is not None else None


async def resume_on(conn: AsyncConnection, task_id: str) -> TaskExecution | None:
    """Make a run awaiting approval pending again (once, whoever asks), to be dispatched like
    a new one; its queue id is cleared so the sweep re-queues it if this dispatch is lost."""
    stmt = (
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.AWAITING_APPROVAL.value)
        .values(
            status=TaskStatus.PENDING.value,
            celery_task_id=None,
            updated_at=func.now(),
            version=tasks.c.version + 1,
        )
        .returning(*tasks.c)
    )
    row = (await conn.execute(stmt)).one_or_none()
    return task_from_row(row) if row is not None else None


async def finish(
    engine: AsyncEngine, task_id: str, worker_id: str, outcome: RunOutcome
) -> TaskExecution | None:
    """`finish_on` in a transaction of its own."""
    async with engine.begin() as conn:
        return await finish_on(conn, task_id, worker_id, outcome)


async def reap_expired_on(conn: AsyncConnection, lease_seconds: float) -> list[TaskExecution]:
    """Mark failed every running run whose last heartbeat is older than `lease_seconds`.

    Safe to call from any number of processes at once: rows are locked with SKIP LOCKED and the
    UPDATE re-checks the status, so each run is reaped once. Returns the reaped runs."""
    expired = (
        select(tasks.c.id)
        .where(tasks.c.status == TaskStatus.RUNNING.value)
        .where(
            func.coalesce(tasks.c.heartbeat_at, tasks.c.started_at, tasks.c.updated_at)
            < func.now() - timedelta(seconds=lease_seconds)
        )
        .with_for_update(skip_locked=True)
        .cte("expired")
    )
    message = text(
        "'the worker ' || coalesce(task_executions.worker, '?') || ' stopped renewing its "
        "lease (it died or lost the database); the run was marked failed and not retried, "
        "because its tool calls may already have had effects. Start it again if that is safe.'"
    )
    stmt = (
        update(tasks)
        .where(tasks.c.id.in_(select(expired.c.id)))
        .where(tasks.c.status == TaskStatus.RUNNING.value)
        .values(
            status=TaskStatus.FAILED.value,
            error=message,
            finished_at=func.now(),
            updated_at=func.now(),
            caller_credential=None,
            version=tasks.c.version + 1,
        )
        .returning(*tasks.c)
    )
    rows = (await conn.execute(stmt)).all()
    for row in rows:
        await _set_workflow_status(conn, row.workflow_id, WorkflowStatus.ACTIVE)
    return [task_from_row(r) for r in rows]


async def reap_expired(engine: AsyncEngine, lease_seconds: float) -> list[TaskExecution]:
    """`reap_expired_on` in a transaction of its own."""
    async with engine.begin() as conn:
        return await reap_expired_on(conn, lease_seconds)


async def load(engine: AsyncEngine, task_id: str) -> TaskExecution | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).one_or_none()
    return task_from_row(row) if row is not None else None


def _undispatched(older_than_seconds: float) -> Any:
    """Pending runs created more than `older_than_seconds` ago that no backend took. A run
    that resumed after an approval (it has started before) counts from its resumption."""
    cutoff = func.now() - timedelta(seconds=older_than_seconds)
    return (
        select(tasks)
        .where(tasks.c.status == TaskStatus.PENDING.value)
        .where(tasks.c.celery_task_id.is_(None))
        .where(
            or_(
                and_(tasks.c.started_at.is_(None), tasks.c.created_at < cutoff),
                and_(tasks.c.started_at.is_not(None), tasks.c.updated_at < cutoff),
            )
        )
        .order_by(tasks.c.created_at)
    )


async def orphaned_pending(
    engine: AsyncEngine, older_than_seconds: float, limit: int = 100
) -> list[str]:
    """Runs that no backend took: pending, created more than `older_than_seconds` ago and never
    queued (`celery_task_id` is set once Celery took a run). Whatever started them: the API
    (Redis was down when it dispatched), a schedule, or a process that stopped before its
    in-process run was claimed. Dispatching them again is safe: only one process can claim a
    run, a second message for it is skipped."""
    stmt = _undispatched(older_than_seconds).with_only_columns(tasks.c.id).limit(limit)
    async with engine.connect() as conn:
        return list((await conn.execute(stmt)).scalars())


def undispatched_error(task: TaskExecution, reason: str) -> str:
    """The error of a run failed because it could not be queued in time."""
    since = task.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"could not be queued since {since}, when the run was accepted: {reason}"


async def fail_undispatched_on(
    conn: AsyncConnection, older_than_seconds: float, reason: str, limit: int = 100
) -> list[TaskExecution]:
    """Mark failed, with `undispatched_error(task, reason)`, the runs no backend took within
    `older_than_seconds` of their creation. Rows are locked (SKIP LOCKED) and the UPDATE
    re-checks the status, so a run claimed meanwhile is left alone and each run fails once."""
    rows = (
        await conn.execute(
            _undispatched(older_than_seconds).limit(limit).with_for_update(skip_locked=True)
        )
    ).all()
    failed: list[TaskExecution] = []
    for row in rows:
        task = task_from_row(row)
        stmt = (
            update(tasks)
            .where(tasks.c.id == task.id, tasks.c.status == TaskStatus.PENDING.value)
            .values(
                status=TaskStatus.FAILED.value,
                error=undispatched_error(task, reason),
                finished_at=func.now(),
                updated_at=func.now(),
                caller_credential=None,
            )
            .returning(*tasks.c)
        )
        ended = (await conn.execute(stmt)).one_or_none()
        if ended is not None:
            failed.append(task_from_row(ended))
    return failed
