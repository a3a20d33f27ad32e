"""Agent tool names (engine/delegation.py): what every provider accepts, unique in the run."""

from __future__ import annotations

import re

from tbd_agents.domain.models import Agent
from tbd_agents.engine.delegation import tool_names

VALID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def test_names_are_valid_unique_and_readable() -> None:
    agents = [
        Agent(id="a1", name="Research Bot"),
        Agent(id="a2", name="research bot"),  # the same name once cleaned
        Agent(id="a3", name="read"),  # a built-in's name
        Agent(id="b4c5d6e7f8a9b0c1", name="日本語"),  # nothing a provider accepts
        Agent(id="a5", name="x" * 100),
        Agent(id="a6", name="résumé writer"),
    ]
    names = tool_names(agents, taken={"read"})
    assert names[:4] == ["research_bot", "research_bot_2", "read_2", "agent_b4c5d6e7f8a9"]
    assert names[4] == "x" * 60
    assert names[5] == "r_sum__writer"
    assert all(VALID.match(n) for n in names)
    assert len(set(names)) == len(names)
