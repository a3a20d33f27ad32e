"""Without a Qdrant source, the memories' own `embedding` arrays become their `memory_vectors`
rows (as the memory service builds them), searchable, idempotent, verified; embeddings of another
dimension are warned about; a dry run writes nothing; the live path gives the same rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tbd_agents.domain.models import Agent
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.services.memory import MemoryService, memory_text
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.tools.migration.memvectors import MemoryEmbeddings
from tbd_agents.tools.migration.report import ReportLog, read_report, warnings_path_for
from tbd_agents.tools.migration.runner import Migration, Options
from tbd_agents.tools.migration.sources import DumpSource, MongoSource, Source
from tbd_agents.tools.migration.vectors import float32, parse_vector
from tbd_agents.tools.migration.verify import Verifier
from tbd_agents.vectors.pgvector import PgVectorStore
from tests.integration.test_migration import MIGRATE, VERIFY, run_script
from tests.support import pg
from tests.support.dumps import DB, Dataset, checksums, emulated_database, oid, write_dump

EMBEDDER = HashingEmbedder(384)
STEP = "embedding:memories"


async def memories_dataset() -> Dataset:
    """An agent and its memories: three with an embedding of the column's size (made by the
    hashing embedder, as if the MongoDB deployment had used it), one of 768 dimensions, one with
    a null embedding, one without the field."""
    d = Dataset()
    agent = str(
        d.add("agents", {"_id": oid(), "name": "keeper", "created_by": "alice"}, "agent")["_id"]
    )
    memories = [
        ("colour", "agent", None, "favourite colour", "deep ocean blue"),
        ("city", "agent", None, "home city", "Porto by the Douro river"),
        ("session", "session", "chat-1", "current topic", "invoice reconciliation"),
    ]
    for name, scope, session, key, value in memories:
        (vector,) = await EMBEDDER.embed([memory_text(key, value)])
        document = {
            "_id": oid(),
            "agent_id": agent,
            "scope": scope.upper() if name == "session" else scope,  # enum spelling normalised
            "key": key,
            "value": value,
            "embedding": vector,
            "created_by": "alice",
        }
        if session:
            document["session_id"] = session
        d.add("memories", document, name)
    wide = [((i * 13) % 17) / 17 - 0.5 for i in range(768)]
    d.add(
        "memories",
        {"_id": oid(), "agent_id": agent, "key": "old model", "value": "x", "embedding": wide},
        "wide",
    )
    d.add(
        "memories",
        {"_id": oid(), "agent_id": agent, "key": "null", "value": "y", "embedding": None},
        "null",
    )
    d.add("memories", {"_id": oid(), "agent_id": agent, "key": "none", "value": "z"}, "none")
    return d


def expected_rows(d: Dataset) -> dict[str, tuple[Any, ...]]:
    """memory_vectors as the memory service would write it for the right-sized memories."""
    out = {}
    for document in d.documents["memories"]:
        embedding = document.get("embedding")
        if embedding is None or len(embedding) != 384:
            continue
        out[str(document["_id"])] = (
            document["agent_id"],
            document["scope"].lower(),
            document.get("session_id"),
            document["created_by"],
            document["key"],
            f"{document['key']}: {document['value']}",
            float32(embedding),
        )
    return out


async def vector_rows(conn: asyncpg.Connection) -> dict[str, tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT id, agent_id, scope, session_id, owner, key, text, embedding::text AS v "
        "FROM memory_vectors"
    )
    return {r["id"]: (*tuple(r)[1:7], float32(parse_vector(r["v"]))) for r in rows}


async def tables(conn: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """Every table's rows and their xmin, but the checkpoints (each run rewrites them)."""
    found = await checksums(conn, with_xmin=True)
    del found["migration_checkpoints"]
    return found


def summary_cells(stdout: str, name: str = STEP) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.startswith(f"│ {name} "))
    return [c.strip() for c in line.strip("│").split("│")]


@pytest.fixture
def target(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, "memvec")
    yield url
    pg.drop_database(url)


@pytest.fixture
async def dataset() -> Dataset:
    return await memories_dataset()


