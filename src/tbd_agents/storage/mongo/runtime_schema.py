"""The run-time's collections on MongoDB: names, indexes and the links deletions follow.

They mirror the PostgreSQL tables of `storage/postgres/schema_runtime.py` (same names, same
fields) and live in the same database as the 15 document collections:

- `run_events`: one document per event, unique on (task_id, seq).
- `run_halts`: one document per run whose halt was requested; `_id` is the task id.
- `schedule_occurrences`: one document per claimed occurrence, unique on
  (scheduled_agent_id, occurrence_at), so an occurrence is claimed at most once.
- `webhook_secrets`: `_id` is the workflow id; the secret is encrypted at rest.
- `webhook_deliveries` (unique on (task_id, event)) and `webhook_attempts` (unique on
  (delivery_id, attempt)): the delivery outbox and its attempt log.

MongoDB has no foreign keys. `RUNTIME_CHILDREN` lists what PostgreSQL's cascading keys delete (or
set to null) when a task execution, workflow or schedule is deleted; `MongoRepository` applies
it after deleting a parent (`delete_runtime_children`). Indexes are created when the store opens
(`ensure_collection_indexes`), like the entities' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tbd_agents.storage.mongo.indexes import IndexSpec

RUN_EVENTS = "run_events"
RUN_HALTS = "run_halts"
SCHEDULE_OCCURRENCES = "schedule_occurrences"
WEBHOOK_SECRETS = "webhook_secrets"
WEBHOOK_DELIVERIES = "webhook_deliveries"
WEBHOOK_ATTEMPTS = "webhook_attempts"

RUNTIME_COLLECTIONS = (
    RUN_EVENTS,
    RUN_HALTS,
    SCHEDULE_OCCURRENCES,
    WEBHOOK_SECRETS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_ATTEMPTS,
)

#: The field of a task execution document that holds the writes its last state change still
#: owes (events, webhook); see `runtime/mongo_store.py`. Not a model field, and not one of the
#: record's extras either (`codec.INTERNAL_KEYS`).
OUTBOX_FIELD = "runtime_outbox"


def _spec(name: str, *fields: tuple[str, int], unique: bool = False) -> IndexSpec:
    return IndexSpec(name, tuple(fields), unique=unique)


#: Collection → the indexes the run-time needs there (its own collections, plus two on
#: `task_executions` for the reaper and the follow-up sweep).
RUNTIME_INDEXES: dict[str, tuple[IndexSpec, ...]] = {
    RUN_EVENTS: (
        _spec("uq_run_events_task_id_seq", ("task_id", 1), ("seq", 1), unique=True),
        _spec("idx_run_events_created_at", ("created_at", 1)),
    ),
    SCHEDULE_OCCURRENCES: (
        _spec(
            "uq_schedule_occurrences_scheduled_agent_id_occurrence_at",
            ("scheduled_agent_id", 1),
            ("occurrence_at", 1),
            unique=True,
        ),
        _spec("idx_schedule_occurrences_task_id", ("task_id", 1)),
    ),
    WEBHOOK_DELIVERIES: (
        _spec("uq_webhook_deliveries_task_id_event", ("task_id", 1), ("event", 1), unique=True),
        _spec("idx_webhook_deliveries_workflow_id", ("workflow_id", 1)),
        _spec(
            "idx_webhook_deliveries_status_next_attempt_at",
            ("status", 1),
            ("next_attempt_at", 1),
        ),
        _spec("idx_webhook_deliveries_created_at", ("created_at", 1)),  # retention
    ),
    WEBHOOK_ATTEMPTS: (
        _spec(
            "uq_webhook_attempts_delivery_id_attempt",
            ("delivery_id", 1),
            ("attempt", 1),
            unique=True,
        ),
    ),
    "task_executions": (
        _spec("idx_task_executions_status_heartbeat_at", ("status", 1), ("heartbeat_at", 1)),
        _spec("idx_task_executions_runtime_outbox", (f"{OUTBOX_FIELD}.claimed_at", 1)),
    ),
}


class OnDelete(StrEnum):
    DELETE = "delete"
    SET_NULL = "set_null"


@dataclass(frozen=True, slots=True)
class Link:
    """Documents of `collection` whose `field` holds the id of a deleted parent."""

    collection: str
    field: str
    on_delete: OnDelete = OnDelete.DELETE


#: Parent collection → the run-time documents that depend on its records.
RUNTIME_CHILDREN: dict[str, tuple[Link, ...]] = {
    "task_executions": (
        Link(RUN_EVENTS, "task_id"),
        Link(RUN_HALTS, "_id"),
        Link(WEBHOOK_DELIVERIES, "task_id"),
        Link(SCHEDULE_OCCURRENCES, "task_id", OnDelete.SET_NULL),
    ),
    "workflows": (Link(WEBHOOK_SECRETS, "_id"), Link(WEBHOOK_DELIVERIES, "workflow_id")),
    "scheduled_agents": (Link(SCHEDULE_OCCURRENCES, "scheduled_agent_id"),),
    WEBHOOK_DELIVERIES: (Link(WEBHOOK_ATTEMPTS, "delivery_id"),),
}


async def delete_runtime_children(database: Any, parent: str, forms: Sequence[Any]) -> None:
    """Apply `RUNTIME_CHILDREN` for deleted records of `parent` (`forms`: every stored form of
    their ids). Deleting a delivery deletes its attempts in turn."""
    if not forms:
        return
    for link in RUNTIME_CHILDREN.get(parent, ()):
        collection = database.get_collection(link.collection)
        match = {link.field: {"$in": list(forms)}}
        if link.on_delete is OnDelete.SET_NULL:
            await collection.update_many(match, {"$set": {link.field: None}})
            continue
        if link.collection in RUNTIME_CHILDREN:
            ids = [d["_id"] for d in await collection.find(match, {"_id": 1}).to_list(None)]
            if not ids:
                continue
            await collection.delete_many({"_id": {"$in": ids}})
            await delete_runtime_children(database, link.collection, [str(i) for i in ids])
        else:
            await collection.delete_many(match)
