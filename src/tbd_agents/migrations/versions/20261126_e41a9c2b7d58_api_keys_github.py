"""api keys: github flag (keys made for a GitHub login)

Revision ID: e41a9c2b7d58
Revises: c3f7d61af20e
Create Date: 2026-11-26 10:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "e41a9c2b7d58"
down_revision: str | Sequence[str] | None = "c3f7d61af20e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column("github", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("api_keys", "github")
