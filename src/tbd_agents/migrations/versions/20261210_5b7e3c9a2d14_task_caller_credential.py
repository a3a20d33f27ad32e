"""task_executions.caller_credential: the caller's GitHub token for a run, encrypted

A run of an agent without provider_id runs on GitHub Copilot with the GitHub token of the caller
who started it (the existing system kept that token in Redis in plaintext). Between the API
process that accepts the prompt and the worker that runs it, the token travels on the task,
encrypted with the server's token cipher, and is cleared when the run ends. Nullable: most runs
carry none.

Revision ID: 5b7e3c9a2d14
Revises: 8c2d4f6a1e93
Create Date: 2026-12-10 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5b7e3c9a2d14"
down_revision: str | Sequence[str] | None = "8c2d4f6a1e93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("task_executions", sa.Column("caller_credential", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("task_executions", "caller_credential")
