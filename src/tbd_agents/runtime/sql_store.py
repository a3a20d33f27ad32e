"""`RunStore` on PostgreSQL: the SQL of `events`, `leases`, `halt`, `scheduler` and `webhooks`,
each state change in one transaction with the events it reports and the webhook it queues."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.domain.enums import TaskTrigger
from tbd_agents.domain.models import TaskExecution
from tbd_agents.runtime import leases
from tbd_agents.runtime.contracts import EventType, RunOutcome
from tbd_agents.runtime.events import (
    EventStore,
    RunEvent,
    final_status_data,
    paused_status_data,
    resumed_status_data,
    running_status_data,
)
from tbd_agents.runtime.halt import halt_on_sql
from tbd_agents.runtime.scheduler import (
    OccurrenceRecord,
    SqlScheduleSession,
    create_pending_run,
    schedule_history,
)
from tbd_agents.runtime.store import Transition
from tbd_agents.runtime.webhooks import SqlWebhookStore


class SqlRunStore:
    """The run-time's tables (`storage/postgres/schema_runtime.py`) and `task_executions`."""

    backend = "postgres"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.events = EventStore(engine)
        self.webhooks = SqlWebhookStore(engine)

    # --- runs -------------------------------------------------------------------------------
    async def create_run(
        self,
        workflow_id: str,
        prompt: str,
        *,
        trigger: TaskTrigger = TaskTrigger.API,
        scheduled_agent_id: str | None = None,
        reasoning_effort: str | None = None,
    ) -> TaskExecution:
        async with self.engine.begin() as conn:
            return await create_pending_run(
                conn,
                workflow_id,
                prompt,
                trigger=trigger,
                scheduled_agent_id=scheduled_agent_id,
                reasoning_effort=reasoning_effort,
            )

    async def load(self, task_id: str) -> TaskExecution | None:
        return await leases.load(self.engine, task_id)

    async def set_backend_id(self, task_id: str, backend_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(leases.tasks)
                .where(leases.tasks.c.id == task_id)
                .values(celery_task_id=backend_id, version=leases.tasks.c.version + 1)
            )

    async def claim(self, task_id: str, worker_id: str) -> Transition | None:
        running = running_status_data(worker_id)
        async with self.engine.begin() as conn:
            task = await leases.claim_on(conn, task_id, worker_id)
            if task is None:
                return None
            started = await self.events.append_on(conn, task_id, EventType.STATUS.value, running)
        return Transition(task, [started])

    async def heartbeat(self, task_id: str, worker_id: str) -> leases.Heartbeat:
        return await leases.heartbeat(self.engine, task_id, worker_id)

    async def finish(self, task_id: str, worker_id: str, outcome: RunOutcome) -> Transition | None:
        async with self.engine.begin() as conn:
            finished = await leases.finish_on(conn, task_id, worker_id, outcome)
            if finished is None:
                return None
            final = await self.events.append_on(
                conn, task_id, EventType.STATUS.value, final_status_data(finished)
            )
            await SqlWebhookStore.enqueue_on(conn, finished)
        return Transition(finished, [final])

    async def park(self, task_id: str, worker_id: str, outcome: RunOutcome) -> Transition | None:
        async with self.engine.begin() as conn:
            parked = await leases.park_on(conn, task_id, worker_id, outcome)
            if parked is None:
                return None
            event = await self.events.append_on(
                conn, task_id, EventType.STATUS.value, paused_status_data(parked, outcome)
            )
        return Transition(parked, [event])

    async def resume(self, task_id: str, reason: str) -> Transition | None:
        async with self.engine.begin() as conn:
            resumed = await leases.resume_on(conn, task_id)
            if resumed is None:
                return None
            event = await self.events.append_on(
                conn, task_id, EventType.STATUS.value, resumed_status_data(reason)
            )
        return Transition(resumed, [event])

    async def reap_expired(self, lease_seconds: float) -> list[Transition]:
        done: list[Transition] = []
        async with self.engine.begin() as conn:
            for task in await leases.reap_expired_on(conn, lease_seconds):
                error = {"message": task.error or "worker lost"}
                events = [
                    await self.events.append_on(conn, task.id, EventType.ERROR.value, error),
                    await self.events.append_on(
                        conn, task.id, EventType.STATUS.value, final_status_data(task)
                    ),
                ]
                if task.heartbeat_at is not None:
                    # No webhook for a run this hub never ran (no lease was ever taken: e.g. a
                    # run left `running` by an existing deployment before its migration).
                    await SqlWebhookStore.enqueue_on(conn, task)
                done.append(Transition(task, events))
        return done

    async def complete_followups(self, stale_seconds: float) -> list[RunEvent]:
        return []  # every follow-up is written in the transaction of its state change

    async def orphaned_pending(self, older_than_seconds: float, limit: int = 100) -> list[str]:
        return await leases.orphaned_pending(self.engine, older_than_seconds, limit)

    async def fail_undispatched(
        self, older_than_seconds: float, reason: str, limit: int = 100
    ) -> list[Transition]:
        done: list[Transition] = []
        async with self.engine.begin() as conn:
            for task in await leases.fail_undispatched_on(conn, older_than_seconds, reason, limit):
                error = {"message": task.error}
                events = [
                    await self.events.append_on(conn, task.id, EventType.ERROR.value, error),
                    await self.events.append_on(
                        conn, task.id, EventType.STATUS.value, final_status_data(task)
                    ),
                ]
                await SqlWebhookStore.enqueue_on(conn, task)
                done.append(Transition(task, events))
        return done

    async def halt(self, task_id: str, requested_by: str | None) -> RunEvent | None:
        return await halt_on_sql(self.engine, self.events, task_id, requested_by)

    # --- schedules --------------------------------------------------------------------------
    @asynccontextmanager
    async def scheduling(self) -> AsyncIterator[SqlScheduleSession]:
        async with self.engine.begin() as conn:
            yield SqlScheduleSession(conn)

    async def schedule_history(
        self, schedule_id: str, *, limit: int = 50, before: datetime | None = None
    ) -> list[OccurrenceRecord]:
        return await schedule_history(self.engine, schedule_id, limit=limit, before=before)
