"""Contract: a filter on a key of a JSON field (`metadata.tags`), on every backend."""

from __future__ import annotations

import pytest

from tbd_agents.domain.models import Agent, Memory
from tbd_agents.errors import UnsupportedQuery
from tbd_agents.storage.protocol import DocumentStore, Query, contains_all, contains_any, eq


async def test_contains_any_and_all_on_a_json_key(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name="mem-owner"))
        made = {}
        for key, metadata in (
            ("both", {"tags": ["ops", "db"]}),
            ("ops", {"tags": ["ops"]}),
            ("scalar", {"tags": "ops"}),
            ("none", {}),
        ):
            made[key] = await repos.memories.create(
                Memory(agent_id=agent.id, key=key, metadata=metadata)
            )

    async def keys(*filters: object) -> set[str]:
        async with store.unit_of_work(readonly=True) as repos:
            page = await repos.memories.list(Query(filters=(eq("agent_id", agent.id), *filters)))  # type: ignore[arg-type]
        return {m.key for m in page.items}

    assert await keys(contains_any("metadata.tags", ["ops"])) == {"both", "ops"}
    assert await keys(contains_all("metadata.tags", ["ops", "db"])) == {"both"}
    assert await keys(contains_any("metadata.tags", ["nothing"])) == set()
    with pytest.raises(UnsupportedQuery):
        await keys(eq("metadata.tags", "ops"))
    with pytest.raises(UnsupportedQuery):
        await keys(contains_any("name.tags", ["x"]))
