"""Tables of the run-time: run events, halt requests, schedule occurrences and webhook deliveries.

They sit on the shared `metadata` next to the 15 document tables and follow the same naming
convention. Every row belongs to a task execution, a schedule or a workflow and is deleted with it
(cascading foreign keys), so no orphan rows survive their parent.

- `run_events`: the append-only event log of each run, keyed by (task_id, seq). `seq` numbers a
  run's events from 1 without gaps; it is the SSE event id a client sends back as
  `Last-Event-ID`.
- `run_halts`: one row per run whose halt was requested (the cross-process halt flag).
- `schedule_occurrences`: one row per occurrence of a schedule that a scheduler claimed; its
  primary key (scheduled_agent_id, occurrence_at) makes each occurrence fire at most once.
- `webhook_secrets`: the per-workflow HMAC secret (encrypted at rest).
- `webhook_deliveries` / `webhook_attempts`: the delivery outbox (one row per webhook to send,
  retried with backoff) and the log of every HTTP attempt.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

from tbd_agents.storage.postgres.schema import metadata

_NOW = text("now()")


def _ts(name: str, *, nullable: bool = False, now: bool = True) -> Column[object]:
    return Column(
        name, TIMESTAMP(timezone=True), nullable=nullable, server_default=_NOW if now else None
    )


OCCURRENCE_OUTCOMES = ("fired", "skipped_overlap", "skipped_missed")
DELIVERY_EVENTS = ("task.completed", "task.failed")
#: Deliveries sent more than once per run carry a key: `approval_requested/<approval id>`.
KEYED_DELIVERY_EVENTS = ("approval_requested",)
DELIVERY_STATUSES = ("pending", "delivered", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


#: The `event` check of `webhook_deliveries`.
DELIVERY_EVENT_CHECK = " OR ".join(
    [_in("event", DELIVERY_EVENTS), *(f"event LIKE '{e}/%'" for e in KEYED_DELIVERY_EVENTS)]
)


run_events = Table(
    "run_events",
    metadata,
    Column(
        "task_id",
        Text,
        ForeignKey("task_executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", Integer, primary_key=True),
    Column("type", Text, nullable=False),
    Column("data", JSONB(none_as_null=True), nullable=False, server_default=text("'{}'::jsonb")),
    _ts("created_at"),
    CheckConstraint("seq >= 1", name="seq_positive"),
)
Index("idx_run_events_created_at", run_events.c.created_at)

run_halts = Table(
    "run_halts",
    metadata,
    Column(
        "task_id",
        Text,
        ForeignKey("task_executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("requested_by", Text, nullable=True),
    _ts("requested_at"),
)

schedule_occurrences = Table(
    "schedule_occurrences",
    metadata,
    Column(
        "scheduled_agent_id",
        Text,
        ForeignKey("scheduled_agents.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("occurrence_at", TIMESTAMP(timezone=True), primary_key=True),
    Column("outcome", Text, nullable=False),
    Column("missed", Integer, nullable=False, server_default=text("0")),
    Column(
        "task_id",
        Text,
        ForeignKey("task_executions.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("claimed_by", Text, nullable=False),
    _ts("created_at"),
    CheckConstraint(_in("outcome", OCCURRENCE_OUTCOMES), name="outcome"),
    CheckConstraint("missed >= 0", name="missed_range"),
)
Index("idx_schedule_occurrences_task_id", schedule_occurrences.c.task_id)

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column(
        "workflow_id",
        Text,
        ForeignKey("workflows.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("encrypted_secret", Text, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Text, primary_key=True, server_default=text("gen_random_uuid()::text")),
    Column(
        "task_id",
        Text,
        ForeignKey("task_executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "workflow_id",
        Text,
        ForeignKey("workflows.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("event", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", JSONB(none_as_null=True), nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    _ts("next_attempt_at"),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    _ts("delivered_at", nullable=True, now=False),
    _ts("created_at"),
    _ts("updated_at"),
    UniqueConstraint("task_id", "event"),
    CheckConstraint(DELIVERY_EVENT_CHECK, name="event"),
    CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
    CheckConstraint("attempts >= 0", name="attempts_range"),
)
Index("idx_webhook_deliveries_workflow_id", webhook_deliveries.c.workflow_id)
Index(
    "idx_webhook_deliveries_status_next_attempt_at",
    webhook_deliveries.c.status,
    webhook_deliveries.c.next_attempt_at,
)

#: Retention deletes deliveries by age (services/retention.py).
Index("idx_webhook_deliveries_created_at", webhook_deliveries.c.created_at)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "delivery_id",
        Text,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("attempt", Integer, primary_key=True),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Double, nullable=False),
    _ts("created_at"),
)

RUNTIME_TABLES = (
    run_events,
    run_halts,
    schedule_occurrences,
    webhook_secrets,
    webhook_deliveries,
    webhook_attempts,
)
