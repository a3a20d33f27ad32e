"""PostgreSQL: a whole list (no limit) is served from the process's cache only while its rows
are unchanged — every insert, update (also one that leaves `updated_at` alone), delete, and a
transaction's own uncommitted writes are seen."""

from __future__ import annotations

import json

from sqlalchemy import text

from tbd_agents.domain.models import Agent
from tbd_agents.storage.postgres.repository import WHOLE_LISTS, PostgresStore
from tbd_agents.storage.protocol import Query, eq


async def _names(store: PostgresStore, owner: str) -> list[str]:
    async with store.unit_of_work(readonly=True) as repos:
        page = await repos.agents.list_json(Query(filters=(eq("created_by", owner),)))
    return sorted(a["name"] for a in json.loads(page.items))


async def test_the_cached_list_follows_every_change(pg_store: PostgresStore) -> None:
    owner = "cache-owner"
    async with pg_store.unit_of_work() as repos:
        first = await repos.agents.create(Agent(name="a1", created_by=owner))
        await repos.agents.create(Agent(name="a2", created_by=owner))
        await repos.agents.create(Agent(name="other", created_by="someone-else"))
    assert await _names(pg_store, owner) == ["a1", "a2"]
    entries = len(WHOLE_LISTS._entries)
    assert await _names(pg_store, owner) == ["a1", "a2"]  # served again, from the cache
    assert len(WHOLE_LISTS._entries) == entries >= 1

    async with pg_store.unit_of_work() as repos:
        await repos.agents.update(first.id, {"name": "a1-renamed"})
    assert await _names(pg_store, owner) == ["a1-renamed", "a2"]

    async with pg_store.engine.begin() as conn:  # a change that leaves updated_at alone
        await conn.execute(
            text("UPDATE agents SET description = 'x', name = 'a1-raw' WHERE id = :id"),
            {"id": first.id},
        )
    assert await _names(pg_store, owner) == ["a1-raw", "a2"]

    async with pg_store.unit_of_work() as repos:  # delete one and add one: same count
        await repos.agents.delete(first.id)
        await repos.agents.create(Agent(name="a3", created_by=owner))
    assert await _names(pg_store, owner) == ["a2", "a3"]

    class Abort(Exception):
        pass

    try:  # its own uncommitted row, then rolled back
        async with pg_store.unit_of_work() as repos:
            await repos.agents.create(Agent(name="a4", created_by=owner))
            inside = await repos.agents.list_json(Query(filters=(eq("created_by", owner),)))
            assert sorted(a["name"] for a in json.loads(inside.items)) == ["a2", "a3", "a4"]
            raise Abort
    except Abort:
        pass
    assert await _names(pg_store, owner) == ["a2", "a3"]
