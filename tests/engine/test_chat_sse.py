"""Chat over real HTTP: the API on a socket, the model on the protocol server.
Deltas arrive incrementally, history persists across turns, a disconnect cancels the model call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from cryptography.fernet import Fernet

from tbd_agents.config import Settings
from tbd_agents.domain.enums import ProviderType
from tbd_agents.domain.models import Agent, Provider, Token
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.live import live_server
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.support import pg


@pytest.fixture(scope="module")
def chat_env(
    pg18_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Settings, object]]:
    url = pg.create_migrated_database(pg18_server, prefix="chat")
    settings = Settings(
        postgres_uri=url.render_as_string(hide_password=False),
        token_encryption_key=f"1:{Fernet.generate_key().decode()}",
        data_dir=tmp_path_factory.mktemp("chat"),
        embedding_provider="hashing",
        outbound_allowed_hosts="127.0.0.1",  # carol (a user) talks to the local scripted model
    )
    with live_server(settings) as base:
        yield base, settings, url
    pg.drop_database(url)


@pytest.fixture
async def setup(
    chat_env, protocol_server: ProtocolServer
) -> AsyncIterator[tuple[httpx.AsyncClient, str, PostgresStore]]:
    base, settings, url = chat_env
    protocol_server.reset()
    store = PostgresStore(create_engine(url, pool_size=2), url=url)
    value, version = KeyRingProvider(settings).cipher().encrypt("sk-chat")
    async with store.unit_of_work() as repos:
        key = (await ApiKeys(repos).create("carol", name="chat-test")).plaintext
        if await repos.tokens.find_one() is None:
            await repos.tokens.create(
                Token(name="k", encrypted_value=value, key_version=version, created_by="carol")
            )
        provider = await repos.providers.create(
            Provider(
                name=f"p-{time.monotonic_ns()}",
                provider_type=ProviderType.CUSTOM,
                api_key_token_name="k",
                base_url=f"{protocol_server.url}/v1",
                created_by="carol",
            )
        )
        agent = await repos.agents.create(
            Agent(name="chatty", model="llama3.1", provider_id=provider.id, created_by="carol")
        )
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client, agent.id, store
    await store.close()


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, dict, float]]:
    name = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            yield name, json.loads(line[6:]), time.monotonic()


async def test_deltas_stream_incrementally_and_history_persists(
    setup, protocol_server: ProtocolServer
) -> None:
    client, agent_id, _store = setup
    protocol_server.script(
        Turn(text="The answer is forty-two, after long thought.", chunk_chars=3, delay=0.05)
    )
    got = []
    async with client.stream(
        "POST", f"/api/agents/{agent_id}/chat", json={"message": "What is the answer?"}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for item in events(r):
            got.append(item)
    names = [n for n, _, _ in got]
    assert names[0] == "session" and names[-1] == "done"
    deltas = [(d["delta"], t) for n, d, t in got if n == "delta"]
    assert len(deltas) >= 10
    assert "".join(d for d, _ in deltas) == "The answer is forty-two, after long thought."
    assert deltas[-1][1] - deltas[0][1] > 0.3  # spread over time, not one buffered burst
    done = got[-1][1]
    assert done["status"] == "completed" and done["usage"]["input_tokens"] == 100
    session_id = got[0][1]["session_id"]

    protocol_server.script(Turn(text="Still forty-two."))
    async with client.stream(
        "POST", f"/api/agents/{agent_id}/chat", json={"message": "Sure?", "session_id": session_id}
    ) as r:
        second = [item async for item in events(r)]
    assert second[-1][0] == "done"
    sent = protocol_server.requests[-1].all_text()
    assert (
        "What is the answer?" in sent
        and "forty-two, after long thought" in sent
        and "Sure?" in sent
    )
    listing = await client.get(f"/api/chat/sessions/{session_id}/messages")
    roles = [(m["role"], m["content"]) for m in listing.json()]
    assert [r for r, _ in roles] == ["user", "assistant", "user", "assistant"]
    assert roles[1][1] == "The answer is forty-two, after long thought."


async def test_disconnect_cancels_the_model_call(setup, protocol_server: ProtocolServer) -> None:
    client, agent_id, _ = setup
    protocol_server.script(Turn(text="z" * 3000, chunk_chars=3, delay=0.02))
    async with client.stream(
        "POST", f"/api/agents/{agent_id}/chat", json={"message": "talk a lot"}
    ) as r:
        async for name, _, _ in events(r):
            if name == "delta":
                break
    # the client closed the connection after the first delta
    for _ in range(150):
        if protocol_server.open_streams == 0:
            break
        await asyncio.sleep(0.02)
    assert protocol_server.open_streams == 0
    assert protocol_server.cancelled_streams >= 1


async def test_unknown_agent_is_404_and_empty_message_422(setup) -> None:
    client, _, _ = setup
    r = await client.post("/api/agents/nope/chat", json={"message": "hi"})
    assert r.status_code == 404
    r = await client.post("/api/agents/nope/chat", json={"message": ""})
    assert r.status_code == 422


async def test_chat_file_tools_use_the_sessions_scratch_workspace(
    setup, protocol_server: ProtocolServer
) -> None:
    client, agent_id, store = setup
    async with store.unit_of_work() as repos:
        await repos.agents.update(agent_id, {"builtin_tools": ["write", "read"]})

    async def chat(message: str, session_id: str | None = None) -> tuple[str, list[str]]:
        body = {"message": message, **({"session_id": session_id} if session_id else {})}
        async with client.stream("POST", f"/api/agents/{agent_id}/chat", json=body) as r:
            got = [item async for item in events(r)]
        results = [d.get("content", "") for n, d, _ in got if n == "tool_result"]
        return got[0][1]["session_id"], results

    protocol_server.script(
        Turn(tool_calls=[("write", {"path": "notes/a.txt", "content": "kept for the session"})]),
        Turn(text="saved"),
    )
    session, _ = await chat("remember this")
    protocol_server.script(Turn(tool_calls=[("read", {"path": "notes/a.txt"})]), Turn(text="ok"))
    _, results = await chat("what did you save?", session)
    assert "kept for the session" in results[0]
    # another session has its own directory
    protocol_server.script(Turn(tool_calls=[("read", {"path": "notes/a.txt"})]), Turn(text="ok"))
    _, results = await chat("and here?")
    assert results[0].startswith("Error:") and "kept for the session" not in results[0]
