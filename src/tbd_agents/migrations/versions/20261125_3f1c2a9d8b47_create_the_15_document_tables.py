"""Create the 15 document tables (agents ... mcp_servers) with their constraints and indexes.

Generated from the metadata (alembic revision --autogenerate) and reviewed. Needs no extension:
`gen_random_uuid()` is built into PostgreSQL 13+, so documents-only servers can stop here.

Revision ID: 3f1c2a9d8b47
Revises:
Create Date: 2026-11-25 20:30:04.546528+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "3f1c2a9d8b47"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "system_prompt",
            sa.Text(),
            server_default=sa.text("'You are a helpful assistant.'"),
            nullable=False,
        ),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("provider_id", sa.Text(), nullable=True),
        sa.Column(
            "mcp_server_ids",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "mcp_server_tags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "tool_definitions",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "knowledge_source_ids",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "knowledge_tags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "builtin_tools",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "custom_tool_ids",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "skill_ids", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column(
            "skill_tags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "guardrail_ids",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("output_format", sa.Text(), server_default=sa.text("'text'"), nullable=False),
        sa.Column("max_turns", sa.Integer(), nullable=True),
        sa.Column("temperature", sa.Double(), nullable=True),
        sa.Column("memory_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "output_format IN ('text', 'markdown', 'json')", name=op.f("ck_agents_output_format")
        ),
        sa.CheckConstraint("max_turns >= 1", name=op.f("ck_agents_max_turns_range")),
        sa.CheckConstraint(
            "temperature >= 0 AND temperature <= 2", name=op.f("ck_agents_temperature_range")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
    )
    op.create_index("idx_agents_created_at", "agents", ["created_at"], unique=False)
    op.create_index("idx_agents_created_by", "agents", ["created_by"], unique=False)
    op.create_index(
        "idx_agents_knowledge_tags",
        "agents",
        ["knowledge_tags"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_index(
        "idx_agents_mcp_server_tags",
        "agents",
        ["mcp_server_tags"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_index("idx_agents_name", "agents", ["name"], unique=False)
    op.create_index("idx_agents_provider_id", "agents", ["provider_id"], unique=False)
    op.create_index(
        "idx_agents_skill_tags", "agents", ["skill_tags"], unique=False, postgresql_using="gin"
    )
    op.create_index("idx_agents_tags", "agents", ["tags"], unique=False, postgresql_using="gin")
    op.create_table(
        "chat_sessions",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("agent_id", sa.Text(), nullable=False),
        sa.Column("github_user", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), server_default=sa.text("'New chat'"), nullable=False),
        sa.Column("message_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_message_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column(
            "metadata",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint("message_count >= 0", name=op.f("ck_chat_sessions_message_count_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_sessions")),
    )
    op.create_index("idx_chat_sessions_agent_id", "chat_sessions", ["agent_id"], unique=False)
    op.create_index("idx_chat_sessions_created_at", "chat_sessions", ["created_at"], unique=False)
    op.create_index("idx_chat_sessions_github_user", "chat_sessions", ["github_user"], unique=False)
    op.create_index("idx_chat_sessions_updated_at", "chat_sessions", ["updated_at"], unique=False)
    op.create_table(
        "custom_tools",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("source_code", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "parameters_schema",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text('\'{"type":"object","properties":{}}\'::jsonb'),
            nullable=False,
        ),
        sa.Column("is_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "env",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("timeout_seconds", sa.Integer(), server_default=sa.text("30"), nullable=False),
        sa.Column("memory_limit_mb", sa.Integer(), server_default=sa.text("256"), nullable=False),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "memory_limit_mb >= 16 AND memory_limit_mb <= 65536",
            name=op.f("ck_custom_tools_memory_limit_mb_range"),
        ),
        sa.CheckConstraint(
            "timeout_seconds >= 1 AND timeout_seconds <= 3600",
            name=op.f("ck_custom_tools_timeout_seconds_range"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custom_tools")),
    )
    op.create_index("idx_custom_tools_created_at", "custom_tools", ["created_at"], unique=False)
    op.create_index("idx_custom_tools_created_by", "custom_tools", ["created_by"], unique=False)
    op.create_index("idx_custom_tools_name", "custom_tools", ["name"], unique=False)
    op.create_index(
        "idx_custom_tools_tags", "custom_tools", ["tags"], unique=False, postgresql_using="gin"
    )
    op.create_table(
        "guardrails",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("guardrail_type", sa.Text(), server_default=sa.text("'input'"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("action", sa.Text(), server_default=sa.text("'block'"), nullable=False),
        sa.Column(
            "patterns", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column(
            "prompt_config",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "action IN ('block', 'redact', 'flag')", name=op.f("ck_guardrails_action")
        ),
        sa.CheckConstraint(
            "guardrail_type IN ('input', 'output', 'request', 'tool')",
            name=op.f("ck_guardrails_guardrail_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrails")),
    )
    op.create_index("idx_guardrails_created_at", "guardrails", ["created_at"], unique=False)
    op.create_index("idx_guardrails_created_by", "guardrails", ["created_by"], unique=False)
    op.create_index("idx_guardrails_guardrail_type", "guardrails", ["guardrail_type"], unique=False)
    op.create_index("idx_guardrails_name", "guardrails", ["name"], unique=False)
    op.create_index(
        "idx_guardrails_tags", "guardrails", ["tags"], unique=False, postgresql_using="gin"
    )
    op.create_table(
        "knowledge_sources",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("source_type", sa.Text(), server_default=sa.text("'manual'"), nullable=False),
        sa.Column(
            "connection_config",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), server_default=sa.text("'ready'"), nullable=False),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "source_type IN ('manual', 'file', 'url', 'github', 'qdrant', 'pgvector')",
            name=op.f("ck_knowledge_sources_source_type"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'indexing', 'ready', 'error')",
            name=op.f("ck_knowledge_sources_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_sources")),
    )
    op.create_index(
        "idx_knowledge_sources_created_at", "knowledge_sources", ["created_at"], unique=False
    )
    op.create_index(
        "idx_knowledge_sources_created_by", "knowledge_sources", ["created_by"], unique=False
    )
    op.create_index("idx_knowledge_sources_name", "knowledge_sources", ["name"], unique=False)
    op.create_index(
        "idx_knowledge_sources_source_type", "knowledge_sources", ["source_type"], unique=False
    )
    op.create_index("idx_knowledge_sources_status", "knowledge_sources", ["status"], unique=False)
    op.create_index(
        "idx_knowledge_sources_tags",
        "knowledge_sources",
        ["tags"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_table(
        "mcp_servers",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("transport_type", sa.Text(), server_default=sa.text("'stdio'"), nullable=False),
        sa.Column(
            "connection_config",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "allowed_tools",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), server_default=sa.text("'unknown'"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('unknown', 'connected', 'error', 'disabled')",
            name=op.f("ck_mcp_servers_status"),
        ),
        sa.CheckConstraint(
            "transport_type IN ('stdio', 'sse', 'streamable_http')",
            name=op.f("ck_mcp_servers_transport_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_servers")),
    )
    op.create_index("idx_mcp_servers_created_at", "mcp_servers", ["created_at"], unique=False)
    op.create_index("idx_mcp_servers_created_by", "mcp_servers", ["created_by"], unique=False)
    op.create_index("idx_mcp_servers_name", "mcp_servers", ["name"], unique=False)
    op.create_index("idx_mcp_servers_status", "mcp_servers", ["status"], unique=False)
    op.create_index(
        "idx_mcp_servers_tags", "mcp_servers", ["tags"], unique=False, postgresql_using="gin"
    )
    op.create_index(
        "idx_mcp_servers_transport_type", "mcp_servers", ["transport_type"], unique=False
    )
    op.create_table(
        "memories",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("agent_id", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), server_default=sa.text("'agent'"), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.Column("embedding", postgresql.ARRAY(sa.Double()), nullable=True),
        sa.Column(
            "metadata",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("expires_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "scope IN ('session', 'agent', 'global')", name=op.f("ck_memories_scope")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memories")),
        sa.UniqueConstraint(
            "agent_id", "scope", "key", name=op.f("uq_memories_agent_id_scope_key")
        ),
    )
    op.create_index("idx_memories_agent_id", "memories", ["agent_id"], unique=False)
    op.create_index("idx_memories_created_at", "memories", ["created_at"], unique=False)
    op.create_index("idx_memories_created_by", "memories", ["created_by"], unique=False)
    op.create_index("idx_memories_expires_at", "memories", ["expires_at"], unique=False)
    op.create_index("idx_memories_scope", "memories", ["scope"], unique=False)
    op.create_index("idx_memories_session_id", "memories", ["session_id"], unique=False)
    op.create_table(
        "providers",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("provider_type", sa.Text(), server_default=sa.text("'openai'"), nullable=False),
        sa.Column("api_key_token_name", sa.Text(), nullable=True),
        sa.Column("auth_type", sa.Text(), server_default=sa.text("'api_key'"), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=True),
        sa.Column("azure_deployment", sa.Text(), nullable=True),
        sa.Column("azure_api_version", sa.Text(), nullable=True),
        sa.Column("default_model", sa.Text(), nullable=True),
        sa.Column(
            "models", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column(
            "extra_headers",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "auth_type IN ('api_key', 'bearer', 'none')", name=op.f("ck_providers_auth_type")
        ),
        sa.CheckConstraint(
            "provider_type IN ('openai', 'azure_openai', 'anthropic', 'custom', 'github_copilot')",
            name=op.f("ck_providers_provider_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_providers")),
        sa.UniqueConstraint("name", name=op.f("uq_providers_name")),
    )
    op.create_index("idx_providers_created_at", "providers", ["created_at"], unique=False)
    op.create_index("idx_providers_created_by", "providers", ["created_by"], unique=False)
    op.create_index("idx_providers_provider_type", "providers", ["provider_type"], unique=False)
    op.create_table(
        "skills",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("instructions", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skills")),
    )
    op.create_index("idx_skills_created_at", "skills", ["created_at"], unique=False)
    op.create_index("idx_skills_created_by", "skills", ["created_by"], unique=False)
    op.create_index("idx_skills_name", "skills", ["name"], unique=False)
    op.create_index("idx_skills_tags", "skills", ["tags"], unique=False, postgresql_using="gin")
    op.create_table(
        "tokens",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("encrypted_value", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("key_version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.CheckConstraint("key_version >= 1", name=op.f("ck_tokens_key_version_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_tokens_name")),
    )
    op.create_index("idx_tokens_created_at", "tokens", ["created_at"], unique=False)
    op.create_index("idx_tokens_created_by", "tokens", ["created_by"], unique=False)
    op.create_table(
        "workflows",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("agent_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'idle'"), nullable=False),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("max_turns", sa.Integer(), server_default=sa.text("5"), nullable=False),
        sa.Column(
            "messages",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "logs",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("error_webhook_url", sa.Text(), nullable=True),
        sa.Column("github_user", sa.Text(), nullable=True),
        sa.Column("last_run_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.CheckConstraint(
            "status IN ('idle', 'pending', 'running', 'completed', 'failed', 'halted', 'max_turns_reached')",
            name=op.f("ck_workflows_status"),
        ),
        sa.CheckConstraint("max_turns >= 1", name=op.f("ck_workflows_max_turns_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_index("idx_workflows_agent_id", "workflows", ["agent_id"], unique=False)
    op.create_index("idx_workflows_created_at", "workflows", ["created_at"], unique=False)
    op.create_index("idx_workflows_github_user", "workflows", ["github_user"], unique=False)
    op.create_index("idx_workflows_status", "workflows", ["status"], unique=False)
    op.create_index(
        "idx_workflows_tags", "workflows", ["tags"], unique=False, postgresql_using="gin"
    )
    op.create_table(
        "chat_messages",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "tool_calls",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("tool_call_id", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column(
            "usage", postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), nullable=True
        ),
        sa.Column(
            "metadata",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "role IN ('system', 'user', 'assistant', 'tool')", name=op.f("ck_chat_messages_role")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_chat_messages_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
    )
    op.create_index("idx_chat_messages_created_at", "chat_messages", ["created_at"], unique=False)
    op.create_index("idx_chat_messages_session_id", "chat_messages", ["session_id"], unique=False)
    op.create_table(
        "knowledge_items",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "content_type", sa.Text(), server_default=sa.text("'text/plain'"), nullable=False
        ),
        sa.Column("text_content", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=True),
        sa.Column("file_size", sa.Integer(), nullable=True),
        sa.Column("file_id", sa.Text(), nullable=True),
        sa.Column("sha256", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column(
            "metadata",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'indexed', 'error')", name=op.f("ck_knowledge_items_status")
        ),
        sa.CheckConstraint("file_size >= 0", name=op.f("ck_knowledge_items_file_size_range")),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["knowledge_sources.id"],
            name=op.f("fk_knowledge_items_source_id_knowledge_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_items")),
    )
    op.create_index(
        "idx_knowledge_items_created_at", "knowledge_items", ["created_at"], unique=False
    )
    op.create_index("idx_knowledge_items_file_id", "knowledge_items", ["file_id"], unique=False)
    op.create_index("idx_knowledge_items_source_id", "knowledge_items", ["source_id"], unique=False)
    op.create_index("idx_knowledge_items_status", "knowledge_items", ["status"], unique=False)
    op.create_index(
        "idx_knowledge_items_tags",
        "knowledge_items",
        ["tags"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_table(
        "scheduled_agents",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("prompt", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("interval_value", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("interval_unit", sa.Text(), server_default=sa.text("'hours'"), nullable=False),
        sa.Column("cron_expression", sa.Text(), nullable=True),
        sa.Column("timezone", sa.Text(), server_default=sa.text("'UTC'"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("start_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("end_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("last_run_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("next_run_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("github_user", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "interval_unit IN ('minutes', 'hours', 'days')",
            name=op.f("ck_scheduled_agents_interval_unit"),
        ),
        sa.CheckConstraint(
            "interval_value >= 1", name=op.f("ck_scheduled_agents_interval_value_range")
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_scheduled_agents_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_agents")),
    )
    op.create_index(
        "idx_scheduled_agents_created_at", "scheduled_agents", ["created_at"], unique=False
    )
    op.create_index("idx_scheduled_agents_enabled", "scheduled_agents", ["enabled"], unique=False)
    op.create_index(
        "idx_scheduled_agents_github_user", "scheduled_agents", ["github_user"], unique=False
    )
    op.create_index(
        "idx_scheduled_agents_next_run_at", "scheduled_agents", ["next_run_at"], unique=False
    )
    op.create_index(
        "idx_scheduled_agents_workflow_id", "scheduled_agents", ["workflow_id"], unique=False
    )
    op.create_table(
        "task_executions",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("agent_id", sa.Text(), nullable=True),
        sa.Column("scheduled_agent_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("trigger", sa.Text(), server_default=sa.text("'manual'"), nullable=False),
        sa.Column("celery_task_id", sa.Text(), nullable=True),
        sa.Column("prompt", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("tool_calls", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("turns", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "usage",
            postgresql.JSONB(none_as_null=True, astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("heartbeat_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("started_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("completed_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'halted', 'max_turns_reached')",
            name=op.f("ck_task_executions_status"),
        ),
        sa.CheckConstraint(
            "trigger IN ('manual', 'api', 'schedule', 'webhook')",
            name=op.f("ck_task_executions_trigger"),
        ),
        sa.CheckConstraint("tool_calls >= 0", name=op.f("ck_task_executions_tool_calls_range")),
        sa.CheckConstraint("turns >= 0", name=op.f("ck_task_executions_turns_range")),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_task_executions_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_executions")),
    )
    op.create_index("idx_task_executions_agent_id", "task_executions", ["agent_id"], unique=False)
    op.create_index(
        "idx_task_executions_celery_task_id", "task_executions", ["celery_task_id"], unique=False
    )
    op.create_index(
        "idx_task_executions_created_at", "task_executions", ["created_at"], unique=False
    )
    op.create_index(
        "idx_task_executions_scheduled_agent_id",
        "task_executions",
        ["scheduled_agent_id"],
        unique=False,
    )
    op.create_index("idx_task_executions_status", "task_executions", ["status"], unique=False)
    op.create_index(
        "idx_task_executions_workflow_id", "task_executions", ["workflow_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("idx_task_executions_workflow_id", table_name="task_executions")
    op.drop_index("idx_task_executions_status", table_name="task_executions")
    op.drop_index("idx_task_executions_scheduled_agent_id", table_name="task_executions")
    op.drop_index("idx_task_executions_created_at", table_name="task_executions")
    op.drop_index("idx_task_executions_celery_task_id", table_name="task_executions")
    op.drop_index("idx_task_executions_agent_id", table_name="task_executions")
    op.drop_table("task_executions")
    op.drop_index("idx_scheduled_agents_workflow_id", table_name="scheduled_agents")
    op.drop_index("idx_scheduled_agents_next_run_at", table_name="scheduled_agents")
    op.drop_index("idx_scheduled_agents_github_user", table_name="scheduled_agents")
    op.drop_index("idx_scheduled_agents_enabled", table_name="scheduled_agents")
    op.drop_index("idx_scheduled_agents_created_at", table_name="scheduled_agents")
    op.drop_table("scheduled_agents")
    op.drop_index("idx_knowledge_items_tags", table_name="knowledge_items", postgresql_using="gin")
    op.drop_index("idx_knowledge_items_status", table_name="knowledge_items")
    op.drop_index("idx_knowledge_items_source_id", table_name="knowledge_items")
    op.drop_index("idx_knowledge_items_file_id", table_name="knowledge_items")
    op.drop_index("idx_knowledge_items_created_at", table_name="knowledge_items")
    op.drop_table("knowledge_items")
    op.drop_index("idx_chat_messages_session_id", table_name="chat_messages")
    op.drop_index("idx_chat_messages_created_at", table_name="chat_messages")
    op.drop_table("chat_messages")
    op.drop_index("idx_workflows_tags", table_name="workflows", postgresql_using="gin")
    op.drop_index("idx_workflows_status", table_name="workflows")
    op.drop_index("idx_workflows_github_user", table_name="workflows")
    op.drop_index("idx_workflows_created_at", table_name="workflows")
    op.drop_index("idx_workflows_agent_id", table_name="workflows")
    op.drop_table("workflows")
    op.drop_index("idx_tokens_created_by", table_name="tokens")
    op.drop_index("idx_tokens_created_at", table_name="tokens")
    op.drop_table("tokens")
    op.drop_index("idx_skills_tags", table_name="skills", postgresql_using="gin")
    op.drop_index("idx_skills_name", table_name="skills")
    op.drop_index("idx_skills_created_by", table_name="skills")
    op.drop_index("idx_skills_created_at", table_name="skills")
    op.drop_table("skills")
    op.drop_index("idx_providers_provider_type", table_name="providers")
    op.drop_index("idx_providers_created_by", table_name="providers")
    op.drop_index("idx_providers_created_at", table_name="providers")
    op.drop_table("providers")
    op.drop_index("idx_memories_session_id", table_name="memories")
    op.drop_index("idx_memories_scope", table_name="memories")
    op.drop_index("idx_memories_expires_at", table_name="memories")
    op.drop_index("idx_memories_created_by", table_name="memories")
    op.drop_index("idx_memories_created_at", table_name="memories")
    op.drop_index("idx_memories_agent_id", table_name="memories")
    op.drop_table("memories")
    op.drop_index("idx_mcp_servers_transport_type", table_name="mcp_servers")
    op.drop_index("idx_mcp_servers_tags", table_name="mcp_servers", postgresql_using="gin")
    op.drop_index("idx_mcp_servers_status", table_name="mcp_servers")
    op.drop_index("idx_mcp_servers_name", table_name="mcp_servers")
    op.drop_index("idx_mcp_servers_created_by", table_name="mcp_servers")
    op.drop_index("idx_mcp_servers_created_at", table_name="mcp_servers")
    op.drop_table("mcp_servers")
    op.drop_index(
        "idx_knowledge_sources_tags", table_name="knowledge_sources", postgresql_using="gin"
    )
    op.drop_index("idx_knowledge_sources_status", table_name="knowledge_sources")
    op.drop_index("idx_knowledge_sources_source_type", table_name="knowledge_sources")
    op.drop_index("idx_knowledge_sources_name", table_name="knowledge_sources")
    op.drop_index("idx_knowledge_sources_created_by", table_name="knowledge_sources")
    op.drop_index("idx_knowledge_sources_created_at", table_name="knowledge_sources")
    op.drop_table("knowledge_sources")
    op.drop_index("idx_guardrails_tags", table_name="guardrails", postgresql_using="gin")
    op.drop_index("idx_guardrails_name", table_name="guardrails")
    op.drop_index("idx_guardrails_guardrail_type", table_name="guardrails")
    op.drop_index("idx_guardrails_created_by", table_name="guardrails")
    op.drop_index("idx_guardrails_created_at", table_name="guardrails")
    op.drop_table("guardrails")
    op.drop_index("idx_custom_tools_tags", table_name="custom_tools", postgresql_using="gin")
    op.drop_index("idx_custom_tools_name", table_name="custom_tools")
    op.drop_index("idx_custom_tools_created_by", table_name="custom_tools")
    op.drop_index("idx_custom_tools_created_at", table_name="custom_tools")
    op.drop_table("custom_tools")
    op.drop_index("idx_chat_sessions_updated_at", table_name="chat_sessions")
    op.drop_index("idx_chat_sessions_github_user", table_name="chat_sessions")
    op.drop_index("idx_chat_sessions_created_at", table_name="chat_sessions")
    op.drop_index("idx_chat_sessions_agent_id", table_name="chat_sessions")
    op.drop_table("chat_sessions")
    op.drop_index("idx_agents_tags", table_name="agents", postgresql_using="gin")
    op.drop_index("idx_agents_skill_tags", table_name="agents", postgresql_using="gin")
    op.drop_index("idx_agents_provider_id", table_name="agents")
    op.drop_index("idx_agents_name", table_name="agents")
    op.drop_index("idx_agents_mcp_server_tags", table_name="agents", postgresql_using="gin")
    op.drop_index("idx_agents_knowledge_tags", table_name="agents", postgresql_using="gin")
    op.drop_index("idx_agents_created_by", table_name="agents")
    op.drop_index("idx_agents_created_at", table_name="agents")
    op.drop_table("agents")
