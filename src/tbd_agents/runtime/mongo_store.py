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

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from tbd_agents.domain.enums import TaskStatus, TaskTrigger, WorkflowStatus
from tbd_agents.domain.models import ScheduledAgent, TaskExecution
from tbd_agents.domain.types import new_id, utcnow
from tbd_agents.errors import InvalidData, NotFound, StorageError
from tbd_agents.runtime.contracts import EventType, RunOutcome
from tbd_agents.runtime.events import (
    TERMINAL_STATUSES,
    RunEvent,
    final_status_data,
    running_status_data,
)
from tbd_agents.runtime.halt import HALTED_BEFORE_START, HALTED_BEFORE_START_EVENT, ended
from tbd_agents.runtime.leases import Heartbeat
from tbd_agents.runtime.scheduler import OccurrenceRecord, Outcome
from tbd_agents.runtime.store import DueDelivery, Transition, chunks
from tbd_agents.runtime.webhooks import Attempt, Delivery, event_of, json_payload
from tbd_agents.storage.mongo.codec import (
    bson_value,
    from_document,
    id_forms,
    id_text,
    plain_value,
    to_document,
)
from tbd_agents.storage.mongo.runtime_schema import (
    OUTBOX_FIELD,
    RUN_EVENTS,
    RUN_HALTS,
    SCHEDULE_OCCURRENCES,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_SECRETS,
)
from tbd_agents.storage.postgres.engine import json_dumps

_log = logging.getLogger(__name__)

Doc = dict[str, Any]

#: Task execution fields written here whose names the existing TBD Agents data model spells its
#: own way; kept in one place.
WORKER = "worker"
FINISHED_AT = "finished_at"
RESULT = "response"

_APPEND_RETRIES = 200
_ACTIVE = [TaskStatus.PENDING.value, TaskStatus.RUNNING.value]
#: An enabled schedule: `enabled` true, or absent (the existing system's documents written
#: before the field existed; its default is true). `None` in `$in` matches a missing key.
_ENABLED: Doc = {"enabled": {"$in": [True, None]}}
_TERMINAL = [s.value for s in TERMINAL_STATUSES]
_PURGE_BATCH = 500


def _by_id(record_id: str) -> Doc:
    """The filter on `_id` for a record id in any stored form (string, ObjectId, integer)."""
    forms = id_forms(record_id, include_int=True)
    return {"_id": forms[0] if len(forms) == 1 else {"$in": forms}}


def _ref(value: str) -> Doc:
    """A match for a reference field that may hold the id as a string or an ObjectId."""
    forms = id_forms(value)
    return forms[0] if len(forms) == 1 else {"$in": forms}


def _json(data: Mapping[str, Any]) -> dict[str, Any]:
    """Event data as plain JSON values (what PostgreSQL's JSONB and the bus keep)."""
    loaded: dict[str, Any] = json.loads(json_dumps(dict(data)))
    return loaded


def _status(value: Any) -> TaskStatus:
    return TaskStatus(str(value).strip().lower().replace("-", "_"))


def _set(values: Mapping[str, Any]) -> Doc:
    return {k: bson_value(v) for k, v in values.items()}


def _outbox(events: list[tuple[str, Mapping[str, Any]]], *, webhook: bool, now: datetime) -> Doc:
    return {
        "events": [{"type": t, "data": _json(d)} for t, d in events],
        "webhook": webhook,
        "claimed_at": now,
    }


def _already_stored(tail: list[RunEvent], wanted: list[tuple[str, Any]]) -> int:
    """How many of `wanted` (in order) the run's last stored events already are."""
    for k in range(min(len(wanted), len(tail)), 0, -1):
        if [(e.type, e.data) for e in tail[-k:]] == wanted[:k]:
            return k
    return 0


def _event(doc: Mapping[str, Any]) -> RunEvent:
    return RunEvent(
        str(doc["task_id"]),
        int(doc["seq"]),
        str(doc["type"]),
        dict(plain_value(doc.get("data") or {})),
        plain_value(doc.get("created_at")),
    )


