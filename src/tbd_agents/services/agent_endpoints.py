"""Agents offered to other programs: as models of the OpenAI-compatible endpoint (`/v1`) and as
tools of the agents' MCP server (`/mcp`).

A model id is an agent's id; an agent's name is accepted too when exactly one agent the caller
can use has it (names are not unique across owners, and an admin sees every owner's agents).

An MCP tool is one of the caller's own agents that has `mcp_exposed` on. Only its owner's:
an MCP client configured with an admin key would otherwise offer its model every user's agents.
Tool names are derived from agent names (MCP clients require `[A-Za-z0-9_-]{1,64}`), made
unique by a numeric suffix in the agents' creation order, so a name stays stable while older
agents stay.
"""

from __future__ import annotations

import re

from tbd_agents.domain.models import Agent
from tbd_agents.errors import InvalidData, NotFound
from tbd_agents.services.access import Principal
from tbd_agents.services.records import Records
from tbd_agents.storage.protocol import Query, Repositories, Sort, eq

#: The longest tool name MCP clients accept.
TOOL_NAME_MAX = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class ModelNotFound(NotFound):
    """No agent the caller can use has this id or name."""

    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__("agent", model)
        self.message = (
            f"the model {model!r} does not exist or you do not have access to it: a model is "
            "one of your agents, named by its id or its name (GET /v1/models lists them)"
        )


async def usable_agents(repos: Repositories, caller: Principal) -> list[Agent]:
    """The agents `caller` may chat with (its own; an admin: every agent), oldest first."""
    page = await Records(repos, caller, Agent).list(
        limit=None, sort=(Sort("created_at"), Sort("id"))
    )
    return page.items


async def resolve_model(repos: Repositories, caller: Principal, model: str) -> Agent:
    """The agent `model` names (its id, else its name when unique for the caller);
    ModelNotFound (404) when none, InvalidData when the name is ambiguous."""
    if "\x00" in model:  # no agent has it, and PostgreSQL text cannot hold it
        raise ModelNotFound(model.replace("\x00", ""))
    records = Records(repos, caller, Agent)
    try:
        return await records.get(model)
    except NotFound:
        pass
    page = await records.list([eq("name", model)], limit=2, sort=(Sort("created_at"),))
    if not page.items:
        raise ModelNotFound(model)
    if len(page.items) > 1:
        raise InvalidData(
            f"several agents you can use are named {model!r}: name the model by the agent's id "
            "(GET /v1/models lists them)",
            details={"field": "model"},
        )
    return page.items[0]


def tool_name(agent_name: str) -> str:
    """`agent_name` as an MCP tool name: runs of other characters become `_`, at most 64."""
    name = _UNSAFE.sub("_", agent_name).strip("_") or "agent"
    return name[:TOOL_NAME_MAX]


async def exposed_agents(repos: Repositories, caller: Principal) -> dict[str, Agent]:
    """The caller's own agents offered over MCP, by tool name (unique: a second agent whose
    name gives the same tool name gets `_2`, a third `_3`…, in creation order)."""
    page = await repos.agents.list(
        Query(
            filters=(eq("created_by", caller.identity), eq("mcp_exposed", True)),
            sort=(Sort("created_at"), Sort("id")),
        )
    )
    tools: dict[str, Agent] = {}
    for agent in page.items:
        base = tool_name(agent.name)
        name, n = base, 1
        while name in tools:
            n += 1
            suffix = f"_{n}"
            name = base[: TOOL_NAME_MAX - len(suffix)] + suffix
        tools[name] = agent
    return tools
