"""agent_versions: a snapshot of an agent at every save (the agent builder's history)

One row per agent record version written through the API (`domain/versions.py`): the agent as
presented after the save, the fields it changed and who saved it. UNIQUE (agent_id, number).
Downgrade drops the table (the agents themselves are untouched).

Revision ID: f3c8a1d6e2b5
Revises: d2b9e6f4a1c7
Create Date: 2026-12-15 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "f3c8a1d6e2b5"
down_revision: str | Sequence[str] | None = "d2b9e6f4a1c7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    now = sa.text("now()")
    op.create_table(
        "agent_versions",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at", postgresql.TIMESTAMP(timezone=True), server_default=now, nullable=False
        ),
        sa.Column(
            "updated_at", postgresql.TIMESTAMP(timezone=True), server_default=now, nullable=False
        ),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "extras",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("agent_id", sa.Text(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column(
            "snapshot",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "changed_fields",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("github_user", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.CheckConstraint("version >= 0", name=op.f("ck_agent_versions_version_range")),
        sa.CheckConstraint("number >= 1", name=op.f("ck_agent_versions_number_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_versions")),
        sa.UniqueConstraint("agent_id", "number", name=op.f("uq_agent_versions_agent_id_number")),
    )
    op.create_index("idx_agent_versions_created_at", "agent_versions", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("idx_agent_versions_created_at", table_name="agent_versions")
    op.drop_table("agent_versions")
