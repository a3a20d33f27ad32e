"""`runtime.store.WebhookStore` on PostgreSQL: the per-workflow secrets, the queued deliveries
and the log of their attempts (see `runtime.webhooks` for how deliveries are sent)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tbd_agents.domain.models import TaskExecution
from tbd_agents.runtime.store import DueDelivery
from tbd_agents.runtime.webhook_messages import (
    Attempt,
    Delivery,
    delivery_of,
    event_of,
    json_payload,
    keyed_event,
)
from tbd_agents.storage.postgres.engine import json_dumps
from tbd_agents.storage.postgres.schema import TABLES
from tbd_agents.storage.postgres.schema_runtime import (
    webhook_attempts,
    webhook_deliveries,
    webhook_secrets,
)

_workflows = TABLES["workflows"]


class SqlWebhookStore:
    """`runtime.store.WebhookStore` on PostgreSQL (`webhook_secrets`, `webhook_deliveries`,
    `webhook_attempts`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def stored_secret(self, workflow_id: str) -> str | None:
        async with self.engine.connect() as conn:
            stored: str | None = (
                await conn.execute(
                    select(webhook_secrets.c.encrypted_secret).where(
                        webhook_secrets.c.workflow_id == workflow_id
                    )
                )
            ).scalar_one_or_none()
        return stored

    async def workflow_exists(self, workflow_id: str) -> bool:
        async with self.engine.connect() as conn:
            found = (
                await conn.execute(select(_workflows.c.id).where(_workflows.c.id == workflow_id))
            ).scalar_one_or_none()
        return found is not None

    async def save_secret(self, workflow_id: str, encrypted: str, *, replace: bool) -> None:
        stmt = insert(webhook_secrets).values(workflow_id=workflow_id, encrypted_secret=encrypted)
        async with self.engine.begin() as conn:
            if replace:
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[webhook_secrets.c.workflow_id],
                        set_={"encrypted_secret": encrypted, "updated_at": func.now()},
                    )
                )
            else:
                await conn.execute(stmt.on_conflict_do_nothing())

    async def enqueue(self, task: TaskExecution) -> str | None:
        """`enqueue_on` in a transaction of its own."""
        async with self.engine.begin() as conn:
            return await self.enqueue_on(conn, task)

    @staticmethod
    async def enqueue_on(conn: AsyncConnection, task: TaskExecution) -> str | None:
        """Queue the webhook of a finished run on `conn` (in the transaction that records the
        end of the run, so a crash cannot lose it), if its workflow has one; the delivery id.

        Queueing twice for the same run and event is a no-op (unique key)."""
        event = event_of(task)
        column = (
            _workflows.c.error_webhook_url if event == "task.failed" else _workflows.c.webhook_url
        )
        row = (
            await conn.execute(
                select(column, _workflows.c.title).where(_workflows.c.id == task.workflow_id)
            )
        ).one_or_none()
        if row is None or not row[0]:
            return None
        url, title = row[0], row[1]
        stmt = (
            insert(webhook_deliveries)
            .values(
                task_id=task.id,
                workflow_id=task.workflow_id,
                event=event,
                url=url,
                payload=json_payload(task, title),
            )
            .on_conflict_do_nothing()
            .returning(webhook_deliveries.c.id)
        )
        delivery_id: str | None = (await conn.execute(stmt)).scalar_one_or_none()
        return delivery_id

    async def enqueue_event(
        self, task: TaskExecution, event: str, key: str, payload: dict[str, Any]
    ) -> str | None:
        """Queue a webhook about `task` that is not its end (`approval_requested`) to the
        workflow's `webhook_url`, once per `key`; the delivery id (None: no URL, or queued)."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(_workflows.c.webhook_url).where(_workflows.c.id == task.workflow_id)
                )
            ).one_or_none()
            if row is None or not row[0]:
                return None
            stmt = (
                insert(webhook_deliveries)
                .values(
                    task_id=task.id,
                    workflow_id=task.workflow_id,
                    event=keyed_event(event, key),
                    url=row[0],
                    payload=json.loads(json_dumps(payload)),
                )
                .on_conflict_do_nothing()
                .returning(webhook_deliveries.c.id)
            )
            delivery_id: str | None = (await conn.execute(stmt)).scalar_one_or_none()
        return delivery_id

    async def claim_due(self, limit: int, hold: timedelta) -> list[DueDelivery]:
        due = (
            select(webhook_deliveries.c.id)
            .where(webhook_deliveries.c.status == "pending")
            .where(webhook_deliveries.c.next_attempt_at <= func.now())
            .order_by(webhook_deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("due")
        )
        stmt = (
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id.in_(select(due.c.id)))
            .values(
                attempts=webhook_deliveries.c.attempts + 1,
                next_attempt_at=func.now() + hold,
                updated_at=func.now(),
            )
            .returning(*webhook_deliveries.c)
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            DueDelivery(r.id, r.task_id, r.workflow_id, r.event, r.url, dict(r.payload), r.attempts)
            for r in rows
        ]

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
        values: dict[str, Any] = {
            "last_status_code": status_code,
            "last_error": error,
            "updated_at": func.now(),
        }
        if error is None:
            values.update(status="delivered", delivered_at=func.now())
        elif exhausted:
            values.update(status="failed")
        elif retry_after is not None:
            values.update(next_attempt_at=func.now() + retry_after)
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(webhook_attempts).values(
                    delivery_id=delivery.id,
                    attempt=delivery.attempts,
                    status_code=status_code,
                    error=error,
                    duration_ms=duration_ms,
                )
            )
            await conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery.id)
                .values(**values)
            )

    async def list_deliveries(
        self, *, workflow_id: str | None, task_id: str | None, limit: int
    ) -> list[Delivery]:
        stmt = select(webhook_deliveries).order_by(webhook_deliveries.c.created_at.desc())
        if workflow_id is not None:
            stmt = stmt.where(webhook_deliveries.c.workflow_id == workflow_id)
        if task_id is not None:
            stmt = stmt.where(webhook_deliveries.c.task_id == task_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt.limit(limit))).all()
            ids = [r.id for r in rows]
            attempts = (
                (
                    await conn.execute(
                        select(webhook_attempts)
                        .where(webhook_attempts.c.delivery_id.in_(ids))
                        .order_by(webhook_attempts.c.delivery_id, webhook_attempts.c.attempt)
                    )
                ).all()
                if ids
                else []
            )
        by_delivery: dict[str, list[Attempt]] = {}
        for a in attempts:
            by_delivery.setdefault(a.delivery_id, []).append(
                Attempt(a.attempt, a.status_code, a.error, a.duration_ms)
            )
        return [delivery_of(r, by_delivery.get(r.id, ())) for r in rows]

    async def prune_deliveries(
        self, created_before: datetime, limit: int, *, dry_run: bool = False
    ) -> int:
        t = webhook_deliveries
        over = (t.c.status.in_(("delivered", "failed")), t.c.created_at < created_before)
        async with self.engine.begin() as conn:
            if dry_run:
                return int((await conn.execute(select(func.count()).where(*over))).scalar_one())
            oldest = select(t.c.id).where(*over).order_by(t.c.created_at).limit(limit)
            result = await conn.execute(delete(t).where(t.c.id.in_(oldest.scalar_subquery())))
        return int(result.rowcount or 0)  # attempts go by their foreign key's cascade
