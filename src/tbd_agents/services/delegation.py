"""The delegation graph of agents (`Agent.agent_tool_ids`): a save that would close a cycle is
refused.

An agent calling itself, directly or through other agents, would recurse until the depth limit
on every run; refusing the save names the cycle where the user can fix it. The run-time check
(engine/delegation.py) still refuses a cycle in data that bypassed this one (an import, a
restore, two concurrent saves that each were fine alone).
"""

from __future__ import annotations

from collections import deque

from tbd_agents.domain.models import Agent, Entity
from tbd_agents.errors import InvalidData
from tbd_agents.storage.protocol import Query, Repositories, Sort, in_

#: How many agents one save's check reads at most (a graph larger than this is not walked
#: further: such a save is checked only as far as this reaches).
MAX_AGENTS_WALKED = 5000


async def check_delegation_cycle(repos: Repositories, record: Entity) -> None:
    """InvalidData (422) naming the cycle when `record` (an agent as it would be stored) can
    reach itself through `agent_tool_ids`: "agent_tool_ids: delegation cycle a → b → a".

    Only cycles through `record` are refused: a cycle among other agents that already exists is
    not this save's doing (the run-time check refuses it when a run meets it)."""
    if not isinstance(record, Agent) or not record.agent_tool_ids:
        return
    if record.id in record.agent_tool_ids:
        _refuse([record.name, record.name])
    names: dict[str, str] = {record.id: record.name}
    came_from: dict[str, str] = {}  # agent id -> the agent that names it (shortest path)
    frontier = deque(dict.fromkeys(record.agent_tool_ids))
    for agent_id in frontier:
        came_from[agent_id] = record.id
    while frontier and len(names) < MAX_AGENTS_WALKED:
        batch = [frontier.popleft() for _ in range(min(len(frontier), 200))]
        page = await repos.agents.list(Query(filters=(in_("id", batch),), sort=(Sort("id"),)))
        for agent in page.items:
            names[agent.id] = agent.name
            for target in agent.agent_tool_ids:
                if target == record.id:
                    _refuse(_path(came_from, names, agent.id, record))
                if target not in came_from and target not in names:
                    came_from[target] = agent.id
                    frontier.append(target)


def _path(came_from: dict[str, str], names: dict[str, str], last: str, record: Agent) -> list[str]:
    """The names from `record` to `last` and back to `record`."""
    chain = [last]
    while chain[-1] != record.id:
        chain.append(came_from[chain[-1]])
    return [names.get(i, i) for i in reversed(chain)] + [record.name]


def _refuse(names: list[str]) -> None:
    cycle = " → ".join(names)
    raise InvalidData(
        f"agent_tool_ids: delegation cycle {cycle}: an agent may not call itself, directly or "
        "through other agents; remove one of these agent tools",
        details={"field": "agent_tool_ids", "cycle": names},
    )
