"""The 15 entities of TBD Agents as pydantic models.

One definition serves both backends: the PostgreSQL tables (`storage/postgres/schema.py`) have one
column per field, and MongoDB documents have one key per field (with `_id` for `id`).

The model is a superset of the existing TBD Agents data model (the reference's section 2): every
field it has is a field here, under the same name, with the same default, and every value of its
enums is valid, so an existing document reads, updates and migrates as it is. Fields of our own
come after them. A stored document's keys that no field names (fields of some later or forked
version, a user's own annotations) are kept in `extras`: on MongoDB they stay top-level keys of
the document (the codec moves them in and out), on PostgreSQL they live in the JSONB `extras`
column, so nothing a document held is ever dropped.

Every model has `id`, `created_at`, `updated_at` and `version` (see `Entity.version`). Class
variables describe storage facts that are the same for every backend: the collection/table name,
the unique keys, and which field holds the record's owner (None where the owner is the parent
record's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tbd_agents.domain.enums import (
    AuthType,
    GuardrailAction,
    GuardrailType,
    IntervalUnit,
    KnowledgeContentType,
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


@dataclass(frozen=True, slots=True)
class NameRule:
    """Marks a name field: a request must give it 1 to 512 characters (`api.schemas` applies the
    rule to request bodies). Stored records are not held to it, since the existing TBD Agents had
    no such limit: an old record with an empty or very long name still reads and migrates."""

    min_length: int = 1
    max_length: int = 512


Name = Annotated[str, NameRule()]


@dataclass(frozen=True, slots=True)
class Numbering:
    """A field numbered 1, 2, 3… per parent record, from a counter the parent holds.

    The storage layer fills `field` when a record is created with it at 0: it adds the number of
    new records to the parent's `counter` (one atomic statement, which on PostgreSQL also holds
    the parent's row lock until the transaction ends) and gives them the numbers in the order
    they are written. So the order of the records is the order they were stored in, whatever
    their clocks say, and two writers of the same parent never interleave one batch. The same
    statement raises the parent's `count` of its children, if it keeps one."""

    #: The numbered field of the child (e.g. a chat message's `seq`).
    field: str
    #: The child's reference to its parent (e.g. `session_id`).
    parent_field: str
    #: The parent's collection (e.g. `chat_sessions`).
    parent: str
    #: The parent's counter: the last number given (e.g. `message_seq`).
    counter: str
    #: A count of its children the parent keeps (e.g. `message_count`), raised by as much.
    count: str | None = None


