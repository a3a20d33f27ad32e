"""task_executions.trace_parent: the W3C traceparent of the request that created a run

A run is created by an API request (or a schedule firing) and executed later, possibly in another
process. The creating span's `traceparent` is stored with the run so the worker's run span
continues the same trace. Nullable: runs created without tracing, and older runs, carry none.

Revision ID: b8e1d4a7c293
Revises: 7e2b4d8f1c35
Create Date: 2026-12-13 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "b8e1d4a7c293"
down_revision: str | Sequence[str] | None = "7e2b4d8f1c35"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("task_executions", sa.Column("trace_parent", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("task_executions", "trace_parent")
