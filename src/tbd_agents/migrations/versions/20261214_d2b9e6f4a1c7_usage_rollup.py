"""usage_rollup: usage per dimension alone, per day and per month, for fast time series

A time series over a year without filters read every usage_daily row of the year (237k rows for
1M calls) and answered in ~1 s. `usage_rollup` holds, per (dimension, grain, period, key), the
sums of the calls of that one dimension value (`all` / '' for every call), kept by the same
statement as the call row; the top-N series read a few thousand of its rows.

Existing usage is backfilled from usage_daily (day grain) and usage_monthly (month grain), so
the rollup equals the sum of the calls from the start. Downgrade drops the table (the ledger
itself is untouched).

Revision ID: d2b9e6f4a1c7
Revises: c4f7a2e9d158
Create Date: 2026-12-14 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "d2b9e6f4a1c7"
down_revision: str | Sequence[str] | None = "c4f7a2e9d158"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COST = sa.Numeric(20, 12)
#: rollup dimension → usage_daily / usage_monthly column ('' for `all`).
_DIMENSIONS = {
    "all": "''",
    "user": "user_id",
    "agent": "agent_id",
    "workflow": "workflow_id",
    "schedule": "schedule_id",
    "provider": "provider_id",
    "model": "model",
}


def upgrade() -> None:
    op.create_table(
        "usage_rollup",
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("grain", sa.Text(), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("key", sa.Text(), server_default="", nullable=False),
        sa.Column("calls", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("input_tokens", sa.Numeric(20, 0), server_default=sa.text("0"), nullable=False),
        sa.Column("output_tokens", sa.Numeric(20, 0), server_default=sa.text("0"), nullable=False),
        sa.Column("cost_usd", _COST, server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("grain IN ('day', 'month')", name=op.f("ck_usage_rollup_grain")),
        sa.PrimaryKeyConstraint(
            "dimension", "grain", "period", "key", name=op.f("pk_usage_rollup")
        ),
    )
    op.create_index(
        "idx_usage_rollup_dimension_grain_key_period",
        "usage_rollup",
        ["dimension", "grain", "key", "period"],
        unique=False,
    )
    for grain, table, period in (
        ("day", "usage_daily", "day"),
        ("month", "usage_monthly", "month"),
    ):
        for dimension, column in _DIMENSIONS.items():
            keys = period if dimension == "all" else f"{period}, {column}"
            op.execute(
                "INSERT INTO usage_rollup (dimension, grain, period, key, calls, input_tokens, "
                "output_tokens, cost_usd) "
                f"SELECT '{dimension}', '{grain}', {period}, {column}, sum(calls), "
                f"sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM {table} "
                f"GROUP BY {keys}"
            )


def downgrade() -> None:
    op.drop_index("idx_usage_rollup_dimension_grain_key_period", table_name="usage_rollup")
    op.drop_table("usage_rollup")
