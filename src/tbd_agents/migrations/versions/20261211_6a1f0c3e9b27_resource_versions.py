"""version on every document table: optimistic concurrency (ETag / If-Match)

Every record carries `version`, 1 when created and raised by one in the same UPDATE as each
change (`UPDATE … SET version = version + 1 … WHERE id = :id [AND version = :expected]`), so a
client that read version n can make its change conditional on nobody having changed the record
since (the API's `If-Match`). NOT NULL with the server default 1: the rows already there, and rows
written by tools that do not name the column (the MongoDB migration, a bundle import, raw SQL),
start at 1. The CHECK (`version >= 0`) is the model's bound (a MongoDB document written before
versions existed reads as version 0).

Revision ID: 6a1f0c3e9b27
Revises: 5b7e3c9a2d14
Create Date: 2026-12-11 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "6a1f0c3e9b27"
down_revision: str | Sequence[str] | None = "5b7e3c9a2d14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The 15 document tables and the API keys (every table derived from a domain model).
TABLES = (
    "agents",
    "chat_sessions",
    "chat_messages",
    "memories",
    "skills",
    "tokens",
    "providers",
    "knowledge_items",
    "knowledge_sources",
    "custom_tools",
    "guardrails",
    "workflows",
    "task_executions",
    "scheduled_agents",
    "mcp_servers",
    "api_keys",
)


def upgrade() -> None:
    # A column with a constant default is added without rewriting the table (PostgreSQL 11+).
    for table in TABLES:
        op.add_column(
            table,
            sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        )
        op.create_check_constraint(op.f(f"ck_{table}_version_range"), table, "version >= 0")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_constraint(op.f(f"ck_{table}_version_range"), table, type_="check")
        op.drop_column(table, "version")
