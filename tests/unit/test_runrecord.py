"""A run's record in the existing shape: log entries from events, the last 20 messages, the
output format's wrapping, and usage in the UsageStats shape."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tbd_agents.domain.enums import OutputFormat, TaskStatus
from tbd_agents.engine.runrecord import RunLog, last_messages, wrap_response
from tbd_agents.runtime.contracts import EventType, Usage


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[EventType, dict[str, Any]]] = []

    async def emit(self, event_type: EventType, data: Mapping[str, Any]) -> None:
        self.events.append((event_type, dict(data)))


async def test_events_become_log_entries_and_pass_through() -> None:
    sink = Sink()
    log = RunLog(sink)
    await log.emit(EventType.PROGRESS, {"turn": 1, "max_turns": 3})
    await log.emit(EventType.TOOL_CALL, {"id": "c1", "name": "lookup", "arguments": {"q": 1}})
    await log.emit(EventType.TOOL_RESULT, {"id": "c1", "name": "lookup", "content": "x" * 900, "is_error": True})  # fmt: skip
    await log.emit(EventType.MESSAGE_DELTA, {"delta": "ok"})
    await log.emit(EventType.LOG, {"event": "output_guardrail_violation", "message": "g: pii"})
    await log.emit(EventType.MESSAGE, {"role": "assistant", "content": "done", "final": True})
    log.finish(TaskStatus.COMPLETED, "done")
    assert len(sink.events) == 6  # every event reaches the inner sink
    assert [e["event"] for e in log.entries] == [
        "model_call",
        "tool_call",
        "tool_result",
        "output_guardrail_violation",
        "model_response",
        "completed",
    ]
    call, result = log.entries[1], log.entries[2]
    assert call["tool_input"] == {"q": 1} and call["detail"] == "lookup"
    assert result["detail"] == "lookup (error)" and len(result["tool_output"]) == 501
    assert all("timestamp" in e for e in log.entries)


def test_last_messages_keeps_twenty_user_and_assistant_messages() -> None:
    conversation = []
    for i in range(15):
        conversation += [
            {"role": "user", "content": f"q{i}", "task_id": "t"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": f"c{i}", "name": "f"}]},
            {"role": "tool", "content": "r", "tool_call_id": f"c{i}", "name": "f"},
        ]
    kept = last_messages(conversation)
    assert len(kept) == 20 and {m["role"] for m in kept} == {"user", "assistant"}
    assert kept[-1]["tool_calls"] == [{"id": "c14", "name": "f"}]
    assert "task_id" not in kept[-2]  # only the Message fields


def test_output_format_json_wraps_the_answer() -> None:
    assert json.loads(wrap_response("hi", OutputFormat.JSON) or "") == {"response": "hi"}
    assert wrap_response("# hi", OutputFormat.MARKDOWN) == "# hi"
    assert wrap_response(None, OutputFormat.JSON) is None


def test_usage_has_the_usage_stats_fields() -> None:
    stats = Usage(120, 30, 0.0123456789).stats()
    assert stats["total_input_tokens"] == 120 and stats["total_output_tokens"] == 30
    assert stats["total_cost"] == stats["cost_usd"] == 0.012346
    assert stats["total_premium_requests"] == 0.0 and stats["total_cache_write_tokens"] == 0
