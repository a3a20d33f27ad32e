"""The seam between the agent engine and the places runs execute.

The engine (`tbd_agents.engine`) runs one agent turn loop and reports everything through an
`EventSink`, checking a `HaltSignal` between and during steps. Where a run executes (in-process, or
on a Celery worker) and how its events are stored and streamed (`tbd_agents.runtime`) is not the
engine's business: the runtime hands it a sink and a halt signal and gets a `RunOutcome` back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from tbd_agents.domain.enums import TaskStatus


class EventType(StrEnum):
    """Event names users of TBD Agents know, plus tool and error events."""

    LOG = "log"
    MESSAGE = "message"
    MESSAGE_DELTA = "message_delta"
    USAGE = "usage"
    STATUS = "status"
    PROGRESS = "progress"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    ERROR = "error"
    #: A tool call waits for a human decision (services/approvals.py).
    APPROVAL_REQUESTED = "approval_requested"
    #: A human decided a waiting call (or it expired).
    APPROVAL_DECIDED = "approval_decided"
    #: A budget reached its warning ratio / refused a model call (observability/usage).
    BUDGET_WARNING = "budget_warning"
    BUDGET_EXCEEDED = "budget_exceeded"
    #: An agent called another agent as a tool: the child run started / ended
    #: (engine/delegation.py).
    DELEGATION_STARTED = "delegation_started"
    DELEGATION_FINISHED = "delegation_finished"


class EventSink(Protocol):
    """Receives a run's events in order. Implementations persist before they publish."""

    async def emit(self, event_type: EventType, data: Mapping[str, Any]) -> None: ...


class HaltSignal(Protocol):
    """Tells a running engine that the user asked it to stop (possibly from another process)."""

    def is_set(self) -> bool: ...

    async def wait(self) -> None:
        """Return once halt is requested (used to cancel a model call or tool call in flight)."""
        ...


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd

    def stats(self) -> dict[str, Any]:
        """The usage as tasks and workflows store it: the existing TBD Agents `UsageStats`
        fields (`total_*`; no premium requests nor prompt-cache counts here, so 0) and ours
        (`input_tokens`, `output_tokens`, `cost_usd`), which our clients read."""
        cost = round(self.cost_usd, 6)
        return {
            "total_premium_requests": 0.0,
            "total_input_tokens": self.input_tokens,
            "total_output_tokens": self.output_tokens,
            "total_cache_read_tokens": 0,
            "total_cache_write_tokens": 0,
            "total_cost": cost,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": cost,
        }


@dataclass(slots=True)
class RunOutcome:
    """How a run ended: one of completed / failed / halted / max_turns_reached; or how it
    paused (awaiting_approval, with the approvals it waits on)."""

    status: TaskStatus
    result: str | None = None
    error: str | None = None
    turns: int = 0
    tool_calls: int = 0
    usage: Usage = field(default_factory=Usage)
    #: Status awaiting_approval: the approval records the run waits on (their webhook and
    #: event payloads, `services/approvals.py`). Empty for every other status.
    approvals: list[dict[str, Any]] = field(default_factory=list)
