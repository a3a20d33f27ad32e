"""What a webhook carries: its headers and signature, the body of a finished run (the existing
TBD Agents keys and ours), and the delivery records the API lists. Pure functions and values;
sending and storing are in `runtime.webhooks` and the webhook stores."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.domain.types import utcnow
from tbd_agents.storage.postgres.engine import json_dumps

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
