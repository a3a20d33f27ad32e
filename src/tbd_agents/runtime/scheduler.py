"""Scheduled agents: when each occurrence is due, and firing each one exactly once.

A schedule (`scheduled_agents`) repeats every `interval_value` minutes / hours / days counted
from `start_at` (or its creation), or follows `cron_expression` read in `timezone`. Nothing fires
before `start_at` or after `end_at`, nor while `enabled` is false.

`Scheduler.tick(now)` reads the due schedules, claims each occurrence by inserting its
(scheduled_agent_id, occurrence_at) key into `schedule_occurrences` (a unique key: a second
claim is refused), creates the pending run and moves `next_run_at` on, then dispatches the runs.
On PostgreSQL (`SqlScheduleSession`) the tick is one transaction and the schedules it reads are
locked with `SELECT … FOR UPDATE SKIP LOCKED` (another scheduler skips them instead of waiting);
on MongoDB (`runtime/mongo_schedules.py`) the occurrence key alone decides, and `next_run_at` moves
by compare-and-set. Any number of scheduler processes can tick at once: each occurrence is
claimed by exactly one.

Policies, per schedule:
- overlap (`overlap_policy`): `skip` records the occurrence as `skipped_overlap` while an earlier
  run of the schedule is still pending or running; `allow` starts another.
- missed runs (`missed_run_policy`): occurrences found more than SCHEDULER_MISFIRE_GRACE_SECONDS
  late (the schedulers were down) are folded into one: `run_once` runs once for them, `skip`
  records them as `skipped_missed` and waits for the next occurrence. A schedule past its
  `end_at` has nothing to catch up: its missed occurrences are `skipped_missed` whatever the
  policy (an existing deployment's schedule that ended while it was down does not fire late).

A schedule whose workflow no longer exists (the existing TBD Agents never deleted a workflow's
schedules) does not fire: each of its occurrences is logged as a warning naming the schedule,
the workflow and the fix, and the schedule moves on to its next occurrence, so it costs one
look per occurrence and never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from opentelemetry import context as otel_context
from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tbd_agents.domain.enums import (
    IntervalUnit,
    MissedRunPolicy,
    OverlapPolicy,
    TaskStatus,
    TaskTrigger,
)
from tbd_agents.domain.models import ScheduledAgent, TaskExecution
from tbd_agents.errors import InvalidData
from tbd_agents.observability.metrics import SCHEDULE_FIRES, SCHEDULER_LAG
from tbd_agents.observability.spans import current_traceparent, span
from tbd_agents.runtime.backoff import Backoff
from tbd_agents.storage.postgres.schema import TABLES
from tbd_agents.storage.postgres.schema_runtime import schedule_occurrences

if TYPE_CHECKING:
    from tbd_agents.runtime.store import RunStore, ScheduleSession

_log = logging.getLogger(__name__)
schedules = TABLES["scheduled_agents"]
tasks = TABLES["task_executions"]
workflows = TABLES["workflows"]

_TINY = timedelta(microseconds=1)
_UNIT = {
    IntervalUnit.MINUTES: timedelta(minutes=1),
    IntervalUnit.HOURS: timedelta(hours=1),
    IntervalUnit.DAYS: timedelta(days=1),
    IntervalUnit.WEEKS: timedelta(weeks=1),
}
_COUNT_CAP = 10_000
#: Schedules changed this recently get their next run recomputed from their definition.
EDIT_WINDOW = timedelta(minutes=2)
#: Longest pause between two ticks after failed ones (unless the poll interval is longer).
MAX_BACKOFF_SECONDS = 30.0


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


# --- when -----------------------------------------------------------------------------------
def _zone(schedule: ScheduledAgent) -> ZoneInfo:
    try:
        return ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidData(
            f"schedule timezone {schedule.timezone!r} is unknown: use an IANA name such as "
            "'UTC' or 'Europe/Paris'"
        ) from None


def _check_cron(expression: str) -> None:
    if not croniter.is_valid(expression):
        raise InvalidData(
            f"cron_expression {expression!r} is not valid: use five fields "
            "'minute hour day-of-month month day-of-week', e.g. '*/15 * * * *'"
        )


def validate_schedule(schedule: ScheduledAgent) -> None:
    """Raise InvalidData (naming the fix) if the schedule cannot be computed."""
    if schedule.cron_expression is not None:
        _check_cron(schedule.cron_expression)
    _zone(schedule)
    if schedule.start_at and schedule.end_at and schedule.end_at <= schedule.start_at:
        raise InvalidData("end_at must be after start_at")
    try:
        occurrence_after(schedule, datetime.now(UTC))
    except (CroniterError, OverflowError) as exc:
        raise unschedulable(schedule, exc) from None


def unschedulable(schedule: ScheduledAgent, exc: CroniterError | OverflowError) -> InvalidData:
    """The error (naming the field to fix) for a schedule whose times cannot be computed."""
    if isinstance(exc, CroniterError):
        return InvalidData(
            f"cron_expression {schedule.cron_expression!r} never matches a real date "
            "(e.g. day 30 of February): change the day or month fields",
            details={"field": "cron_expression"},
        )
    late_start = schedule.start_at is not None and schedule.start_at.year > 9000
    field = "start_at" if late_start or schedule.cron_expression else "interval_value"
    return InvalidData(
        f"the schedule's times fall after the year 9999: use a smaller interval_value or an "
        f"earlier start_at (check {field})",
        details={"field": field},
    )


def occurrence_after(schedule: ScheduledAgent, after: datetime) -> datetime | None:
    """The schedule's first occurrence strictly after `after` (UTC), or None if it has ended."""
    if schedule.start_at is not None and after < schedule.start_at:
        after = schedule.start_at - _TINY
    if schedule.cron_expression:
        _check_cron(schedule.cron_expression)
        zone = _zone(schedule)
        it = croniter(schedule.cron_expression, after.astimezone(zone))
        found: datetime = it.get_next(datetime)
        result = found.astimezone(UTC)
    else:
        step = _UNIT[schedule.interval_unit] * schedule.interval_value
        anchor = schedule.start_at or schedule.created_at
        periods = 0 if after < anchor else (after - anchor) // step + 1
        result = anchor + step * periods
    if schedule.end_at is not None and result > schedule.end_at:
        return None
    return result


