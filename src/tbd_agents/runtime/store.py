"""The run-time's persistence seam: what runs, events, halts, schedules and webhooks need from a
database, and the two implementations behind it.

- `SqlRunStore` (`runtime/sql_store.py`): PostgreSQL. Every state change is one transaction with
  the event that reports it (and the webhook it queues); rows are locked with `FOR UPDATE SKIP
  LOCKED` where several processes compete.
- `MongoRunStore` (`runtime/mongo_store.py`): MongoDB, on the same database as the `MongoStore`,
  without multi-document transactions. Every guarantee rests on single-document atomic writes and
  unique indexes; a state change and the events it owes are tied together by an outbox kept in
  the task execution document itself (see that module).

Everything above this seam — the runner, `follow`, the scheduler's policies, webhook signing and
sending, the HTTP endpoints — is the same code for both.

`as_run_store(x)` turns what a caller has (a SQLAlchemy `AsyncEngine`, a document store, or a
run store) into the run store for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tbd_agents.domain.enums import TaskStatus, TaskTrigger
from tbd_agents.domain.models import ScheduledAgent, TaskExecution
from tbd_agents.errors import ConfigurationError
from tbd_agents.runtime.contracts import RunOutcome

if TYPE_CHECKING:
    from tbd_agents.runtime.events import RunEvent
    from tbd_agents.runtime.leases import Heartbeat
    from tbd_agents.runtime.scheduler import OccurrenceRecord, Outcome
    from tbd_agents.runtime.webhooks import Delivery


class EventLog(Protocol):
    """The append-only event log of runs (`run_events`)."""

    async def append(self, task_id: str, event_type: str, data: Mapping[str, Any]) -> RunEvent:
        """Store one event as the run's next `seq` (1, 2, 3 … without gaps); NotFound for an
        unknown run."""
        ...

    async def read(self, task_id: str, after_seq: int = 0, limit: int = 1000) -> list[RunEvent]:
        """The run's events with `seq` > `after_seq`, in order, at most `limit`."""
        ...

    async def task_status(self, task_id: str) -> TaskStatus:
        """The run's current status; NotFound when there is no such task execution."""
        ...

    async def purge(self, finished_before: datetime) -> int:
        """Delete the events of runs that ended before `finished_before`; return how many."""
        ...


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A webhook delivery claimed for one attempt (`attempts` already counts it)."""

    id: str
    task_id: str
    workflow_id: str
    event: str
    url: str
    payload: dict[str, Any]
    attempts: int


class WebhookStore(Protocol):
    """Per-workflow secrets, the delivery outbox and the attempt log."""

    async def stored_secret(self, workflow_id: str) -> str | None:
        """The workflow's encrypted secret, or None."""
        ...

    async def workflow_exists(self, workflow_id: str) -> bool: ...

    async def save_secret(self, workflow_id: str, encrypted: str, *, replace: bool) -> None:
        """Store the secret: replace the current one, or keep a concurrently stored one."""
        ...

    async def enqueue(self, task: TaskExecution) -> str | None:
        """Queue the webhook of a finished run if its workflow has one (once per run and event);
        the delivery id, None when nothing was queued."""
        ...

    async def enqueue_event(
        self, task: TaskExecution, event: str, key: str, payload: dict[str, Any]
    ) -> str | None:
        """Queue a webhook about `task` that is not its end (`approval_requested`) to the
        workflow's `webhook_url`, once per (`event`, `key`); the delivery id or None."""
        ...

    async def claim_due(self, limit: int, hold: timedelta) -> list[DueDelivery]:
        """Take up to `limit` due deliveries for one attempt each, holding them for `hold`."""
        ...

    async def record_attempt(
        self,
        delivery: DueDelivery,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        *,
        exhausted: bool,
        retry_after: timedelta | None,
    ) -> None:
        """Log the attempt and move the delivery on: delivered (no error), failed (`exhausted`),
        or due again after `retry_after`."""
        ...

    async def list_deliveries(
        self, *, workflow_id: str | None, task_id: str | None, limit: int
    ) -> list[Delivery]: ...

    async def prune_deliveries(
        self, created_before: datetime, limit: int, *, dry_run: bool = False
    ) -> int:
        """Delete up to `limit` of the oldest deliveries created before `created_before` that
        are over (delivered or failed), with their attempts; how many. `dry_run`: count all
        of them, delete nothing. Pending ones are never deleted."""
        ...


class ScheduleSession(Protocol):
    """One scheduler tick's view of the schedules (a transaction on PostgreSQL)."""

    async def fresh(self, now: datetime, limit: int) -> list[ScheduledAgent]:
        """Enabled schedules without `next_run_at` that have not ended by `now`."""
        ...

    async def edited(self, now: datetime, window: timedelta, limit: int) -> list[ScheduledAgent]:
        """Enabled schedules with `next_run_at` after `now`, changed within `window`."""
        ...

    async def due(self, now: datetime, limit: int) -> list[ScheduledAgent]:
        """Enabled schedules with `next_run_at` at or before `now` whose workflow exists,
        earliest first."""
        ...

    async def orphaned(self, now: datetime, limit: int) -> list[ScheduledAgent]:
        """The same, for schedules whose workflow does not exist (deleted: the existing system
        kept a workflow's schedules)."""
        ...

    async def move(self, schedule: ScheduledAgent, next_run_at: datetime | None) -> None:
        """Set `next_run_at` (first occurrence, or recomputed after an edit)."""
        ...

    async def advance(
        self,
        schedule: ScheduledAgent,
        next_run_at: datetime | None,
        last_run_at: datetime | None,
    ) -> None:
        """Move the schedule past what was just processed (and record its last run if any)."""
        ...

    async def has_active_run(self, schedule_id: str) -> bool:
        """True while a run of the schedule is pending or running."""
        ...

    async def claim(
        self,
        schedule: ScheduledAgent,
        occurrence_at: datetime,
        outcome: Outcome,
        missed: int,
        claimed_by: str,
    ) -> tuple[bool, str | None]:
        """Claim the occurrence (at most once, whoever asks) and, for a fired one, create its
        pending run. (claimed, the run's id or None)."""
        ...


