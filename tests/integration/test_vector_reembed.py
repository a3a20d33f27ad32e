"""`reembed` rebuilds a collection for a new model on both stores, resumes after an interruption,
and switches pgvector columns to halfvec above 2000 dimensions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.vectors.base import EmbeddingMismatch, VectorRecord
from tbd_agents.vectors.reembed import reembed_pgvector, reembed_qdrant
from tests.support.vectors import BACKENDS, VectorBackend, open_backend

KC = "knowledge_chunks"
TEXTS = [f"document {i} talks about subject {i} and topic {i * 7}" for i in range(40)]


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, pg18_server: str, tmp_path: Path
) -> AsyncIterator[VectorBackend]:
    async with open_backend(request.param, pg18_server, tmp_path) as b:
        yield b


async def fill(backend: VectorBackend, embedder: HashingEmbedder) -> None:
    await backend.knowledge_items(["doc"])
    vectors = await embedder.embed(TEXTS)
    records = [
        VectorRecord(
            id=f"doc:{i}",
            vector=v,
            text=t,
            payload={
                "item_id": "doc",
                "source_id": "src",
                "chunk_index": i,
                "start_offset": 0,
                "end_offset": len(t),
                "tags": [],
            },
        )
        for i, (t, v) in enumerate(zip(TEXTS, vectors, strict=True))
    ]
    await backend.store.upsert(KC, records, embedder.space)


def reembed_fn(backend: VectorBackend):  # type: ignore[no-untyped-def]
    return reembed_pgvector if backend.name == "pgvector" else reembed_qdrant


async def test_reembed_switches_model_and_resumes(backend: VectorBackend) -> None:
    old, new = HashingEmbedder(384), HashingEmbedder(256)
    await fill(backend, old)
    reembed = reembed_fn(backend)
    seen: list[tuple[int, int]] = []

    def stop_after_first_batch(done: int, total: int) -> None:
        seen.append((done, total))
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await reembed(backend.store, KC, new, batch_size=10, progress=stop_after_first_batch)
    resumed: list[tuple[int, int]] = []
    space = await reembed(
        backend.store, KC, new, batch_size=10, progress=lambda d, t: resumed.append((d, t))
    )
    assert space == new.space
    assert resumed[-1] == (40, 40)
    if backend.name == "pgvector":
        assert resumed[0][0] >= 10  # the first run's batch was kept

    info = await backend.store.collection_info(KC)
    assert info.space == new.space
    assert info.count == 40
    with pytest.raises(EmbeddingMismatch):
        await backend.store.search(KC, await old.embed_query("x"), old.space, 3)
    hits = await backend.store.search(KC, await new.embed_query(TEXTS[17]), new.space, 3)
    assert hits[0].id == "doc:17"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)


async def test_pgvector_uses_halfvec_above_2000_dimensions(
    pg18_server: str, tmp_path: Path
) -> None:
    async with open_backend("pgvector", pg18_server, tmp_path) as backend:
        await fill(backend, HashingEmbedder(384))
        wide = HashingEmbedder(3072)
        await reembed_pgvector(backend.store, KC, wide)
        assert backend.engine is not None
        async with backend.engine.connect() as conn:
            typ = await conn.scalar(
                text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'knowledge_chunks'::regclass AND attname = 'embedding'"
                )
            )
            index = await conn.scalar(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_knowledge_chunks_embedding'"
                )
            )
        assert typ == "halfvec(3072)"
        assert "hnsw" in index
        assert "halfvec_cosine_ops" in index
        hits = await backend.store.search(KC, await wide.embed_query(TEXTS[5]), wide.space, 2)
        assert hits[0].id == "doc:5"
