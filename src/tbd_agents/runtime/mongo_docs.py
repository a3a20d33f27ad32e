"""Document helpers shared by the MongoDB run store (`runtime/mongo_store.py`): the names of
task fields it writes, id and reference filters, and the event/outbox document shapes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.runtime.events import (
    TERMINAL_STATUSES,
    RunEvent,
)
from tbd_agents.storage.mongo.codec import (
    bson_value,
    id_forms,
    plain_value,
)
from tbd_agents.storage.postgres.engine import json_dumps

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