def occurrences_between(
    schedule: ScheduledAgent, first: datetime, last: datetime
) -> list[datetime]:
    """The schedule's occurrences t with first <= t <= last, in order (at most 10,000)."""
    out: list[datetime] = []
    current = occurrence_after(schedule, first - _TINY)
    while current is not None and current <= last and len(out) < _COUNT_CAP:
        out.append(current)
        current = occurrence_after(schedule, current)
    return out


# --- claiming -------------------------------------------------------------------------------
class Outcome(StrEnum):
    FIRED = "fired"
    SKIPPED_OVERLAP = "skipped_overlap"
    SKIPPED_MISSED = "skipped_missed"


#: `tbd_schedule_fires_total{outcome}` of each occurrence outcome.
_FIRE_OUTCOME = {
    Outcome.FIRED: "fired",
    Outcome.SKIPPED_OVERLAP: "skipped",
    Outcome.SKIPPED_MISSED: "missed",
}


@dataclass(frozen=True, slots=True)
class Claimed:
    schedule_id: str
    occurrence_at: datetime
    outcome: Outcome
    missed: int
    task_id: str | None


@dataclass(slots=True)
class TickReport:
    claimed: list[Claimed] = field(default_factory=list)

    @property
    def fired(self) -> list[Claimed]:
        return [c for c in self.claimed if c.outcome is Outcome.FIRED]


def _schedule(row: Any) -> ScheduledAgent:
    return ScheduledAgent.model_validate(dict(row._mapping))


def _values(model: TaskExecution) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in model.model_dump().items()}


