"""Schedule occurrences on MongoDB: claimed once by their unique key (see
`runtime/mongo_store.py` for the guarantees)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError

from tbd_agents.domain.enums import TaskTrigger
from tbd_agents.domain.models import ScheduledAgent, TaskExecution
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import InvalidData
from tbd_agents.runtime.mongo_docs import (
    _ACTIVE,
    _ENABLED,
    Doc,
    _by_id,
    _ref,
    _set,
)
from tbd_agents.runtime.scheduler import Outcome
from tbd_agents.storage.mongo.codec import (
    bson_value,
    from_document,
    id_forms,
    id_text,
    to_document,
)

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tbd_agents.runtime.mongo_store import MongoRunStore


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
            self._unchanged(schedule),
            {"$set": {"next_run_at": bson_value(next_run_at)}, "$inc": {"version": 1}},
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
        await self.schedules.update_one(
            self._unchanged(schedule), {"$set": _set(changes), "$inc": {"version": 1}}
        )

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
