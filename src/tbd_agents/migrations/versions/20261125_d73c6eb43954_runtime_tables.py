"""Run-time tables: run events, halt requests, schedule occurrences, webhook secrets and deliveries.

The schedule policies of `scheduled_agents` (`overlap_policy`, `missed_run_policy`) are added by
revision 5d2e8a41c9f0, before the pgvector revision, so documents-only servers get them too.
Generated with `alembic revision --autogenerate` from `storage/postgres/schema_runtime.py` and the
domain model, then reviewed.

Revision ID: d73c6eb43954
Revises: ab052ede29df
Create Date: 2026-11-25 20:33:31.808241+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "d73c6eb43954"
down_revision: str | Sequence[str] | None = "ab052ede29df"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("encrypted_secret", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_webhook_secrets_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_id", name=op.f("pk_webhook_secrets")),
    )
    op.create_table(
        "run_events",
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column(
            "data",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_run_events_seq_positive")),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task_executions.id"],
            name=op.f("fk_run_events_task_id_task_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "seq", name=op.f("pk_run_events")),
    )
    op.create_index("idx_run_events_created_at", "run_events", ["created_at"], unique=False)
    op.create_table(
        "run_halts",
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=True),
        sa.Column(
            "requested_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task_executions.id"],
            name=op.f("fk_run_halts_task_id_task_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_run_halts")),
    )
    op.create_table(
        "schedule_occurrences",
        sa.Column("scheduled_agent_id", sa.Text(), nullable=False),
        sa.Column("occurrence_at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("missed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "outcome IN ('fired', 'skipped_overlap', 'skipped_missed')",
            name=op.f("ck_schedule_occurrences_outcome"),
        ),
        sa.CheckConstraint("missed >= 0", name=op.f("ck_schedule_occurrences_missed_range")),
        sa.ForeignKeyConstraint(
            ["scheduled_agent_id"],
            ["scheduled_agents.id"],
            name=op.f("fk_schedule_occurrences_scheduled_agent_id_scheduled_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task_executions.id"],
            name=op.f("fk_schedule_occurrences_task_id_task_executions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint(
            "scheduled_agent_id", "occurrence_at", name=op.f("pk_schedule_occurrences")
        ),
    )
    op.create_index(
        "idx_schedule_occurrences_task_id", "schedule_occurrences", ["task_id"], unique=False
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column(
            "payload", postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), nullable=False
        ),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "next_attempt_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "event IN ('task.completed', 'task.failed')", name=op.f("ck_webhook_deliveries_event")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_webhook_deliveries_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_deliveries_attempts_range")),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task_executions.id"],
            name=op.f("fk_webhook_deliveries_task_id_task_executions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_webhook_deliveries_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("task_id", "event", name=op.f("uq_webhook_deliveries_task_id_event")),
    )
    op.create_index(
        "idx_webhook_deliveries_status_next_attempt_at",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_index(
        "idx_webhook_deliveries_workflow_id", "webhook_deliveries", ["workflow_id"], unique=False
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", "attempt", name=op.f("pk_webhook_attempts")),
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_index("idx_webhook_deliveries_workflow_id", table_name="webhook_deliveries")
    op.drop_index("idx_webhook_deliveries_status_next_attempt_at", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("idx_schedule_occurrences_task_id", table_name="schedule_occurrences")
    op.drop_table("schedule_occurrences")
    op.drop_table("run_halts")
    op.drop_index("idx_run_events_created_at", table_name="run_events")
    op.drop_table("run_events")
    op.drop_table("webhook_secrets")
