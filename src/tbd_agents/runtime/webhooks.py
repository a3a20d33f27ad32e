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

Here: sending (`WebhookService`) and the address check. What a webhook carries (headers,
signature, body, delivery records) is in `runtime.webhook_messages`, the PostgreSQL store in
`runtime.sql_webhooks` (the MongoDB one in `runtime.mongo_webhooks`); their names are
re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.config import Settings
from tbd_agents.domain.models import TaskExecution
from tbd_agents.errors import InvalidData, NotFound, TbdError
from tbd_agents.observability.metrics import WEBHOOK_DELIVERIES, WEBHOOK_DURATION
from tbd_agents.observability.spans import fail, span
from tbd_agents.runtime.sql_webhooks import SqlWebhookStore
from tbd_agents.runtime.store import DueDelivery
from tbd_agents.runtime.webhook_messages import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    USER_AGENT,
    Attempt,
    Delivery,
    delivery_of,
    error_kind,
    event_of,
    header_event,
    json_payload,
    keyed_event,
    payload_of,
    sign,
    verify_signature,
)
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

if TYPE_CHECKING:
    from tbd_agents.runtime.store import WebhookStore

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "USER_AGENT",
    "Attempt",
    "Delivery",
    "HostPolicy",
    "SecretCipher",
    "SqlWebhookStore",
    "WebhookRefused",
    "WebhookService",
    "delivery_of",
    "error_kind",
    "event_of",
    "header_event",
    "json_payload",
    "keyed_event",
    "payload_of",
    "resolve_checked",
    "sign",
    "verify_signature",
]

_log = logging.getLogger(__name__)

_event_of = event_of  # the name this module used before


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
