"""Providers against the local protocol server, through the real SDK clients."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from tbd_agents.domain.enums import AuthType
from tbd_agents.engine.messages import ChatRequest, Completion, Message, TextDelta, ToolSpec
from tbd_agents.engine.providers import build_provider
from tbd_agents.errors import (
    ContextTooLong,
    UpstreamAuthError,
    UpstreamRateLimited,
    UpstreamUnreachable,
)
from tests.engine.conftest import FAST, provider_settings
from tests.engine.protocol_server import ProtocolServer, Turn

WEATHER = ToolSpec(
    "get_weather",
    "Weather of a city",
    {"type": "object", "properties": {"city": {"type": "string"}}},
)


async def collect(provider, request):
    deltas, completion = [], None
    async for ev in provider.stream(request):
        if isinstance(ev, TextDelta):
            deltas.append(ev.text)
        else:
            assert isinstance(ev, Completion)
            completion = ev
    return deltas, completion


def req(*messages: Message, tools=()) -> ChatRequest:
    return ChatRequest(
        model="gpt-4o", messages=list(messages), tools=list(tools), max_output_tokens=256
    )


async def test_streams_text_in_deltas_and_reports_usage(server: ProtocolServer, kind: str) -> None:
    server.script(
        Turn(text="Hello there, this is a streamed answer.", usage=(42, 9), chunk_chars=5)
    )
    provider = build_provider(provider_settings(kind, server.url), FAST)
    deltas, done = await collect(
        provider, req(Message("system", "be brief"), Message("user", "hi"))
    )
    await provider.aclose()
    assert len(deltas) > 3
    assert "".join(deltas) == "Hello there, this is a streamed answer."
    assert done.message.content == "Hello there, this is a streamed answer."
    assert (done.usage.input_tokens, done.usage.output_tokens) == (42, 9)
    rec = server.requests[0]
    conv = rec.conversation()
    assert conv[0]["role"] == "system" and conv[0]["text"] == "be brief"
    assert conv[-1]["text"] == "hi"


async def test_parallel_tool_calls_round_trip(server: ProtocolServer, kind: str) -> None:
    server.script(
        Turn(tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]),
        Turn(text="Paris sunny, Oslo rain"),
    )
    provider = build_provider(provider_settings(kind, server.url), FAST)
    _, first = await collect(provider, req(Message("user", "weather?"), tools=[WEATHER]))
    calls = first.message.tool_calls
    assert [c.arguments["city"] for c in calls] == ["Paris", "Oslo"]
    assert len({c.id for c in calls}) == 2
    follow = [Message("user", "weather?"), first.message]
    follow += [
        Message("tool", f"{c.arguments['city']}: fine", tool_call_id=c.id, name=c.name)
        for c in calls
    ]
    _, second = await collect(provider, req(*follow, tools=[WEATHER]))
    await provider.aclose()
    assert second.message.content == "Paris sunny, Oslo rain"
    conv = server.requests[1].conversation()
    results = [r for e in conv for r in e["tool_results"]]
    assert [r[0] for r in results] == [c.id for c in calls]
    assert server.requests[0].tool_names() == ["get_weather"]


async def test_429_retry_after_is_honoured(server: ProtocolServer, kind: str) -> None:
    server.script(Turn(status=429, headers={"retry-after": "0.3"}), Turn(text="ok"))
    provider = build_provider(provider_settings(kind, server.url), FAST)
    t0 = time.monotonic()
    _, done = await collect(provider, req(Message("user", "x")))
    await provider.aclose()
    assert done.message.content == "ok"
    assert time.monotonic() - t0 >= 0.28
    assert len(server.requests) == 2


async def test_rate_limit_exhausted_is_a_clear_error(server: ProtocolServer, kind: str) -> None:
    server.script(*[Turn(status=429, headers={"retry-after": "0"}) for _ in range(4)])
    provider = build_provider(provider_settings(kind, server.url), FAST)
    with pytest.raises(UpstreamRateLimited, match="Rate limited"):
        await collect(provider, req(Message("user", "x")))
    await provider.aclose()
    assert len(server.requests) == FAST.model_max_retries + 1


async def test_server_error_then_success(server: ProtocolServer, kind: str) -> None:
    server.script(Turn(status=503), Turn(status=500), Turn(text="recovered"))
    provider = build_provider(provider_settings(kind, server.url), FAST)
    _, done = await collect(provider, req(Message("user", "x")))
    await provider.aclose()
    assert done.message.content == "recovered"


async def test_auth_error_is_not_retried(server: ProtocolServer, kind: str) -> None:
    server.script(Turn(status=401), Turn(text="never"))
    provider = build_provider(provider_settings(kind, server.url), FAST)
    with pytest.raises(UpstreamAuthError, match="api_key_token_name"):
        await collect(provider, req(Message("user", "x")))
    await provider.aclose()
    assert len(server.requests) == 1


async def test_context_too_long(server: ProtocolServer, kind: str) -> None:
    body = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens",
            "code": "context_length_exceeded",
            "type": "invalid_request_error",
        }
    }
    server.script(Turn(status=400, error_body=body))
    provider = build_provider(provider_settings(kind, server.url), FAST)
    with pytest.raises(ContextTooLong):
        await collect(provider, req(Message("user", "x")))
    await provider.aclose()


async def test_unreachable(kind: str) -> None:
    provider = build_provider(provider_settings(kind, "http://127.0.0.1:9"), FAST)
    with pytest.raises(UpstreamUnreachable, match="could not be reached"):
        await collect(provider, req(Message("user", "x")))
    await provider.aclose()


async def test_auth_headers_and_paths(server: ProtocolServer) -> None:
    for kind in (
        "openai",
        "azure_openai",
        "anthropic",
        "anthropic_bearer",
        "custom",
        "github_copilot",
    ):
        server.script(Turn(text="ok"))
        # A Copilot session token (`tid=…`) is sent as it is; a GitHub token would first be
        # exchanged for one (tests/engine/test_copilot.py).
        key = "tid=k-123" if kind == "github_copilot" else "k-123"
        provider = build_provider(provider_settings(kind, server.url, key=key), FAST)
        await collect(provider, req(Message("user", "x")))
        await provider.aclose()
    by_kind = dict(
        zip(
            ("openai", "azure", "anthropic", "bearer", "custom", "copilot"),
            server.requests,
            strict=True,
        )
    )
    # auth_type x-api-key (the default): the provider's own way, as the existing system sent it
    assert by_kind["openai"].headers["authorization"] == "Bearer k-123"
    assert by_kind["azure"].path == "/openai/deployments/dep1/chat/completions"
    assert by_kind["azure"].query["api-version"] == "2024-10-21"
    assert by_kind["azure"].headers["api-key"] == "k-123"
    assert by_kind["anthropic"].headers["x-api-key"] == "k-123"
    assert "authorization" not in by_kind["anthropic"].headers  # the SDK's bearer copy removed
    assert by_kind["anthropic"].headers["anthropic-version"]
    # bearer: an Anthropic gateway gets `Authorization: Bearer` and no x-api-key
    assert by_kind["bearer"].headers["authorization"] == "Bearer k-123"
    assert "x-api-key" not in by_kind["bearer"].headers
    assert "k-123" not in str(by_kind["custom"].headers)
    assert by_kind["copilot"].headers["authorization"] == "Bearer tid=k-123"
    assert by_kind["copilot"].headers["copilot-integration-id"]


async def test_auth_types_of_the_existing_providers(server: ProtocolServer) -> None:
    """`x-api-key` and `api_key` send the key the provider's own way; `none` sends none; an
    Azure provider without an api version uses the existing default 2024-12-01-preview."""
    cases = {
        "anthropic-x": provider_settings("anthropic", server.url, key="k-1"),
        "anthropic-api_key": replace(
            provider_settings("anthropic", server.url, key="k-2"), auth_type=AuthType.API_KEY
        ),
        "anthropic-none": replace(
            provider_settings("anthropic", server.url, key="k-3"), auth_type=AuthType.NONE
        ),
        "openai-x": replace(
            provider_settings("openai", server.url, key="k-4"), auth_type=AuthType.X_API_KEY
        ),
        "azure-default-version": replace(
            provider_settings("azure_openai", server.url, key="k-5"), azure_api_version=None
        ),
    }
    for settings in cases.values():
        server.script(Turn(text="ok"))
        provider = build_provider(settings, FAST)
        await collect(provider, req(Message("user", "x")))
        await provider.aclose()
    got = dict(zip(cases, server.requests, strict=True))
    assert got["anthropic-x"].headers["x-api-key"] == "k-1"
    assert got["anthropic-api_key"].headers["x-api-key"] == "k-2"
    assert "authorization" not in got["anthropic-api_key"].headers
    none = got["anthropic-none"].headers
    assert "x-api-key" not in none and "authorization" not in none
    assert got["openai-x"].headers["authorization"] == "Bearer k-4"
    assert got["azure-default-version"].query["api-version"] == "2024-12-01-preview"
    assert got["azure-default-version"].headers["api-key"] == "k-5"
