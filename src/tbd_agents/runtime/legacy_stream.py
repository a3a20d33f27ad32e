"""A run's events in the frame format of the existing workflow stream.

The existing `GET /api/workflows/{id}/stream` sends `id: <n>` and `data: {id, type, data,
timestamp}` (no `event:` line), with `type` one of log / message / message_delta / usage /
status / progress / output_guardrail_violation, and `log.data = {event, detail, tool_input?,
tool_output?}`. `frame_of(event)` gives one of our stored run events in that shape:

- `tool_call` / `tool_result` / `error` events become `log` events named `tool_call` /
  `tool_result` / `error` (the existing engine logged them that way), with `tool_input` /
  `tool_output`;
- `delegation_started` / `delegation_finished` (ours: an agent called another as a tool) become
  `log` events of those names, `detail` naming the agent and its task or its final status;
- `log` gets `detail` (our `message`);
- `status` gets `current_turn` (the run's tool calls so far, as the existing workflow counted);
- `usage` gets the `UsageStats` totals;
- `message_delta` gets `content` (our `delta`, or `text`);
- `progress` gets `todos`, `current_step`, `percent_complete` when it has none of its own.

Our own fields stay in `data` beside the existing ones, so nothing is lost.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tbd_agents.runtime.contracts import EventType
from tbd_agents.runtime.events import RunEvent


def _usage_stats(totals: dict[str, Any]) -> dict[str, Any]:
    return {
        "total_premium_requests": 0.0,
        "total_input_tokens": int(totals.get("input_tokens") or 0),
        "total_output_tokens": int(totals.get("output_tokens") or 0),
        "total_cache_read_tokens": 0,
        "total_cache_write_tokens": 0,
        "total_cost": float(totals.get("cost_usd") or 0.0),
    }


def _log(event: str, detail: Any, data: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    out = {**data, "event": event, "detail": text}
    out.update({k: v for k, v in extra.items() if v is not None})
    return EventType.LOG.value, out


def _translate(kind: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if kind == EventType.TOOL_CALL:
        return _log("tool_call", data.get("name", ""), data, tool_input=data.get("arguments"))
    if kind == EventType.TOOL_RESULT:
        return _log("tool_result", data.get("name", ""), data, tool_output=data.get("content"))
    if kind == EventType.ERROR:
        return _log("error", data.get("message", ""), data)
    if kind in (EventType.DELEGATION_STARTED, EventType.DELEGATION_FINISHED):
        # ours (an agent called as a tool): a `log` event, a type the existing clients know
        detail = f"{data.get('agent_name', '')}: {data.get('task') or data.get('status') or ''}"
        return _log(kind, detail, data)
    if kind == EventType.LOG:
        name = str(data.get("event") or "log")
        return _log(name, data.get("detail", data.get("message", "")), data)
    if kind == EventType.STATUS:
        turn = data.get("current_turn", data.get("tool_calls", 0))
        return kind, {**data, "current_turn": turn if isinstance(turn, int) else 0}
    if kind == EventType.USAGE:
        total = data.get("total")
        totals: dict[str, Any] = total if isinstance(total, dict) else data
        return kind, {**data, **_usage_stats(totals)}
    if kind == EventType.MESSAGE_DELTA:
        text = data.get("content", data.get("delta", data.get("text", "")))
        return kind, {**data, "content": text}
    if kind == EventType.PROGRESS:
        defaults: dict[str, Any] = {
            "todos": [],
            "current_step": data.get("turn"),
            "percent_complete": 0.0,
        }
        return kind, {**defaults, **data}
    return kind, data


def frame_of(event: RunEvent) -> dict[str, Any]:
    """`{id, type, data, timestamp}` of one run event (see the module docstring)."""
    kind, data = _translate(event.type, dict(event.data))
    return {
        "id": event.seq,
        "type": kind,
        "data": data,
        "timestamp": (event.created_at or datetime.now(UTC)).isoformat(),
    }


def sse_frame(event: RunEvent) -> bytes:
    """The event as the existing stream framed it: `id: <n>` and `data: <json>`."""
    body = json.dumps(frame_of(event), ensure_ascii=False, separators=(",", ":"), default=str)
    return f"id: {event.seq}\ndata: {body}\n\n".encode()
