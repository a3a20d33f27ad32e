"""tool_approvals: human approval of tool calls (tool policies, paused runs, approval records)

Also lets `webhook_deliveries.event` hold `approval_requested/<approval id>`. Adds
`agents.tool_policy` and `workflows.tool_policy` (NULL: no approvals, as before),
`task_executions.paused_state` (what a run paused for approval resumes from), the task status
`awaiting_approval`, and the `tool_approvals` table (`domain/approvals.py`). Downgrade drops
them; a run still awaiting approval is marked failed first (the older schema has no such
status).

Revision ID: a19a0001c0de
Revises: c19c0003fade
Create Date: 2026-12-16 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "a19a0001c0de"
down_revision: str | Sequence[str] | None = "c19c0003fade"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES_BEFORE = ("pending", "running", "completed", "failed", "halted", "max_turns_reached")
_STATUSES_AFTER = (*_STATUSES_BEFORE, "awaiting_approval")
_EVENTS_BEFORE = "event IN ('task.completed', 'task.failed')"
#: An approval_requested webhook per approval (`approval_requested/<approval id>`).
_EVENTS_AFTER = f"{_EVENTS_BEFORE} OR event LIKE 'approval_requested/%'"
_INDEXED = ("created_at", "task_id", "workflow_id", "owner", "status", "expires_at")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _json(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, postgresql.JSONB(astext_type=sa.Text()), nullable=nullable)


def upgrade() -> None:
    now = sa.text("now()")
    op.add_column("agents", _json("tool_policy"))
    op.add_column("workflows", _json("tool_policy"))
    op.add_column("task_executions", _json("paused_state"))
    op.drop_constraint(op.f("ck_task_executions_status"), "task_executions", type_="check")
    op.create_check_constraint(
        op.f("ck_task_executions_status"), "task_executions", _in("status", _STATUSES_AFTER)
    )
    op.drop_constraint(op.f("ck_webhook_deliveries_event"), "webhook_deliveries", type_="check")
    op.create_check_constraint(
        op.f("ck_webhook_deliveries_event"), "webhook_deliveries", _EVENTS_AFTER
    )
    op.create_table(
        "tool_approvals",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at", postgresql.TIMESTAMP(timezone=True), server_default=now, nullable=False
        ),
        sa.Column(
            "updated_at", postgresql.TIMESTAMP(timezone=True), server_default=now, nullable=False
        ),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "extras",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("tool_name", sa.Text(), nullable=False),
        sa.Column("call_id", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("origin", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "arguments",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        _json("parameters"),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("rule", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decided_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        _json("edited_arguments"),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("expires_at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("on_timeout", sa.Text(), server_default=sa.text("'deny'"), nullable=False),
        sa.CheckConstraint("version >= 0", name=op.f("ck_tool_approvals_version_range")),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'denied', 'expired')",
            name=op.f("ck_tool_approvals_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_approvals")),
    )
    for column in _INDEXED:
        op.create_index(f"idx_tool_approvals_{column}", "tool_approvals", [column], unique=False)


def downgrade() -> None:
    for column in reversed(_INDEXED):
        op.drop_index(f"idx_tool_approvals_{column}", table_name="tool_approvals")
    op.drop_table("tool_approvals")
    op.execute(
        "UPDATE task_executions SET status = 'failed', finished_at = now(), "
        "error = 'the schema was downgraded while the run awaited approval' "
        "WHERE status = 'awaiting_approval'"
    )
    op.drop_constraint(op.f("ck_task_executions_status"), "task_executions", type_="check")
    op.create_check_constraint(
        op.f("ck_task_executions_status"), "task_executions", _in("status", _STATUSES_BEFORE)
    )
    op.execute("DELETE FROM webhook_deliveries WHERE event LIKE 'approval_requested/%'")
    op.drop_constraint(op.f("ck_webhook_deliveries_event"), "webhook_deliveries", type_="check")
    op.create_check_constraint(
        op.f("ck_webhook_deliveries_event"), "webhook_deliveries", _EVENTS_BEFORE
    )
    op.drop_column("task_executions", "paused_state")
    op.drop_column("workflows", "tool_policy")
    op.drop_column("agents", "tool_policy")
