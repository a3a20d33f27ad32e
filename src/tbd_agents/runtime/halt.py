"""Halting a run, from any process.

A halt request is written to the database first (`run_halts`, the flag a worker's heartbeat
reads; `RunStore.halt` on either backend) and then announced on the bus (`…:halt` channel,
which a worker listens to), so the running engine hears it at once over Redis and at the latest
on its next heartbeat without it.
A run that is still queued is halted on the spot: no worker will start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.domain.enums import TaskStatus, WorkflowStatus
from tbd_agents.errors import Conflict, NotFound
from tbd_agents.runtime.bus import BusUnavailable, EventBus, halt_channel
from tbd_agents.runtime.contracts import EventType
from tbd_agents.runtime.events import (
    TERMINAL_STATUSES,
    EventStore,
    PersistingEventSink,
    RunEvent,
)
from tbd_agents.runtime.leases import tasks, workflows
from tbd_agents.storage.postgres.schema_runtime import run_halts

if TYPE_CHECKING:
    from tbd_agents.runtime.store import RunStore

_log = logging.getLogger(__name__)

HALTED_BEFORE_START = "halted before it started"
#: The final event of a run halted while it was queued.
HALTED_BEFORE_START_EVENT = {"status": TaskStatus.HALTED.value, "reason": HALTED_BEFORE_START}
HALTED_AWAITING_APPROVAL = "halted while it awaited approval"


def halted_on_the_spot(status: TaskStatus) -> tuple[str, dict[str, str]]:
    """The error and final event data of a run halted where no worker executes it."""
    reason = (
        HALTED_AWAITING_APPROVAL if status is TaskStatus.AWAITING_APPROVAL else HALTED_BEFORE_START
    )
    return reason, {"status": TaskStatus.HALTED.value, "reason": reason}


class RunHaltSignal:
    """The `HaltSignal` of one run in one process (an asyncio.Event plus the reason)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason = ""

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()


#: Runs no worker executes: a halt ends them on the spot (queued, or waiting for approval).
_NOT_EXECUTING = frozenset({TaskStatus.PENDING, TaskStatus.AWAITING_APPROVAL})


class HaltResult(StrEnum):
    HALTED = "halted"  # the run was queued: it is halted and will not start
    HALTING = "halting"  # the run is executing: its worker was told to stop


async def halt_on_sql(
    engine: AsyncEngine, events: EventStore, task_id: str, requested_by: str | None
) -> RunEvent | None:
    """The PostgreSQL side of a halt request, in one transaction on the locked task row: the
    halt flag, and for a queued run its halted state and final event (returned)."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                select(tasks.c.status, tasks.c.workflow_id)
                .where(tasks.c.id == task_id)
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            raise NotFound("task execution", task_id)
        status = TaskStatus(row.status)
        if status in TERMINAL_STATUSES:
            raise ended(task_id, status)
        await conn.execute(
            insert(run_halts)
            .values(task_id=task_id, requested_by=requested_by)
            .on_conflict_do_nothing()
        )
        if status not in _NOT_EXECUTING:
            return None
        await conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(
                status=TaskStatus.HALTED.value,
                error=halted_on_the_spot(status)[0],
                finished_at=func.now(),
                updated_at=func.now(),
                caller_credential=None,  # the caller's sealed GitHub token is not needed
                version=tasks.c.version + 1,
            )
        )
        await conn.execute(
            update(workflows)
            .where(workflows.c.id == row.workflow_id)
            .where(workflows.c.status != WorkflowStatus.INACTIVE.value)
            .values(
                status=WorkflowStatus.ACTIVE.value,
                updated_at=func.now(),
                version=workflows.c.version + 1,
            )
        )
        return await events.append_on(
            conn, task_id, EventType.STATUS.value, halted_on_the_spot(status)[1]
        )


def ended(task_id: str, status: TaskStatus) -> Conflict:
    """The error for halting a run that has already ended."""
    return Conflict(
        f"task execution {task_id!r} has already ended ({status.value}); nothing to halt"
    )


async def request_halt(
    runs: RunStore,
    bus: EventBus,
    task_id: str,
    requested_by: str | None = None,
) -> HaltResult:
    """Ask run `task_id` to stop. NotFound for an unknown run, Conflict for a finished one."""
    final = await runs.halt(task_id, requested_by)
    if final is not None:
        await PersistingEventSink(runs.events, bus, task_id).publish(final)
        return HaltResult.HALTED
    try:
        await bus.publish(halt_channel(task_id), {"task_id": task_id, "by": requested_by})
    except BusUnavailable as exc:
        _log.warning(
            "halt of %s stored but not announced (%s); the worker's heartbeat reads it",
            task_id,
            exc.message,
        )
    return HaltResult.HALTING


@asynccontextmanager
async def listening_for_halt(
    bus: EventBus, task_id: str, signal: RunHaltSignal
) -> AsyncIterator[None]:
    """Set `signal` when a halt of `task_id` is announced on the bus, while the block runs."""
    async with bus.subscribe(halt_channel(task_id)) as subscription:

        async def listen() -> None:
            try:
                while not signal.is_set():
                    if await subscription.get(3600.0) is not None:
                        signal.set("halt requested")
            except Exception:  # the run must not fail because its halt listener did
                _log.exception(
                    "run %s: listening for halt notices failed; a halt still reaches the run "
                    "at its next heartbeat",
                    task_id,
                )

        listener = asyncio.create_task(listen(), name=f"halt-listener-{task_id}")
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
