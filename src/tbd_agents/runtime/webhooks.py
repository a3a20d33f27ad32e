"""Completion and failure webhooks: signed, retried with backoff, logged, checked at send time.

When a run ends, one delivery is queued in `webhook_deliveries` (a table on PostgreSQL, a
collection on MongoDB: `runtime.store.WebhookStore`) (completed / halted / max turns →
the workflow's `webhook_url`; failed → its `error_webhook_url`). Any runtime process then sends
due deliveries (`deliver_due`), each claimed for the length of one attempt so two processes never
send the same attempt, and every attempt is logged in `webhook_attempts`. A failed attempt is
retried after `WEBHOOK_BACKOFF_SECONDS`, doubled each time, up to `WEBHOOK_MAX_ATTEMPTS`.

Every request carries:
- `X-TBD-Event`: `task.completed` or `task.failed`; `X-TBD-Delivery`: the delivery id;
- `X-TBD-Timestamp`: Unix seconds; `X-TBD-Signature`: `sha256=` + hex HMAC-SHA256 of
  `"{timestamp}.{body}"` with the workflow's secret (`verify_signature` checks one).

Before each attempt the host is resolved and every address checked (`security.outbound`):
private, loopback, link-local, multicast, reserved, unspecified and cloud-metadata addresses are
refused unless the host or address is listed in `WEBHOOK_ALLOWED_HOSTS` (separate from
`OUTBOUND_ALLOWED_HOSTS`: webhook targets are not trusted by owner). The request then goes to the checked address (the host
name is kept for the Host header and TLS), so DNS cannot answer differently between the check
and the connection. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx
from opentelemetry.trace import SpanKind
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tbd_agents.config import Settings
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import InvalidData, NotFound, TbdError
from tbd_agents.observability.metrics import WEBHOOK_DELIVERIES, WEBHOOK_DURATION
from tbd_agents.observability.spans import fail, span
from tbd_agents.runtime.store import DueDelivery
from tbd_agents.security.outbound import (
    Address,
    HostPolicy,
    OutboundPolicy,
    OutboundRefused,
    check_url,
    is_internal,
    pinned_url,
)
from tbd_agents.storage.postgres.engine import json_dumps
from tbd_agents.storage.postgres.schema import TABLES
from tbd_agents.storage.postgres.schema_runtime import (
    webhook_attempts,
    webhook_deliveries,
    webhook_secrets,
)

if TYPE_CHECKING:
    from tbd_agents.runtime.store import WebhookStore

_log = logging.getLogger(__name__)
_workflows = TABLES["workflows"]

SIGNATURE_HEADER = "X-TBD-Signature"
TIMESTAMP_HEADER = "X-TBD-Timestamp"
DELIVERY_HEADER = "X-TBD-Delivery"
EVENT_HEADER = "X-TBD-Event"
USER_AGENT = "tbd-agents-webhooks/1"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: float | None = 300.0
) -> bool:
    """True if `signature` is ours for `body` and `timestamp` (within `tolerance` seconds)."""
    if tolerance is not None:
        try:
            if abs(time.time() - int(timestamp)) > tolerance:
                return False
        except ValueError:
            return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class SecretCipher(Protocol):
    """Encrypts secrets at rest (the API's `TokenCipher` fits)."""

    def encrypt(self, plaintext: str) -> tuple[str, int]: ...

    def decrypt(self, ciphertext: str) -> str: ...


class WebhookRefused(Exception):
    """The URL may not be called (scheme, or an address the allow-list does not permit)."""


_is_internal = is_internal  # the name this module used before security.outbound existed


async def resolve_checked(url: str, policy: HostPolicy) -> tuple[str, int, list[Address]]:
    """(host, port, the addresses to connect to, in resolver order) for `url`, or
    WebhookRefused saying why not. Every address is checked, not only the first
    (security.outbound with WEBHOOK_ALLOWED_HOSTS as the allow-list; no owner is trusted)."""
    checked = OutboundPolicy(allowed=policy, setting="WEBHOOK_ALLOWED_HOSTS", hint="")
    try:
        return await check_url(url, checked, "webhook")
    except OutboundRefused as exc:
        raise WebhookRefused(exc.message) from None


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    task_id: str
    workflow_id: str
    event: str
    url: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    log: tuple[Attempt, ...] = ()


def keyed_event(event: str, key: str) -> str:
    """The stored event of a delivery sent more than once per run (one per `key`): the
    `X-TBD-Event` header carries `event` alone (`header_event`)."""
    return f"{event}/{key}"


def header_event(stored: str) -> str:
    return stored.partition("/")[0]


def event_of(task: TaskExecution) -> str:
    """The webhook event of a finished run."""
    return "task.failed" if task.status is TaskStatus.FAILED else "task.completed"


_event_of = event_of


#: The existing `error_type` names, with the words of an error message that select each one
#: (checked in this order; anything else is `api_error`, and a run without a message
#: `internal_error`).
_ERROR_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rate_limit_exceeded", ("rate limit", "rate-limit", "ratelimit", "429", "too many requests")),
    ("authentication_error", ("401", "403", "unauthori", "authenticat", "forbidden", "api key")),
    ("timeout_error", ("timed out", "timeout")),
    ("connection_error", ("connect", "unreachable", "refused", "dns", "name resolution")),
    ("http_error", ("http ", "status code", "502", "503", "500")),
)
_STATUS_CODE = re.compile(r"\b([1-5]\d\d)\b")


