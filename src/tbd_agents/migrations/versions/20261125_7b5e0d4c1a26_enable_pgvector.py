"""Enable the pgvector extension (`CREATE EXTENSION IF NOT EXISTS vector`).

Checks `pg_available_extensions` first, so a server without pgvector fails with a message that
names the extension and the fix instead of PostgreSQL's "could not open extension control file".
A plain `upgrade head` on a server without pgvector stops before this revision
(`tbd_agents.storage.postgres.migrate.DOCUMENT_SCHEMA_REVISION`); with `documents_only` (see
`tbd_agents.migrations.options`) it does nothing and the chain goes on.

Revision ID: 7b5e0d4c1a26
Revises: 5d2e8a41c9f0
Create Date: 2026-11-25 20:31:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from tbd_agents.migrations.options import documents_only
from tbd_agents.storage.postgres.errors import extension_missing

# revision identifiers, used by Alembic.
revision: str = "7b5e0d4c1a26"
down_revision: str | Sequence[str] | None = "5d2e8a41c9f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if documents_only():
        return
    if not context.is_offline_mode():
        bind = op.get_bind()
        available = bind.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        ).scalar()
        if available is None:
            raise extension_missing(bind.engine.url, "vector")
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")


def downgrade() -> None:
    if documents_only():
        return
    op.execute("DROP EXTENSION IF EXISTS vector")
