"""`RunStore` on MongoDB, without multi-document transactions.

A standalone `mongod` has no multi-document transaction, so every guarantee the PostgreSQL store
gets from a transaction rests here on a single-document atomic write or a unique index:

- **Event numbers** (`run_events`, unique on (task_id, seq)): an event takes the run's highest
  `seq` + 1 and is inserted; a writer that lost the race gets a duplicate-key error and takes the
  next number. Numbers are gapless and appear in order: a number is only taken once the one
  before it is stored. (A counter document with `$inc` would hand out numbers before their
  events are stored: a follower could read 4 before 3 is written and skip 3 for good.)
- **Leases**: claim, heartbeat, finish and reap are each one `find_one_and_update` on the task
  execution with its conditions (status, worker, the heartbeat read) in the filter, so a run
  has at most one owner and is reaped at most once.
- **Follow-ups without a transaction**: the write that ends a run (finish, reap, halt of a
  queued run) also stores, in the same task document, what it still owes — its events and
  whether a webhook is due (`runtime_outbox`). The writer then appends those events, queues the
  webhook and clears the outbox. If it dies in between, any runtime process's upkeep takes over
  an outbox left for `FOLLOWUP_STALE_SECONDS` (`complete_followups`), skipping the events that
  are already stored; the webhook is queued once by its unique key (task_id, event). So a run
  that ended always gets its final event and its webhook, as on PostgreSQL, only later.
- **Schedules**: an occurrence is claimed by inserting its key (scheduled_agent_id,
  occurrence_at) into `schedule_occurrences` (unique); whoever gets a duplicate-key error does
  nothing. The occurrence names its run's id before the run is inserted, so a scheduler that dies
  between the two loses that one run (it shows in the history without a status) rather than
  running it twice. `next_run_at` moves by compare-and-set on the value read.
- **Webhook deliveries** are claimed one by one with `find_one_and_update` (attempts + 1 and
  the hold in one write), so two processes never send the same attempt.

Times are the writing process's clock (UTC), not the database's: the hosts of the API, workers
and schedulers need synchronised clocks (NTP) for leases to expire on time.

Field names of `task_executions` that this module writes are the model's (`TaskExecution`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from tbd_agents.domain.enums import TaskStatus, TaskTrigger, WorkflowStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import InvalidData, NotFound
from tbd_agents.observability.spans import current_traceparent
from tbd_agents.runtime.contracts import EventType, RunOutcome
from tbd_agents.runtime.events import (
    TERMINAL_STATUSES,
    RunEvent,
    final_status_data,
    paused_status_data,
    resumed_status_data,
    running_status_data,
)
from tbd_agents.runtime.halt import ended, halted_on_the_spot
from tbd_agents.runtime.leases import Heartbeat, undispatched_error
from tbd_agents.runtime.mongo_docs import (
    FINISHED_AT,
    RESULT,
    WORKER,
    Doc,
    _already_stored,
    _by_id,
    _outbox,
    _set,
    _status,
)
from tbd_agents.runtime.mongo_events import MongoEventLog
from tbd_agents.runtime.mongo_schedules import MongoScheduleSession
from tbd_agents.runtime.mongo_webhooks import MongoWebhookStore
from tbd_agents.runtime.scheduler import OccurrenceRecord
from tbd_agents.runtime.store import Transition
from tbd_agents.storage.mongo.codec import (
    from_document,
    id_forms,
    id_text,
    plain_value,
    to_document,
)
from tbd_agents.storage.mongo.runtime_schema import (
    OUTBOX_FIELD,
    RUN_HALTS,
    SCHEDULE_OCCURRENCES,
)

_log = logging.getLogger(__name__)

#: Every change of a task or workflow raises its version (`$inc` of a missing key sets 1, one
#: more than a legacy document's 0), as the repositories do.
_NEXT_VERSION: Doc = {"version": 1}


class MongoRunStore:
    """The run-time on the MongoDB database of the `MongoStore` (pymongo's `AsyncDatabase`)."""

    backend = "mongo"

    def __init__(self, database: Any) -> None:
        self.database = database
        self.tasks = database.get_collection(TaskExecution.collection)
        self.workflows = database.get_collection("workflows")
        self.halts = database.get_collection(RUN_HALTS)
        self.occurrences = database.get_collection(SCHEDULE_OCCURRENCES)
        self.events = MongoEventLog(database)
        self.webhooks = MongoWebhookStore(database)

    # --- runs -------------------------------------------------------------------------------
    async def new_run(
        self,
        workflow_id: str,
        prompt: str,
        *,
        trigger: TaskTrigger,
        scheduled_agent_id: str | None = None,
        reasoning_effort: str | None = None,
    ) -> TaskExecution:
        """A pending run of the workflow (not stored yet); InvalidData for an unknown workflow."""
        workflow = await self.workflows.find_one(_by_id(workflow_id), {"agent_id": 1})
        if workflow is None:
            raise InvalidData(f"workflow {workflow_id!r} does not exist")
        agent_id = plain_value(workflow.get("agent_id"))
        return TaskExecution(
            workflow_id=workflow_id,
            agent_id=str(agent_id) if agent_id is not None else None,
            scheduled_agent_id=scheduled_agent_id,
            status=TaskStatus.PENDING,
            trigger=trigger,
            prompt=prompt,
            reasoning_effort=reasoning_effort,
            trace_parent=current_traceparent(),
        )

    async def create_run(
        self,
        workflow_id: str,
        prompt: str,
        *,
        trigger: TaskTrigger = TaskTrigger.API,
        scheduled_agent_id: str | None = None,
        reasoning_effort: str | None = None,
    ) -> TaskExecution:
        task = await self.new_run(
            workflow_id,
            prompt,
            trigger=trigger,
            scheduled_agent_id=scheduled_agent_id,
            reasoning_effort=reasoning_effort,
        )
        await self.tasks.insert_one(to_document(task))
        return task

    async def load(self, task_id: str) -> TaskExecution | None:
        doc = await self.tasks.find_one(_by_id(task_id))
        return None if doc is None else from_document(TaskExecution, doc)

    async def set_backend_id(self, task_id: str, backend_id: str) -> None:
        await self.tasks.update_one(
            _by_id(task_id), {"$set": {"celery_task_id": backend_id}, "$inc": _NEXT_VERSION}
        )

    async def _set_workflow_status(
        self, workflow_id: str, status: WorkflowStatus, *, ran: bool = False
    ) -> None:
        """Set the workflow's status (running while a run executes, active once it ended),
        except on an `inactive` workflow: that stays until its owner switches it back on."""
        now = utcnow()
        values: Doc = {"status": status.value, "updated_at": now}
        if ran:
            values["last_run_at"] = now
        await self.workflows.update_one(
            {**_by_id(workflow_id), "status": {"$ne": WorkflowStatus.INACTIVE.value}},
            {"$set": values, "$inc": _NEXT_VERSION},
        )

    async def claim(self, task_id: str, worker_id: str) -> Transition | None:
        now = utcnow()
        doc = await self.tasks.find_one_and_update(
            {**_by_id(task_id), "status": TaskStatus.PENDING.value},
            {
                "$set": {
                    "status": TaskStatus.RUNNING.value,
                    WORKER: worker_id,
                    "heartbeat_at": now,
                    "started_at": now,
                    "updated_at": now,
                },
                "$inc": _NEXT_VERSION,
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        task = from_document(TaskExecution, doc)
        await self._set_workflow_status(task.workflow_id, WorkflowStatus.RUNNING, ran=True)
        started = await self.events.append(
            task.id, EventType.STATUS.value, running_status_data(worker_id)
        )
        return Transition(task, [started])

    async def heartbeat(self, task_id: str, worker_id: str) -> Heartbeat:
        owned = await self.tasks.find_one_and_update(
            {**_by_id(task_id), WORKER: worker_id, "status": TaskStatus.RUNNING.value},
            {"$set": {"heartbeat_at": utcnow()}, "$inc": _NEXT_VERSION},
            projection={"_id": 1},
        )
        if owned is None:
            return Heartbeat(owned=False, halt_requested=False)
        halted = await self.halts.find_one({"_id": task_id}, {"_id": 1})
        return Heartbeat(owned=True, halt_requested=halted is not None)

    async def _end(
        self,
        match: Doc,
        ended_task: TaskExecution,
        events: list[tuple[str, Mapping[str, Any]]],
        *,
        webhook: bool,
        changed: tuple[str, ...],
    ) -> tuple[TaskExecution, Doc] | None:
        """Write the end of a run (the `changed` fields of `ended_task`) and its outbox in one
        update, if `match` still holds; the stored run and its outbox."""
        now = utcnow()
        values = {name: getattr(ended_task, name) for name in changed}
        doc = await self.tasks.find_one_and_update(
            match,
            {
                "$set": {**_set(values), OUTBOX_FIELD: _outbox(events, webhook=webhook, now=now)},
                "$inc": _NEXT_VERSION,
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        return from_document(TaskExecution, doc), dict(doc[OUTBOX_FIELD])

    async def _follow_up(self, task: TaskExecution, outbox: Mapping[str, Any]) -> list[RunEvent]:
        """Do what the outbox of `task` says is still owed, then clear it; the events stored."""
        wanted = [(str(e["type"]), dict(plain_value(e["data"]))) for e in outbox["events"]]
        tail = await self.events.tail(task.id, len(wanted))
        stored = [
            await self.events.append(task.id, kind, data)
            for kind, data in wanted[_already_stored(tail, wanted) :]
        ]
        if outbox.get("webhook"):
            await self.webhooks.enqueue(task)
        await self.tasks.update_one(
            {**_by_id(task.id), f"{OUTBOX_FIELD}.claimed_at": outbox["claimed_at"]},
            {"$unset": {OUTBOX_FIELD: ""}},
        )
        return stored

    async def finish(self, task_id: str, worker_id: str, outcome: RunOutcome) -> Transition | None:
        owned = {**_by_id(task_id), WORKER: worker_id, "status": TaskStatus.RUNNING.value}
        current = await self.tasks.find_one(owned)
        if current is None:
            return None
        now = utcnow()
        finished = from_document(TaskExecution, current).model_copy(
            update={
                "status": outcome.status,
                RESULT: outcome.result,
                "error": outcome.error,
                "turns": outcome.turns,
                "tool_calls": outcome.tool_calls,
                "usage": outcome.usage.stats(),
                FINISHED_AT: now,
                "updated_at": now,
                "caller_credential": None,  # the caller's sealed GitHub token ends with the run
            }
        )
        written = await self._end(
            owned,
            finished,
            [(EventType.STATUS.value, final_status_data(finished))],
            webhook=True,
            changed=("status", RESULT, "error", "turns", "tool_calls", "usage", FINISHED_AT,
                     "updated_at", "caller_credential"),
        )  # fmt: skip
        if written is None:
            return None  # reaped (or ended) between the read and the write
        task, outbox = written
        # The outcome stays on the task; the workflow accepts the next prompt again.
        await self._set_workflow_status(task.workflow_id, WorkflowStatus.ACTIVE)
        return Transition(task, await self._follow_up(task, outbox))

    async def park(self, task_id: str, worker_id: str, outcome: RunOutcome) -> Transition | None:
        owned = {**_by_id(task_id), WORKER: worker_id, "status": TaskStatus.RUNNING.value}
        current = await self.tasks.find_one(owned)
        if current is None:
            return None
        parked = from_document(TaskExecution, current).model_copy(
            update={
                "status": TaskStatus.AWAITING_APPROVAL,
                WORKER: None,
                "heartbeat_at": None,
                "turns": outcome.turns,
                "tool_calls": outcome.tool_calls,
                "usage": outcome.usage.stats(),
                "updated_at": utcnow(),
            }
        )
        written = await self._end(
            owned,
            parked,
            [(EventType.STATUS.value, paused_status_data(parked, outcome))],
            webhook=False,
            changed=("status", WORKER, "heartbeat_at", "turns", "tool_calls", "usage",
                     "updated_at"),
        )  # fmt: skip
        if written is None:
            return None
        task, outbox = written
        return Transition(task, await self._follow_up(task, outbox))

    async def resume(self, task_id: str, reason: str) -> Transition | None:
        current = await self.load(task_id)
        if current is None or current.status is not TaskStatus.AWAITING_APPROVAL:
            return None
        resumed = current.model_copy(
            update={"status": TaskStatus.PENDING, "celery_task_id": None, "updated_at": utcnow()}
        )
        written = await self._end(
            {**_by_id(task_id), "status": TaskStatus.AWAITING_APPROVAL.value},
            resumed,
            [(EventType.STATUS.value, resumed_status_data(reason))],
            webhook=False,
            changed=("status", "celery_task_id", "updated_at"),
        )
        if written is None:
            return None  # resumed (or halted) by another process meanwhile
        task, outbox = written
        return Transition(task, await self._follow_up(task, outbox))

    async def reap_expired(self, lease_seconds: float) -> list[Transition]:
        now = utcnow()
        cutoff = now - timedelta(seconds=lease_seconds)
        expired = await self.tasks.find(
            {
                "status": TaskStatus.RUNNING.value,
                "$or": [
                    {"heartbeat_at": {"$lt": cutoff}},
                    {"heartbeat_at": None, "started_at": {"$lt": cutoff}},
                    {"heartbeat_at": None, "started_at": None, "updated_at": {"$lt": cutoff}},
                ],
            },
            limit=100,
        ).to_list(None)
        reaped: list[Transition] = []
        for doc in expired:
            task = from_document(TaskExecution, doc)
            message = (
                f"the worker {doc.get(WORKER) or '?'} stopped renewing its lease (it died or "
                "lost the database); the run was marked failed and not retried, because its "
                "tool calls may already have had effects. Start it again if that is safe."
            )
            failed = task.model_copy(
                update={
                    "status": TaskStatus.FAILED,
                    "error": message,
                    FINISHED_AT: now,
                    "updated_at": now,
                    "caller_credential": None,
                }
            )
            # Unchanged since it was read: a heartbeat in between keeps the run alive, and of
            # two reapers only the first finds it still running.
            match = {
                "_id": doc["_id"],
                "status": TaskStatus.RUNNING.value,
                "heartbeat_at": doc.get("heartbeat_at"),
            }
            written = await self._end(
                match,
                failed,
                [
                    (EventType.ERROR.value, {"message": message}),
                    (EventType.STATUS.value, final_status_data(failed)),
                ],
                # No webhook for a run this hub never ran (no lease was ever taken: e.g. a run
                # left `running` by an existing deployment before it moved here).
                webhook=doc.get("heartbeat_at") is not None,
                changed=("status", "error", FINISHED_AT, "updated_at", "caller_credential"),
            )
            if written is None:
                continue
            ended_task, outbox = written
            await self._set_workflow_status(ended_task.workflow_id, WorkflowStatus.ACTIVE)
            reaped.append(Transition(ended_task, await self._follow_up(ended_task, outbox)))
        return reaped

    async def complete_followups(self, stale_seconds: float) -> list[RunEvent]:
        now = utcnow()
        stamp = f"{OUTBOX_FIELD}.claimed_at"
        left = await self.tasks.find(
            {stamp: {"$lte": now - timedelta(seconds=stale_seconds)}}, limit=100
        ).to_list(None)
        stored: list[RunEvent] = []
        for doc in left:
            mine = await self.tasks.find_one_and_update(
                {"_id": doc["_id"], stamp: doc[OUTBOX_FIELD]["claimed_at"]},
                {"$set": {stamp: now}},
                return_document=ReturnDocument.AFTER,
            )
            if mine is None:
                continue  # another process took it over first
            task = from_document(TaskExecution, mine)
            _log.warning("run %s: completing the writes its last state change left", task.id)
            stored.extend(await self._follow_up(task, dict(mine[OUTBOX_FIELD])))
        return stored

    @staticmethod
    def _undispatched(older_than_seconds: float) -> Doc:
        """Pending runs created more than `older_than_seconds` ago that no backend took."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        return {
            "status": TaskStatus.PENDING.value,
            "celery_task_id": None,
            # A run that resumed after an approval (it started before) counts from then.
            "$or": [
                {"started_at": None, "created_at": {"$lt": cutoff}},
                {"started_at": {"$ne": None}, "updated_at": {"$lt": cutoff}},
            ],
        }

    async def orphaned_pending(self, older_than_seconds: float, limit: int = 100) -> list[str]:
        docs = await self.tasks.find(
            self._undispatched(older_than_seconds),
            {"_id": 1},
            sort=[("created_at", 1)],
            limit=limit,
        ).to_list(None)
        return [id_text(d["_id"]) for d in docs]

    async def fail_undispatched(
        self, older_than_seconds: float, reason: str, limit: int = 100
    ) -> list[Transition]:
        docs = await self.tasks.find(
            self._undispatched(older_than_seconds), sort=[("created_at", 1)], limit=limit
        ).to_list(None)
        now = utcnow()
        done: list[Transition] = []
        for doc in docs:
            task = from_document(TaskExecution, doc)
            message = undispatched_error(task, reason)
            failed = task.model_copy(
                update={
                    "status": TaskStatus.FAILED,
                    "error": message,
                    FINISHED_AT: now,
                    "updated_at": now,
                    "caller_credential": None,
                }
            )
            # Still pending and never queued: a run claimed (or queued) meanwhile is left alone.
            match = {"_id": doc["_id"], "status": TaskStatus.PENDING.value, "celery_task_id": None}
            written = await self._end(
                match,
                failed,
                [
                    (EventType.ERROR.value, {"message": message}),
                    (EventType.STATUS.value, final_status_data(failed)),
                ],
                webhook=True,
                changed=("status", "error", FINISHED_AT, "updated_at", "caller_credential"),
            )
            if written is None:
                continue
            ended_task, outbox = written
            done.append(Transition(ended_task, await self._follow_up(ended_task, outbox)))
        return done

    async def halt(self, task_id: str, requested_by: str | None) -> RunEvent | None:
        doc = await self.tasks.find_one(_by_id(task_id), {"status": 1})
        if doc is None:
            raise NotFound("task execution", task_id)
        status = _status(doc.get("status", TaskStatus.PENDING.value))
        if status in TERMINAL_STATUSES:
            raise ended(task_id, status)
        with contextlib.suppress(DuplicateKeyError):  # asked before: the flag is there
            await self.halts.insert_one(
                {"_id": task_id, "requested_by": requested_by, "requested_at": utcnow()}
            )
        if status not in (TaskStatus.PENDING, TaskStatus.AWAITING_APPROVAL):
            return None
        current = await self.load(task_id)
        if current is None:
            raise NotFound("task execution", task_id)
        now = utcnow()
        halted = current.model_copy(
            update={
                "status": TaskStatus.HALTED,
                "error": halted_on_the_spot(status)[0],
                FINISHED_AT: now,
                "updated_at": now,
                "caller_credential": None,
            }
        )
        written = await self._end(
            {**_by_id(task_id), "status": status.value},
            halted,
            [(EventType.STATUS.value, halted_on_the_spot(status)[1])],
            webhook=False,
            changed=("status", "error", FINISHED_AT, "updated_at", "caller_credential"),
        )
        if written is None:  # claimed (or halted) since it was read
            now_status = await self.events.task_status(task_id)
            if now_status in TERMINAL_STATUSES:
                raise ended(task_id, now_status)
            return None  # running: its worker reads the flag
        task, outbox = written
        await self._set_workflow_status(task.workflow_id, WorkflowStatus.ACTIVE)
        stored = await self._follow_up(task, outbox)
        return stored[-1] if stored else None

    # --- schedules --------------------------------------------------------------------------
    @asynccontextmanager
    async def scheduling(self) -> AsyncIterator[MongoScheduleSession]:
        yield MongoScheduleSession(self)

    async def schedule_history(
        self, schedule_id: str, *, limit: int = 50, before: datetime | None = None
    ) -> list[OccurrenceRecord]:
        spec: Doc = {"scheduled_agent_id": schedule_id}
        if before is not None:
            spec["occurrence_at"] = {"$lt": before}
        docs = await self.occurrences.find(spec, sort=[("occurrence_at", -1)], limit=limit).to_list(
            None
        )
        task_ids = [str(d["task_id"]) for d in docs if d.get("task_id")]
        statuses: dict[str, str] = {}
        if task_ids:
            forms = [f for t in task_ids for f in id_forms(t, include_int=True)]
            for t in await self.tasks.find({"_id": {"$in": forms}}, {"status": 1}).to_list(None):
                statuses[id_text(t["_id"])] = _status(t.get("status")).value
        return [
            OccurrenceRecord(
                plain_value(d["occurrence_at"]),
                str(d["outcome"]),
                int(d.get("missed", 0)),
                d.get("task_id"),
                statuses.get(str(d["task_id"])) if d.get("task_id") else None,
                str(d["claimed_by"]),
            )
            for d in docs
        ]
