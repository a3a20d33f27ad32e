"""The 15 entities of TBD Agents as pydantic models.

One definition serves both backends: the PostgreSQL tables (`storage/postgres/schema.py`) have one
column per field, and MongoDB documents have one key per field (with `_id` for `id`). Field names,
defaults and enum values follow existing TBD Agents documents, so old data reads as it is.

Every model has `id`, `created_at` and `updated_at`. Class variables describe storage facts that are
the same for every backend: the collection/table name, the unique keys, and which field holds the
record's owner (None where the owner is the parent record's).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tbd_agents.domain.enums import (
    AuthType,
    GuardrailAction,
    GuardrailType,
    IntervalUnit,
    KnowledgeItemStatus,
    KnowledgeSourceStatus,
    KnowledgeSourceType,
    McpServerStatus,
    McpTransport,
    MemoryScope,
    MessageRole,
    MissedRunPolicy,
    OutputFormat,
    OverlapPolicy,
    ProviderType,
    TaskStatus,
    TaskTrigger,
    WorkflowStatus,
)
from tbd_agents.domain.types import LenientEnum, UtcDatetime, new_id, utcnow

Json = dict[str, Any]
StrList = list[str]
Name = Annotated[str, Field(min_length=1, max_length=512)]


class Entity(BaseModel):
    """Fields and storage facts common to every stored record."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True, use_enum_values=False)

    collection: ClassVar[str] = ""
    unique_keys: ClassVar[tuple[tuple[str, ...], ...]] = ()
    owner_field: ClassVar[str | None] = "created_by"

    id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    created_at: UtcDatetime = Field(default_factory=utcnow)
    updated_at: UtcDatetime = Field(default_factory=utcnow)


class Agent(Entity):
    collection = "agents"

    name: Name
    description: str = ""
    system_prompt: str = "You are a helpful assistant."
    model: str | None = None
    provider_id: str | None = None
    mcp_server_ids: StrList = Field(default_factory=list)
    mcp_server_tags: StrList = Field(default_factory=list)
    tool_definitions: list[Json] = Field(default_factory=list)
    knowledge_source_ids: StrList = Field(default_factory=list)
    knowledge_tags: StrList = Field(default_factory=list)
    builtin_tools: StrList = Field(default_factory=list)
    custom_tool_ids: StrList = Field(default_factory=list)
    skill_ids: StrList = Field(default_factory=list)
    skill_tags: StrList = Field(default_factory=list)
    guardrail_ids: StrList = Field(default_factory=list)
    output_format: Annotated[OutputFormat, LenientEnum] = OutputFormat.TEXT
    max_turns: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    memory_enabled: bool = True
    tags: StrList = Field(default_factory=list)
    created_by: str | None = None


class ChatSession(Entity):
    collection = "chat_sessions"
    owner_field = "github_user"

    agent_id: str
    github_user: str | None = None
    title: str = "New chat"
    message_count: int = Field(default=0, ge=0)
    last_message_at: UtcDatetime | None = None
    metadata: Json = Field(default_factory=dict)


class ChatMessage(Entity):
    collection = "chat_messages"
    owner_field = None

    session_id: str
    role: Annotated[MessageRole, LenientEnum]
    content: str = ""
    tool_calls: list[Json] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    usage: Json | None = None
    metadata: Json = Field(default_factory=dict)


class Memory(Entity):
    collection = "memories"
    unique_keys = (("agent_id", "scope", "key"),)

    agent_id: str
    scope: Annotated[MemoryScope, LenientEnum] = MemoryScope.AGENT
    key: Name
    value: str = ""
    session_id: str | None = None
    embedding: list[float] | None = None
    metadata: Json = Field(default_factory=dict)
    expires_at: UtcDatetime | None = None
    created_by: str | None = None


class Skill(Entity):
    collection = "skills"

    name: Name
    description: str = ""
    instructions: str = ""
    tags: StrList = Field(default_factory=list)
    created_by: str | None = None


class Token(Entity):
    collection = "tokens"
    unique_keys = (("name",),)

    name: Name
    encrypted_value: str
    description: str = ""
    key_version: int = Field(default=1, ge=1)
    created_by: str | None = None


class Provider(Entity):
    collection = "providers"
    unique_keys = (("name",),)

    name: Name
    provider_type: Annotated[ProviderType, LenientEnum] = ProviderType.OPENAI
    api_key_token_name: str | None = None
    auth_type: Annotated[AuthType, LenientEnum] = AuthType.API_KEY
    base_url: str | None = None
    azure_deployment: str | None = None
    azure_api_version: str | None = None
    default_model: str | None = None
    models: StrList = Field(default_factory=list)
    extra_headers: dict[str, str] = Field(default_factory=dict)
    created_by: str | None = None


class KnowledgeSource(Entity):
    collection = "knowledge_sources"

    name: Name
    description: str = ""
    source_type: Annotated[KnowledgeSourceType, LenientEnum] = KnowledgeSourceType.MANUAL
    connection_config: Json = Field(default_factory=dict)
    status: Annotated[KnowledgeSourceStatus, LenientEnum] = KnowledgeSourceStatus.READY
    tags: StrList = Field(default_factory=list)
    last_error: str | None = None
    created_by: str | None = None


