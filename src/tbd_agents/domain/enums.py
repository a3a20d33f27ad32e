"""Enumerations of the data model.

Every enum is a superset of the existing TBD Agents one: each value its documents hold is valid
and is stored as written (`x-api-key`, `not-started`, `active`, `registered`, ...); our own
additional values are valid too. Input is matched case-insensitively and with `-`/`_` taken as
equal (`LenientStrEnum._missing_`), so a legacy `"STDIO"` or `"X_API_KEY"` still reads, as the
member's own spelling.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


def _folded(value: str) -> str:
    return value.strip().lower().replace("-", "_")


class LenientStrEnum(StrEnum):
    """A string enum that also accepts its values in another case or with `-` for `_`."""

    @classmethod
    def _missing_(cls, value: Any) -> Any:
        if isinstance(value, str):
            folded = _folded(value)
            for member in cls:
                if _folded(member.value) == folded:
                    return member
        return None


class MessageRole(LenientStrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class MemoryScope(LenientStrEnum):
    SESSION = "session"  # one workflow run or chat session
    AGENT = "agent"  # one agent, all its sessions
    GLOBAL = "global"  # every agent of the same owner


class ProviderType(LenientStrEnum):
    OPENAI = "openai"
    AZURE_OPENAI = "azure_openai"
    ANTHROPIC = "anthropic"
    CUSTOM = "custom"
    GITHUB_COPILOT = "github_copilot"


class AuthType(LenientStrEnum):
    """How a provider's key is sent. `x-api-key` (the existing default) and `api_key` both mean
    the provider's own way (Anthropic: the `x-api-key` header; OpenAI-compatible: a Bearer
    token); `bearer` forces `Authorization: Bearer` (an Anthropic gateway)."""

    X_API_KEY = "x-api-key"
    API_KEY = "api_key"
    BEARER = "bearer"
    NONE = "none"


class KnowledgeSourceType(LenientStrEnum):
    """`mongo_db` (existing): items stored in the hub itself, as `manual`; `vector_db`
    (existing): an external Qdrant collection, as `qdrant`; `pgvector`: an external table."""

    VECTOR_DB = "vector_db"
    MONGO_DB = "mongo_db"
    MANUAL = "manual"
    FILE = "file"
    URL = "url"
    GITHUB = "github"
    QDRANT = "qdrant"
    PGVECTOR = "pgvector"


class KnowledgeSourceStatus(LenientStrEnum):
    REGISTERED = "registered"
    CONNECTED = "connected"
    PENDING = "pending"
    INDEXING = "indexing"
    READY = "ready"
    ERROR = "error"


class KnowledgeItemStatus(LenientStrEnum):
    PENDING = "pending"
    INDEXED = "indexed"
    ERROR = "error"


class GuardrailType(LenientStrEnum):
    """`prompt` (existing) checks the user's prompt, as `input` does; `request` checks the
    structured request body against `request_config.json_schema`; `output` the answer."""

    PROMPT = "prompt"
    INPUT = "input"
    OUTPUT = "output"
    REQUEST = "request"
    TOOL = "tool"


class GuardrailAction(LenientStrEnum):
    BLOCK = "block"
    REDACT = "redact"
    FLAG = "flag"


class WorkflowStatus(LenientStrEnum):
    """`active` (the default) and `idle` accept prompts; `inactive` refuses them; the others
    describe the latest run."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    IDLE = "idle"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    HALTED = "halted"
    MAX_TURNS_REACHED = "max_turns_reached"


class TaskStatus(LenientStrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    HALTED = "halted"
    MAX_TURNS_REACHED = "max_turns_reached"
    #: Paused on a tool call a policy sends to a human (domain/approvals.py); no worker holds
    #: it. Not final: a decision makes it pending again and it resumes where it stopped.
    AWAITING_APPROVAL = "awaiting_approval"


class TaskTrigger(LenientStrEnum):
    MANUAL = "manual"
    API = "api"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    #: Ours: a run of an agent another agent called as a tool (engine/delegation.py).
    DELEGATION = "delegation"


class IntervalUnit(LenientStrEnum):
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"
    #: Not in the existing enum (its docs' example used it and got a 422); its SDK sends it.
    WEEKS = "weeks"


class OverlapPolicy(LenientStrEnum):
    """What a schedule does when its previous run is still pending or running."""

    SKIP = "skip"  # record the occurrence as skipped, start nothing
    ALLOW = "allow"  # start another run alongside


class MissedRunPolicy(LenientStrEnum):
    """What a schedule does with occurrences that passed while no scheduler was running."""

    SKIP = "skip"  # drop them; wait for the next occurrence
    RUN_ONCE = "run_once"  # run once for all of them, then carry on


class McpTransport(LenientStrEnum):
    STDIO = "stdio"
    SSE = "sse"
    #: The existing name of the streamable HTTP transport; the same transport as STREAMABLE_HTTP.
    HTTP = "http"
    STREAMABLE_HTTP = "streamable_http"


class McpServerStatus(LenientStrEnum):
    REGISTERED = "registered"
    UNKNOWN = "unknown"
    CONNECTED = "connected"
    ERROR = "error"
    DISABLED = "disabled"


class OutputFormat(LenientStrEnum):
    """`json` wraps a workflow's final answer as `{"response": text}`."""

    TEXT = "text"
    MARKDOWN = "markdown"
    JSON = "json"


class KnowledgeContentType(LenientStrEnum):
    TEXT = "text"
    FILE = "file"
    IMAGE = "image"


class TodoItemStatus(LenientStrEnum):
    NOT_STARTED = "not-started"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
