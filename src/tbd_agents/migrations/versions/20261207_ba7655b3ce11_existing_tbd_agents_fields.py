"""the existing TBD Agents data model, whole: its fields, names, defaults and enum values

Makes the schema a superset of the data the existing TBD Agents (MongoDB) holds, so that every
document it could have written migrates, reads and updates as it is:

* every table gets `extras` (JSONB, `{}`): the keys of a source document that no column names;
* columns our model had renamed take the existing names, their data kept:
  `task_executions.result/completed_at/worker_id` → `response/finished_at/worker`,
  `memories.expires_at` → `ttl`, `custom_tools.env` → `env_config`, `workflows.name` → `title`,
  `knowledge_items.title` → `name`;
* `knowledge_items.content_type` holds the existing kind (`text`/`file`/`image`); the media type
  our earlier versions kept there moves to the new `mime_type`;
* the existing fields we had no home for become columns (workflow options and state, task
  response/progress/logs/messages, guardrail request/output configs, provider description, ...);
* CHECK constraints of enum columns accept the existing values too (workflow `active`/
  `inactive`, MCP `http`/`registered`, knowledge `vector_db`/`mongo_db`/`registered`/
  `connected`, guardrail `prompt`, provider `x-api-key`), and defaults become the existing ones;
* `workflows.max_turns` loses its `>= 1` check (the existing system never had one).

The value lists are written out here, as of this revision, not imported from the enums.

Revision ID: ba7655b3ce11
Revises: e4a9c2f7d815
Create Date: 2026-12-07 01:50:00+00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "ba7655b3ce11"
down_revision: str | Sequence[str] | None = "e4a9c2f7d815"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "agents",
    "api_keys",
    "chat_messages",
    "chat_sessions",
    "custom_tools",
    "guardrails",
    "knowledge_items",
    "knowledge_sources",
    "mcp_servers",
    "memories",
    "providers",
    "scheduled_agents",
    "skills",
    "task_executions",
    "tokens",
    "workflows",
)

RENAMES = (
    ("task_executions", "result", "response"),
    ("task_executions", "completed_at", "finished_at"),
    ("task_executions", "worker_id", "worker"),
    ("memories", "expires_at", "ttl"),
    ("custom_tools", "env", "env_config"),
    ("workflows", "name", "title"),
    ("knowledge_items", "title", "name"),
)

#: (table, column): (values before, values after).
ENUM_CHECKS: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("workflows", "status"): (
        ("idle", "pending", "running", "completed", "failed", "halted", "max_turns_reached"),
        (
            "active",
            "inactive",
            "idle",
            "pending",
            "running",
            "completed",
            "failed",
            "halted",
            "max_turns_reached",
        ),
    ),
    ("mcp_servers", "transport_type"): (
        ("stdio", "sse", "streamable_http"),
        ("stdio", "sse", "http", "streamable_http"),
    ),
    ("mcp_servers", "status"): (
        ("unknown", "connected", "error", "disabled"),
        ("registered", "unknown", "connected", "error", "disabled"),
    ),
    ("knowledge_sources", "source_type"): (
        ("manual", "file", "url", "github", "qdrant", "pgvector"),
        ("vector_db", "mongo_db", "manual", "file", "url", "github", "qdrant", "pgvector"),
    ),
    ("knowledge_sources", "status"): (
        ("pending", "indexing", "ready", "error"),
        ("registered", "connected", "pending", "indexing", "ready", "error"),
    ),
    ("guardrails", "guardrail_type"): (
        ("input", "output", "request", "tool"),
        ("prompt", "input", "output", "request", "tool"),
    ),
    ("providers", "auth_type"): (
        ("api_key", "bearer", "none"),
        ("x-api-key", "api_key", "bearer", "none"),
    ),
}

#: (table, column): (default before, default after), as SQL.
DEFAULTS = {
    ("workflows", "status"): ("'idle'", "'active'"),
    ("mcp_servers", "status"): ("'unknown'", "'registered'"),
    ("knowledge_sources", "status"): ("'ready'", "'registered'"),
    ("providers", "auth_type"): ("'api_key'", "'x-api-key'"),
    ("providers", "azure_api_version"): (None, "'2024-12-01-preview'"),
}

#: Columns that become nullable without a default: (table, column, type, default before).
TO_NULLABLE = (
    ("chat_sessions", "title", sa.Text(), "'New chat'"),
    ("guardrails", "prompt_config", postgresql.JSONB(), "'{}'::jsonb"),
    ("task_executions", "usage", postgresql.JSONB(), "'{}'::jsonb"),
    ("knowledge_items", "text_content", sa.Text(), "''"),
)


def _json(name: str, default: str | None = "'{}'::jsonb") -> sa.Column[Any]:
    return sa.Column(
        name,
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
        server_default=sa.text(default) if default else None,
        nullable=default is None,
    )


def _texts(name: str) -> sa.Column[Any]:
    return sa.Column(
        name, postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
    )


def _flag(name: str, default: bool) -> sa.Column[Any]:
    return sa.Column(
        name, sa.Boolean(), server_default=sa.text("true" if default else "false"), nullable=False
    )


def _text(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Text(), nullable=True)


NEW_COLUMNS = {
    "custom_tools": [_flag("is_plugin", False)],
    "guardrails": [_json("request_config", None), _json("output_config", None)],
    "knowledge_items": [_text("mime_type")],
    "providers": [
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False)
    ],
    "scheduled_agents": [_text("redbeat_key")],
    "task_executions": [
        _text("model"),
        _text("reasoning_effort"),
        _json("progress", None),
        _json("logs", "'[]'::jsonb"),
        _json("messages", "'[]'::jsonb"),
    ],
    "workflows": [
        sa.Column("current_turn", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _text("session_id"),
        _texts("skill_ids"),
        _texts("skill_tags"),
        sa.Column("output_format", sa.Text(), server_default=sa.text("'json'"), nullable=False),
        _json("usage", None),
        _flag("infinite_session", True),
        _flag("caveman", False),
        _flag("bypass_memory", False),
        _flag("auto_memory", False),
        _flag("tsv_tool_results", False),
        _text("reasoning_effort"),
        _texts("guardrail_ids"),
        _texts("guardrail_tags"),
        _text("repo_url"),
        _text("repo_branch"),
        _text("repo_token_name"),
        _json("credential_overrides"),
    ],
}

NEW_CHECKS = {
    ("workflows", "output_format"): ("text", "markdown", "json"),
    ("knowledge_items", "content_type"): ("text", "file", "image"),
}


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _set_default(table: str, column: str, default: str | None) -> None:
    op.alter_column(table, column, server_default=sa.text(default) if default else None)


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, _json("extras"))
    for table, old, new in RENAMES:
        op.alter_column(table, old, new_column_name=new)
    op.execute("ALTER INDEX idx_memories_expires_at RENAME TO idx_memories_ttl")
    for table, columns in NEW_COLUMNS.items():
        for new_column in columns:
            op.add_column(table, new_column)
    # workflows.title is optional, as in the existing model: an empty name means none.
    op.alter_column("workflows", "title", server_default=None, nullable=True)
    op.execute("UPDATE workflows SET title = NULL WHERE title = ''")
    op.drop_constraint(op.f("ck_workflows_max_turns_range"), "workflows", type_="check")
    # knowledge_items: the media type moves to mime_type; content_type becomes the kind.
    op.alter_column("knowledge_items", "content_type", server_default=sa.text("'text'"))
    op.execute(
        "UPDATE knowledge_items SET mime_type = content_type, content_type = CASE "
        "WHEN content_type LIKE 'image/%' THEN 'image' "
        "WHEN file_id IS NOT NULL THEN 'file' ELSE 'text' END "
        "WHERE content_type NOT IN ('text', 'file', 'image')"
    )
    for table, column, _type, _default in TO_NULLABLE:
        op.alter_column(table, column, server_default=None, nullable=True)
    for (table, column), (_values_before, values_after) in ENUM_CHECKS.items():
        op.drop_constraint(op.f(f"ck_{table}_{column}"), table, type_="check")
        op.create_check_constraint(op.f(f"ck_{table}_{column}"), table, _in(column, values_after))
    for (table, column), values in NEW_CHECKS.items():
        op.create_check_constraint(op.f(f"ck_{table}_{column}"), table, _in(column, values))
    for (table, column), (_before, after) in DEFAULTS.items():
        _set_default(table, column, after)


def downgrade() -> None:
    """Back to the previous schema. Rows holding values that schema cannot take (an existing
    enum value, a null in a column that was NOT NULL) are changed to its nearest value; the
    columns this revision added are dropped with their data."""
    for (table, column), (before, _after) in DEFAULTS.items():
        _set_default(table, column, before)
    for table, column in NEW_CHECKS:
        op.drop_constraint(op.f(f"ck_{table}_{column}"), table, type_="check")
    nearest = {
        ("workflows", "status"): {"active": "idle", "inactive": "idle"},
        ("mcp_servers", "transport_type"): {"http": "streamable_http"},
        ("mcp_servers", "status"): {"registered": "unknown"},
        ("knowledge_sources", "source_type"): {"vector_db": "qdrant", "mongo_db": "manual"},
        ("knowledge_sources", "status"): {"registered": "ready", "connected": "ready"},
        ("guardrails", "guardrail_type"): {"prompt": "input"},
        ("providers", "auth_type"): {"x-api-key": "api_key"},
    }
    for (table, column), (values_before, _values_after) in ENUM_CHECKS.items():
        op.drop_constraint(op.f(f"ck_{table}_{column}"), table, type_="check")
        for old, new in nearest[(table, column)].items():
            op.execute(f"UPDATE {table} SET {column} = '{new}' WHERE {column} = '{old}'")
        op.create_check_constraint(op.f(f"ck_{table}_{column}"), table, _in(column, values_before))
    for table, column, _type, default in TO_NULLABLE:
        op.execute(f"UPDATE {table} SET {column} = {default} WHERE {column} IS NULL")
        op.alter_column(table, column, server_default=sa.text(default), nullable=False)
    op.execute(
        "UPDATE knowledge_items SET content_type = coalesce(mime_type, CASE content_type "
        "WHEN 'text' THEN 'text/plain' ELSE 'application/octet-stream' END)"
    )
    op.alter_column("knowledge_items", "content_type", server_default=sa.text("'text/plain'"))
    op.execute("UPDATE workflows SET max_turns = 1 WHERE max_turns < 1")
    op.create_check_constraint(op.f("ck_workflows_max_turns_range"), "workflows", "max_turns >= 1")
    op.execute("UPDATE workflows SET title = '' WHERE title IS NULL")
    op.alter_column("workflows", "title", server_default=sa.text("''"), nullable=False)
    for table, columns in NEW_COLUMNS.items():
        for new_column in columns:
            op.drop_column(table, new_column.name)
    op.execute("ALTER INDEX idx_memories_ttl RENAME TO idx_memories_expires_at")
    for table, old, new in RENAMES:
        op.alter_column(table, new, new_column_name=old)
    for table in TABLES:
        op.drop_column(table, "extras")
