"""Conversations stored by the existing TBD Agents read back as engine messages."""

from __future__ import annotations

import pytest

from tbd_agents.engine.messages import Message, ToolCall


def test_a_tool_call_in_the_existing_openai_shape_reads_back() -> None:
    stored = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q": "latency"}'},
            }
        ],
    }
    message = Message.from_dict(stored)
    assert message.content == ""
    assert message.tool_calls == [ToolCall("call_1", "lookup", {"q": "latency"})]
    # Written back in our shape, it reads the same.
    assert Message.from_dict(message.to_dict()) == message


def test_our_shape_and_a_call_without_a_name() -> None:
    ours = {"id": "c", "name": "add", "arguments": {"a": 1}}
    assert ToolCall.from_dict(ours) == ToolCall("c", "add", {"a": 1})
    with pytest.raises(ValueError, match="without a name"):
        ToolCall.from_dict({"id": "c", "type": "function", "function": {"arguments": "{}"}})
