"""`tbd-agents db prune` on the MongoDB + Qdrant profile: a pruned chat's attached files go with
their chunks' vectors (on pgvector they cascade with the rows; Qdrant is a separate store the
command must open), and a local-mode Qdrant folder another process holds is refused with the
fix before anything is deleted. The command's pass (`cli.db.prune_once`) runs here on the
in-process MongoDB (a subprocess cannot reach it) and a real local-mode Qdrant folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from qdrant_client import AsyncQdrantClient

from tbd_agents.cli.db import prune_once
from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.storage.protocol import eq
from tbd_agents.vectors.base import KNOWLEDGE_CHUNKS, VectorRecord, Where
from tbd_agents.vectors.qdrant import QdrantVectorStore
from tests.runtime.conftest import RtBackend
from tests.runtime.test_retention import chat, chat_state
from tests.support.mongo import make_mongo_store

SPACE = EmbeddingSpace("test-model", 4)


async def _chunks(path: Path, sources: dict[str, int]) -> None:
    store = QdrantVectorStore.at_path(path)
    try:
        await store.ensure_collection(KNOWLEDGE_CHUNKS.name, SPACE)
        records = [
            VectorRecord(f"{source}-{i}", [1.0, 0.0, 0.0, float(i)], f"chunk {i}",
                         {"source_id": source, "item_id": f"i-{source}", "chunk_index": i,
                          "start_offset": 0, "end_offset": 7, "tags": []})
            for source, count in sources.items()
            for i in range(count)
        ]  # fmt: skip
        await store.upsert(KNOWLEDGE_CHUNKS.name, records, SPACE)
    finally:
        await store.close()


async def _count(path: Path, source: str) -> int:
    store = QdrantVectorStore.at_path(path)
    try:
        return await store.count(KNOWLEDGE_CHUNKS.name, Where((eq("source_id", source),)))
    finally:
        await store.close()


async def test_db_prune_deletes_the_vectors_of_pruned_chats_attachments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await make_mongo_store()
    be = RtBackend("mongo", store)
    try:
        old = await chat(be, "alice", idle_days=40)
        kept = await chat(be, "alice", idle_days=2)
        async with be.store.unit_of_work(readonly=True) as repos:
            source_of = {
                s: (await repos.chat_sessions.get(s)).metadata["knowledge_source_id"]
                for s in (old, kept)
            }
        qdrant = tmp_path / "qdrant"
        await _chunks(qdrant, {source_of[old]: 3, source_of[kept]: 2})
        config = be.settings(data_dir=tmp_path, retention_chat_days=30.0)
        assert config.vector_backend.value == "qdrant"

        # Another process holds the local-mode folder (a running server): refused, nothing lost.
        holder = AsyncQdrantClient(path=str(qdrant))
        try:
            with pytest.raises(typer.Exit):
                await prune_once(config, be.store, dry_run=False)
        finally:
            await holder.close()
        err = capsys.readouterr().err
        assert "QDRANT_URL" in err and "upkeep loop" in err, err
        assert (await chat_state(be))[0] == {old, kept}

        report = await prune_once(config, be.store, dry_run=False)
        assert report.counts["chat_sessions"] == 1
        assert (await chat_state(be))[0] == {kept}
        assert await _count(qdrant, source_of[old]) == 0
        assert await _count(qdrant, source_of[kept]) == 2
    finally:
        await store.close()