@dataclass(frozen=True, slots=True)
class Transition:
    """A run's state change and the events it produced (stored; to be published)."""

    task: TaskExecution
    events: list[RunEvent] = field(default_factory=list)


@runtime_checkable
class RunStore(Protocol):
    """Everything the run-time stores."""

    @property
    def backend(self) -> str:
        """ "postgres" or "mongo"."""
        ...

    @property
    def events(self) -> EventLog: ...

    @property
    def webhooks(self) -> WebhookStore: ...

    async def create_run(
        self,
        workflow_id: str,
        prompt: str,
        *,
        trigger: TaskTrigger = TaskTrigger.API,
        scheduled_agent_id: str | None = None,
        reasoning_effort: str | None = None,
    ) -> TaskExecution:
        """Store a pending run of the workflow (with the prompt's `reasoning_effort`, if one
        was given); InvalidData if the workflow does not exist."""
        ...

    async def load(self, task_id: str) -> TaskExecution | None: ...

    async def set_backend_id(self, task_id: str, backend_id: str) -> None:
        """Record the id the backend (Celery) gave the run."""
        ...

    async def claim(self, task_id: str, worker_id: str) -> Transition | None:
        """Take a pending run for `worker_id` (status running, lease started) with its `running`
        status event; None if it is not pending any more."""
        ...

    async def heartbeat(self, task_id: str, worker_id: str) -> Heartbeat:
        """Renew the lease of a run this worker owns; say whether a halt was requested."""
        ...

    async def finish(self, task_id: str, worker_id: str, outcome: RunOutcome) -> Transition | None:
        """Record the outcome if `worker_id` still owns the run, with the final status event and
        the queued webhook; None if the lease was lost."""
        ...

    async def park(self, task_id: str, worker_id: str, outcome: RunOutcome) -> Transition | None:
        """Pause the run for approval if `worker_id` still owns it (status awaiting_approval,
        lease released), with its `status` event; None if the lease was lost."""
        ...

    async def resume(self, task_id: str, reason: str) -> Transition | None:
        """Make a run awaiting approval pending again (once, whoever asks), with its `status`
        event; None when it is not awaiting approval (resumed already, halted)."""
        ...

    async def reap_expired(self, lease_seconds: float) -> list[Transition]:
        """Fail every running run whose lease expired (once each, whoever reaps), with an error
        event, the final status event and the failure webhook."""
        ...

    async def complete_followups(self, stale_seconds: float) -> list[RunEvent]:
        """Finish the follow-up writes (events, webhook) of state changes whose writer died
        before it completed them; the events stored. Nothing to do where a transaction covers
        them (PostgreSQL)."""
        ...

    async def orphaned_pending(self, older_than_seconds: float, limit: int = 100) -> list[str]:
        """Runs still pending `older_than_seconds` after their creation that no backend took
        (no `celery_task_id`), oldest first: to be dispatched again."""
        ...

    async def fail_undispatched(
        self, older_than_seconds: float, reason: str, limit: int = 100
    ) -> list[Transition]:
        """Fail the runs that no backend took within `older_than_seconds` of their creation
        (once each, whoever asks; a run claimed meanwhile is left alone), with an error naming
        `reason` and the time the run was accepted, an error event, the final status event and
        the failure webhook."""
        ...

    async def halt(self, task_id: str, requested_by: str | None) -> RunEvent | None:
        """Record a halt request. A queued run is halted on the spot: its final event is
        returned. None for a running run (its worker reads the flag). NotFound for an unknown
        run, Conflict for a finished one."""
        ...

    def scheduling(self) -> AbstractAsyncContextManager[ScheduleSession]:
        """One scheduler tick's session."""
        ...

    async def schedule_history(
        self, schedule_id: str, *, limit: int = 50, before: datetime | None = None
    ) -> list[OccurrenceRecord]:
        """The schedule's claimed occurrences, newest first, with the status of each run."""
        ...


def as_run_store(source: Any) -> RunStore:
    """The run store for `source`: a run store as it is, a SQLAlchemy `AsyncEngine`, or a
    document store (PostgreSQL: its engine; MongoDB: its database)."""
    if isinstance(source, RunStore):
        return source
    from sqlalchemy.ext.asyncio import AsyncEngine

    if isinstance(source, AsyncEngine):
        from tbd_agents.runtime.sql_store import SqlRunStore

        return SqlRunStore(source)
    backend = getattr(source, "backend", None)
    if backend == "postgres" and isinstance(getattr(source, "engine", None), AsyncEngine):
        from tbd_agents.runtime.sql_store import SqlRunStore

        return SqlRunStore(source.engine)
    if backend == "mongo" and getattr(source, "database", None) is not None:
        from tbd_agents.runtime.mongo_store import MongoRunStore

        return MongoRunStore(source.database)
    raise ConfigurationError(
        f"runs, schedules and webhooks cannot be stored in {type(source).__name__}: open the "
        "runtime on the document store (DB_BACKEND=postgres or DB_BACKEND=mongo) or on a "
        "PostgreSQL engine"
    )


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """`items` in slices of at most `size`."""
    return [items[i : i + size] for i in range(0, len(items), size)]
