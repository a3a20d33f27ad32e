"""Qdrant vectors (knowledge chunks, memories) copied into pgvector and verified; a Qdrant
collection of another embedding space is refused with the re-embed command."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.tools.migration.report import read_report
from tbd_agents.tools.migration.vectors import float32, parse_vector
from tbd_agents.vectors.base import VectorRecord
from tbd_agents.vectors.qdrant import QdrantVectorStore
from tests.integration.test_migration import MIGRATE, VERIFY, run_script
from tests.support import pg
from tests.support.dumps import edge_case_dataset, write_dump

SPACE = EmbeddingSpace("BAAI/bge-small-en-v1.5", 384)


def _vector(seed: int, dimension: int = 384) -> list[float]:
    return [((seed * 31 + i * 17) % 97) / 97 - 0.5 + 1e-9 * i for i in range(dimension)]


async def _fill_qdrant(path: Path, ids: dict[str, str], space: EmbeddingSpace = SPACE) -> None:
    store = QdrantVectorStore.at_path(path)
    try:
        await store.ensure_collection("knowledge_chunks", space)
        chunks = [
            VectorRecord(
                f"chunk-{n}",
                _vector(n, space.dimension),
                f"chunk {n} ✓",
                {
                    "item_id": ids["kitem"],
                    "source_id": ids["ksource"],
                    "chunk_index": n,
                    "start_offset": n * 10,
                    "end_offset": n * 10 + 9,
                    "tags": ["manual", 'a"b'],
                },
            )
            for n in range(5)
        ]
        chunks.append(
            VectorRecord(
                "chunk-lost",
                _vector(9, space.dimension),
                "lost",
                {
                    "item_id": "no-such-item",
                    "source_id": "s",
                    "chunk_index": 0,
                    "start_offset": 0,
                    "end_offset": 1,
                    "tags": [],
                },
            )
        )
        await store.upsert("knowledge_chunks", chunks, space)
        await store.ensure_collection("memories", space)
        memories = [
            VectorRecord(
                ids["memory_newest"],
                _vector(42, space.dimension),
                "favourite colour: blue",
                {
                    "agent_id": ids["agent_full"],
                    "scope": "agent",
                    "session_id": None,
                    "owner": None,
                    "key": "favourite colour",
                },
            ),
            VectorRecord(
                "memory-gone",
                _vector(43, space.dimension),
                "gone: x",
                {
                    "agent_id": "a",
                    "scope": "agent",
                    "session_id": None,
                    "owner": None,
                    "key": "gone",
                },
            ),
        ]
        await store.upsert("memories", memories, space)
    finally:
        await store.close()


@pytest.fixture
def target(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, "vec")
    yield url
    pg.drop_database(url)


async def test_qdrant_vectors_land_in_pgvector_and_verify(target: URL, tmp_path: Path) -> None:
    dataset = edge_case_dataset(log_entries=50, big=1000)
    dump = write_dump(tmp_path / "dump", dataset)
    qdrant = tmp_path / "qdrant"
    await _fill_qdrant(qdrant, dataset.ids)
    report = tmp_path / "q.jsonl"
    args = (
        "--from-dump",
        str(dump),
        "--qdrant-path",
        str(qdrant),
        "--quarantine-file",
        str(report),
    )
    done = await asyncio.to_thread(
        run_script, MIGRATE, *args, "--accept-losses", url=target, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Vectors: Qdrant local data {qdrant}" in done.stdout
    lines = {
        (q["collection"], q["id"], q["category"])
        for q in read_report(report)
        if str(q["collection"]).startswith("qdrant:")
    }
    assert lines == {
        ("qdrant:knowledge_chunks", "chunk-lost", "orphan"),
        ("qdrant:memories", "memory-gone", "orphan"),
    }

    conn = await asyncpg.connect(libpq_url(target))
    try:
        chunk = await conn.fetchrow(
            "SELECT *, embedding::text AS v FROM knowledge_chunks WHERE id = 'chunk-3'"
        )
        assert (chunk["item_id"], chunk["chunk_index"], chunk["end_offset"], chunk["tags"]) == (
            dataset.ids["kitem"],
            3,
            39,
            ["manual", 'a"b'],
        )
        assert chunk["text"] == "chunk 3 ✓" and float32(parse_vector(chunk["v"])) == float32(
            _vector(3)
        )
        assert await conn.fetchval("SELECT count(*) FROM knowledge_chunks") == 5
        memory = await conn.fetchrow("SELECT *, embedding::text AS v FROM memory_vectors")
        assert memory["id"] == dataset.ids["memory_newest"] and memory["key"] == "favourite colour"
        recorded = await conn.fetch(
            "SELECT name, model, dimension FROM vector_collections ORDER BY name"
        )
        assert [tuple(r) for r in recorded] == [
            ("knowledge_chunks", SPACE.model, 384),
            ("memories", SPACE.model, 384),
        ]
        before = await conn.fetch("SELECT id, xmin::text FROM knowledge_chunks ORDER BY id")
        again = await asyncio.to_thread(
            run_script, MIGRATE, *args, "--accept-losses", url=target, cwd=tmp_path
        )
        assert again.returncode == 0
        assert await conn.fetch("SELECT id, xmin::text FROM knowledge_chunks ORDER BY id") == before

        verified = await asyncio.to_thread(
            run_script,
            VERIFY,
            "--from-dump",
            str(dump),
            "--qdrant-path",
            str(qdrant),
            url=target,
            cwd=tmp_path,
        )
        assert verified.returncode == 0 and "RESULT: PASS" in verified.stdout, verified.stdout
        assert "qdrant:knowledge_chunks" in verified.stdout
        await conn.execute(
            "UPDATE knowledge_chunks SET embedding = (SELECT embedding FROM knowledge_chunks WHERE id = 'chunk-0') WHERE id = 'chunk-1'"
        )
        failed = await asyncio.to_thread(
            run_script,
            VERIFY,
            "--from-dump",
            str(dump),
            "--qdrant-path",
            str(qdrant),
            url=target,
            cwd=tmp_path,
        )
        assert (
            failed.returncode == 1
            and "FAIL qdrant:knowledge_chunks chunk-1: differs" in failed.stdout
        )
    finally:
        await conn.close()


async def test_vectors_of_another_size_are_refused_with_the_reembed_command(
    target: URL, tmp_path: Path
) -> None:
    dataset = edge_case_dataset(log_entries=10, big=100)
    dump = write_dump(tmp_path / "dump", dataset)
    qdrant = tmp_path / "qdrant"
    await _fill_qdrant(qdrant, dataset.ids, EmbeddingSpace("text-embedding-3-small", 1536))
    done = await asyncio.to_thread(
        run_script,
        MIGRATE,
        "--from-dump",
        str(dump),
        "--qdrant-path",
        str(qdrant),
        "--accept-losses",
        url=target,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert (
        "text-embedding-3-small" in done.stderr
        and "tbd-agents vectors reembed knowledge_chunks" in done.stderr
    )
