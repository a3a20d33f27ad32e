"""MCP tool sources against real servers (stdio, streamable HTTP, SSE), incl. broken ones."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tbd_agents.domain.enums import McpTransport
from tbd_agents.engine.tools.base import ToolContext
from tbd_agents.engine.tools.mcp import open_servers
from tests.engine.mcp_fixtures import http_config, http_server, stdio_config

CTX = ToolContext()


@pytest.fixture(scope="module")
def streamable_url() -> Iterator[str]:
    with http_server("streamable-http") as url:
        yield url


@pytest.fixture(scope="module")
def sse_url() -> Iterator[str]:
    with http_server("sse") as url:
        yield url


#: `http` is the existing TBD Agents name of the streamable HTTP transport.
@pytest.fixture(params=["stdio", "streamable_http", "http", "sse"])
def config(request: pytest.FixtureRequest):
    allowed = ["add", "lookup_order", "environment", "slow", "crash"]
    if request.param == "stdio":
        return stdio_config(allowed=allowed, call_timeout=2)
    url = request.getfixturevalue("sse_url" if request.param == "sse" else "streamable_url")
    return http_config(url, McpTransport(request.param), allowed=allowed, call_timeout=2)


async def test_lists_allowed_tools_and_calls_them(config) -> None:
    conns, per_server, problems = await open_servers([config])
    try:
        assert problems == []
        tools = {t.spec.name: t for t in per_server[0][1]}
        assert set(tools) == {"add", "lookup_order", "environment", "slow", "crash"}
        assert "secret_admin_tool" not in tools  # filtered by allowed_tools
        res = await tools["add"].call({"a": 20, "b": 22}, CTX)
        assert not res.is_error and res.content == "42"
        assert tools["add"].spec.parameters["properties"]["a"]["type"] == "integer"
    finally:
        for c in conns:
            await c.aclose()


async def test_slow_call_times_out_without_hanging(config) -> None:
    conns, per_server, _ = await open_servers([config])
    tools = {t.spec.name: t for t in per_server[0][1]}
    t0 = time.monotonic()
    res = await tools["slow"].call({"seconds": 30}, CTX)
    assert res.is_error and "did not answer slow within 2 s" in res.content
    assert time.monotonic() - t0 < 4
    for c in conns:
        await c.aclose()


async def test_stdio_server_crash_is_reported_then_reconnected() -> None:
    conns, per_server, _ = await open_servers([stdio_config(call_timeout=5)])
    tools = {t.spec.name: t for t in per_server[0][1]}
    crashed = await tools["crash"].call({}, CTX)
    assert crashed.is_error and "failed on crash" in crashed.content
    again = await tools["add"].call({"a": 1, "b": 2}, CTX)
    assert not again.is_error and again.content == "3"
    for c in conns:
        await c.aclose()


async def test_hanging_and_dying_servers_are_skipped_and_reported() -> None:
    good = stdio_config()
    hanging = stdio_config("hanging_mcp.py", connect_timeout=1.5)
    dying = stdio_config("dying_mcp.py", connect_timeout=5)
    t0 = time.monotonic()
    conns, per_server, problems = await open_servers([good, hanging, dying])
    elapsed = time.monotonic() - t0
    try:
        assert [cfg.name for cfg, _ in per_server] == ["demo_mcp"]
        reasons = dict(problems)
        assert "did not connect and list its tools within 1.5 s" in reasons["hanging_mcp"]
        assert "failed to connect" in reasons["dying_mcp"]
        assert elapsed < 6
    finally:
        for c in conns:
            await c.aclose()


async def test_unreachable_http_server_is_reported() -> None:
    cfg = http_config("http://127.0.0.1:9/mcp", McpTransport.STREAMABLE_HTTP, connect_timeout=3)
    conns, per_server, problems = await open_servers([cfg])
    assert conns == [] and per_server == []
    assert problems and problems[0][0] == cfg.name


async def test_stdio_server_gets_only_declared_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", "1:secret")
    monkeypatch.setenv("POSTGRES_URI", "postgresql://u:pw@h/db")
    cfg = stdio_config()
    cfg.env = {"SERVICE_TOKEN": "declared"}
    conns, per_server, _ = await open_servers([cfg])
    tools = {t.spec.name: t for t in per_server[0][1]}
    names = set((await tools["environment"].call({}, CTX)).content.split(","))
    assert "SERVICE_TOKEN" in names
    assert not names & {"TOKEN_ENCRYPTION_KEY", "POSTGRES_URI"}
    for c in conns:
        await c.aclose()


async def test_missing_allowed_tool_is_reported() -> None:
    conns, per_server, problems = await open_servers(
        [stdio_config(allowed=["add", "no_such_tool"])]
    )
    assert [t.spec.name for t in per_server[0][1]] == ["add"]
    assert "no_such_tool" in problems[0][1]
    for c in conns:
        await c.aclose()
