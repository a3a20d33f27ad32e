"""The agents' MCP server (`/mcp`) with the `mcp` SDK's client against the real API on a
socket: the caller's exposed agents as tools, a call answered by the scripted model, the
conversation continued by its session, keys refused before MCP, failures as tool errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types
import pytest
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

from tbd_agents.domain.auth import KeyScope
from tests.api.live_agents import LiveApi, User, protocol_server, running_api, user  # noqa: F401
from tests.engine.protocol_server import Turn


@pytest.fixture(scope="module")
def api(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with running_api(pg18_server, Path(tmp_path_factory.mktemp("mcp")), "mcpserver") as live:
        yield live


async def _session_do(url: str, key: str, work: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await work(session)


def mcp_call(api: LiveApi, key: str, work: Any) -> Any:
    """Run `work(session)` in an initialised MCP client session of `key`."""
    return asyncio.run(_session_do(api.url, key, work))


def tools_of(api: LiveApi, key: str) -> dict[str, mcp_types.Tool]:
    async def work(session: ClientSession) -> dict[str, mcp_types.Tool]:
        listed = await session.list_tools()
        return {t.name: t for t in listed.tools}

    found: dict[str, mcp_types.Tool] = mcp_call(api, key, work)
    return found


def call(api: LiveApi, key: str, name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
    async def work(session: ClientSession) -> mcp_types.CallToolResult:
        return await session.call_tool(name, arguments)

    result: mcp_types.CallToolResult = mcp_call(api, key, work)
    return result


def text_of(result: mcp_types.CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def test_the_tools_are_the_callers_exposed_agents(api: LiveApi, user: User) -> None:
    helper = user.agent("Order helper!", description="Answers order questions.", mcp_exposed=True)
    twin = user.agent("Order helper?", mcp_exposed=True)  # the same tool name: a suffix
    hidden = user.agent("not offered")
    other = User(api, user.protocol)
    other.agent("Order helper!", mcp_exposed=True)  # another user's: not among ours

    tools = tools_of(api, user.key)
    assert set(tools) == {"Order_helper", "Order_helper_2"}
    tool = tools["Order_helper"]
    assert tool.description == "Answers order questions."
    assert tool.input_schema["required"] == ["message"]
    assert set(tool.input_schema["properties"]) == {"message", "session_id"}
    assert helper["mcp_exposed"] is True and hidden["mcp_exposed"] is False

    # The flag is an ordinary field of the agent: turned off, the tool is gone.
    changed = user.http.patch(f"/api/agents/{twin['id']}", json={"mcp_exposed": False})
    assert changed.status_code == 200, changed.text
    assert set(tools_of(api, user.key)) == {"Order_helper"}
    assert set(tools_of(api, other.key)) == {"Order_helper"}
    other.close()


def test_a_call_is_a_chat_turn_of_the_agent(api: LiveApi, user: User) -> None:
    agent = user.agent("Desk", description="The order desk.", mcp_exposed=True)
    user.protocol.script(Turn(text="Order 7 shipped."), Turn(text="Yesterday, by post."))

    first = call(api, user.key, "Desk", {"message": "Where is order 7?"})
    assert not first.is_error
    assert text_of(first) == "Order 7 shipped."
    assert isinstance(first.structured_content, dict)
    session_id = first.structured_content["session_id"]
    assert first.structured_content["answer"] == "Order 7 shipped."

    second = call(api, user.key, "Desk", {"message": "When?", "session_id": session_id})
    assert text_of(second) == "Yesterday, by post."
    sent = user.protocol.requests[-1].conversation()
    said = [m["text"] for m in sent if m["role"] in ("user", "assistant")]
    assert said == ["Where is order 7?", "Order 7 shipped.", "When?"]

    # The conversation is the agent's chat session, as in the dashboard.
    stored = user.http.get(f"/api/agents/{agent['id']}/chat/sessions/{session_id}").json()
    assert [m["content"] for m in stored["messages"]][-1] == "Yesterday, by post."


def test_failures_are_tool_errors(api: LiveApi, user: User) -> None:
    rail = user.blocking_guardrail("input", "forbidden")
    user.agent("Guarded", guardrail_ids=[rail], mcp_exposed=True)
    user.agent("Broken", mcp_exposed=True)
    user.protocol.script(Turn(status=401, error_body={"error": {"message": "bad key"}}))

    failed = call(api, user.key, "Broken", {"message": "hello"})
    assert failed.is_error
    assert "Broken" in text_of(failed) and "401" in text_of(failed)

    blocked = call(api, user.key, "Guarded", {"message": "the forbidden thing"})
    assert blocked.is_error and "guardrail" in text_of(blocked).lower()

    unknown = call(api, user.key, "Nobody", {"message": "hello"})
    assert unknown.is_error and "no tool 'Nobody'" in text_of(unknown)

    bad_session = call(api, user.key, "Broken", {"message": "hi", "session_id": "nope"})
    assert bad_session.is_error and "nope" in text_of(bad_session)


def test_keys_are_checked_before_mcp(api: LiveApi) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer tbd_not-a-real-key"}):
        response = httpx.post(f"{api.url}/mcp", json=initialize, headers={**accept, **headers})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "authentication_required"

    with pytest.raises(ExceptionGroup) as refused:  # the SDK's client fails to initialise
        tools_of(api, "tbd_not-a-real-key")
    assert refused.group_contains(MCPError, depth=None)


def test_a_read_only_key_lists_but_does_not_call(api: LiveApi, user: User) -> None:
    user.agent("Desk", mcp_exposed=True)
    key = api.key(user.identity, KeyScope.READ_ONLY)
    assert set(tools_of(api, key)) == {"Desk"}
    refused = call(api, key, "Desk", {"message": "hello"})
    assert refused.is_error and "read-only" in text_of(refused)
    assert user.protocol.requests == []
