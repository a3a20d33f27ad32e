"""Run events: stored append-only, then published, then followed without gaps.

- `EventStore` appends to the PostgreSQL table `run_events` (numbering each run's events 1, 2,
  3 … in `seq`), reads a run's events after a given `seq`, and purges the events of runs that
  ended before a cut-off. The MongoDB profile has the same log in `runtime/mongo_store.py`;
  everything else here works on either (`runtime.store.EventLog`).
- `PersistingEventSink` is the `EventSink` handed to the engine: every event is committed to the
  store first and only then published on the bus.
- `follow()` is what an SSE endpoint iterates: it subscribes to the bus first, then replays the
  stored events after `Last-Event-ID`, then follows live, dropping any event it already sent
  (by `seq`) and filling any hole from the store. It ends after the run's final status event.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.errors import NotFound, StorageError
from tbd_agents.runtime.bus import BusUnavailable, EventBus, events_channel
from tbd_agents.runtime.contracts import EventType, RunOutcome
from tbd_agents.storage.postgres.errors import sqlstate_of
from tbd_agents.storage.postgres.schema import TABLES
from tbd_agents.storage.postgres.schema_runtime import run_events

if TYPE_CHECKING:
    from tbd_agents.runtime.store import EventLog

_log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.HALTED, TaskStatus.MAX_TURNS_REACHED}
)
_TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATUSES)
_tasks = TABLES["task_executions"]
_APPEND_RETRIES = 200


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One stored event of one run. `seq` is its SSE id."""

    task_id: str
    seq: int
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """True for the status event that ends a run (completed, failed, halted, max turns)."""
        return self.type == EventType.STATUS.value and self.data.get("status") in _TERMINAL_VALUES

    def to_message(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "seq": self.seq,
            "type": self.type,
            "data": self.data,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> RunEvent:
        created = message.get("created_at")
        return cls(
            task_id=str(message["task_id"]),
            seq=int(message["seq"]),
            type=str(message["type"]),
            data=dict(message.get("data") or {}),
            created_at=datetime.fromisoformat(created) if created else None,
        )


def _retry_or_raise(exc: IntegrityError, task_id: str) -> None:
    """Return (retry) when another writer took the `seq`; raise anything else."""
    state = sqlstate_of(exc)
    if state == "23505":
        return
    if state == "23503":
        raise NotFound("task execution", task_id) from None
    raise exc


async def _back_off(attempt: int) -> None:
    """A short random pause before the next try, growing with the tries: writers that lost the
    same race spread out instead of all colliding again at once (on a busy machine, immediate
    retries of many writers can lose every round)."""
    await asyncio.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))  # noqa: S311


def _too_many_writers(task_id: str) -> StorageError:
    return StorageError(f"could not append an event to run {task_id}: too many concurrent writers")


