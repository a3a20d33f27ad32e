"""scheduled_agents.interval_unit accepts `weeks`

The existing TBD Agents SDK offers `weeks` as an interval unit; the check constraint on
`scheduled_agents.interval_unit` now allows it beside minutes, hours and days.

Downgrade: schedules in weeks become the same interval in days (value times 7), which the earlier
schema can hold.

Revision ID: 8c2d4f6a1e93
Revises: 7c1d2e9f4a60
Create Date: 2026-12-09 09:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "8c2d4f6a1e93"
down_revision: str | Sequence[str] | None = "7c1d2e9f4a60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ck_scheduled_agents_interval_unit"


def upgrade() -> None:
    op.drop_constraint(op.f(NAME), "scheduled_agents", type_="check")
    op.create_check_constraint(
        op.f(NAME), "scheduled_agents", "interval_unit IN ('minutes', 'hours', 'days', 'weeks')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f(NAME), "scheduled_agents", type_="check")
    op.execute(
        "UPDATE scheduled_agents SET interval_unit = 'days', interval_value = interval_value * 7 "
        "WHERE interval_unit = 'weeks'"
    )
    op.create_check_constraint(
        op.f(NAME), "scheduled_agents", "interval_unit IN ('minutes', 'hours', 'days')"
    )