def error_kind(message: str | None) -> tuple[str, int | None]:
    """The existing webhook's `(error_type, error_code)` for a run's error message: the type
    from the message's words, the code the first HTTP status number in it (None without one)."""
    if not message:
        return "internal_error", None
    text = message.lower()
    kind = next((name for name, words in _ERROR_TYPES if any(w in text for w in words)), None)
    found = _STATUS_CODE.search(message)
    return kind or "api_error", int(found.group(1)) if found else None


def payload_of(task: TaskExecution, workflow_title: str | None = None) -> dict[str, Any]:
    """The webhook body of a finished run: the existing TBD Agents keys (`task_id`,
    `workflow_id`, `workflow_title`, `prompt`, `response`, `status`, `elapsed_seconds`,
    `timestamp`; on failure `error_type`, `error_message`, `error_code`) and ours."""
    finished = task.finished_at or utcnow()
    elapsed = (
        round(max((finished - task.started_at).total_seconds(), 0.0), 3)
        if task.started_at is not None
        else None
    )
    legacy: dict[str, Any] = {
        "workflow_title": workflow_title,
        "prompt": task.prompt,
        "response": task.response,
        "elapsed_seconds": elapsed,
        "timestamp": finished,
    }
    if task.status is TaskStatus.FAILED:
        error_type, error_code = error_kind(task.error)
        legacy.update(error_type=error_type, error_message=task.error or "", error_code=error_code)
        if (task.error or "").startswith("budget_exceeded:"):  # observability/usage/budgets.py
            legacy["reason"] = "budget_exceeded"
    return {
        **legacy,
        "event": event_of(task),
        "task_id": task.id,
        "workflow_id": task.workflow_id,
        "scheduled_agent_id": task.scheduled_agent_id,
        "status": task.status.value,
        "result": task.response,
        "error": task.error,
        "turns": task.turns,
        "tool_calls": task.tool_calls,
        "usage": task.usage,
        "started_at": task.started_at,
        "completed_at": task.finished_at,
    }


def json_payload(task: TaskExecution, workflow_title: str | None = None) -> dict[str, Any]:
    """`payload_of(task)` as plain JSON values (how it is stored and sent)."""
    loaded: dict[str, Any] = json.loads(json_dumps(payload_of(task, workflow_title)))
    return loaded


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