class MongoEventLog:
    """`runtime.store.EventLog` on the `run_events` collection."""

    def __init__(self, database: Any) -> None:
        self.collection = database.get_collection(RUN_EVENTS)
        self.tasks = database.get_collection(TaskExecution.collection)

    async def append(self, task_id: str, event_type: str, data: Mapping[str, Any]) -> RunEvent:
        """Store one event as the run's next `seq`. Concurrent writers on the same run retry on
        the unique key (task_id, seq), after a short random pause that spreads them out."""
        body = _json(data)
        for attempt in range(_APPEND_RETRIES):
            last = await self.collection.find(
                {"task_id": task_id}, {"seq": 1}, sort=[("seq", -1)], limit=1
            ).to_list(None)
            seq = int(last[0]["seq"]) + 1 if last else 1
            if seq == 1 and await self.tasks.find_one(_by_id(task_id), {"_id": 1}) is None:
                raise NotFound("task execution", task_id)
            created = utcnow()
            try:
                await self.collection.insert_one(
                    {
                        "task_id": task_id,
                        "seq": seq,
                        "type": event_type,
                        "data": body,
                        "created_at": created,
                    }
                )
            except DuplicateKeyError:
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))  # noqa: S311
                continue
            return RunEvent(task_id, seq, event_type, body, created)
        raise StorageError(
            f"could not append an event to run {task_id}: too many concurrent writers"
        )

    async def read(self, task_id: str, after_seq: int = 0, limit: int = 1000) -> list[RunEvent]:
        docs = await self.collection.find(
            {"task_id": task_id, "seq": {"$gt": after_seq}}, sort=[("seq", 1)], limit=limit
        ).to_list(None)
        return [_event(d) for d in docs]

    async def tail(self, task_id: str, count: int) -> list[RunEvent]:
        """The run's last `count` events, in order."""
        if count <= 0:
            return []
        docs = await self.collection.find(
            {"task_id": task_id}, sort=[("seq", -1)], limit=count
        ).to_list(None)
        return [_event(d) for d in reversed(docs)]

    async def task_status(self, task_id: str) -> TaskStatus:
        doc = await self.tasks.find_one(_by_id(task_id), {"status": 1})
        if doc is None:
            raise NotFound("task execution", task_id)
        return _status(doc.get("status", TaskStatus.PENDING.value))

    async def purge(self, finished_before: datetime) -> int:
        """Delete the events of runs that ended before `finished_before` (and of runs that no
        longer exist). Only runs with events older than the cut-off are looked at, so the cost
        follows what there is to purge, not the number of past runs."""
        candidates = await self.collection.distinct(
            "task_id", {"created_at": {"$lt": finished_before}}
        )
        purged = 0
        for batch in chunks([str(c) for c in candidates], _PURGE_BATCH):
            forms = [f for task_id in batch for f in id_forms(task_id, include_int=True)]
            docs = await self.tasks.find(
                {"_id": {"$in": forms}},
                {"status": 1, FINISHED_AT: 1, "updated_at": 1},
            ).to_list(None)
            found = {id_text(d["_id"]): d for d in docs}
            ended_ids = []
            for task_id in batch:
                doc = found.get(task_id)
                if doc is None:
                    ended_ids.append(task_id)  # the run was deleted: its events go too
                    continue
                end = doc.get(FINISHED_AT) or doc.get("updated_at")
                if (
                    _status(doc.get("status")) in TERMINAL_STATUSES
                    and end is not None
                    and plain_value(end) < finished_before
                ):
                    ended_ids.append(task_id)
            if ended_ids:
                result = await self.collection.delete_many({"task_id": {"$in": ended_ids}})
                purged += int(result.deleted_count)
        return purged


