"""agents as tools of other agents: agents.agent_tool_ids and the links of a delegated run

`agents.agent_tool_ids` lists the agents an agent may call as tools (GIN-indexed: deleting an
agent looks up the agents that still name it). A delegated run is a task execution linked to the
run that called it: `parent_task_id`, `root_task_id` (both indexed: a run's children and a
chain's runs are listed by them), `delegation_depth` (0 for every existing run) and
`chat_session_id` (a chain a chat turn started). The trigger check accepts `delegation`.

Downgrade: delegated runs become `manual` runs and the columns are dropped.

Revision ID: b19b0002de1e
Revises: f3c8a1d6e2b5
Create Date: 2026-12-16 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "b19b0002de1e"
down_revision: str | Sequence[str] | None = "f3c8a1d6e2b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = "ck_task_executions_trigger"
DEPTH = "ck_task_executions_delegation_depth_range"


def upgrade() -> None:
    op.add_column(
        "agents",
        sa.Column(
            "agent_tool_ids",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.create_index(
        "idx_agents_agent_tool_ids",
        "agents",
        ["agent_tool_ids"],
        unique=False,
        postgresql_using="gin",
    )
    op.add_column("task_executions", sa.Column("parent_task_id", sa.Text(), nullable=True))
    op.add_column("task_executions", sa.Column("root_task_id", sa.Text(), nullable=True))
    op.add_column(
        "task_executions",
        sa.Column("delegation_depth", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("task_executions", sa.Column("chat_session_id", sa.Text(), nullable=True))
    op.create_check_constraint(op.f(DEPTH), "task_executions", "delegation_depth >= 0")
    op.create_index(
        "idx_task_executions_parent_task_id", "task_executions", ["parent_task_id"], unique=False
    )
    op.create_index(
        "idx_task_executions_root_task_id", "task_executions", ["root_task_id"], unique=False
    )
    op.drop_constraint(op.f(TRIGGER), "task_executions", type_="check")
    op.create_check_constraint(
        op.f(TRIGGER),
        "task_executions",
        "trigger IN ('manual', 'api', 'schedule', 'webhook', 'delegation')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f(TRIGGER), "task_executions", type_="check")
    op.execute("UPDATE task_executions SET trigger = 'manual' WHERE trigger = 'delegation'")
    op.create_check_constraint(
        op.f(TRIGGER), "task_executions", "trigger IN ('manual', 'api', 'schedule', 'webhook')"
    )
    op.drop_index("idx_task_executions_root_task_id", table_name="task_executions")
    op.drop_index("idx_task_executions_parent_task_id", table_name="task_executions")
    op.drop_constraint(op.f(DEPTH), "task_executions", type_="check")
    op.drop_column("task_executions", "chat_session_id")
    op.drop_column("task_executions", "delegation_depth")
    op.drop_column("task_executions", "root_task_id")
    op.drop_column("task_executions", "parent_task_id")
    op.drop_index("idx_agents_agent_tool_ids", table_name="agents", postgresql_using="gin")
    op.drop_column("agents", "agent_tool_ids")
