"""Contract: unit of work commit / rollback according to the backend's declared capability."""

from __future__ import annotations

import pytest

from tbd_agents.domain.models import Skill, Token
from tbd_agents.storage.protocol import DocumentStore


class Boom(Exception):
    pass


async def _write_then_fail(store: DocumentStore, token_id: str) -> None:
    async with store.unit_of_work() as repos:
        await repos.skills.create(Skill(name="one"))
        await repos.skills.insert_many([Skill(name="two"), Skill(name="three")])
        await repos.tokens.update(token_id, {"description": "changed"})
        raise Boom


async def test_normal_exit_commits(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.skills.create(Skill(name="kept"))
    async with store.unit_of_work() as repos:
        assert await repos.skills.count() == 1


async def test_exception_rolls_back_when_the_backend_is_transactional(
    store: DocumentStore,
) -> None:
    existing = Token(name="existing", encrypted_value="v")
    async with store.unit_of_work() as repos:
        await repos.tokens.create(existing)
    with pytest.raises(Boom):
        await _write_then_fail(store, existing.id)
    async with store.unit_of_work() as repos:
        skills = await repos.skills.count()
        token = await repos.tokens.get(existing.id)
    if store.transactional:
        assert skills == 0
        assert token.description == ""
    else:  # declared: writes are applied as they happen
        assert skills == 3
        assert token.description == "changed"


async def test_store_answers_ping(store: DocumentStore) -> None:
    await store.ping()
    assert isinstance(store.backend, str) and store.backend
    assert isinstance(store.transactional, bool)


async def test_a_single_write_block_reads_then_writes_once(store: DocumentStore) -> None:
    """Every backend accepts `single_write=True` (PostgreSQL skips the transaction)."""
    async with store.unit_of_work() as repos:
        skill = await repos.skills.create(Skill(name="before"))
    async with store.unit_of_work(single_write=True) as repos:
        current = await repos.skills.get(skill.id)
        await repos.skills.update(skill.id, {"description": current.name + " and after"})
    async with store.unit_of_work(readonly=True) as repos:
        assert (await repos.skills.get(skill.id)).description == "before and after"
