"""A stored conversation made fit to send again: every tool result right after its call.

Providers refuse a history in which a tool result does not directly follow the assistant
message that asked for it (OpenAI: "messages with role 'tool' must be a response to a preceding
message with 'tool_calls'"; Anthropic: every `tool_result` must answer a `tool_use` of the
message just before), or in which a call has no result. Sessions stored before chat messages
were numbered (`ChatMessage.seq`) may hold their messages in the wrong order, and a history cut
to its last N messages may begin with results whose call was cut off. `replayable` rebuilds the
order from the messages themselves:

- each assistant message with tool calls is followed by the results of those calls, in the
  order of the calls, wherever the results were stored;
- a call without a stored result gets one that says so (the model then knows it never ran);
- a result whose call is not in the history is left out;
- everything else keeps its order.

A history that is already in order comes back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from tbd_agents.engine.messages import Message

#: What a call without a stored result is answered with.
MISSING_RESULT = "Error: no result was recorded for this tool call."


@dataclass(slots=True)
class Repair:
    """What `replayable` changed (all zero when the history was in order)."""

    moved: int = 0
    missing: int = 0
    dropped: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.moved or self.missing or self.dropped)

    def describe(self) -> str:
        return (
            f"{self.moved} tool results moved after their call, {self.missing} calls without a "
            f"result answered as such, {self.dropped} results without their call left out"
        )


def replayable(history: list[Message]) -> tuple[list[Message], Repair]:
    """`history` with every tool result right after its call (module docstring)."""
    results: dict[str, Message] = {}
    for message in history:
        if message.role == "tool" and message.tool_call_id:
            results.setdefault(message.tool_call_id, message)
    out: list[Message] = []
    used: set[int] = set()  # ids of the stored results placed
    repair = Repair()
    for message in history:
        if message.role == "tool":
            continue
        out.append(message)
        if message.role != "assistant" or not message.tool_calls:
            continue
        for call in message.tool_calls:
            result = results.get(call.id)
            if result is None or id(result) in used:
                repair.missing += 1
                out.append(Message("tool", MISSING_RESULT, tool_call_id=call.id, name=call.name))
                continue
            used.add(id(result))
            out.append(result)
    stored = [m for m in history if m.role != "tool" or id(m) in used]
    placed = [m for m in out if m.role != "tool" or id(m) in used]
    repair.dropped = len(history) - len(stored)
    repair.moved = sum(1 for a, b in zip(placed, stored, strict=True) if a is not b)
    return out, repair
