"""Executing one run with the runtime's guarantees, wherever it runs (in-process or a worker).

`execute_run` claims the run, renews its lease while the executor works, stops the executor when
a halt arrives or the lease is lost, records the outcome, emits the final status event and
queues the completion/failure webhook. The same function serves both backends, so a run behaves
the same with and without Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.errors import TbdError
from tbd_agents.observability.runs import count_lost_runs, run_signals
from tbd_agents.runtime.bus import EventBus
from tbd_agents.runtime.contracts import EventType, RunOutcome
from tbd_agents.runtime.events import (
    TERMINAL_STATUSES,
    PersistingEventSink,
    RunEvent,
)
from tbd_agents.runtime.executor import RunExecutor
from tbd_agents.runtime.halt import RunHaltSignal, listening_for_halt
from tbd_agents.runtime.store import EventLog, RunStore, Transition
from tbd_agents.runtime.webhooks import WebhookService

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunServices:
    """What executing a run needs; built once per process."""

    runs: RunStore
    bus: EventBus
    events: EventLog
    executor: RunExecutor
    webhooks: WebhookService
    worker_id: str
    lease_seconds: float


class LeaseLost(Exception):
    """The run was ended elsewhere (reaped after a missed lease) while this worker ran it."""


async def _keep_lease(
    services: RunServices, task_id: str, halt: RunHaltSignal, run: asyncio.Task[RunOutcome]
) -> None:
    interval = max(services.lease_seconds / 3.0, 0.2)
    while not run.done():
        beat = await services.runs.heartbeat(task_id, services.worker_id)
        if not beat.owned:
            _log.error("run %s: lease lost; stopping the executor", task_id)
            run.cancel(LeaseLost.__name__)
            return
        if beat.halt_requested:
            halt.set("halt requested")
        await asyncio.sleep(interval)


async def _run_executor(
    services: RunServices, task: TaskExecution, sink: PersistingEventSink, halt: RunHaltSignal
) -> RunOutcome | None:
    """The executor's outcome; a failed outcome if it raised; None if the lease was lost."""
    run = asyncio.create_task(services.executor.execute(task, sink, halt), name=f"run-{task.id}")
    keeper = asyncio.create_task(_keep_lease(services, task.id, halt, run))
    try:
        return await run
    except asyncio.CancelledError:
        if keeper.done() and not keeper.cancelled() and keeper.exception() is None:
            return None  # cancelled by the lease keeper
        raise
    except TbdError as exc:  # a known cause with its fix in the message: no traceback needed
        _log.warning("run %s failed: %s", task.id, exc.message)
        await _error_event(sink, exc.code, exc.message)
        return RunOutcome(TaskStatus.FAILED, error=exc.message)
    except Exception as exc:
        _log.exception("run %s: the executor raised", task.id)
        message = f"{type(exc).__name__}: {exc}"
        await _error_event(sink, "internal_error", message)
        return RunOutcome(TaskStatus.FAILED, error=message)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


async def _error_event(sink: PersistingEventSink, code: str, message: str) -> None:
    """The run's `error` event when the executor raised before it reported one: a failed run
    shows exactly one. Not stored (the store is down, say): logged; the run's final status
    carries the error anyway."""
    if sink.errors:
        return
    try:
        await sink.emit(EventType.ERROR, {"code": code, "message": message})
    except Exception:
        _log.exception("run %s: its error event could not be stored", sink.task_id)


async def execute_run(services: RunServices, task_id: str) -> TaskExecution | None:
    """Run `task_id` if it is still pending; return the finished run (None if not executed here).

    Never re-executes a run that another worker started: a run found running or finished is
    left alone (the reaper ends runs whose worker died). Each state change is written with the
    event that reports it (and, at the end, the webhook to send): in one transaction on
    PostgreSQL, through the task's outbox on MongoDB (`RunStore`)."""
    claimed = await services.runs.claim(task_id, services.worker_id)
    if claimed is None:
        _log.info("run %s is not pending any more; not executing it", task_id)
        return None
    with run_signals(claimed.task) as signals:  # span, log context, active gauge, run series
        finished = await _execute_claimed(services, claimed)
        if finished is not None:
            task, outcome = finished
            signals.finished(outcome.status.value, task.model, task.reasoning_effort, outcome)
    return finished[0] if finished else None


async def _execute_claimed(
    services: RunServices, claimed: Transition
) -> tuple[TaskExecution, RunOutcome] | None:
    """Execute a claimed run and record its outcome; the finished run and the outcome (None
    when the lease was lost)."""
    task = claimed.task
    sink = PersistingEventSink(services.events, services.bus, task.id)
    halt = RunHaltSignal()
    async with listening_for_halt(services.bus, task.id, halt):
        beat = await services.runs.heartbeat(task.id, services.worker_id)
        if beat.halt_requested:  # asked before this worker listened
            halt.set("halt requested")
        for event in claimed.events:
            await sink.publish(event)
        outcome = await _run_executor(services, task, sink, halt)
    if outcome is None:
        return None
    if outcome.status is TaskStatus.AWAITING_APPROVAL and outcome.approvals:
        return await _park(services, task, sink, outcome)
    if outcome.status not in TERMINAL_STATUSES:
        outcome.error = outcome.error or f"executor returned non-final status {outcome.status}"
        outcome.status = TaskStatus.FAILED
    finished = await services.runs.finish(task.id, services.worker_id, outcome)
    if finished is None:
        _log.error(
            "run %s ended (%s) after its lease was lost; outcome not recorded",
            task.id,
            outcome.status,
        )
        return None
    for event in finished.events:
        await sink.publish(event)
    return finished.task, outcome


async def _park(
    services: RunServices, task: TaskExecution, sink: PersistingEventSink, outcome: RunOutcome
) -> tuple[TaskExecution, RunOutcome] | None:
    """Pause the run for approval: lease released, `awaiting_approval` status event, and one
    `approval_requested` webhook per waiting call (services/approvals.py made the records)."""
    parked = await services.runs.park(task.id, services.worker_id, outcome)
    if parked is None:
        _log.error("run %s paused for approval after its lease was lost", task.id)
        return None
    for event in parked.events:
        await sink.publish(event)
    for approval in outcome.approvals:
        await services.webhooks.enqueue_event(
            parked.task, "approval_requested", str(approval["approval_id"]), approval
        )
    return parked.task, outcome


async def announce(services: RunServices, events: list[RunEvent]) -> None:
    """Publish stored events on the bus (after the writes that stored them)."""
    for event in events:
        await PersistingEventSink(services.events, services.bus, event.task_id).publish(event)


async def reap(services: RunServices) -> list[TaskExecution]:
    """Fail the runs whose lease expired, with their error and final events and their failure
    webhooks; then tell their followers."""
    reaped = await services.runs.reap_expired(services.lease_seconds)
    count_lost_runs(reaped)
    for item in reaped:
        _log.warning("run %s failed: %s", item.task.id, item.task.error)
    await announce(services, [e for item in reaped for e in item.events])
    return [item.task for item in reaped]


async def complete_followups(services: RunServices, stale_seconds: float) -> int:
    """Finish the follow-up writes a dead process left undone (MongoDB); publish their events."""
    events = await services.runs.complete_followups(stale_seconds)
    await announce(services, events)
    return len(events)