class Entity(BaseModel):
    """Fields and storage facts common to every stored record."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True, use_enum_values=False)

    collection: ClassVar[str] = ""
    unique_keys: ClassVar[tuple[tuple[str, ...], ...]] = ()
    owner_field: ClassVar[str | None] = "created_by"
    #: A field the storage layer numbers per parent record (see `Numbering`), if any.
    numbering: ClassVar[Numbering | None] = None

    id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    created_at: UtcDatetime = Field(default_factory=utcnow)
    updated_at: UtcDatetime = Field(default_factory=utcnow)
    #: How many times the record was changed, plus one: 1 when created, raised by one in the same
    #: statement as every change (`storage.common.VERSIONED`); the API's `ETag`. A MongoDB
    #: document written before versions existed has none and reads as 0.
    version: int = Field(default=1, ge=0)
    #: Stored keys no field names, kept as they were (see the module docstring).
    extras: Json = Field(default_factory=dict)

    @field_validator("extras")
    @classmethod
    def _extras_are_not_fields(cls, value: Json) -> Json:
        clash = sorted(k for k in value if k == "_id" or (k in cls.model_fields and k != "extras"))
        if clash:
            raise ValueError(f"extras may not hold keys that are fields of the record: {clash}")
        return value


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
    #: Agents this agent may call as tools (engine/delegation.py): each is offered to the model
    #: as a tool named after the agent. The delegation graph may not contain a cycle.
    agent_tool_ids: StrList = Field(default_factory=list)
    #: Ours: offered as a tool of its owner's MCP server at `/mcp` (docs/mcp-server.md).
    mcp_exposed: bool = False
    #: Which tool calls run, are refused or wait for a human (`domain/approvals.ToolPolicy`);
    #: None: every call runs, as before.
    tool_policy: Json | None = None


class ChatSession(Entity):
    collection = "chat_sessions"
    owner_field = "github_user"

    agent_id: str
    github_user: str | None = None
    #: The first 80 characters of the first user message; None until then.
    title: str | None = None
    message_count: int = Field(default=0, ge=0)
    last_message_at: UtcDatetime | None = None
    metadata: Json = Field(default_factory=dict)
    #: The last `seq` given to a message of the session (the storage layer counts it up).
    message_seq: int = Field(default=0, ge=0)


class ChatMessage(Entity):
    collection = "chat_messages"
    owner_field = None
    numbering = Numbering("seq", "session_id", "chat_sessions", "message_seq", "message_count")

    session_id: str
    role: Annotated[MessageRole, LenientEnum]
    content: str = ""
    tool_calls: list[Json] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    usage: Json | None = None
    metadata: Json = Field(default_factory=dict)
    #: The message's place in its session (1, 2, 3…), given when it is stored: the order of the
    #: conversation. Timestamps cannot order it: a turn's messages share a millisecond. 0 means
    #: not numbered yet (a Mongo→PostgreSQL migration numbers its rows when the load ends).
    seq: int = Field(default=0, ge=0)


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
    #: When the memory expires (None: never). The existing name of the field.
    ttl: UtcDatetime | None = None
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
    auth_type: Annotated[AuthType, LenientEnum] = AuthType.X_API_KEY
    base_url: str | None = None
    azure_deployment: str | None = None
    azure_api_version: str | None = "2024-12-01-preview"
    description: str = ""
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
    status: Annotated[KnowledgeSourceStatus, LenientEnum] = KnowledgeSourceStatus.REGISTERED
    tags: StrList = Field(default_factory=list)
    last_error: str | None = None
    created_by: str | None = None


class KnowledgeItem(Entity):
    collection = "knowledge_items"
    owner_field = None

    source_id: str
    name: str = ""
    content_type: Annotated[KnowledgeContentType, LenientEnum] = KnowledgeContentType.TEXT
    text_content: str | None = None
    file_id: str | None = None
    file_name: str | None = None
    file_size: int | None = Field(default=None, ge=0)
    mime_type: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _media_type_in_content_type(cls, data: Any) -> Any:
        """Earlier versions of this hub kept the media type in `content_type`: read such a record
        as the kind it is, its media type in `mime_type` (the revision ba7655b3ce11 does the same
        to stored rows)."""
        if isinstance(data, dict):
            kind = data.get("content_type")
            if isinstance(kind, str) and "/" in kind:
                data = dict(data)
                data.setdefault("mime_type", kind)
                if kind.startswith("image/"):
                    data["content_type"] = KnowledgeContentType.IMAGE
                elif data.get("file_id"):
                    data["content_type"] = KnowledgeContentType.FILE
                else:
                    data["content_type"] = KnowledgeContentType.TEXT
        return data

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
    #: Environment of the tool: env var → a literal or a `{{token:NAME}}` template.
    env_config: dict[str, str] = Field(default_factory=dict)
    is_enabled: bool = True
    #: Set on tools the plugin loader installed.
    is_plugin: bool = False
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
    #: `{forbidden_patterns[], required_patterns[], max_length?, min_length?}` (prompt/input).
    prompt_config: Json | None = None
    #: `{json_schema}`: the JSON Schema a structured request must satisfy (request).
    request_config: Json | None = None
    #: `{forbidden_patterns[], required_patterns[], max_length?, pii_detection, must_be_valid_json}`
    output_config: Json | None = None
    action: Annotated[GuardrailAction, LenientEnum] = GuardrailAction.BLOCK
    patterns: StrList = Field(default_factory=list)
    tags: StrList = Field(default_factory=list)
    created_by: str | None = None


class Workflow(Entity):
    collection = "workflows"
    owner_field = "github_user"

    title: str | None = None
    agent_id: str
    github_user: str | None = None
    model: str | None = None
    #: Limit on tool calls per run (the existing system never checked its sign: 0 or less
    #: allows none).
    max_turns: int = 5
    current_turn: int = 0
    session_id: str | None = None
    skill_ids: StrList = Field(default_factory=list)
    skill_tags: StrList = Field(default_factory=list)
    messages: list[Json] = Field(default_factory=list)
    logs: list[Json] = Field(default_factory=list)
    status: Annotated[WorkflowStatus, LenientEnum] = WorkflowStatus.ACTIVE
    output_format: Annotated[OutputFormat, LenientEnum] = OutputFormat.JSON
    usage: Json | None = None
    infinite_session: bool = True
    caveman: bool = False
    bypass_memory: bool = False
    auto_memory: bool = False
    tsv_tool_results: bool = False
    reasoning_effort: str | None = None
    guardrail_ids: StrList = Field(default_factory=list)
    guardrail_tags: StrList = Field(default_factory=list)
    repo_url: str | None = None
    repo_branch: str | None = None
    repo_token_name: str | None = None
    #: Repositories by id and tag, as the official SDKs send them (`WorkflowCreate`); kept and
    #: returned (the existing system's own repository checkout is `repo_url`/`repo_branch`).
    repository_ids: StrList = Field(default_factory=list)
    repository_tags: StrList = Field(default_factory=list)
    #: Environment variable → token name, applied to custom tools.
    credential_overrides: dict[str, str] = Field(default_factory=dict)
    webhook_url: str | None = None
    error_webhook_url: str | None = None
    description: str = ""
    last_run_at: UtcDatetime | None = None
    tags: StrList = Field(default_factory=list)
    #: The workflow's tool policy (`domain/approvals.ToolPolicy`), checked before the agent's.
    tool_policy: Json | None = None
    #: When the conversation was last forgotten (`POST /api/workflows/{id}/reset`): the next
    #: run continues the runs created after it (all of them while None).
    conversation_reset_at: UtcDatetime | None = None


class TaskExecution(Entity):
    collection = "task_executions"
    owner_field = None

    workflow_id: str
    prompt: str = ""
    status: Annotated[TaskStatus, LenientEnum] = TaskStatus.PENDING
    celery_task_id: str | None = None
    #: The process running (or that ran) the task; it holds the run's lease.
    worker: str | None = None
    model: str | None = None
    reasoning_effort: str | None = None
    tool_calls: int = Field(default=0, ge=0)
    #: The final answer.
    response: str | None = None
    #: `{todos: [{id, title, status}], current_step, percent_complete}`.
    progress: Json | None = None
    logs: list[Json] = Field(default_factory=list)
    messages: list[Json] = Field(default_factory=list)
    usage: Json | None = None
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    scheduled_agent_id: str | None = None
    agent_id: str | None = None
    trigger: Annotated[TaskTrigger, LenientEnum] = TaskTrigger.MANUAL
    error: str | None = None
    turns: int = Field(default=0, ge=0)
    heartbeat_at: UtcDatetime | None = None
    #: The GitHub token of the caller who started the run, encrypted with the server's token
    #: cipher, for an agent without provider_id (the default model, GitHub Copilot); cleared
    #: when the run ends. Never serialized (API answers, webhooks, exports): `exclude`.
    caller_credential: str | None = Field(default=None, exclude=True, repr=False)
    #: The W3C `traceparent` of the request (or schedule firing) that created the run, so the
    #: run's span continues that trace in whichever process executes it, however late it is
    #: dispatched (observability/spans.py). Internal: never serialized (`exclude`).
    trace_parent: str | None = Field(default=None, exclude=True, repr=False)
    #: A run of an agent that another agent called as a tool (engine/delegation.py): the run
    #: of the calling agent (None: a run a user, schedule or webhook started, or one called
    #: from a chat turn), the first run of the chain (None for a run that is its own root),
    #: how deep in the chain it is (0: not delegated), and the chat session of a chain a chat
    #: turn started.
    parent_task_id: str | None = None
    root_task_id: str | None = None
    delegation_depth: int = Field(default=0, ge=0)
    chat_session_id: str | None = None
    #: What a run paused for approval needs to resume (the conversation so far, ending with
    #: the assistant message whose calls wait, and the counters): set when it pauses, cleared
    #: when it resumes. Internal: never serialized (`exclude`).
    paused_state: Json | None = Field(default=None, exclude=True, repr=False)
    #: Every message this run added to its workflow's conversation (user, assistant and tool
    #: messages, each tagged with `task_id`). A workflow's next run continues the conversation
    #: made of these, so the workflow row holds only the last run's view (`Workflow.messages`)
    #: and no longer grows by the whole conversation on every run.
    run_messages: list[Json] = Field(default_factory=list)


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
    #: The existing system's Celery beat entry (`redbeat:scheduled_agent:{id}`); kept as data.
    redbeat_key: str | None = None
    github_user: str | None = None


class McpServer(Entity):
    collection = "mcp_servers"

    name: Name
    description: str = ""
    transport_type: Annotated[McpTransport, LenientEnum] = McpTransport.STDIO
    connection_config: Json = Field(default_factory=dict)
    allowed_tools: StrList = Field(default_factory=list)
    status: Annotated[McpServerStatus, LenientEnum] = McpServerStatus.REGISTERED
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
