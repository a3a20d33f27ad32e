"""`runtime.store.EventLog` on MongoDB: the `run_events` collection (numbering without a
transaction: see `runtime/mongo_store.py`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import NotFound, StorageError
from tbd_agents.runtime.events import (
    TERMINAL_STATUSES,
    RunEvent,
)
from tbd_agents.runtime.mongo_docs import (
    _APPEND_RETRIES,
    _PURGE_BATCH,
    FINISHED_AT,
    _by_id,
    _event,
    _json,
    _status,
)
from tbd_agents.runtime.store import chunks
from tbd_agents.storage.mongo.codec import (
    id_forms,
    id_text,
    plain_value,
)
from tbd_agents.storage.mongo.runtime_schema import (
    RUN_EVENTS,
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