class WebhookService:
    """Queue, send and list webhook deliveries; keep the per-workflow secrets.

    `db` is the webhook store (`runtime.store.WebhookStore`) or a PostgreSQL engine."""

    def __init__(
        self,
        db: AsyncEngine | WebhookStore,
        settings: Settings,
        cipher: SecretCipher | None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.store: WebhookStore = SqlWebhookStore(db) if isinstance(db, AsyncEngine) else db
        self.cipher = cipher
        self.policy = HostPolicy.parse(settings.webhook_allowed_hosts)
        self.max_attempts = settings.webhook_max_attempts
        self.backoff = settings.webhook_backoff_seconds
        self.timeout = settings.webhook_timeout_seconds
        self._client = client
        self._own_client = client is None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- secrets ----------------------------------------------------------------------------
    def _require_cipher(self) -> SecretCipher:
        if self.cipher is None:
            raise InvalidData(
                "webhook secrets need the token encryption key (TOKEN_ENCRYPTION_KEY or its key "
                "file) in this process"
            )
        return self.cipher

    async def secret(self, workflow_id: str, *, rotate: bool = False) -> str:
        """The workflow's signing secret, created on first use (or replaced when `rotate`)."""
        cipher = self._require_cipher()
        if not rotate:
            stored = await self.store.stored_secret(workflow_id)
            if stored is not None:
                return cipher.decrypt(stored)
        if not await self.store.workflow_exists(workflow_id):
            raise NotFound("workflow", workflow_id)
        fresh = "whsec_" + secrets.token_urlsafe(32)
        encrypted, _version = cipher.encrypt(fresh)
        await self.store.save_secret(workflow_id, encrypted, replace=rotate)
        if rotate:
            return fresh
        # A concurrent first use may have stored its own secret first: return what is stored.
        return await self.secret(workflow_id)

    # --- queueing ---------------------------------------------------------------------------
    async def enqueue_for(self, task: TaskExecution) -> str | None:
        """Queue the webhook of a finished run, if its workflow has one; the delivery id."""
        return await self.store.enqueue(task)

    async def enqueue_event(
        self, task: TaskExecution, event: str, key: str, payload: dict[str, Any]
    ) -> str | None:
        """Queue a webhook about a run that is not its end (see `WebhookStore.enqueue_event`)."""
        return await self.store.enqueue_event(task, event, key, payload)

    enqueue_on = staticmethod(SqlWebhookStore.enqueue_on)

    # --- sending ----------------------------------------------------------------------------
    async def deliver_due(self, limit: int = 20) -> int:
        """Send every delivery that is due (at most `limit`); return how many were attempted."""
        hold = timedelta(seconds=self.timeout + 30)
        claimed = await self.store.claim_due(limit, hold)
        if claimed:
            await asyncio.gather(*(self._attempt(row) for row in claimed))
        return len(claimed)

    async def _send(self, row: DueDelivery) -> tuple[int | None, str | None]:
        body = json_dumps(row.payload).encode()
        try:
            secret = await self.secret(row.workflow_id)
            host, port, addresses = await resolve_checked(row.url, self.policy)
        except WebhookRefused as exc:
            return None, str(exc)
        except TbdError as exc:
            return None, exc.message
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Host": host if port in (80, 443) else f"{host}:{port}",
            EVENT_HEADER: header_event(row.event),
            DELIVERY_HEADER: row.id,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(secret, stamp, body),
        }
        error = "no address to connect to"
        for address in addresses:  # the next checked address when one refuses the connection
            try:
                response = await self.client.post(
                    pinned_url(row.url, address, port),
                    content=body,
                    headers=headers,
                    timeout=self.timeout,
                    extensions={"sni_hostname": host},
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error = f"{type(exc).__name__} to {address}: {exc}"
                continue
            except httpx.HTTPError as exc:
                return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if 200 <= response.status_code < 300:
                return response.status_code, None
            return response.status_code, f"receiver answered HTTP {response.status_code}"
        return None, error

    async def _attempt(self, row: DueDelivery) -> None:
        started = time.perf_counter()
        attrs = {"tbd.webhook.event": row.event, "tbd.webhook.attempt": row.attempts,
                 "server.address": _host_of(row.url)}  # fmt: skip
        with span("webhook_delivery", attrs, kind=SpanKind.CLIENT) as current:
            status_code, error = await self._send(row)
            done = error is None
            exhausted = not done and row.attempts >= self.max_attempts
            outcome = "delivered" if done else "failed" if exhausted else "retrying"
            if status_code is not None:
                current.set_attribute("http.response.status_code", status_code)
            current.set_attribute("tbd.webhook.outcome", outcome)
            if not done:
                fail(current, "webhook_failed")  # not the error text: it may quote the URL
        elapsed = (time.perf_counter() - started) * 1000.0
        WEBHOOK_DELIVERIES.labels(outcome).inc()
        WEBHOOK_DURATION.observe(elapsed / 1000.0)
        retry_after = None
        if not done and not exhausted:
            retry_after = timedelta(seconds=self.backoff * (2 ** (row.attempts - 1)))
        await self.store.record_attempt(
            row, status_code, error, elapsed, exhausted=exhausted, retry_after=retry_after
        )
        if not done:
            _log.warning(
                "webhook %s attempt %d to %s failed: %s%s",
                row.id,
                row.attempts,
                row.url,
                error,
                " (giving up)" if exhausted else "",
            )

    # --- reading ----------------------------------------------------------------------------
    async def list_deliveries(
        self, *, workflow_id: str | None = None, task_id: str | None = None, limit: int = 50
    ) -> list[Delivery]:
        """Deliveries of a workflow or a run, newest first, each with its attempts in order."""
        if workflow_id is None and task_id is None:
            raise InvalidData("list_deliveries needs a workflow_id or a task_id")
        return await self.store.list_deliveries(
            workflow_id=workflow_id, task_id=task_id, limit=limit
        )


def _host_of(url: str) -> str | None:
    """The receiver's host (never the whole URL: its query may hold a token)."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def delivery_of(row: Any, log: Sequence[Attempt]) -> Delivery:
    """A `Delivery` from a stored delivery (anything with its fields as attributes)."""
    return Delivery(
        id=row.id,
        task_id=row.task_id,
        workflow_id=row.workflow_id,
        event=row.event,
        url=row.url,
        status=row.status,
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        log=tuple(log),
    )
