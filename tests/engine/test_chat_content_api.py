"""The chat stream's additive fields over real HTTP: a turn's `model` (checked against the agent's
provider, kept on the session), a tool call's `origin` and `duration_ms` (also stored on the tool
message), and the `sources` frame with each passage's `snippet` (also stored on the answer)."""

from __future__ import annotations

import httpx

from tbd_agents.engine.tools.base import origin_of
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.test_chat_sse import chat_env, events, setup  # noqa: F401 (fixtures)

PASSAGE = "Penguin colony seven is fed herring every Tuesday at dawn by the keeper."


async def _turn(client: httpx.AsyncClient, agent_id: str, body: dict) -> list[tuple[str, dict]]:
    async with client.stream("POST", f"/api/agents/{agent_id}/chat", json=body) as r:
        assert r.status_code == 200, await r.aread()
        return [(n, d) async for n, d, _ in events(r)]


def test_origin_of_names_where_a_tool_comes_from() -> None:
    assert origin_of("mcp:github") == {"kind": "mcp", "name": "github"}
    assert origin_of("custom:fetch_weather") == {"kind": "custom", "name": "fetch_weather"}
    assert origin_of("builtin") == {"kind": "builtin", "name": ""}
    assert origin_of("plugin:jira") == {"kind": "plugin", "name": "jira"}
    assert origin_of("something-else") == {"kind": "unknown", "name": ""}


async def test_model_choice_is_checked_sent_and_kept(
    setup: tuple[httpx.AsyncClient, str, PostgresStore],  # noqa: F811 (the imported fixture)
    protocol_server: ProtocolServer,
) -> None:
    client, agent_id, store = setup
    async with store.unit_of_work() as repos:
        agent = await repos.agents.get(agent_id)
        await repos.providers.update(agent.provider_id, {"models": ["llama3.1", "mistral-small"]})
    before = (await client.get(f"/api/agents/{agent_id}/chat/sessions")).json()

    refused = await client.post(
        f"/api/agents/{agent_id}/chat", json={"message": "hi", "model": "gpt-imaginary"}
    )
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert "gpt-imaginary" in error["message"] and "mistral-small" in error["message"]
    assert error["details"]["field"] == "model"
    assert (await client.get(f"/api/agents/{agent_id}/chat/sessions")).json() == before
    assert protocol_server.requests == []

    protocol_server.script(Turn(text="Hello from mistral."), Turn(text="Back to llama."))
    got = await _turn(client, agent_id, {"message": "hi", "model": "mistral-small"})
    assert got[-1][1]["status"] == "completed"
    assert protocol_server.requests[-1].body["model"] == "mistral-small"
    session_id = got[0][1]["session_id"]
    session = (await client.get(f"/api/chat/sessions/{session_id}")).json()
    assert session["metadata"]["model"] == "mistral-small"

    await _turn(
        client, agent_id, {"message": "again", "session_id": session_id, "model": "llama3.1"}
    )
    assert protocol_server.requests[-1].body["model"] == "llama3.1"
    session = (await client.get(f"/api/chat/sessions/{session_id}")).json()
    assert session["metadata"]["model"] == "llama3.1"


async def test_tool_origin_duration_and_sources_are_streamed_and_stored(
    setup: tuple[httpx.AsyncClient, str, PostgresStore],  # noqa: F811 (the imported fixture)
    protocol_server: ProtocolServer,
) -> None:
    client, agent_id, store = setup
    source = (await client.post("/api/knowledge-sources", json={"name": "zoo-notes"})).json()
    item = (
        await client.post(
            "/api/knowledge-items",
            json={"source_id": source["id"], "name": "Feeding plan", "text_content": PASSAGE},
        )
    ).json()
    async with store.unit_of_work() as repos:
        await repos.agents.update(
            agent_id, {"knowledge_source_ids": [source["id"]], "builtin_tools": ["update_todos"]}
        )
    protocol_server.script(
        Turn(tool_calls=[("update_todos", {"todos": [{"title": "feed", "status": "done"}]})]),
        Turn(text="Herring on Tuesdays [1]."),
    )
    got = await _turn(client, agent_id, {"message": "When are the penguins of colony seven fed?"})
    frames = dict(got)  # the last frame of each name
    sources = frames["sources"]["items"]
    assert [s["item_id"] for s in sources] == [item["id"]]
    assert sources[0]["ref"] == 1 and sources[0]["snippet"] == PASSAGE
    assert sources[0]["title"] == "Feeding plan"
    assert frames["tool_call"]["origin"] == {"kind": "builtin", "name": ""}
    assert frames["tool_result"]["origin"] == {"kind": "builtin", "name": ""}
    assert isinstance(frames["tool_result"]["duration_ms"], int | float)
    assert frames["done"]["citations"] == sources

    session_id = got[0][1]["session_id"]
    messages = (await client.get(f"/api/chat/sessions/{session_id}/messages")).json()
    tool = next(m for m in messages if m["role"] == "tool")
    assert tool["metadata"]["origin"] == {"kind": "builtin", "name": ""}
    assert tool["metadata"]["source"] == "builtin"
    assert tool["metadata"]["duration_ms"] == frames["tool_result"]["duration_ms"]
    answer = messages[-1]
    assert answer["role"] == "assistant" and answer["metadata"]["citations"] == sources