async def create_pending_run(
    conn: AsyncConnection,
    workflow_id: str,
    prompt: str,
    *,
    trigger: TaskTrigger = TaskTrigger.API,
    scheduled_agent_id: str | None = None,
    reasoning_effort: str | None = None,
) -> TaskExecution:
    """Insert a pending task execution for `workflow_id` on `conn` (the caller commits)."""
    agent_id = (
        await conn.execute(select(workflows.c.agent_id).where(workflows.c.id == workflow_id))
    ).scalar_one_or_none()
    if agent_id is None:
        raise InvalidData(f"workflow {workflow_id!r} does not exist")
    task = TaskExecution(
        workflow_id=workflow_id,
        agent_id=agent_id,
        scheduled_agent_id=scheduled_agent_id,
        status=TaskStatus.PENDING,
        trigger=trigger,
        prompt=prompt,
        reasoning_effort=reasoning_effort,
        trace_parent=current_traceparent(),
    )
    # `trace_parent` is excluded from model dumps (it is never sent): written explicitly.
    await conn.execute(insert(tasks).values(**_values(task), trace_parent=task.trace_parent))
    return task


class SqlScheduleSession:
    """A scheduler tick on PostgreSQL: one transaction; the schedules it reads are locked with
    `FOR UPDATE SKIP LOCKED` (another scheduler skips them instead of waiting)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def _locked(self, stmt: Any) -> list[ScheduledAgent]:
        rows = (await self.conn.execute(stmt.with_for_update(skip_locked=True))).all()
        return [_schedule(row) for row in rows]

    async def fresh(self, now: datetime, limit: int) -> list[ScheduledAgent]:
        return await self._locked(
            select(schedules)
            .where(schedules.c.enabled.is_(True))
            .where(schedules.c.next_run_at.is_(None))
            .where(or_(schedules.c.end_at.is_(None), schedules.c.end_at > now))
            .limit(limit)
        )

    async def edited(self, now: datetime, window: timedelta, limit: int) -> list[ScheduledAgent]:
        return await self._locked(
            select(schedules)
            .where(schedules.c.enabled.is_(True))
            .where(schedules.c.next_run_at > now)
            .where(schedules.c.updated_at >= func.now() - window)
            .limit(limit)
        )

    def _due(self, now: datetime, limit: int, *, workflow_exists: bool) -> Any:
        has_workflow = exists().where(workflows.c.id == schedules.c.workflow_id)
        return (
            select(schedules)
            .where(schedules.c.enabled.is_(True))
            .where(schedules.c.next_run_at <= now)
            .where(has_workflow if workflow_exists else ~has_workflow)
            .order_by(schedules.c.next_run_at)
            .limit(limit)
        )

    async def due(self, now: datetime, limit: int) -> list[ScheduledAgent]:
        return await self._locked(self._due(now, limit, workflow_exists=True))

    async def orphaned(self, now: datetime, limit: int) -> list[ScheduledAgent]:
        return await self._locked(self._due(now, limit, workflow_exists=False))

    async def move(self, schedule: ScheduledAgent, next_run_at: datetime | None) -> None:
        await self.conn.execute(
            update(schedules)
            .where(schedules.c.id == schedule.id)
            .values(next_run_at=next_run_at, version=schedules.c.version + 1)
        )

    async def advance(
        self,
        schedule: ScheduledAgent,
        next_run_at: datetime | None,
        last_run_at: datetime | None,
    ) -> None:
        changes: dict[str, Any] = {
            "next_run_at": next_run_at,
            "updated_at": func.now(),
            "version": schedules.c.version + 1,
        }
        if last_run_at is not None:
            changes["last_run_at"] = last_run_at
        await self.conn.execute(
            update(schedules).where(schedules.c.id == schedule.id).values(**changes)
        )

    async def has_active_run(self, schedule_id: str) -> bool:
        active = (
            select(tasks.c.id)
            .where(tasks.c.scheduled_agent_id == schedule_id)
            .where(tasks.c.status.in_([TaskStatus.PENDING.value, TaskStatus.RUNNING.value]))
            .limit(1)
        )
        return (await self.conn.execute(active)).first() is not None

    async def claim(
        self,
        schedule: ScheduledAgent,
        occurrence_at: datetime,
        outcome: Outcome,
        missed: int,
        claimed_by: str,
    ) -> tuple[bool, str | None]:
        conn = self.conn
        inserted = (
            await conn.execute(
                pg_insert(schedule_occurrences)
                .values(
                    scheduled_agent_id=schedule.id,
                    occurrence_at=occurrence_at,
                    outcome=outcome.value,
                    missed=missed,
                    claimed_by=claimed_by,
                )
                .on_conflict_do_nothing()
                .returning(schedule_occurrences.c.occurrence_at)
            )
        ).first()
        if inserted is None:
            return False, None  # already claimed (e.g. next_run_at was moved back by an edit)
        if outcome is not Outcome.FIRED:
            return True, None
        task = await create_pending_run(
            conn,
            schedule.workflow_id,
            schedule.prompt,
            trigger=TaskTrigger.SCHEDULE,
            scheduled_agent_id=schedule.id,
        )
        await conn.execute(
            update(schedule_occurrences)
            .where(
                and_(
                    schedule_occurrences.c.scheduled_agent_id == schedule.id,
                    schedule_occurrences.c.occurrence_at == occurrence_at,
                )
            )
            .values(task_id=task.id)
        )
        return True, task.id


class Scheduler:
    """Fires due schedules; safe to run in any number of processes at once.

    `db` is the run store (`runtime.store.RunStore`) or a PostgreSQL engine."""

    def __init__(
        self,
        db: AsyncEngine | RunStore,
        dispatch: Callable[[str], Awaitable[object]],
        *,
        scheduler_id: str,
        misfire_grace_seconds: float,
        clock: Clock | None = None,
        batch_size: int = 100,
    ) -> None:
        from tbd_agents.runtime.store import as_run_store

        self.runs = as_run_store(db)
        self.dispatch = dispatch
        self.scheduler_id = scheduler_id
        self.grace = timedelta(seconds=misfire_grace_seconds)
        self.clock = clock or SystemClock()
        self.batch_size = batch_size
        self._reported: set[str] = set()

    async def tick(self, now: datetime | None = None) -> TickReport:
        """Claim and start everything due at `now` (default: the clock); dispatch after commit."""
        now = now or self.clock.now()
        report = TickReport()
        async with self.runs.scheduling() as session:
            await self._initialise(session, now)
            await self._reconcile(session, now)
            for schedule in await session.due(now, self.batch_size):
                claimed = await self._process(session, schedule, now)
                if claimed is not None:
                    report.claimed.append(claimed)
            # Apart, so that they never take the place of schedules that can run.
            for schedule in await session.orphaned(now, self.batch_size):
                await self._pass_orphan(session, schedule, now)
        for item in report.fired:
            if item.task_id is not None:
                await self.dispatch(item.task_id)
        return report

    async def _initialise(self, session: ScheduleSession, now: datetime) -> None:
        """Give enabled schedules without `next_run_at` their first occurrence after now."""
        for schedule in await session.fresh(now, self.batch_size):
            try:
                nxt = occurrence_after(schedule, now - _TINY)
            except InvalidData as exc:
                self._report_invalid(schedule, exc)
                continue
            if nxt is not None:
                await session.move(schedule, nxt)

    async def _reconcile(self, session: ScheduleSession, now: datetime) -> None:
        """Move `next_run_at` of recently edited schedules to what their definition says now
        (an interval or cron changed through the API keeps no stale next run)."""
        for schedule in await session.edited(now, EDIT_WINDOW, self.batch_size):
            try:
                expected = occurrence_after(schedule, now - _TINY)
            except InvalidData as exc:
                self._report_invalid(schedule, exc)
                continue
            if expected != schedule.next_run_at:
                await session.move(schedule, expected)

    def _report_invalid(self, schedule: ScheduledAgent, exc: InvalidData) -> None:
        if schedule.id not in self._reported:  # once per process, not every tick
            self._reported.add(schedule.id)
            _log.error("schedule %s cannot be computed: %s", schedule.id, exc.message)

    async def _pass_orphan(
        self, session: ScheduleSession, schedule: ScheduledAgent, now: datetime
    ) -> None:
        """A due schedule whose workflow does not exist: report it and move it to its next
        occurrence (nothing is claimed, no run is created)."""
        try:
            following = occurrence_after(schedule, now)
        except InvalidData as exc:
            self._report_invalid(schedule, exc)
            return
        _log.warning(
            "schedule %s (%r) did not fire at %s: its workflow %s does not exist (deleted); "
            "delete the schedule or point it at an existing workflow "
            "(PATCH /api/scheduled-agents/%s with a workflow_id)",
            schedule.id,
            schedule.name,
            schedule.next_run_at.isoformat() if schedule.next_run_at else "?",
            schedule.workflow_id,
            schedule.id,
        )
        await session.advance(schedule, following, None)

    async def _process(
        self, session: ScheduleSession, schedule: ScheduledAgent, now: datetime
    ) -> Claimed | None:
        assert schedule.next_run_at is not None
        try:
            due = occurrences_between(schedule, schedule.next_run_at, now)
            following = occurrence_after(schedule, now)
        except InvalidData as exc:
            self._report_invalid(schedule, exc)
            return None
        claimed: Claimed | None = None
        if due:
            claimed = await self._claim(session, schedule, due, now)
        last_run_at = None
        if claimed is not None and claimed.outcome is Outcome.FIRED:
            last_run_at = claimed.occurrence_at
        await session.advance(schedule, following, last_run_at)
        return claimed

    async def _claim(
        self, session: ScheduleSession, schedule: ScheduledAgent, due: list[datetime], now: datetime
    ) -> Claimed | None:
        latest = due[-1]
        late = now - latest > self.grace
        ended = schedule.end_at is not None and now > schedule.end_at
        if late and (ended or schedule.missed_run_policy is MissedRunPolicy.SKIP):
            outcome, missed = Outcome.SKIPPED_MISSED, len(due)
        elif schedule.overlap_policy is OverlapPolicy.SKIP and await session.has_active_run(
            schedule.id
        ):
            outcome, missed = Outcome.SKIPPED_OVERLAP, len(due) - 1
        else:
            outcome, missed = Outcome.FIRED, len(due) - 1
        # A root span: a fired run's trace starts here (the run stores it as its trace parent).
        attrs = {"tbd.schedule.id": schedule.id, "tbd.workflow.id": schedule.workflow_id,
                 "tbd.schedule.outcome": outcome.value, "tbd.schedule.missed": missed}  # fmt: skip
        with span("schedule_fire", attrs, context=otel_context.Context()) as fire:
            claimed, task_id = await session.claim(
                schedule, latest, outcome, missed, self.scheduler_id
            )
            fire.set_attribute("tbd.schedule.claimed", claimed)
            if task_id is not None:
                fire.set_attribute("tbd.task.id", task_id)
        if not claimed:
            return None
        SCHEDULE_FIRES.labels(_FIRE_OUTCOME[outcome]).inc()
        if outcome is Outcome.FIRED:
            SCHEDULER_LAG.observe(max(0.0, (now - latest).total_seconds()))
        return Claimed(schedule.id, latest, outcome, missed, task_id)

    async def run(self, stop: asyncio.Event, poll_seconds: float) -> None:
        """Tick every `poll_seconds` until `stop` is set. A failed tick (database down) is
        logged and retried after a growing pause (up to 30 s or `poll_seconds`); occurrences
        that fell due meanwhile follow their missed-run policy."""
        backoff = Backoff("scheduler tick", poll_seconds, MAX_BACKOFF_SECONDS)
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:
                pause = backoff.failed(exc)
            else:
                pause = backoff.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)


@dataclass(frozen=True, slots=True)
class OccurrenceRecord:
    occurrence_at: datetime
    outcome: str
    missed: int
    task_id: str | None
    task_status: str | None
    claimed_by: str


async def schedule_history(
    db: AsyncEngine | RunStore,
    schedule_id: str,
    *,
    limit: int = 50,
    before: datetime | None = None,
) -> list[OccurrenceRecord]:
    """The schedule's claimed occurrences, newest first, with the status of each run."""
    if not isinstance(db, AsyncEngine):
        return await db.schedule_history(schedule_id, limit=limit, before=before)
    stmt = (
        select(schedule_occurrences, tasks.c.status.label("task_status"))
        .select_from(
            schedule_occurrences.outerjoin(tasks, tasks.c.id == schedule_occurrences.c.task_id)
        )
        .where(schedule_occurrences.c.scheduled_agent_id == schedule_id)
        .order_by(schedule_occurrences.c.occurrence_at.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(schedule_occurrences.c.occurrence_at < before)
    async with db.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        OccurrenceRecord(
            r.occurrence_at, r.outcome, r.missed, r.task_id, r.task_status, r.claimed_by
        )
        for r in rows
    ]
