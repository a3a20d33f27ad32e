"""scheduled_agents: overlap and missed-run policies (with their CHECK constraints).

A change to one of the 15 document tables, so it sits before the pgvector revision: servers
without pgvector (documents only, migrated to DOCUMENT_SCHEMA_REVISION) get it too. It was first
part of the run-time tables revision (d73c6eb43954), which had left out the two CHECKs.

Revision ID: 5d2e8a41c9f0
Revises: 3f1c2a9d8b47
Create Date: 2026-11-25 21:15:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5d2e8a41c9f0"
down_revision: str | Sequence[str] | None = "3f1c2a9d8b47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "scheduled_agents",
        sa.Column("overlap_policy", sa.Text(), server_default=sa.text("'skip'"), nullable=False),
    )
    op.add_column(
        "scheduled_agents",
        sa.Column(
            "missed_run_policy", sa.Text(), server_default=sa.text("'run_once'"), nullable=False
        ),
    )
    op.create_check_constraint(
        op.f("ck_scheduled_agents_overlap_policy"),
        "scheduled_agents",
        "overlap_policy IN ('skip', 'allow')",
    )
    op.create_check_constraint(
        op.f("ck_scheduled_agents_missed_run_policy"),
        "scheduled_agents",
        "missed_run_policy IN ('skip', 'run_once')",
    )


def downgrade() -> None:
    op.drop_column("scheduled_agents", "missed_run_policy")
    op.drop_column("scheduled_agents", "overlap_policy")
