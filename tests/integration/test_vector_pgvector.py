"""pgvector specifics: the search plan follows the filter's selectivity, vectors share the unit of
work's transaction, and parent rows take their vectors with them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from tbd_agents.domain.models import KnowledgeItem, KnowledgeSource, Memory
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import contains_any, eq
from tbd_agents.vectors.base import VectorRecord, Where
from tbd_agents.vectors.pgvector import PgVectorStore
from tests.support.vectors import SPACE, VectorBackend, open_backend, unit_vectors

KC = "knowledge_chunks"


@pytest.fixture
async def pgv(pg18_server: str, tmp_path: Path) -> AsyncIterator[VectorBackend]:
    async with open_backend("pgvector", pg18_server, tmp_path, exact_threshold=50) as b:
        yield b


def chunk(i: int, vec: np.ndarray, item: str, tags: list[str]) -> VectorRecord:
    return VectorRecord(
        id=f"{item}:{i}",
        vector=vec.tolist(),
        text=f"t{i}",
        payload={
            "item_id": item,
            "source_id": "src",
            "chunk_index": i,
            "start_offset": 0,
            "end_offset": 1,
            "tags": tags,
        },
    )


async def test_plan_follows_selectivity_and_always_returns_k(pgv: VectorBackend) -> None:
    store: PgVectorStore = pgv.store
    await pgv.knowledge_items(["big", "small"])
    vecs = unit_vectors(600, seed=11)
    query = vecs[0]
    far_small = set(np.argsort(vecs @ query)[:10].tolist())
    records = [
        chunk(i, v, "small" if i in far_small else "big", ["even" if i % 2 == 0 else "odd"])
        for i, v in enumerate(vecs)
    ]
    await store.upsert(KC, records, SPACE)

    small = await store.search(KC, query.tolist(), SPACE, 10, Where((eq("item_id", "small"),)))
    assert store.last_plan == "exact"
    assert len(small) == 10

    odd = Where((contains_any("tags", ["odd"]),))
    hits = await store.search(KC, query.tolist(), SPACE, 10, odd)
    assert store.last_plan.startswith("hnsw+iterative")
    odd_ids = [i for i in range(600) if i % 2 == 1]
    exact_top = [odd_ids[j] for j in np.argsort(-(vecs[odd_ids] @ query))[:10]]
    assert [h.payload["chunk_index"] for h in hits] == exact_top

    await store.search(KC, query.tolist(), SPACE, 10)
    assert store.last_plan == "hnsw"


async def test_exact_plan_keeps_the_hnsw_index_out(pgv: VectorBackend) -> None:
    """The exact plan orders by `distance + 0`, which the HNSW index cannot serve; the plain
    `ORDER BY distance` is served by the index whenever the planner prefers it (here: sorts off)."""
    assert pgv.engine is not None
    await pgv.knowledge_items(["i"])
    vecs = unit_vectors(200, seed=12)
    await pgv.store.upsert(KC, [chunk(i, v, "i", []) for i, v in enumerate(vecs)], SPACE)
    q = "[" + ",".join(str(x) for x in vecs[0]) + "]"

    async def plan(order: str) -> str:
        sql = (
            "EXPLAIN SELECT id FROM knowledge_chunks WHERE source_id = 'src' "
            f"ORDER BY {order} LIMIT 10"
        )
        async with pgv.engine.connect() as conn:  # type: ignore[union-attr]
            await conn.execute(text("SET enable_sort = off"))
            return "\n".join(r[0] for r in await conn.execute(text(sql), {"q": q}))

    assert "idx_knowledge_chunks_embedding" in await plan("embedding <=> CAST(:q AS vector)")
    assert "idx_knowledge_chunks_embedding" not in await plan(
        "(embedding <=> CAST(:q AS vector)) + 0"
    )
    store = PgVectorStore(pgv.engine)  # default threshold: 200 matching rows → exact
    hits = await store.search(KC, vecs[0].tolist(), SPACE, 3, Where((eq("item_id", "i"),)))
    assert store.last_plan == "exact"
    assert hits[0].payload["chunk_index"] == 0


async def test_vectors_share_the_unit_of_work_transaction(pgv: VectorBackend) -> None:
    assert pgv.engine is not None
    docs = PostgresStore(pgv.engine, owns_engine=False)
    vec = unit_vectors(1, seed=13)[0].tolist()
    mem = Memory(agent_id="a1", key="colour", value="blue")
    record = VectorRecord(
        id=mem.id,
        vector=vec,
        text="colour: blue",
        payload={
            "agent_id": "a1",
            "scope": "agent",
            "session_id": None,
            "owner": None,
            "key": "colour",
        },
    )

    async def write_then_fail() -> None:
        async with docs.unit_of_work() as repos:
            await repos.memories.create(mem)
            await pgv.store.bind(repos).upsert("memories", [record], SPACE)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await write_then_fail()
    assert await pgv.store.count("memories") == 0

    async with docs.unit_of_work() as repos:
        await repos.memories.create(mem)
        await pgv.store.bind(repos).upsert("memories", [record], SPACE)
    assert await pgv.store.count("memories") == 1

    async with docs.unit_of_work() as repos:
        await repos.memories.delete(mem.id)
    assert await pgv.store.count("memories") == 0  # ON DELETE CASCADE


async def test_deleting_a_source_removes_its_chunks(pgv: VectorBackend) -> None:
    assert pgv.engine is not None
    docs = PostgresStore(pgv.engine, owns_engine=False)
    async with docs.unit_of_work() as repos:
        source = await repos.knowledge_sources.create(KnowledgeSource(name="s"))
        item = await repos.knowledge_items.create(KnowledgeItem(source_id=source.id))
        rec = chunk(0, unit_vectors(1)[0], item.id, [])
        rec = VectorRecord(rec.id, rec.vector, rec.text, {**rec.payload, "source_id": source.id})
        await pgv.store.bind(repos).upsert(KC, [rec], SPACE)
    assert await pgv.store.count(KC) == 1
    async with docs.unit_of_work() as repos:
        await repos.knowledge_sources.delete(source.id)
    assert await pgv.store.count(KC) == 0
