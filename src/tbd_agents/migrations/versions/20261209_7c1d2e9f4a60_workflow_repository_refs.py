"""workflows.repository_ids / repository_tags: fields the official SDKs send on every workflow

The SDKs' `WorkflowCreate` always carries `repository_ids` and `repository_tags` (empty lists by
default). They are stored and returned like the other reference lists of a workflow.

Revision ID: 7c1d2e9f4a60
Revises: 430f6489d03c
Create Date: 2026-12-09 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "7c1d2e9f4a60"
down_revision: str | Sequence[str] | None = "430f6489d03c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("repository_ids", "repository_tags")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column(
            "workflows",
            sa.Column(
                name, postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
            ),
        )


def downgrade() -> None:
    for name in reversed(COLUMNS):
        op.drop_column("workflows", name)
