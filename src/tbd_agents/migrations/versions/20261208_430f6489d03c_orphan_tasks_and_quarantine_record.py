"""task executions and schedules may outlive their workflow; the migration's quarantine record

* The foreign keys `task_executions.workflow_id` → `workflows` and `scheduled_agents.workflow_id`
  → `workflows` are dropped. Existing TBD Agents deployments hold task executions and schedules
  whose workflow was deleted (the existing system never cascaded those deletes); they are kept
  as they are. Deleting a workflow still deletes its tasks and schedules: the repositories do it
  in code, in the same statement, as the MongoDB backend does.
* `migration_quarantine`: one row per source document a migration run did not load, with the
  reason, so that verification can tell "quarantined" from "missing".

Downgrade: the foreign keys come back, so task executions and schedules whose workflow does not
exist are deleted first (the earlier schema cannot hold them).

Revision ID: 430f6489d03c
Revises: ba7655b3ce11
Create Date: 2026-12-08 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "430f6489d03c"
down_revision: str | Sequence[str] | None = "ba7655b3ce11"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (child table, foreign key) of the links no longer enforced.
LINKS = (
    ("task_executions", "fk_task_executions_workflow_id_workflows"),
    ("scheduled_agents", "fk_scheduled_agents_workflow_id_workflows"),
)


def upgrade() -> None:
    for table, name in LINKS:
        op.drop_constraint(op.f(name), table, type_="foreignkey")
    op.create_table(
        "migration_quarantine",
        sa.Column("collection", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("run", sa.Text(), nullable=False),
        sa.Column(
            "recorded_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("collection", "key", name=op.f("pk_migration_quarantine")),
    )


def downgrade() -> None:
    op.drop_table("migration_quarantine")
    for table, name in LINKS:
        op.execute(
            f"DELETE FROM {table} c WHERE NOT EXISTS "
            "(SELECT 1 FROM workflows w WHERE w.id = c.workflow_id)"
        )
        op.create_foreign_key(
            op.f(name), table, "workflows", ["workflow_id"], ["id"], ondelete="CASCADE"
        )