class MongoWebhookStore:
    """`runtime.store.WebhookStore` on `webhook_secrets`, `webhook_deliveries` and
    `webhook_attempts`."""

    def __init__(self, database: Any) -> None:
        self.secrets = database.get_collection(WEBHOOK_SECRETS)
        self.deliveries = database.get_collection(WEBHOOK_DELIVERIES)
        self.attempts = database.get_collection(WEBHOOK_ATTEMPTS)
        self.workflows = database.get_collection("workflows")

    async def stored_secret(self, workflow_id: str) -> str | None:
        doc = await self.secrets.find_one({"_id": workflow_id})
        return None if doc is None else str(doc["encrypted_secret"])

    async def workflow_exists(self, workflow_id: str) -> bool:
        return await self.workflows.find_one(_by_id(workflow_id), {"_id": 1}) is not None

    async def save_secret(self, workflow_id: str, encrypted: str, *, replace: bool) -> None:
        now = utcnow()
        if replace:
            await self.secrets.update_one(
                {"_id": workflow_id},
                {
                    "$set": {"encrypted_secret": encrypted, "updated_at": now},
                    "$setOnInsert": {"created_at": now},
                },
                upsert=True,
            )
            return
        # A concurrent first use may have stored its own: the caller reads back what is stored.
        with contextlib.suppress(DuplicateKeyError):
            await self.secrets.insert_one(
                {
                    "_id": workflow_id,
                    "encrypted_secret": encrypted,
                    "created_at": now,
                    "updated_at": now,
                }
            )

    async def enqueue(self, task: TaskExecution) -> str | None:
        event = event_of(task)
        field = "error_webhook_url" if event == "task.failed" else "webhook_url"
        workflow = await self.workflows.find_one(_by_id(task.workflow_id), {field: 1})
        url = workflow.get(field) if workflow is not None else None
        if not url:
            return None
        now = utcnow()
        delivery_id = new_id()
        try:
            await self.deliveries.insert_one(
                {
                    "_id": delivery_id,
                    "task_id": task.id,
                    "workflow_id": task.workflow_id,
                    "event": event,
                    "url": str(url),
                    "payload": json_payload(task),
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "last_status_code": None,
                    "last_error": None,
                    "delivered_at": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        except DuplicateKeyError:
            return None  # already queued for this run and event
        return delivery_id

    async def claim_due(self, limit: int, hold: timedelta) -> list[DueDelivery]:
        claimed: list[DueDelivery] = []
        while len(claimed) < limit:
            now = utcnow()
            doc = await self.deliveries.find_one_and_update(
                {"status": "pending", "next_attempt_at": {"$lte": now}},
                {
                    "$inc": {"attempts": 1},
                    "$set": {"next_attempt_at": now + hold, "updated_at": now},
                },
                sort=[("next_attempt_at", 1)],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            claimed.append(
                DueDelivery(
                    id=id_text(doc["_id"]),
                    task_id=str(doc["task_id"]),
                    workflow_id=str(doc["workflow_id"]),
                    event=str(doc["event"]),
                    url=str(doc["url"]),
                    payload=dict(plain_value(doc.get("payload") or {})),
                    attempts=int(doc["attempts"]),
                )
            )
        return claimed

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
        now = utcnow()
        try:
            await self.attempts.insert_one(
                {
                    "delivery_id": delivery.id,
                    "attempt": delivery.attempts,
                    "status_code": status_code,
                    "error": error,
                    "duration_ms": duration_ms,
                    "created_at": now,
                }
            )
        except DuplicateKeyError:
            _log.warning("webhook %s: attempt %d already logged", delivery.id, delivery.attempts)
        values: Doc = {"last_status_code": status_code, "last_error": error, "updated_at": now}
        if error is None:
            values.update(status="delivered", delivered_at=now)
        elif exhausted:
            values.update(status="failed")
        elif retry_after is not None:
            values.update(next_attempt_at=now + retry_after)
        await self.deliveries.update_one({"_id": delivery.id}, {"$set": values})

    async def list_deliveries(
        self, *, workflow_id: str | None, task_id: str | None, limit: int
    ) -> list[Delivery]:
        spec: Doc = {}
        if workflow_id is not None:
            spec["workflow_id"] = workflow_id
        if task_id is not None:
            spec["task_id"] = task_id
        docs = await self.deliveries.find(
            spec, sort=[("created_at", -1), ("_id", -1)], limit=limit
        ).to_list(None)
        ids = [id_text(d["_id"]) for d in docs]
        logs: dict[str, list[Attempt]] = {}
        if ids:
            attempts = await self.attempts.find(
                {"delivery_id": {"$in": ids}}, sort=[("delivery_id", 1), ("attempt", 1)]
            ).to_list(None)
            for a in attempts:
                logs.setdefault(str(a["delivery_id"]), []).append(
                    Attempt(
                        int(a["attempt"]),
                        a.get("status_code"),
                        a.get("error"),
                        float(a.get("duration_ms", 0.0)),
                    )
                )
        return [
            Delivery(
                id=delivery_id,
                task_id=str(d["task_id"]),
                workflow_id=str(d["workflow_id"]),
                event=str(d["event"]),
                url=str(d["url"]),
                status=str(d["status"]),
                attempts=int(d.get("attempts", 0)),
                last_status_code=d.get("last_status_code"),
                last_error=d.get("last_error"),
                log=tuple(logs.get(delivery_id, ())),
            )
            for delivery_id, d in zip(ids, docs, strict=True)
        ]


class MongoScheduleSession:
    """A scheduler tick on MongoDB: plain reads; the occurrence key and compare-and-set on
    `next_run_at` decide between schedulers (see the module docstring)."""

    def __init__(self, store: MongoRunStore) -> None:
        self.store = store
        self.schedules = store.database.get_collection(ScheduledAgent.collection)

    async def _find(
        self, spec: Doc, limit: int, sort: Any = None, skip: int = 0
    ) -> list[ScheduledAgent]:
        docs = await self.schedules.find(spec, sort=sort, skip=skip, limit=limit).to_list(None)
        found: list[ScheduledAgent] = []
        for doc in docs:
            try:
                found.append(from_document(ScheduledAgent, doc))
            except InvalidData as exc:
                _log.error("schedule skipped: %s", exc.message)
        return found

    async def fresh(self, now: datetime, limit: int) -> list[ScheduledAgent]:
        return await self._find(
            {
                **_ENABLED,
                "next_run_at": None,
                "$or": [{"end_at": None}, {"end_at": {"$gt": now}}],
            },
            limit,
        )

    async def edited(self, now: datetime, window: timedelta, limit: int) -> list[ScheduledAgent]:
        return await self._find(
            {
                **_ENABLED,
                "next_run_at": {"$gt": now},
                "updated_at": {"$gte": utcnow() - window},
            },
            limit,
        )

    async def _due(
        self, now: datetime, limit: int, *, workflow_exists: bool
    ) -> list[ScheduledAgent]:
        """Due schedules, earliest first, whose workflow exists (or not): read a page at a
        time, the workflows of each page looked up in one query (no join on MongoDB)."""
        spec: Doc = {**_ENABLED, "next_run_at": {"$lte": now}}
        found: list[ScheduledAgent] = []
        skip = 0
        while len(found) < limit:
            page = await self._find(spec, limit, sort=[("next_run_at", 1), ("_id", 1)], skip=skip)
            if not page:
                break
            skip += limit
            existing = await self._existing_workflows({s.workflow_id for s in page})
            found += [s for s in page if (s.workflow_id in existing) is workflow_exists]
        return found[:limit]

    async def _existing_workflows(self, ids: set[str]) -> set[str]:
        forms = [form for i in sorted(ids) for form in id_forms(i, include_int=True)]
        docs = await self.store.workflows.find({"_id": {"$in": forms}}, {"_id": 1}).to_list(None)
        return {id_text(d["_id"]) for d in docs}

    async def due(self, now: datetime, limit: int) -> list[ScheduledAgent]:
        return await self._due(now, limit, workflow_exists=True)

    async def orphaned(self, now: datetime, limit: int) -> list[ScheduledAgent]:
        return await self._due(now, limit, workflow_exists=False)

    def _unchanged(self, schedule: ScheduledAgent) -> Doc:
        return {**_by_id(schedule.id), "next_run_at": bson_value(schedule.next_run_at)}

    async def move(self, schedule: ScheduledAgent, next_run_at: datetime | None) -> None:
        await self.schedules.update_one(
            self._unchanged(schedule), {"$set": {"next_run_at": bson_value(next_run_at)}}
        )

    async def advance(
        self,
        schedule: ScheduledAgent,
        next_run_at: datetime | None,
        last_run_at: datetime | None,
    ) -> None:
        changes: Doc = {"next_run_at": next_run_at, "updated_at": utcnow()}
        if last_run_at is not None:
            changes["last_run_at"] = last_run_at
        await self.schedules.update_one(self._unchanged(schedule), {"$set": _set(changes)})

    async def has_active_run(self, schedule_id: str) -> bool:
        found = await self.store.tasks.find_one(
            {"scheduled_agent_id": _ref(schedule_id), "status": {"$in": _ACTIVE}}, {"_id": 1}
        )
        return found is not None

    async def claim(
        self,
        schedule: ScheduledAgent,
        occurrence_at: datetime,
        outcome: Outcome,
        missed: int,
        claimed_by: str,
    ) -> tuple[bool, str | None]:
        task: TaskExecution | None = None
        if outcome is Outcome.FIRED:
            task = await self.store.new_run(
                schedule.workflow_id,
                schedule.prompt,
                trigger=TaskTrigger.SCHEDULE,
                scheduled_agent_id=schedule.id,
            )
        try:
            await self.store.occurrences.insert_one(
                {
                    "scheduled_agent_id": schedule.id,
                    "occurrence_at": bson_value(occurrence_at),
                    "outcome": outcome.value,
                    "missed": missed,
                    "task_id": task.id if task is not None else None,
                    "claimed_by": claimed_by,
                    "created_at": utcnow(),
                }
            )
        except DuplicateKeyError:
            return False, None  # another scheduler (or an earlier tick) claimed it
        if task is None:
            return True, None
        await self.store.tasks.insert_one(to_document(task))
        return True, task.id


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
        )

    async def create_run(
        self,
        workflow_id: str,
        prompt: str,
        *,
        trigger: TaskTrigger = TaskTrigger.API,
        scheduled_agent_id: str | None = None,
    ) -> TaskExecution:
        task = await self.new_run(
            workflow_id, prompt, trigger=trigger, scheduled_agent_id=scheduled_agent_id
        )
        await self.tasks.insert_one(to_document(task))
        return task

    async def load(self, task_id: str) -> TaskExecution | None:
        doc = await self.tasks.find_one(_by_id(task_id))
        return None if doc is None else from_document(TaskExecution, doc)

    async def set_backend_id(self, task_id: str, backend_id: str) -> None:
        await self.tasks.update_one(_by_id(task_id), {"$set": {"celery_task_id": backend_id}})

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
            {"$set": values},
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
                }
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
            {"$set": {"heartbeat_at": utcnow()}},
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
            {"$set": {**_set(values), OUTBOX_FIELD: _outbox(events, webhook=webhook, now=now)}},
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
            }
        )
        written = await self._end(
            owned,
            finished,
            [(EventType.STATUS.value, final_status_data(finished))],
            webhook=True,
            changed=("status", RESULT, "error", "turns", "tool_calls", "usage", FINISHED_AT,
                     "updated_at"),
        )  # fmt: skip
        if written is None:
            return None  # reaped (or ended) between the read and the write
        task, outbox = written
        # The outcome stays on the task; the workflow accepts the next prompt again.
        await self._set_workflow_status(task.workflow_id, WorkflowStatus.ACTIVE)
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
                changed=("status", "error", FINISHED_AT, "updated_at"),
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
            {stamp: {"$lt": now - timedelta(seconds=stale_seconds)}}, limit=100
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

    async def orphaned_pending(self, older_than_seconds: float, limit: int = 100) -> list[str]:
        docs = await self.tasks.find(
            {
                "status": TaskStatus.PENDING.value,
                "celery_task_id": None,
                "scheduled_agent_id": {"$ne": None},
                "created_at": {"$lt": utcnow() - timedelta(seconds=older_than_seconds)},
            },
            {"_id": 1},
            sort=[("created_at", 1)],
            limit=limit,
        ).to_list(None)
        return [id_text(d["_id"]) for d in docs]

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
        if status is not TaskStatus.PENDING:
            return None
        current = await self.load(task_id)
        if current is None:
            raise NotFound("task execution", task_id)
        now = utcnow()
        halted = current.model_copy(
            update={
                "status": TaskStatus.HALTED,
                "error": HALTED_BEFORE_START,
                FINISHED_AT: now,
                "updated_at": now,
            }
        )
        written = await self._end(
            {**_by_id(task_id), "status": TaskStatus.PENDING.value},
            halted,
            [(EventType.STATUS.value, HALTED_BEFORE_START_EVENT)],
            webhook=False,
            changed=("status", "error", FINISHED_AT, "updated_at"),
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
