"""The base of the client's types: the model base class, enums, and the pieces every record
shares (usage, log entries, import results, the stored-record base)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StringEnum(StrEnum):
    pass


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- enums --------------------------------------------------------------------------------


class TaskStatus(StringEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    HALTED = "halted"
    MAX_TURNS_REACHED = "max_turns_reached"
    #: Paused on a tool call that waits for a person (not final: see docs/approvals.md).
    AWAITING_APPROVAL = "awaiting_approval"


TERMINAL_TASK_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.HALTED, TaskStatus.MAX_TURNS_REACHED}
)


class TransportType(StringEnum):
    STDIO = "stdio"
    SSE = "sse"
    HTTP = "http"


class KnowledgeSourceType(StringEnum):
    VECTOR_DB = "vector_db"
    MONGO_DB = "mongo_db"
    PGVECTOR = "pgvector"


class KnowledgeContentType(StringEnum):
    TEXT = "text"
    FILE = "file"
    IMAGE = "image"


class ProviderType(StringEnum):
    GITHUB_COPILOT = "github_copilot"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    AZURE_OPENAI = "azure_openai"
    CUSTOM = "custom"


class WorkflowStatus(StringEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class OutputFormat(StringEnum):
    JSON = "json"
    MARKDOWN = "markdown"


class GuardrailType(StringEnum):
    PROMPT = "prompt"
    REQUEST = "request"
    OUTPUT = "output"


class ScheduleInterval(StringEnum):
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"
    WEEKS = "weeks"


# --- shared pieces ------------------------------------------------------------------------


class HealthStatus(ApiModel):
    status: str = ""


class UsageStats(ApiModel):
    total_premium_requests: float = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cache_read_tokens: int = 0
    total_cache_write_tokens: int = 0
    total_cost: float = 0.0


class LogEntry(ApiModel):
    timestamp: datetime | None = None
    event: str = ""
    detail: str = ""


class Message(ApiModel):
    role: str = ""
    content: str | None = None


class ImportResult(ApiModel):
    created: int = 0
    errors: list[str] = Field(default_factory=list)
    ids: list[str] = Field(default_factory=list)


class DetailResponse(ApiModel):
    detail: str = ""


class Record(ApiModel):
    """A stored record: an id and its timestamps."""

    id: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ExportBundle(ApiModel):
    version: str = "1.0"
    exported_at: datetime | None = None
    resource_type: str = ""
    items: list[dict[str, Any]] = Field(default_factory=list)
