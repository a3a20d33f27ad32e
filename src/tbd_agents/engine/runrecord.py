"""A workflow run's record in the shape the existing TBD Agents gave it.

- `RunLog` is an `EventSink` that passes every event on and keeps the run's log as the existing
  `LogEntry` list `{timestamp, event, detail, tool_input?, tool_output?}`, with the existing event
  names where one fits (`prompt_received`, `model_call`, `tool_call`, `tool_result`,
  `model_response`, `knowledge_loaded`, `output_guardrail_violation`, `error`, `completed`, …).
  Details and tool outputs are clipped to 500 characters, as the existing log copies were.
- `last_messages` is what a task keeps of the conversation: the last 20 user / assistant
  messages, in the existing `Message` shape.
- `wrap_response` applies a workflow's `output_format`: `json` wraps the final answer as
  `{"response": text}`; `markdown` (and our `text`) leave it as it is.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tbd_agents.domain.enums import OutputFormat, TaskStatus
from tbd_agents.domain.types import utcnow
from tbd_agents.runtime.contracts import EventSink, EventType

#: Characters of a detail or a tool's output kept in a log entry.
DETAIL_CHARS = 500
#: Log entries kept per run (the most recent ones).
MAX_ENTRIES = 500
#: Messages a task keeps.
MESSAGES_KEPT = 20

#: The existing event name a run's final status is logged under.
FINAL_EVENTS = {
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "error",
    TaskStatus.HALTED: "halted",
    TaskStatus.MAX_TURNS_REACHED: "max_turns_reached",
}


def _clip(text: Any) -> str:
    value = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=str)
    return value if len(value) <= DETAIL_CHARS else value[:DETAIL_CHARS] + "…"


class RunLog:
    """An EventSink that forwards to `inner` and keeps the run's log entries."""

    def __init__(
        self,
        inner: EventSink,
        on_progress: Callable[[Mapping[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.inner = inner
        self.entries: list[dict[str, Any]] = []
        #: Called with every `progress` event that carries todos (engine/progress.py stores
        #: it on the task).
        self.on_progress = on_progress

    def add(
        self,
        event: str,
        detail: str = "",
        *,
        tool_input: Any = None,
        tool_output: Any = None,
    ) -> None:
        entry: dict[str, Any] = {
            "timestamp": utcnow().isoformat(),
            "event": event,
            "detail": _clip(detail),
        }
        if tool_input is not None:
            entry["tool_input"] = tool_input
        if tool_output is not None:
            entry["tool_output"] = _clip(tool_output)
        self.entries.append(entry)
        if len(self.entries) > MAX_ENTRIES:
            del self.entries[0]

    async def emit(self, event_type: EventType, data: Mapping[str, Any]) -> None:
        self._record(event_type, data)
        await self.inner.emit(event_type, data)
        if self.on_progress is not None and event_type is EventType.PROGRESS and "todos" in data:
            await self.on_progress(data)

    def _record(self, kind: EventType, data: Mapping[str, Any]) -> None:
        if kind is EventType.TOOL_CALL:
            self.add("tool_call", str(data.get("name", "")), tool_input=data.get("arguments"))
        elif kind is EventType.TOOL_RESULT:
            name = str(data.get("name", ""))
            self.add(
                "tool_result",
                f"{name} (error)" if data.get("is_error") else name,
                tool_output=data.get("content", ""),
            )
        elif kind is EventType.PROGRESS and "turn" in data:
            self.add("model_call", f"turn {data['turn']} of {data.get('max_turns', '?')}")
        elif kind is EventType.MESSAGE and data.get("final"):
            self.add("model_response", str(data.get("content", "")))
        elif kind is EventType.LOG:
            self.add(str(data.get("event") or "log"), str(data.get("message", "")))
        elif kind is EventType.ERROR:
            self.add("error", str(data.get("message", "")))
        elif kind is EventType.DELEGATION_STARTED:
            self.add("delegation_started", f"{data.get('agent_name')}: {data.get('task', '')}")
        elif kind is EventType.DELEGATION_FINISHED:
            self.add("delegation_finished", f"{data.get('agent_name')}: {data.get('status')}")

    def finish(self, status: TaskStatus, detail: str | None) -> None:
        """Log how the run ended (the existing `completed` / `error` / `halted` / … entry)."""
        self.add(FINAL_EVENTS.get(status, status.value), detail or status.value)


def last_messages(messages: list[dict[str, Any]], n: int = MESSAGES_KEPT) -> list[dict[str, Any]]:
    """The last `n` user and assistant messages of a conversation, in the `Message` shape
    `{role, content, tool_calls?, tool_call_id?, name?}`."""
    keys = ("role", "content", "tool_calls", "tool_call_id", "name")
    kept = [m for m in messages if m.get("role") in ("user", "assistant")][-n:] if n > 0 else []
    return [{k: m[k] for k in keys if m.get(k) is not None} for m in kept]


def wrap_response(text: str | None, output_format: OutputFormat) -> str | None:
    """The task's `response` for a workflow's output format (see the module docstring)."""
    if text is None or output_format is not OutputFormat.JSON:
        return text
    return json.dumps({"response": text}, ensure_ascii=False)
