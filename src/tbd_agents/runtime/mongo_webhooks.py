"""The webhook outbox of the MongoDB run store: `webhook_secrets`, `webhook_deliveries` and
`webhook_attempts` (see `runtime/mongo_store.py` for the guarantees)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from tbd_agents.domain.models import TaskExecution
from tbd_agents.domain.types import new_id, utcnow
from tbd_agents.runtime.mongo_docs import (
    Doc,
    _by_id,
)
from tbd_agents.runtime.store import DueDelivery
from tbd_agents.runtime.webhooks import (
    Attempt,
    Delivery,
    event_of,
    json_payload,
    keyed_event,
)
from tbd_agents.storage.mongo.codec import (
    id_text,
    plain_value,
)
from tbd_agents.storage.mongo.runtime_schema import (
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_SECRETS,
)
from tbd_agents.storage.postgres.engine import json_dumps

_log = logging.getLogger(__name__)


def _title(workflow: Mapping[str, Any] | None) -> str | None:
    title = workflow.get("title") if workflow is not None else None
    return str(title) if title is not None else None


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
        workflow = await self.workflows.find_one(_by_id(task.workflow_id), {field: 1, "title": 1})
        url = workflow.get(field) if workflow is not None else None
        if not url:
            return None
        return await self._insert(task, event, str(url), json_payload(task, _title(workflow)))

    async def enqueue_event(
        self, task: TaskExecution, event: str, key: str, payload: dict[str, Any]
    ) -> str | None:
        workflow = await self.workflows.find_one(_by_id(task.workflow_id), {"webhook_url": 1})
        url = workflow.get("webhook_url") if workflow is not None else None
        if not url:
            return None
        payload = json.loads(json_dumps(payload))
        return await self._insert(task, keyed_event(event, key), str(url), payload)

    async def _insert(
        self, task: TaskExecution, event: str, url: str, payload: dict[str, Any]
    ) -> str | None:
        """Queue a pending delivery; None when this run already has one for `event` (the
        unique (task_id, event) index)."""
        now = utcnow()
        delivery_id = new_id()
        try:
            await self.deliveries.insert_one(
                {
                    "_id": delivery_id,
                    "task_id": task.id,
                    "workflow_id": task.workflow_id,
                    "event": event,
                    "url": url,
                    "payload": payload,
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

    async def prune_deliveries(
        self, created_before: datetime, limit: int, *, dry_run: bool = False
    ) -> int:
        over = {"status": {"$in": ["delivered", "failed"]}, "created_at": {"$lt": created_before}}
        if dry_run:
            return int(await self.deliveries.count_documents(over))
        oldest = self.deliveries.find(over, {"_id": 1}, sort=[("created_at", 1)], limit=limit)
        ids = [d["_id"] for d in await oldest.to_list(None)]
        if not ids:
            return 0
        result = await self.deliveries.delete_many({"_id": {"$in": ids}})
        await self.attempts.delete_many({"delivery_id": {"$in": [str(i) for i in ids]}})
        return int(result.deleted_count)
