"""Enumerations of the data model.

Values are lower-case strings, the spelling existing TBD Agents documents use. Input is matched
case-insensitively (see `tbd_agents.domain.types.LowerEnum`), so a legacy `"STDIO"` still reads.
"""

from __future__ import annotations

from enum import StrEnum


class MessageRole(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class MemoryScope(StrEnum):
    SESSION = "session"  # one workflow run or chat session
    AGENT = "agent"  # one agent, all its sessions
    GLOBAL = "global"  # every agent of the same owner


class ProviderType(StrEnum):
    OPENAI = "openai"
    AZURE_OPENAI = "azure_openai"
    ANTHROPIC = "anthropic"
    CUSTOM = "custom"
    GITHUB_COPILOT = "github_copilot"


class AuthType(StrEnum):
    API_KEY = "api_key"
    BEARER = "bearer"
    NONE = "none"


class KnowledgeSourceType(StrEnum):
    MANUAL = "manual"
    FILE = "file"
    URL = "url"
    GITHUB = "github"
    QDRANT = "qdrant"
    PGVECTOR = "pgvector"


class KnowledgeSourceStatus(StrEnum):
    PENDING = "pending"
    INDEXING = "indexing"
    READY = "ready"
    ERROR = "error"


class KnowledgeItemStatus(StrEnum):
    PENDING = "pending"
    INDEXED = "indexed"
    ERROR = "error"


class GuardrailType(StrEnum):
    INPUT = "input"
    OUTPUT = "output"
    REQUEST = "request"
    TOOL = "tool"


class GuardrailAction(StrEnum):
    BLOCK = "block"
    REDACT = "redact"
    FLAG = "flag"


class WorkflowStatus(StrEnum):
    IDLE = "idle"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    HALTED = "halted"
    MAX_TURNS_REACHED = "max_turns_reached"


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    HALTED = "halted"
    MAX_TURNS_REACHED = "max_turns_reached"


class TaskTrigger(StrEnum):
    MANUAL = "manual"
    API = "api"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"


class IntervalUnit(StrEnum):
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"


class OverlapPolicy(StrEnum):
    """What a schedule does when its previous run is still pending or running."""

    SKIP = "skip"  # record the occurrence as skipped, start nothing
    ALLOW = "allow"  # start another run alongside


class MissedRunPolicy(StrEnum):
    """What a schedule does with occurrences that passed while no scheduler was running."""

    SKIP = "skip"  # drop them; wait for the next occurrence
    RUN_ONCE = "run_once"  # run once for all of them, then carry on


class McpTransport(StrEnum):
    STDIO = "stdio"
    SSE = "sse"
    STREAMABLE_HTTP = "streamable_http"


class McpServerStatus(StrEnum):
    UNKNOWN = "unknown"
    CONNECTED = "connected"
    ERROR = "error"
    DISABLED = "disabled"


class OutputFormat(StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"
    JSON = "json"
