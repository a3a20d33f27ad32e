"""agents.mcp_exposed: the agent is offered as a tool of its owner's MCP server (`/mcp`)

False for every existing agent: an agent becomes an MCP tool only when its owner says so.

Revision ID: c19c0003fade
Revises: b19b0002de1e
Create Date: 2026-12-16 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c19c0003fade"
down_revision: str | Sequence[str] | None = "b19b0002de1e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agents",
        sa.Column("mcp_exposed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("agents", "mcp_exposed")
