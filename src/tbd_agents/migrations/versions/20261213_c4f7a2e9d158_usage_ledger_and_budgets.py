"""usage_calls, usage_daily, usage_monthly and budgets: the usage ledger and spending limits

Every model call (turns and compaction summaries) is recorded once in `usage_calls` (unique
`call_key`) and added, in the same statement, to its UTC day's row of `usage_daily` (day, user,
agent, workflow, schedule, provider, model) and its month's row of `usage_monthly`, which the
usage API reads. `budgets` holds the limits
checked before each call. No foreign keys: usage outlives the records it names.

Downgrade drops the four tables (the usage history with them).

Revision ID: c4f7a2e9d158
Revises: 7e2b4d8f1c35
Create Date: 2026-12-13 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "c4f7a2e9d158"
down_revision: str | Sequence[str] | None = "7e2b4d8f1c35"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COST = sa.Numeric(20, 12)
_TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_calls",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("call_key", sa.Text(), nullable=False),
        sa.Column("at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("agent_id", sa.Text(), nullable=True),
        sa.Column("workflow_id", sa.Text(), nullable=True),
        sa.Column("schedule_id", sa.Text(), nullable=True),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.Column("provider_id", sa.Text(), nullable=True),
        sa.Column("provider_type", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", _COST, nullable=False),
        sa.CheckConstraint(
            "input_tokens >= 0 AND output_tokens >= 0", name=op.f("ck_usage_calls_tokens_range")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_calls")),
        sa.UniqueConstraint("call_key", name=op.f("uq_usage_calls_call_key")),
    )
    op.create_index("idx_usage_calls_at", "usage_calls", ["at"], unique=False)
    op.create_index("idx_usage_calls_user_id_at", "usage_calls", ["user_id", "at"], unique=False)
    op.create_index("idx_usage_calls_task_id", "usage_calls", ["task_id"], unique=False)
    op.create_index("idx_usage_calls_session_id", "usage_calls", ["session_id"], unique=False)
    dims = ("user_id", "agent_id", "workflow_id", "schedule_id", "provider_id", "model")
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(d, sa.Text(), server_default="", nullable=False) for d in dims),
        sa.Column("calls", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("input_tokens", sa.Numeric(20, 0), server_default=sa.text("0"), nullable=False),
        sa.Column("output_tokens", sa.Numeric(20, 0), server_default=sa.text("0"), nullable=False),
        sa.Column("cost_usd", _COST, server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("day", *dims, name=op.f("pk_usage_daily")),
    )
    for dim in ("user_id", "agent_id", "workflow_id", "schedule_id"):
        op.create_index(f"idx_usage_daily_{dim}_day", "usage_daily", [dim, "day"], unique=False)
    op.create_table(
        "usage_monthly",
        sa.Column("month", sa.Date(), nullable=False),
        *(sa.Column(d, sa.Text(), server_default="", nullable=False) for d in dims),
        sa.Column("calls", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("input_tokens", sa.Numeric(20, 0), server_default=sa.text("0"), nullable=False),
        sa.Column("output_tokens", sa.Numeric(20, 0), server_default=sa.text("0"), nullable=False),
        sa.Column("cost_usd", _COST, server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("month", *dims, name=op.f("pk_usage_monthly")),
    )
    op.create_index(
        "idx_usage_monthly_user_id_month", "usage_monthly", ["user_id", "month"], unique=False
    )
    op.create_table(
        "budgets",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("target_id", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("limit_value", sa.Numeric(20, 6), nullable=False),
        sa.Column("warn_ratio", sa.Double(), server_default=sa.text("0.8"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("warned_period", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "scope IN ('user', 'agent', 'workflow', 'schedule')", name=op.f("ck_budgets_scope")
        ),
        sa.CheckConstraint("metric IN ('cost_usd', 'tokens')", name=op.f("ck_budgets_metric")),
        sa.CheckConstraint("period IN ('day', 'month')", name=op.f("ck_budgets_period")),
        sa.CheckConstraint("limit_value > 0", name=op.f("ck_budgets_limit_positive")),
        sa.CheckConstraint(
            "warn_ratio > 0 AND warn_ratio < 1", name=op.f("ck_budgets_warn_ratio_range")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
    )
    op.create_index("idx_budgets_scope_target_id", "budgets", ["scope", "target_id"], unique=False)


def downgrade() -> None:
    op.drop_index("idx_budgets_scope_target_id", table_name="budgets")
    op.drop_table("budgets")
    op.drop_index("idx_usage_monthly_user_id_month", table_name="usage_monthly")
    op.drop_table("usage_monthly")
    for dim in ("user_id", "agent_id", "workflow_id", "schedule_id"):
        op.drop_index(f"idx_usage_daily_{dim}_day", table_name="usage_daily")
    op.drop_table("usage_daily")
    for name in ("session_id", "task_id", "user_id_at", "at"):
        op.drop_index(f"idx_usage_calls_{name}", table_name="usage_calls")
    op.drop_table("usage_calls")
