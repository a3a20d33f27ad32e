"""retention: per-run messages on the task, the workflow's conversation reset mark, and the
indexes the retention rules delete by

- `task_executions.run_messages`: the messages a run added to its workflow's conversation. The
  workflow row used to be rewritten with the whole conversation on every run; it now keeps the
  last run's messages only, and the next run continues the conversation from its runs.
- `workflows.conversation_reset_at`: when the conversation was last forgotten (reset).
- `idx_task_executions_finished_at`, `idx_webhook_deliveries_created_at`: runs that ended, and
  deliveries created, before a cut-off are found from an index range.

Revision ID: e19e0005ba5e
Revises: a19a0001c0de
Create Date: 2026-12-16 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "e19e0005ba5e"
down_revision: str | Sequence[str] | None = "a19a0001c0de"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "task_executions",
        sa.Column(
            "run_messages",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "workflows",
        sa.Column("conversation_reset_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
    )
    op.create_index(
        "idx_task_executions_finished_at", "task_executions", ["finished_at"], unique=False
    )
    op.create_index(
        "idx_webhook_deliveries_created_at", "webhook_deliveries", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("idx_webhook_deliveries_created_at", table_name="webhook_deliveries")
    op.drop_index("idx_task_executions_finished_at", table_name="task_executions")
    op.drop_column("workflows", "conversation_reset_at")
    op.drop_column("task_executions", "run_messages")
