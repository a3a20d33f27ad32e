"""GitHub Copilot through the real `openai` SDK against the local fake of Copilot's endpoints:
the GitHub token is exchanged for a session token (once, cached; again when due or on a 401),
the session token and Copilot's headers reach the chat API, the GitHub token never does."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import replace

import pytest

from tbd_agents.domain.enums import AuthType, ProviderType
from tbd_agents.engine.messages import ChatRequest, Completion, Message, TextDelta
from tbd_agents.engine.providers import ProviderSettings, build_provider
from tbd_agents.engine.providers import copilot as copilot_module
from tbd_agents.engine.providers.copilot import (
    CopilotProvider,
    copilot_models,
    forget_sessions,
)
from tbd_agents.errors import UpstreamAuthError, UpstreamUnreachable
from tests.engine.conftest import ADMIN_OWNED, FAST
from tests.engine.protocol_server import ProtocolServer, Turn

GH = "ghu_copilotUserToken0123456789abcdefXYZ"


@pytest.fixture(autouse=True)
def _fresh_sessions() -> Iterator[None]:
    forget_sessions()
    yield
    forget_sessions()


@pytest.fixture
def copilot(server: ProtocolServer) -> ProtocolServer:
    server.copilot.github_tokens = {GH}
    return server


def settings(key: str = GH, base_url: str | None = None) -> ProviderSettings:
    return ProviderSettings(
        name="copilot",
        provider_type=ProviderType.GITHUB_COPILOT,
        api_key=key,
        auth_type=AuthType.BEARER,
        base_url=base_url,
        outbound=ADMIN_OWNED,
    )


def config(server: ProtocolServer, **changes: object):  # type: ignore[no-untyped-def]
    return replace(FAST, copilot_token_url=f"{server.url}/copilot_internal/v2/token", **changes)


def req(text: str = "hi") -> ChatRequest:
    return ChatRequest(model="gpt-4.1", messages=[Message("user", text)])


async def ask(provider, text: str = "hi") -> str:  # type: ignore[no-untyped-def]
    out = []
    done = None
    async for ev in provider.stream(req(text)):
        if isinstance(ev, TextDelta):
            out.append(ev.text)
        elif isinstance(ev, Completion):
            done = ev
    assert done is not None
    return "".join(out)


async def test_exchange_once_then_session_token_and_headers_reach_the_chat_api(
    copilot: ProtocolServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    copilot.copilot.enforce = True
    copilot.script(Turn(text="first answer"), Turn(text="second answer"))
    provider = build_provider(settings(), config(copilot))
    assert isinstance(provider, CopilotProvider)
    assert await ask(provider) == "first answer"
    await provider.aclose()
    # A second provider (the next run) reuses the cached session token.
    again = build_provider(settings(), config(copilot))
    assert await ask(again) == "second answer"
    await again.aclose()

    fake = copilot.copilot
    assert len(fake.exchanges) == 1
    exchange = fake.exchanges[0]
    assert exchange["authorization"] == f"token {GH}"
    assert exchange["copilot-integration-id"] == "vscode-chat"
    session = fake.issued[0]
    assert session.startswith("tid=")
    chats = copilot.requests
    assert [r.path for r in chats] == ["/v1/chat/completions"] * 2  # endpoints.api used
    for rec in chats:
        assert rec.headers["authorization"] == f"Bearer {session}"
        assert rec.headers["copilot-integration-id"] == "vscode-chat"
        assert rec.headers["editor-version"] == "tbd-agents/0.1"
        assert rec.headers["editor-plugin-version"] == "tbd-agents/0.1"
        assert rec.headers["user-agent"] == "tbd-agents/0.1"
        assert GH not in repr(rec.headers) and GH not in repr(rec.body)
    # The cache is keyed by a digest, never by the GitHub token; logs never carry it.
    assert copilot_module._sessions and all(GH not in k for k in copilot_module._sessions)
    assert GH not in caplog.text and session not in caplog.text
    assert GH not in repr(provider.settings) and session not in repr(provider.settings)


async def test_a_session_due_for_refresh_is_exchanged_again(copilot: ProtocolServer) -> None:
    copilot.copilot.refresh_in = 0  # due at once: every call exchanges
    copilot.script(Turn(text="a"), Turn(text="b"))
    provider = build_provider(settings(), config(copilot))
    await ask(provider)
    await ask(provider)
    await provider.aclose()
    fake = copilot.copilot
    assert len(fake.exchanges) == 2 and len(set(fake.issued)) == 2
    used = [r.headers["authorization"] for r in copilot.requests]
    assert used == [f"Bearer {fake.issued[0]}", f"Bearer {fake.issued[1]}"]


async def test_a_401_from_the_chat_api_exchanges_once_more_and_retries(
    copilot: ProtocolServer,
) -> None:
    fake = copilot.copilot
    fake.enforce = True
    copilot.script(Turn(text="before"), Turn(text="after refresh"))
    provider = build_provider(settings(), config(copilot))
    assert await ask(provider) == "before"
    fake.revoke_all()  # GitHub revoked the session token before its refresh time
    assert await ask(provider) == "after refresh"
    await provider.aclose()
    assert len(fake.exchanges) == 2
    used = [r.headers["authorization"] for r in copilot.requests]
    assert used == [f"Bearer {fake.issued[0]}"] * 2 + [f"Bearer {fake.issued[1]}"]


async def test_a_second_401_is_reported_not_looped(copilot: ProtocolServer) -> None:
    copilot.script(
        Turn(status=401, error_body={"error": {"message": "bad"}}),
        Turn(status=401, error_body={"error": {"message": "bad"}}),
    )
    provider = build_provider(settings(), config(copilot))
    with pytest.raises(UpstreamAuthError):
        await ask(provider)
    await provider.aclose()
    assert len(copilot.copilot.exchanges) == 2 and len(copilot.requests) == 2


async def test_a_token_without_copilot_access_names_the_fix(copilot: ProtocolServer) -> None:
    other = "ghp_noCopilotAccess0123456789abcdefghijkl"
    provider = build_provider(settings(key=other), config(copilot))
    with pytest.raises(UpstreamAuthError) as caught:
        await ask(provider)
    await provider.aclose()
    message = caught.value.message
    assert "Copilot access" in message and "copilot scope" in message
    assert other not in message
    assert copilot.requests == []  # no chat call without a session token


async def test_an_unreachable_token_url_is_upstream_unreachable(server: ProtocolServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    cfg = replace(
        FAST, copilot_token_url=f"http://127.0.0.1:{port}/copilot_internal/v2/token",
        model_max_retries=1,
    )  # fmt: skip
    provider = build_provider(settings(), cfg)
    with pytest.raises(UpstreamUnreachable) as caught:
        await ask(provider)
    await provider.aclose()
    assert "COPILOT_TOKEN_URL" in caught.value.message and GH not in caught.value.message


async def test_a_session_token_key_is_sent_as_it_is(copilot: ProtocolServer) -> None:
    session = "tid=minted-elsewhere;exp=9999999999;sku=free"
    copilot.script(Turn(text="ok"))
    provider = build_provider(settings(key=session, base_url=f"{copilot.url}/v1"), FAST)
    assert await ask(provider) == "ok"
    await provider.aclose()
    assert copilot.copilot.exchanges == []
    assert copilot.requests[0].headers["authorization"] == f"Bearer {session}"


async def test_the_providers_own_base_url_wins_over_the_exchange_endpoint(
    copilot: ProtocolServer,
) -> None:
    copilot.copilot.api = "http://127.0.0.1:9/never-used"
    copilot.script(Turn(text="ok"))
    provider = build_provider(settings(base_url=f"{copilot.url}/v1"), config(copilot))
    assert await ask(provider) == "ok"
    await provider.aclose()
    assert copilot.requests[0].path == "/v1/chat/completions"


async def test_copilot_api_url_overrides_the_exchange_endpoint(copilot: ProtocolServer) -> None:
    copilot.copilot.api = "http://127.0.0.1:9/never-used"
    copilot.script(Turn(text="ok"))
    cfg = config(copilot, copilot_api_url=f"{copilot.url}/v1")
    provider = build_provider(settings(), cfg)
    assert await ask(provider) == "ok"
    await provider.aclose()


async def test_models_are_listed_with_the_session_token(copilot: ProtocolServer) -> None:
    fake = copilot.copilot
    fake.models = [
        {
            "id": "gpt-4.1",
            "name": "GPT-4.1",
            "version": "gpt-4.1-2025-04-14",
            "capabilities": {
                "type": "chat",
                "family": "gpt-4.1",
                "limits": {"max_context_window_tokens": 128000},
            },
            "model_picker_enabled": True,
        }
    ]
    listed = await copilot_models(
        GH,
        token_url=f"{copilot.url}/copilot_internal/v2/token",
        api_url=None,
        base_url=None,
        policy=ADMIN_OWNED,
    )
    assert [m["id"] for m in listed] == ["gpt-4.1"]
    assert fake.model_requests[0]["authorization"] == f"Bearer {fake.issued[0]}"
    assert fake.model_requests[0]["copilot-integration-id"] == "vscode-chat"