async def test_embeddings_become_searchable_memory_vectors_and_verify(
    target: URL, dataset: Dataset, tmp_path: Path
) -> None:
    dump = write_dump(tmp_path / "dump", dataset)
    report = tmp_path / "q.jsonl"
    args = ("--from-dump", str(dump), "--batch-size", "2", "--quarantine-file", str(report))
    first = await asyncio.to_thread(run_script, MIGRATE, *args, url=target, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Memory vectors: recorded as 'tbd-hashing-v1' (384 dimensions)" in first.stdout
    # read, inserted, updated, unchanged, quarantined, warnings
    assert summary_cells(first.stdout)[1:7] == ["6", "3", "0", "0", "0", "1"]
    assert f"{STEP}: left out 2 no embedding" in first.stdout

    warnings = [w for w in read_report(warnings_path_for(report)) if w["collection"] == STEP]
    assert [w["id"] for w in warnings] == [dataset.ids["wide"]]
    message = str(warnings[0]["warning"])
    assert "768 dimensions, memory_vectors holds 384" in message
    assert "`tbd-agents vectors reembed memories`" in message

    conn = await asyncpg.connect(libpq_url(target))
    engine = create_engine(target, pool_size=1, max_overflow=1)
    try:
        assert await vector_rows(conn) == expected_rows(dataset)
        # The memory rows themselves are all migrated, the 768-dimension one included.
        assert await conn.fetchval("SELECT count(*) FROM memories") == 6
        assert (
            await conn.fetchval(
                "SELECT cardinality(embedding) FROM memories WHERE id = $1", dataset.ids["wide"]
            )
            == 768
        )
        recorded = await conn.fetch("SELECT name, model, dimension FROM vector_collections")
        assert [tuple(r) for r in recorded] == [("memories", "tbd-hashing-v1", 384)]

        # Semantic search finds them: the memory service (its own text query) and the store
        # (with one migrated memory's own vector).
        store = PgVectorStore(engine)
        service = MemoryService(PostgresStore(engine, owns_engine=False), store, EMBEDDER)
        agent = Agent(id=dataset.ids["agent"], name="keeper", created_by="alice")
        hits = await service.search(agent, "which city is home?")
        assert hits and hits[0].memory.id == dataset.ids["city"]
        colour = dataset.documents["memories"][0]["embedding"]
        found = await store.search("memories", colour, EMBEDDER.space, 3)
        assert found[0].id == dataset.ids["colour"] and found[0].score > 0.999

        # Second run (--collection memories includes the step): nothing written.
        before = await tables(conn)
        second = await asyncio.to_thread(
            run_script, MIGRATE, *args, "--collection", "memories", url=target, cwd=tmp_path
        )
        assert second.returncode == 0, second.stdout + second.stderr
        assert summary_cells(second.stdout)[1:5] == ["6", "0", "0", "3"]
        assert await tables(conn) == before

        verified = await asyncio.to_thread(
            run_script, VERIFY, "--from-dump", str(dump), url=target, cwd=tmp_path
        )
        assert verified.returncode == 0 and "RESULT: PASS" in verified.stdout, verified.stdout
        # source, excluded, expected, target, missing, extra, differing
        assert summary_cells(verified.stdout)[1:8] == ["6", "3", "3", "3", "0", "0", "0"]

        # One value of one vector changed: verification fails and names that memory.
        await conn.execute(
            "UPDATE memory_vectors SET embedding = (ARRAY[(embedding::real[])[1] + 0.01] || "
            "(embedding::real[])[2:])::vector WHERE id = $1",
            dataset.ids["city"],
        )
        failed = await asyncio.to_thread(
            run_script, VERIFY, "--from-dump", str(dump), url=target, cwd=tmp_path
        )
        assert failed.returncode == 1 and "RESULT: FAIL" in failed.stdout
        assert f"FAIL {STEP} {dataset.ids['city']}: differs" in failed.stdout
        await conn.execute("DELETE FROM memory_vectors WHERE id = $1", dataset.ids["colour"])
        missing = await asyncio.to_thread(
            run_script, VERIFY, "--from-dump", str(dump), url=target, cwd=tmp_path
        )
        assert f"FAIL {STEP} {dataset.ids['colour']}: missing row" in missing.stdout
    finally:
        await conn.close()
        await engine.dispose()


async def test_dry_run_writes_nothing_and_counts_what_it_would_write(
    target: URL, dataset: Dataset, tmp_path: Path
) -> None:
    dump = write_dump(tmp_path / "dump", dataset)
    conn = await asyncpg.connect(libpq_url(target))
    try:
        empty = await checksums(conn, with_xmin=True)
        dry = await asyncio.to_thread(
            run_script, MIGRATE, "--from-dump", str(dump), "--dry-run", url=target, cwd=tmp_path
        )
        assert dry.returncode == 0, dry.stdout + dry.stderr
        # read, would insert, would overwrite, quarantined, warnings
        assert summary_cells(dry.stdout)[1:6] == ["6", "3", "0", "0", "1"]
        assert await checksums(conn, with_xmin=True) == empty

        real = await asyncio.to_thread(
            run_script, MIGRATE, "--from-dump", str(dump), url=target, cwd=tmp_path
        )
        assert real.returncode == 0, real.stdout + real.stderr
        populated = await checksums(conn, with_xmin=True)
        again = await asyncio.to_thread(
            run_script, MIGRATE, "--from-dump", str(dump), "--dry-run", url=target, cwd=tmp_path
        )
        assert summary_cells(again.stdout)[1:4] == ["6", "0", "3"]
        assert await checksums(conn, with_xmin=True) == populated
    finally:
        await conn.close()


async def test_a_fallback_embedder_copies_nothing_and_says_how_to_fix_it(
    target: URL, dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = write_dump(tmp_path / "dump", dataset)
    monkeypatch.setenv("EMBEDDING_PROVIDER", "fastembed")
    monkeypatch.setenv("EMBEDDING_MODEL", str(tmp_path / "no-such-model"))
    done = await asyncio.to_thread(
        run_script, MIGRATE, "--from-dump", str(dump), url=target, cwd=tmp_path
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "Needs attention: embedding:memories: 3 memory vectors were not copied" in out
    assert "EMBEDDING_PROVIDER" in out and "install the embedding model's package" in out
    assert "Exit status 1: the migration needs attention" in out
    conn = await asyncpg.connect(libpq_url(target))
    try:
        assert await conn.fetchval("SELECT count(*) FROM memories") == 6
        assert await conn.fetchval("SELECT count(*) FROM memory_vectors") == 0
        assert await conn.fetchval("SELECT count(*) FROM vector_collections") == 0
    finally:
        await conn.close()


async def test_a_table_recorded_for_another_model_stops_with_the_reembed_command(
    target: URL, dataset: Dataset, tmp_path: Path
) -> None:
    dump = write_dump(tmp_path / "dump", dataset)
    conn = await asyncpg.connect(libpq_url(target))
    try:
        await conn.execute(
            "INSERT INTO vector_collections (name, model, dimension) "
            "VALUES ('memories', 'BAAI/bge-small-en-v1.5', 384)"
        )
    finally:
        await conn.close()
    done = await asyncio.to_thread(
        run_script, MIGRATE, "--from-dump", str(dump), url=target, cwd=tmp_path
    )
    assert done.returncode == 1
    assert "BAAI/bge-small-en-v1.5" in done.stderr
    assert "tbd-agents vectors reembed memories" in done.stderr


async def _migrate_in_process(url: URL, source: Source, tmp: Path) -> dict[str, tuple[Any, ...]]:
    engine = create_engine(url, pool_size=1, max_overflow=1)
    conns = [await asyncpg.connect(libpq_url(url)) for _ in range(2)]
    log = ReportLog(tmp / f"{url.database}.jsonl")
    try:
        embeddings = MemoryEmbeddings(EMBEDDER.space, engine)
        await Migration(source, conns[0], Options(batch_size=4), log, embeddings=embeddings).run()
        result = await Verifier(source, *conns).run()
        assert result.ok, [c for c in result.collections if not c.ok]
        assert any(c.name == STEP for c in result.collections)
        return await vector_rows(conns[0])
    finally:
        log.close()
        for conn in conns:
            await conn.close()
        await engine.dispose()


@pytest.fixture
async def two_targets(pg18_server: str) -> AsyncIterator[tuple[URL, URL]]:
    urls = (
        pg.create_migrated_database(pg18_server, "memdump"),
        pg.create_migrated_database(pg18_server, "memlive"),
    )
    yield urls
    for url in urls:
        pg.drop_database(url)


async def test_live_mongodb_gives_the_same_memory_vectors_as_a_dump(
    two_targets: tuple[URL, URL], dataset: Dataset, tmp_path: Path
) -> None:
    dump = DumpSource(write_dump(tmp_path / "dump", dataset), DB)
    from_dump = await _migrate_in_process(two_targets[0], dump, tmp_path)
    client, database = emulated_database(dataset)
    live = MongoSource(database, label="emulated", identity="mongodb:emulated/" + DB, client=client)
    try:
        from_live = await _migrate_in_process(two_targets[1], live, tmp_path)
    finally:
        await live.close()
    assert from_live == from_dump == expected_rows(dataset)
