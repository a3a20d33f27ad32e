"""The engine's own message model, shared by every provider.

Providers translate to and from their wire formats; the loop, compaction and persistence only
ever see these types. A tool call and its result are linked by `ToolCall.id` ==
`Message.tool_call_id`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class ToolCall:
    """One call the model asked for; `arguments` is the decoded JSON object."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    #: Set when the model's arguments were not a JSON object (the loop reports it to the model).
    arguments_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        """A stored call: ours (`{id, name, arguments}`) or the OpenAI shape the existing TBD
        Agents stored in conversations (`{id, type: "function", function: {name, arguments}}`,
        the arguments as JSON text)."""
        function = data.get("function")
        source = function if isinstance(function, dict) and "name" not in data else data
        if "name" not in source:
            raise ValueError(f"a stored tool call without a name: {sorted(data)}")
        args = source.get("arguments", {})
        if isinstance(args, str):
            args = decode_arguments(args)[0]
        return cls(
            id=str(data.get("id") or ""), name=str(source["name"]), arguments=dict(args or {})
        )


@dataclass(slots=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None  # tool name on role="tool"
    #: A provider's reasoning blocks of an assistant turn, kept as the provider sent them (the
    #: Anthropic `thinking` / `redacted_thinking` blocks, signature included) so they can be sent
    #: back unchanged before the turn's tool calls. Opaque to the loop; other providers ignore it.
    reasoning: list[dict[str, Any]] = field(default_factory=list)
    #: Images of a user message, `{"media_type": "image/png", "data": <base64>}` each (a chat
    #: turn's attachments): sent as image parts to vision models, never stored.
    images: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self, with_reasoning: bool = True) -> dict[str, Any]:
        """The stored shape; `with_reasoning=False` for events (thinking is never shown)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.name:
            out["name"] = self.name
        if (
            self.reasoning and with_reasoning
        ):  # only when present: other messages keep their stored shape
            out["reasoning"] = [dict(b) for b in self.reasoning]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        role = str(data.get("role", "user"))
        if role not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"unknown message role {role!r}")
        return cls(
            role=role,  # type: ignore[arg-type]
            content=str(data.get("content") or ""),
            tool_calls=[ToolCall.from_dict(c) for c in data.get("tool_calls") or []],
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
            reasoning=[dict(b) for b in data.get("reasoning") or [] if isinstance(b, dict)],
        )


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the model is told about a tool: name, description, JSON Schema of the arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(slots=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    temperature: float | None = None
    max_output_tokens: int | None = None
    json_mode: bool = False
    #: low / medium / high: sent where the model supports it (engine/options.py, docs/engine.md).
    reasoning_effort: str | None = None
    #: low / medium / high for a model with extended thinking (catalog `thinking = true`): the
    #: Anthropic provider sends it as a thinking budget; other providers ignore it.
    thinking_effort: str | None = None


@dataclass(slots=True)
class TextDelta:
    """A piece of the assistant's text, as it streams in."""

    text: str


@dataclass(slots=True)
class Completion:
    """The end of one model call: the whole assistant message and what it cost in tokens."""

    message: Message
    usage: TokenUsage
    stop_reason: str | None = None


StreamEvent = TextDelta | Completion


def decode_arguments(raw: str) -> tuple[dict[str, Any], str | None]:
    """Decode a tool call's JSON arguments; return ({}, reason) when they are not an object."""
    if not raw.strip():
        return {}, None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return {}, f"arguments are not valid JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(value, dict):
        return {}, "arguments must be a JSON object"
    return value, None