class KnowledgeItem(Entity):
    collection = "knowledge_items"
    owner_field = None

    source_id: str
    title: str = ""
    content_type: str = "text/plain"
    text_content: str = ""
    file_name: str | None = None
    file_size: int | None = Field(default=None, ge=0)
    file_id: str | None = None
    sha256: str | None = None
    status: Annotated[KnowledgeItemStatus, LenientEnum] = KnowledgeItemStatus.PENDING
    tags: StrList = Field(default_factory=list)
    metadata: Json = Field(default_factory=dict)


class CustomTool(Entity):
    collection = "custom_tools"

    name: Name
    description: str = ""
    source_code: str = ""
    parameters_schema: Json = Field(default_factory=lambda: {"type": "object", "properties": {}})
    is_enabled: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: int = Field(default=30, ge=1, le=3600)
    memory_limit_mb: int = Field(default=256, ge=16, le=65536)
    #: Hosts the tool may reach through the sandbox's egress proxy (`name`, `*.suffix`, either
    #: with `:port`); empty: no network at all.
    allowed_hosts: StrList = Field(default_factory=list)
    tags: StrList = Field(default_factory=list)
    created_by: str | None = None


class Guardrail(Entity):
    collection = "guardrails"

    name: Name
    description: str = ""
    guardrail_type: Annotated[GuardrailType, LenientEnum] = GuardrailType.INPUT
    enabled: bool = True
    action: Annotated[GuardrailAction, LenientEnum] = GuardrailAction.BLOCK
    patterns: StrList = Field(default_factory=list)
    prompt_config: Json = Field(default_factory=dict)
    tags: StrList = Field(default_factory=list)
    created_by: str | None = None


class Workflow(Entity):
    collection = "workflows"
    owner_field = "github_user"

    agent_id: str
    name: str = ""
    description: str = ""
    status: Annotated[WorkflowStatus, LenientEnum] = WorkflowStatus.IDLE
    model: str | None = None
    max_turns: int = Field(default=5, ge=1)
    messages: list[Json] = Field(default_factory=list)
    logs: list[Json] = Field(default_factory=list)
    webhook_url: str | None = None
    error_webhook_url: str | None = None
    github_user: str | None = None
    last_run_at: UtcDatetime | None = None
    tags: StrList = Field(default_factory=list)


class TaskExecution(Entity):
    collection = "task_executions"
    owner_field = None

    workflow_id: str
    agent_id: str | None = None
    scheduled_agent_id: str | None = None
    status: Annotated[TaskStatus, LenientEnum] = TaskStatus.PENDING
    trigger: Annotated[TaskTrigger, LenientEnum] = TaskTrigger.MANUAL
    celery_task_id: str | None = None
    prompt: str = ""
    result: str | None = None
    error: str | None = None
    tool_calls: int = Field(default=0, ge=0)
    turns: int = Field(default=0, ge=0)
    usage: Json = Field(default_factory=dict)
    worker_id: str | None = None
    heartbeat_at: UtcDatetime | None = None
    started_at: UtcDatetime | None = None
    completed_at: UtcDatetime | None = None


class ScheduledAgent(Entity):
    collection = "scheduled_agents"
    owner_field = "github_user"

    workflow_id: str
    name: str = ""
    prompt: str = ""
    interval_value: int = Field(default=1, ge=1)
    interval_unit: Annotated[IntervalUnit, LenientEnum] = IntervalUnit.HOURS
    cron_expression: str | None = None
    timezone: str = "UTC"
    enabled: bool = True
    start_at: UtcDatetime | None = None
    end_at: UtcDatetime | None = None
    overlap_policy: Annotated[OverlapPolicy, LenientEnum] = OverlapPolicy.SKIP
    missed_run_policy: Annotated[MissedRunPolicy, LenientEnum] = MissedRunPolicy.RUN_ONCE
    last_run_at: UtcDatetime | None = None
    next_run_at: UtcDatetime | None = None
    github_user: str | None = None


class McpServer(Entity):
    collection = "mcp_servers"

    name: Name
    description: str = ""
    transport_type: Annotated[McpTransport, LenientEnum] = McpTransport.STDIO
    connection_config: Json = Field(default_factory=dict)
    allowed_tools: StrList = Field(default_factory=list)
    status: Annotated[McpServerStatus, LenientEnum] = McpServerStatus.UNKNOWN
    last_error: str | None = None
    tags: StrList = Field(default_factory=list)
    created_by: str | None = None


#: The 15 entities, in the order the guide lists their tables.
ENTITIES: tuple[type[Entity], ...] = (
    Agent,
    ChatSession,
    ChatMessage,
    Memory,
    Skill,
    Token,
    Provider,
    KnowledgeItem,
    KnowledgeSource,
    CustomTool,
    Guardrail,
    Workflow,
    TaskExecution,
    ScheduledAgent,
    McpServer,
)

ENTITY_BY_COLLECTION: dict[str, type[Entity]] = {e.collection: e for e in ENTITIES}
