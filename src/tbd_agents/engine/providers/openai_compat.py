"""OpenAI chat-completions providers: `openai`, `azure_openai`, `custom` and `github_copilot`.

All four speak the same wire format through the official `openai` SDK; they differ in base URL,
path and authentication. Every client option is passed explicitly so the SDK never falls back
to `OPENAI_*` / `AZURE_OPENAI_*` variables of the process environment.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai

from tbd_agents.domain.enums import AuthType, ProviderType
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
from tbd_agents.engine.tokens import count_messages, count_text
from tbd_agents.errors import ConfigurationError, UpstreamError

OPENAI_URL = "https://api.openai.com/v1"
COPILOT_URL = "https://api.githubcopilot.com"
#: The editor headers Copilot's API expects on every call (the token exchange too).
COPILOT_HEADERS = {
    "Copilot-Integration-Id": "vscode-chat",
    "Editor-Version": "tbd-agents/0.1",
    "Editor-Plugin-Version": "tbd-agents/0.1",
    "User-Agent": "tbd-agents/0.1",
}
#: The existing TBD Agents default (a provider record's `azure_api_version` default too).
DEFAULT_AZURE_API_VERSION = "2024-12-01-preview"


def build_client(
    settings: ProviderSettings, config: EngineConfig, *, http: httpx.AsyncClient | None = None
) -> openai.AsyncOpenAI:
    """An SDK client for the provider; retries are ours (`max_retries=0` in the SDK). `http`:
    an HTTP client from `settings.http_client` the caller keeps a hand on (default: a new one)."""
    headers = dict(settings.extra_headers)
    key = settings.api_key
    common: dict[str, Any] = {
        "timeout": config.model_timeout,
        "max_retries": 0,
        "http_client": http or settings.http_client(config.model_timeout),
    }
    if settings.provider_type is ProviderType.AZURE_OPENAI:
        if not settings.base_url:
            raise ConfigurationError(
                f"provider {settings.name!r}: azure_openai needs base_url "
                "(https://<resource>.openai.azure.com)"
            )
        auth: dict[str, Any]
        if settings.auth_type is AuthType.BEARER:
            auth = {"azure_ad_token": key or ""}
        else:
            auth = {"api_key": key or ""}
        return openai.AsyncAzureOpenAI(
            azure_endpoint=settings.base_url,
            azure_deployment=settings.azure_deployment,
            api_version=settings.azure_api_version or DEFAULT_AZURE_API_VERSION,
            default_headers=headers,
            organization=None,
            project=None,
            **auth,
            **common,
        )
    if settings.provider_type is ProviderType.GITHUB_COPILOT:
        base_url = settings.base_url or COPILOT_URL
        headers = {**COPILOT_HEADERS, **headers}
    elif settings.provider_type is ProviderType.OPENAI:
        base_url = settings.base_url or OPENAI_URL
    else:
        if not settings.base_url:
            raise ConfigurationError(
                f"provider {settings.name!r}: custom providers need base_url "
                "(e.g. http://localhost:11434/v1 for Ollama)"
            )
        base_url = settings.base_url
    if settings.auth_type is AuthType.NONE or not key:
        # The SDK always sends `Authorization: Bearer <key>`; servers without auth ignore it.
        key = "unused"
    return openai.AsyncOpenAI(
        api_key=key,
        base_url=base_url,
        default_headers=headers,
        organization=None,
        project=None,
        **common,
    )


def to_wire(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        elif m.role == "user" and m.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            parts += [
                {"type": "image_url",
                 "image_url": {"url": f"data:{i['media_type']};base64,{i['data']}"}}
                for i in m.images
            ]  # fmt: skip
            out.append({"role": "user", "content": parts})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


class OpenAICompatProvider:
    """A chat provider on the OpenAI chat-completions API."""

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
        params: dict[str, Any] = {
            "model": request.model,
            "messages": to_wire(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.reasoning_effort:  # a reasoning model (catalog): its own token parameter
            params["reasoning_effort"] = request.reasoning_effort
            if request.max_output_tokens:
                params["max_completion_tokens"] = request.max_output_tokens
        elif request.max_output_tokens:
            params["max_tokens"] = request.max_output_tokens
        if request.thinking_effort and not request.reasoning_effort:
            thinking.note_not_sent(self.name, request.model, request.thinking_effort)
        return params

    async def _stream_once(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage: TokenUsage | None = None
        finish: str | None = None
        try:
            stream = await self._client.chat.completions.create(**self._params(request))
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = TokenUsage(
                        chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0
                    )
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        yield TextDelta(delta.content)
                    for tc in delta.tool_calls or []:
                        slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                        if tc.id:
                            slot["id"] = tc.id
                        if tc.function is not None:
                            slot["name"] += tc.function.name or ""
                            slot["arguments"] += tc.function.arguments or ""
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except openai.APIStatusError as exc:
            excerpt = error_excerpt(exc.body, exc.message, sent_secrets(self.settings))
            raise classify_status(
                self.name, exc.status_code, excerpt, dict(exc.response.headers)
            ) from None
        except openai.APIConnectionError as exc:
            raise unreachable(self.name, self.settings.base_url, exc) from None
        except openai.APIError as exc:  # an error event inside the stream
            detail = clean_excerpt(exc.message, sent_secrets(self.settings))
            raise UpstreamError(f"provider {self.name!r} failed mid-answer: {detail}") from None
        message = Message(role="assistant", content="".join(text))
        for index in sorted(calls):
            slot = calls[index]
            args, problem = decode_arguments(slot["arguments"])
            message.tool_calls.append(
                ToolCall(
                    id=slot["id"] or f"call_{index}",
                    name=slot["name"],
                    arguments=args,
                    arguments_error=problem,
                )
            )
        if usage is None:  # server without usage in streams: estimate
            usage = TokenUsage(count_messages(request.messages), count_text(message.content))
        yield Completion(message=message, usage=usage, stop_reason=finish)
