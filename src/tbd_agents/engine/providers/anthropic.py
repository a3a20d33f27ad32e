"""Anthropic Messages API provider (api.anthropic.com or a gateway with bearer auth).

Our messages map to Anthropic's content blocks: the system prompt goes in `system`, tool calls
are `tool_use` blocks, tool results are `tool_result` blocks in a user turn, and consecutive
turns of the same role are merged (the API requires alternation). With a thinking effort on a
model of the catalog with `thinking = true`, extended thinking is enabled (engine/thinking.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic

from tbd_agents.domain.enums import AuthType
from tbd_agents.engine import thinking
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.messages import (
    ChatRequest,
    Completion,
    Message,
    StreamEvent,
    TextDelta,
    TokenUsage,
    ToolCall,
    decode_arguments,
)
from tbd_agents.engine.providers.base import (
    ProviderSettings,
    classify_status,
    clean_excerpt,
    error_excerpt,
    sent_secrets,
    unreachable,
    with_retries,
)
from tbd_agents.errors import UpstreamError

ANTHROPIC_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096


def build_client(settings: ProviderSettings, config: EngineConfig) -> anthropic.AsyncAnthropic:
    """The SDK client. How the key is sent follows `auth_type`, as the existing TBD Agents
    sent it: `bearer` (an Anthropic gateway) as `Authorization: Bearer`; `x-api-key` (the
    default) and `api_key` in the `x-api-key` header, the one Anthropic's API reads (this SDK
    generation would also send it as a bearer token: that header is removed); `none`: no key.
    A credential is always passed explicitly, so the SDK never falls back to the process's
    ANTHROPIC_* environment variables."""
    key = settings.api_key or ""
    headers: dict[str, Any] = dict(settings.extra_headers)
    auth: dict[str, Any]
    if settings.auth_type is AuthType.BEARER:
        auth = {"auth_token": key}
    else:
        auth = {"api_key": key}
        own: dict[str, Any] = {"Authorization": anthropic.Omit()}
        if settings.auth_type is not AuthType.NONE and key:
            own["X-Api-Key"] = key
        headers = {**own, **headers}
    return anthropic.AsyncAnthropic(
        base_url=settings.base_url or ANTHROPIC_URL,
        default_headers=headers,
        timeout=config.model_timeout,
        max_retries=0,
        http_client=settings.http_client2(config.model_timeout),
        **auth,
    )


def to_wire(
    messages: list[Message], with_thinking: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    """(system text, alternating user/assistant turns of content blocks). `with_thinking`: the
    assistant messages of the current turn (after the last user message) lead with their
    thinking blocks, unchanged, as the API requires during tool use."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns: list[dict[str, Any]] = []
    current = thinking.current_turn_start(messages) if with_thinking else len(messages)
    for position, m in enumerate(messages):
        if m.role == "system":
            continue
        blocks: list[dict[str, Any]] = []
        if m.role == "assistant" and position >= current:
            blocks.extend(thinking.wire_blocks(m))
        role = "assistant" if m.role == "assistant" else "user"
        if m.role == "tool":
            blocks.append(
                {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            )
        else:
            for image in m.images if m.role == "user" else []:
                blocks.append(
                    {"type": "image", "source": {"type": "base64", "media_type": image["media_type"], "data": image["data"]}}
                )  # fmt: skip
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            for c in m.tool_calls:
                blocks.append(
                    {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                )
        if not blocks:
            blocks.append({"type": "text", "text": "(empty)"})
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if turns and turns[0]["role"] != "user":
        turns.insert(
            0, {"role": "user", "content": [{"type": "text", "text": "(conversation continues)"}]}
        )
    return system, turns


class AnthropicProvider:
    def __init__(self, settings: ProviderSettings, config: EngineConfig) -> None:
        self.name = settings.name
        self.settings = settings
        self.config = config
        self._client = build_client(settings, config)

    async def aclose(self) -> None:
        await self._client.close()

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return with_retries(self.name, self.config, lambda: self._stream_once(request))

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        max_tokens = (
            self.config.anthropic_max_tokens or request.max_output_tokens or DEFAULT_MAX_TOKENS
        )
        plan = None
        if request.thinking_effort:
            plan = thinking.plan(request.thinking_effort, max_tokens, request.max_output_tokens)
        system, turns = to_wire(request.messages, with_thinking=plan is not None)
        params: dict[str, Any] = {
            "model": request.model,
            "messages": turns,
            "max_tokens": plan.max_tokens if plan else max_tokens,
            "stream": True,
        }
        if plan is not None:
            params["thinking"] = plan.param()
        if system:
            params["system"] = system
        if request.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        if request.temperature is not None and plan is not None:
            thinking.note_dropped_temperature(request.model, request.temperature)
        elif request.temperature is not None:
            # This SDK generation has no `temperature` argument (a TypeError before any request
            # was made); the Messages API field is sent through the SDK's extra_body.
            params["extra_body"] = {"temperature": min(request.temperature, 1.0)}
        return params

    async def _stream_once(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        text: list[str] = []
        blocks: dict[int, dict[str, str]] = {}
        thoughts = thinking.ThinkingCollector()  # kept on the message, never streamed as text
        usage = TokenUsage()
        stop: str | None = None
        try:
            stream = await self._client.messages.create(**self._params(request))
            async for event in stream:
                kind = event.type
                if kind == "message_start":
                    usage.input_tokens = event.message.usage.input_tokens or 0
                    usage.output_tokens = event.message.usage.output_tokens or 0
                elif kind == "content_block_start":
                    block = event.content_block
                    if thoughts.start(event.index, block):
                        continue
                    if block.type == "tool_use":
                        blocks[event.index] = {"id": block.id, "name": block.name, "json": ""}
                elif kind == "content_block_delta":
                    delta = event.delta
                    if thoughts.delta(event.index, delta):
                        continue
                    if delta.type == "text_delta":
                        text.append(delta.text)
                        yield TextDelta(delta.text)
                    elif delta.type == "input_json_delta" and event.index in blocks:
                        blocks[event.index]["json"] += delta.partial_json
                elif kind == "message_delta":
                    stop = event.delta.stop_reason or stop
                    if event.usage is not None and event.usage.output_tokens is not None:
                        usage.output_tokens = event.usage.output_tokens
        except anthropic.APIStatusError as exc:
            excerpt = error_excerpt(exc.body, exc.message, sent_secrets(self.settings))
            raise classify_status(
                self.name, exc.status_code, excerpt, dict(exc.response.headers)
            ) from None
        except anthropic.APIConnectionError as exc:
            raise unreachable(self.name, self.settings.base_url, exc) from None
        except anthropic.APIError as exc:
            detail = clean_excerpt(exc.message, sent_secrets(self.settings))
            raise UpstreamError(f"provider {self.name!r} failed mid-answer: {detail}") from None
        message = Message(role="assistant", content="".join(text), reasoning=thoughts.blocks())
        for index in sorted(blocks):
            b = blocks[index]
            args, problem = decode_arguments(b["json"])
            message.tool_calls.append(
                ToolCall(id=b["id"], name=b["name"], arguments=args, arguments_error=problem)
            )
        yield Completion(message=message, usage=usage, stop_reason=stop)