class EventStore:
    """The `run_events` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @staticmethod
    def _insert(task_id: str, event_type: str, data: Mapping[str, Any]) -> Any:
        next_seq = (
            select(func.coalesce(func.max(run_events.c.seq), 0) + 1)
            .where(run_events.c.task_id == task_id)
            .scalar_subquery()
        )
        return (
            insert(run_events)
            .from_select(
                ["task_id", "seq", "type", "data"],
                select(
                    literal(task_id),
                    next_seq,
                    literal(event_type),
                    literal(dict(data), run_events.c.data.type),
                ),
            )
            .returning(run_events.c.seq, run_events.c.created_at)
        )

    async def append(self, task_id: str, event_type: str, data: Mapping[str, Any]) -> RunEvent:
        """Store one event as the run's next `seq` and commit it.

        Two writers racing on the same run (a worker and a halt request) cannot take the same
        number: the primary key refuses the second, which retries with the next one."""
        stmt = self._insert(task_id, event_type, data)
        for attempt in range(_APPEND_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    row = (await conn.execute(stmt)).one()
            except IntegrityError as exc:
                _retry_or_raise(exc, task_id)
                await _back_off(attempt)
                continue
            return RunEvent(task_id, row.seq, event_type, dict(data), row.created_at)
        raise _too_many_writers(task_id)

    async def append_on(
        self, conn: AsyncConnection, task_id: str, event_type: str, data: Mapping[str, Any]
    ) -> RunEvent:
        """Store one event on `conn`, inside the caller's transaction (committed with it), so
        the event and the state change it reports are one atomic write. Each try runs in a
        savepoint: a `seq` taken by another writer is retried with the next one."""
        stmt = self._insert(task_id, event_type, data)
        for attempt in range(_APPEND_RETRIES):
            try:
                async with conn.begin_nested():
                    row = (await conn.execute(stmt)).one()
            except IntegrityError as exc:
                _retry_or_raise(exc, task_id)
                await _back_off(attempt)
                continue
            return RunEvent(task_id, row.seq, event_type, dict(data), row.created_at)
        raise _too_many_writers(task_id)

    async def read(self, task_id: str, after_seq: int = 0, limit: int = 1000) -> list[RunEvent]:
        """The run's events with `seq` > `after_seq`, in order, at most `limit`."""
        stmt = (
            select(run_events)
            .where(and_(run_events.c.task_id == task_id, run_events.c.seq > after_seq))
            .order_by(run_events.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [RunEvent(r.task_id, r.seq, r.type, dict(r.data), r.created_at) for r in rows]

    async def task_status(self, task_id: str) -> TaskStatus:
        """The run's current status; NotFound when there is no such task execution."""
        async with self.engine.connect() as conn:
            status = (
                await conn.execute(select(_tasks.c.status).where(_tasks.c.id == task_id))
            ).scalar_one_or_none()
        if status is None:
            raise NotFound("task execution", task_id)
        return TaskStatus(status)

    async def purge(self, finished_before: datetime) -> int:
        """Delete the events of runs that ended before `finished_before`; return how many."""
        ended = (
            select(_tasks.c.id)
            .where(_tasks.c.status.in_(_TERMINAL_VALUES))
            .where(func.coalesce(_tasks.c.finished_at, _tasks.c.updated_at) < finished_before)
        )
        stmt = delete(run_events).where(run_events.c.task_id.in_(ended))
        async with self.engine.begin() as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount or 0)


def running_status_data(worker_id: str) -> dict[str, object]:
    """The data of the `status` event that says a worker started the run."""
    return {"status": TaskStatus.RUNNING.value, "worker": worker_id}


def final_status_data(task: TaskExecution) -> dict[str, object]:
    """The data of a run's last event (a `status` event with a final status)."""
    return {
        "status": task.status.value,
        "result": task.response,
        "error": task.error,
        "turns": task.turns,
        "tool_calls": task.tool_calls,
        "usage": task.usage,
    }


def paused_status_data(task: TaskExecution, outcome: RunOutcome) -> dict[str, object]:
    """The data of the `status` event of a run that paused for approval (not final)."""
    return {
        "status": task.status.value,
        "message": outcome.error,
        "approval_ids": [a.get("approval_id") for a in outcome.approvals],
        "turns": task.turns,
        "tool_calls": task.tool_calls,
    }


def resumed_status_data(reason: str) -> dict[str, object]:
    """The data of the `status` event of a paused run handed back to the run queue."""
    return {"status": TaskStatus.PENDING.value, "resumed": True, "reason": reason}


class PersistingEventSink:
    """The `EventSink` of one run: commit the event, then publish it.

    A publish that fails (the bus is down: `BusUnavailable`) is logged and not retried, and
    the run goes on: the event is already stored, and followers that miss a notification read
    it from the store on their next poll."""

    def __init__(self, store: EventLog, bus: EventBus, task_id: str) -> None:
        self.store = store
        self.bus = bus
        self.task_id = task_id
        self.last_seq = 0
        self._unpublished = 0
        #: How many `error` events this run stored (a run reports its failure once).
        self.errors = 0

    async def emit(self, event_type: EventType | str, data: Mapping[str, Any]) -> None:
        await self.emit_event(event_type, data)

    async def emit_event(self, event_type: EventType | str, data: Mapping[str, Any]) -> RunEvent:
        """Like `emit`, returning the stored event."""
        kind = event_type.value if isinstance(event_type, EventType) else str(event_type)
        event = await self.store.append(self.task_id, kind, data)
        if kind == EventType.ERROR.value:
            self.errors += 1
        await self.publish(event)
        return event

    async def publish(self, event: RunEvent) -> None:
        """Announce an event that is already stored and committed."""
        self.last_seq = max(self.last_seq, event.seq)
        try:
            await self.bus.publish(events_channel(self.task_id), event.to_message())
        except BusUnavailable as exc:
            # Once per run and outage at warning level (the bus logs the outage itself).
            level = logging.DEBUG if self._unpublished else logging.WARNING
            self._unpublished += 1
            _log.log(
                level,
                "run %s: event %d is stored but was not sent live (%s); followers read it "
                "from the database",
                self.task_id,
                event.seq,
                exc.message,
            )
        else:
            self._unpublished = 0


async def follow(
    store: EventLog,
    bus: EventBus,
    task_id: str,
    after_seq: int = 0,
    *,
    poll_seconds: float = 2.0,
) -> AsyncIterator[RunEvent]:
    """Every event of the run after `after_seq`, in order, each once, until the run has ended.

    Raises NotFound for an unknown run. Stored events come first (replay), then live ones; when
    the bus is quiet for `poll_seconds` the store is read again, so a lost notification delays
    an event by at most that long and never drops it."""
    last = after_seq
    async with bus.subscribe(events_channel(task_id)) as subscription:
        await store.task_status(task_id)  # NotFound before anything is sent
        while True:
            batch = await store.read(task_id, last)
            for event in batch:
                yield event
                last = event.seq
                if event.is_terminal:
                    return
            if not batch:
                break
        while True:
            message = await subscription.get(poll_seconds)
            if message is not None:
                seq = int(message.get("seq", 0))
                if seq <= last:
                    continue  # already sent (replayed before it was published)
                if seq == last + 1:
                    event = RunEvent.from_message(message)
                    yield event
                    last = event.seq
                    if event.is_terminal:
                        return
                    continue
            # Quiet bus, or a hole before this message: the store has every committed event.
            caught_up = await store.read(task_id, last)
            for event in caught_up:
                yield event
                last = event.seq
                if event.is_terminal:
                    return
            if (
                message is None
                and not caught_up
                and await store.task_status(task_id) in TERMINAL_STATUSES
            ):
                # Ended without a final status event (e.g. its events were purged).
                for event in await store.read(task_id, last):
                    yield event
                return
