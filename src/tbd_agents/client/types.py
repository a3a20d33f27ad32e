"""Typed request and response records of the client.

Names and fields follow the official TBD Agents SDK's types so scripts written against it keep
working. Every model accepts fields it does not declare (this server adds some: `version`,
`owner`, `extras`, ...) and they stay readable as attributes and in `model_dump()`. Response
fields other than `id` have defaults, so an older or newer server's answer still parses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

from tbd_agents.client.types_base import *  # noqa: F403
from tbd_agents.client.types_base import (
    ApiModel,
    GuardrailType,
    ImportResult,
    KnowledgeContentType,
    KnowledgeSourceType,
    LogEntry,
    Message,
    OutputFormat,
    ProviderType,
    Record,
    ScheduleInterval,
    TaskStatus,
    TransportType,
    UsageStats,
    WorkflowStatus,
)

# --- agents, skills -----------------------------------------------------------------------


class AgentCreate(ApiModel):
    name: str
    description: str = ""
    system_prompt: str = "You are a helpful assistant."
    model: str | None = None
    mcp_server_ids: list[str] = Field(default_factory=list)
    mcp_server_tags: list[str] = Field(default_factory=list)
    tool_definitions: list[dict[str, Any]] = Field(default_factory=list)
    knowledge_source_ids: list[str] = Field(default_factory=list)
    knowledge_tags: list[str] = Field(default_factory=list)
    builtin_tools: list[str] = Field(default_factory=list)
    custom_tool_ids: list[str] = Field(default_factory=list)
    provider_id: str | None = None
    #: Agents this agent may call as tools (docs/multi-agent.md).
    agent_tool_ids: list[str] = Field(default_factory=list)


class AgentUpdate(ApiModel):
    name: str | None = None
    description: str | None = None
    system_prompt: str | None = None
    model: str | None = None
    builtin_tools: list[str] | None = None
    provider_id: str | None = None
    agent_tool_ids: list[str] | None = None


class Agent(Record):
    name: str = ""
    description: str = ""
    system_prompt: str = ""
    model: str | None = None
    provider_id: str | None = None
    builtin_tools: list[str] = Field(default_factory=list)
    mcp_server_ids: list[str] = Field(default_factory=list)
    knowledge_source_ids: list[str] = Field(default_factory=list)
    custom_tool_ids: list[str] = Field(default_factory=list)
    agent_tool_ids: list[str] = Field(default_factory=list)


class SkillCreate(ApiModel):
    name: str
    description: str = ""
    instructions: str
    tags: list[str] = Field(default_factory=list)


class SkillUpdate(ApiModel):
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tags: list[str] | None = None


class Skill(Record):
    name: str = ""
    description: str = ""
    instructions: str = ""
    tags: list[str] = Field(default_factory=list)


# --- MCP servers, knowledge ---------------------------------------------------------------


class McpServerCreate(ApiModel):
    name: str
    transport_type: TransportType | str
    connection_config: dict[str, Any]
    allowed_tools: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class McpServerUpdate(ApiModel):
    name: str | None = None
    transport_type: TransportType | str | None = None
    connection_config: dict[str, Any] | None = None
    allowed_tools: list[str] | None = None
    tags: list[str] | None = None


class McpServer(Record):
    name: str = ""
    transport_type: str = ""
    connection_config: dict[str, Any] = Field(default_factory=dict)
    allowed_tools: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    status: str = ""
    last_error: str | None = None


class McpTestResult(ApiModel):
    success: bool = False
    tools: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None


class McpTools(ApiModel):
    tools: list[dict[str, Any]] = Field(default_factory=list)


class AllowedToolsUpdate(ApiModel):
    allowed_tools: list[str] = Field(default_factory=list)


class KnowledgeSourceCreate(ApiModel):
    name: str
    description: str = ""
    source_type: KnowledgeSourceType | str
    connection_config: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)


class KnowledgeSourceUpdate(ApiModel):
    name: str | None = None
    description: str | None = None
    source_type: KnowledgeSourceType | str | None = None
    connection_config: dict[str, Any] | None = None
    tags: list[str] | None = None


class KnowledgeSource(Record):
    name: str = ""
    description: str = ""
    source_type: str = ""
    connection_config: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    status: str = ""
    last_error: str | None = None


class KnowledgeSourceTestResult(ApiModel):
    success: bool = False
    error: str | None = None


class KnowledgeItemCreate(ApiModel):
    source_id: str
    name: str
    content_type: KnowledgeContentType | str = KnowledgeContentType.TEXT
    text_content: str | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class KnowledgeItemUpdate(ApiModel):
    name: str | None = None
    text_content: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None


class KnowledgeItem(Record):
    source_id: str = ""
    name: str = ""
    content_type: str = ""
    text_content: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    mime_type: str | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class KnowledgeQueryResponse(ApiModel):
    items: list[KnowledgeItem] = Field(default_factory=list)


class DownloadedContent(ApiModel):
    content: bytes
    content_type: str | None = None
    filename: str | None = None


# --- providers, tokens --------------------------------------------------------------------


class ProviderCreate(ApiModel):
    name: str
    provider_type: ProviderType | str
    api_key_token_name: str
    base_url: str | None = None
    azure_api_version: str = "2024-12-01-preview"
    azure_deployment: str | None = None
    description: str = ""


class ProviderUpdate(ApiModel):
    name: str | None = None
    provider_type: ProviderType | str | None = None
    api_key_token_name: str | None = None
    base_url: str | None = None
    azure_api_version: str | None = None
    azure_deployment: str | None = None
    description: str | None = None


class Provider(Record):
    name: str = ""
    provider_type: str = ""
    api_key_token_name: str = ""
    base_url: str | None = None
    description: str = ""


class TokenCreate(ApiModel):
    name: str
    value: str
    description: str = ""


class TokenUpdate(ApiModel):
    value: str | None = None
    description: str | None = None


class Token(Record):
    name: str = ""
    description: str = ""
    masked_value: str = ""
    created_by: str = ""


# --- workflows, runs ----------------------------------------------------------------------


class WorkflowCreate(ApiModel):
    agent_id: str
    title: str | None = None
    max_turns: int | None = None
    output_format: OutputFormat | str = OutputFormat.JSON
    model: str | None = None
    skill_ids: list[str] = Field(default_factory=list)
    skill_tags: list[str] = Field(default_factory=list)
    infinite_session: bool = True
    reasoning_effort: str | None = None
    guardrail_ids: list[str] = Field(default_factory=list)
    guardrail_tags: list[str] = Field(default_factory=list)


class WorkflowUpdate(ApiModel):
    title: str | None = None
    agent_id: str | None = None
    max_turns: int | None = None
    output_format: OutputFormat | str | None = None
    model: str | None = None
    skill_ids: list[str] | None = None
    status: WorkflowStatus | str | None = None


class Workflow(Record):
    title: str | None = None
    agent_id: str = ""
    model: str = ""
    max_turns: int = 0
    current_turn: int = 0
    session_id: str | None = None
    skill_ids: list[str] = Field(default_factory=list)
    status: str = ""
    output_format: str = ""
    usage: UsageStats | None = None
    logs: list[LogEntry] = Field(default_factory=list)
    messages: list[Message] = Field(default_factory=list)
    task_count: int = 0
    last_task_status: str | None = None
    last_task_at: datetime | None = None


class PromptRequest(ApiModel):
    prompt: str | None = None
    request: dict[str, Any] | None = None
    reasoning_effort: str | None = None

    @model_validator(mode="after")
    def _needs_content(self) -> PromptRequest:
        if self.prompt is None and self.request is None:
            raise ValueError("either prompt or request must be provided")
        return self


class PromptResponse(ApiModel):
    workflow_id: str = ""
    task_id: str | None = None
    status: str = ""
    current_turn: int = 0
    max_turns: int = 0
    response: str | None = None
    output_format: str = ""
    usage: UsageStats | None = None
    logs: list[LogEntry] = Field(default_factory=list)
    messages: list[Message] = Field(default_factory=list)


class TodoItem(ApiModel):
    id: int
    title: str = ""
    status: str = ""


class TaskProgress(ApiModel):
    todos: list[TodoItem] = Field(default_factory=list)
    current_step: int | None = None
    percent_complete: float = 0.0


class TaskExecutionSummary(ApiModel):
    id: str
    workflow_id: str = ""
    workflow_title: str | None = None
    agent_name: str | None = None
    prompt: str = ""
    status: TaskStatus | str = ""
    worker: str | None = None
    model: str | None = None
    reasoning_effort: str | None = None
    tool_calls: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_seconds: float | None = None
    created_at: datetime | None = None
    #: A run of an agent another agent called as a tool (docs/multi-agent.md).
    parent_task_id: str | None = None
    root_task_id: str | None = None
    delegation_depth: int = 0


class TaskExecution(TaskExecutionSummary):
    celery_task_id: str | None = None
    response: str | None = None
    progress: TaskProgress | None = None
    logs: list[LogEntry] = Field(default_factory=list)
    messages: list[Message] = Field(default_factory=list)
    usage: UsageStats | None = None


class WorkflowStreamEvent(ApiModel):
    """One event of a workflow's stream: `type` is log, message, message_delta, usage,
    status, progress or output_guardrail_violation; `data` its payload."""

    id: int | str | None = None
    type: str
    data: Any = None
    timestamp: datetime | str | None = None


# --- guardrails, memories, schedules, custom tools ----------------------------------------


class GuardrailCreate(ApiModel):
    name: str
    description: str = ""
    guardrail_type: GuardrailType | str
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True
    prompt_config: dict[str, Any] | None = None
    request_config: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None


class GuardrailUpdate(ApiModel):
    name: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    enabled: bool | None = None
    prompt_config: dict[str, Any] | None = None
    request_config: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None


class Guardrail(Record):
    name: str = ""
    description: str = ""
    guardrail_type: str = ""
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True
    prompt_config: dict[str, Any] | None = None
    request_config: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None


class MemoryCreate(ApiModel):
    agent_id: str
    scope: str
    key: str
    value: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl: datetime | None = None


class MemoryUpdate(ApiModel):
    scope: str | None = None
    key: str | None = None
    value: str | None = None
    metadata: dict[str, Any] | None = None
    ttl: datetime | None = None


class Memory(Record):
    agent_id: str = ""
    scope: str = ""
    key: str = ""
    value: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl: datetime | None = None


class MemorySearchRequest(ApiModel):
    agent_id: str
    query: str
    scope: str | None = None
    limit: int = 10


class ScheduledAgentCreate(ApiModel):
    name: str
    workflow_id: str
    prompt: str
    interval_value: int
    interval_unit: ScheduleInterval | str = ScheduleInterval.HOURS
    start_at: datetime
    end_at: datetime | None = None


class ScheduledAgentUpdate(ApiModel):
    name: str | None = None
    prompt: str | None = None
    interval_value: int | None = None
    interval_unit: ScheduleInterval | str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None


class ScheduledAgent(Record):
    name: str = ""
    workflow_id: str = ""
    prompt: str = ""
    interval_value: int = 0
    interval_unit: str = ""
    start_at: datetime | None = None
    end_at: datetime | None = None
    enabled: bool = True
    last_run_at: datetime | None = None
    next_run_at: datetime | None = None


class CustomToolCreate(ApiModel):
    name: str
    description: str = ""
    source_code: str
    parameters_schema: dict[str, Any] = Field(default_factory=dict)
    env_config: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    is_enabled: bool = True


class CustomToolUpdate(ApiModel):
    name: str | None = None
    description: str | None = None
    source_code: str | None = None
    parameters_schema: dict[str, Any] | None = None
    env_config: dict[str, str] | None = None
    tags: list[str] | None = None
    is_enabled: bool | None = None


class CustomTool(Record):
    name: str = ""
    description: str = ""
    source_code: str = ""
    parameters_schema: dict[str, Any] = Field(default_factory=dict)
    env_config: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    is_enabled: bool = True
    is_plugin: bool = False


class CustomToolRunResponse(ApiModel):
    tool_name: str = ""
    result: Any = None
    success: bool = False
    error: str | None = None


class CustomToolValidateResponse(ApiModel):
    valid: bool = False
    inferred_schema: dict[str, Any] | None = None
    error: str | None = None


class EnvMappingResponse(ApiModel):
    tool_id: str = ""
    tool_name: str = ""
    env_vars: list[dict[str, Any]] = Field(default_factory=list)
    available_tokens: list[dict[str, Any]] = Field(default_factory=list)


# --- chat, bundles ------------------------------------------------------------------------


class ChatRequest(ApiModel):
    message: str
    session_id: str | None = None


class ChatMessageRecord(ApiModel):
    id: str
    role: str = ""
    content: str = ""
    usage: dict[str, Any] | None = None
    created_at: datetime | None = None


class ChatSessionResponse(Record):
    agent_id: str = ""
    title: str | None = None
    message_count: int = 0


class ChatSessionDetail(ChatSessionResponse):
    messages: list[ChatMessageRecord] = Field(default_factory=list)


class ChatStartResponse(ApiModel):
    workflow_id: str
    agent_name: str = ""
    agent_id: str = ""


class ChatEvent(ApiModel):
    """One event of a chat turn's stream: session, delta, done, error, tool_call, ..."""

    type: str
    data: dict[str, Any] = Field(default_factory=dict)


class FullExportBundle(ApiModel):
    version: str = "1.0"
    exported_at: datetime | None = None
    resource_type: str = "bundle"
    skills: list[dict[str, Any]] = Field(default_factory=list)
    agents: list[dict[str, Any]] = Field(default_factory=list)
    workflows: list[dict[str, Any]] = Field(default_factory=list)
    knowledge_sources: list[dict[str, Any]] = Field(default_factory=list)


class BundleImportResult(ApiModel):
    skills: ImportResult = Field(default_factory=ImportResult)
    agents: ImportResult = Field(default_factory=ImportResult)
    workflows: ImportResult = Field(default_factory=ImportResult)
    knowledge_sources: ImportResult = Field(default_factory=ImportResult)