def test_images_are_image_parts_on_both_wire_formats_and_the_catalog_knows_vision() -> None:
    from tbd_agents.engine.catalog import ModelCatalog
    from tbd_agents.engine.messages import Message
    from tbd_agents.engine.providers import anthropic, openai_compat

    image = {"media_type": "image/png", "data": "iVBORw0KGgo="}
    messages = [Message("system", "sys"), Message("user", "What is this?", images=[image])]
    assert openai_compat.to_wire(messages)[1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    }
    _, turns = anthropic.to_wire(messages)
    assert turns == [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", **image}},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]
    assert openai_compat.to_wire([Message("user", "plain")]) == [
        {"role": "user", "content": "plain"}
    ]
    catalog = ModelCatalog.load()
    assert catalog.get("gpt-4o-2024-08-06").vision and catalog.get("claude-sonnet-4-5").vision
    assert not catalog.get("llama3.1").vision and not catalog.get("unknown-model").vision


async def test_attachments_are_checked_before_anything_is_stored(
    setup: tuple[httpx.AsyncClient, str, PostgresStore],  # noqa: F811 (the imported fixture)
    protocol_server: ProtocolServer,
) -> None:
    client, agent_id, _store = setup
    before = (await client.get(f"/api/agents/{agent_id}/chat/sessions")).json()
    png = {"name": "a.png", "media_type": "image/png", "data": "iVBORw0KGgo="}
    cases = [
        (png, "is not known to accept images"),
        ({"name": "a.bmp", "media_type": "image/bmp", "data": "Qk0="}, "not supported"),
        ({"name": "a.pdf", "media_type": "application/pdf", "data": "%%%"}, "not valid base64"),
        ({"name": "a.txt", "media_type": "text/plain"}, "has no content"),
        ({"name": "a.txt", "media_type": "text/plain", "text": "  "}, "is empty"),
    ]
    for attachment, problem in cases:
        r = await client.post(
            f"/api/agents/{agent_id}/chat", json={"message": "hi", "attachments": [attachment]}
        )
        assert r.status_code == 422 and problem in r.json()["error"]["message"], r.text
    too_many = await client.post(
        f"/api/agents/{agent_id}/chat", json={"message": "hi", "attachments": [png] * 9}
    )
    assert too_many.status_code == 422
    assert (await client.get(f"/api/agents/{agent_id}/chat/sessions")).json() == before
    assert protocol_server.requests == []


async def test_deleting_a_chat_deletes_the_knowledge_of_its_attached_files(
    setup: tuple[httpx.AsyncClient, str, PostgresStore],  # noqa: F811 (the imported fixture)
    protocol_server: ProtocolServer,
) -> None:
    client, agent_id, _store = setup
    protocol_server.script(Turn(text="Noted."))
    note = {"name": "feeding.txt", "media_type": "text/plain", "text": PASSAGE}
    got = await _turn(client, agent_id, {"message": "keep this", "attachments": [note]})
    assert got[-1][1]["status"] == "completed"
    session_id = got[0][1]["session_id"]
    session = (await client.get(f"/api/chat/sessions/{session_id}")).json()
    source_id = session["metadata"]["knowledge_source_id"]
    items = (await client.get("/api/knowledge-items", params={"source_id": source_id})).json()
    assert (await client.get(f"/api/knowledge-sources/{source_id}")).status_code == 200

    gone = await client.delete(f"/api/agents/{agent_id}/chat/sessions/{session_id}")
    assert gone.status_code == 204
    assert (await client.get(f"/api/knowledge-sources/{source_id}")).status_code == 404
    for item in items if isinstance(items, list) else items.get("items", []):
        assert (await client.get(f"/api/knowledge-items/{item['id']}")).status_code == 404
