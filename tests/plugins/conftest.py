"""Helpers of the plugin tests: run a plugin the way the engine does (a `PluginTool` in a
`Toolset`, arguments validated against its schema, an outbound policy that admits loopback only
through the allow-list, as OUTBOUND_ALLOWED_HOSTS=127.0.0.1 would)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tbd_agents.engine.messages import ToolCall, ToolSpec
from tbd_agents.engine.tools.base import ToolContext, ToolResult, Toolset
from tbd_agents.engine.tools.plugin import PluginTool
from tbd_agents.plugins import google_auth
from tbd_agents.plugins.base import Plugin
from tbd_agents.security.outbound import HostPolicy, OutboundPolicy

LOOPBACK_ALLOWED = OutboundPolicy(allowed=HostPolicy.parse("127.0.0.1"))
_ids = itertools.count()


async def run(
    plugin: Plugin,
    args: dict[str, Any],
    env: dict[str, str],
    policy: OutboundPolicy = LOOPBACK_ALLOWED,
) -> ToolResult:
    tool = PluginTool(
        ToolSpec(plugin.name, plugin.description, dict(plugin.parameters_schema)),
        plugin,
        policy,
        env,
        timeout=30,
    )
    tools = Toolset()
    tools.add(tool)
    result, _ = await tools.execute(
        ToolCall(f"call-{next(_ids)}", plugin.name, args), ToolContext(), 1_000_000
    )
    return result


@pytest.fixture(autouse=True)
def _fresh_google_tokens() -> Iterator[None]:
    google_auth.clear_cache()
    yield
    google_auth.clear_cache()
