"""The three sources of the migration give the same result: mongodump archive (gzip), the live
path (pymongo async API, here the in-process emulation), and the refusals of a wrong source."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.errors import InvalidData
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.tools.migration.memvectors import MemoryEmbeddings
from tbd_agents.tools.migration.report import ReportLog, read_report
from tbd_agents.tools.migration.runner import Migration, Options
from tbd_agents.tools.migration.sources import ArchiveSource, DumpSource, MongoSource, Source
from tbd_agents.tools.migration.verify import Verifier
from tests.support import pg
from tests.support.dumps import (
    DB,
    Dataset,
    archive_of,
    edge_case_dataset,
    emulated_database,
    write_archive,
    write_dump,
)


@pytest.fixture
def target(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, "src")
    yield url
    pg.drop_database(url)


@pytest.fixture
async def conns(target: URL) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    a, b = await asyncpg.connect(libpq_url(target)), await asyncpg.connect(libpq_url(target))
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def embeddings(target: URL) -> AsyncIterator[MemoryEmbeddings]:
    """The memory vectors' space (the hashing embedder's) and an engine to record it."""
    engine = create_engine(target, pool_size=1, max_overflow=1)
    yield MemoryEmbeddings(HashingEmbedder(384).space, engine)
    await engine.dispose()


async def migrate_and_verify(
    source: Source,
    conns: tuple[asyncpg.Connection, asyncpg.Connection],
    report: Path,
    embeddings: MemoryEmbeddings,
    batch_size: int = 3,
) -> set[tuple[str, str | None, str]]:
    log = ReportLog(report)
    try:
        options = Options(batch_size=batch_size)
        await Migration(source, conns[0], options, log, embeddings=embeddings).run()
    finally:
        log.close()
    result = await Verifier(source, *conns).run()
    failures = {
        c.name: (c.missing_ids, c.extra_ids, c.differing_ids, c.differences)
        for c in result.collections
        if not c.ok
    }
    assert result.ok, failures
    return {(str(q["collection"]), q["id"], str(q["category"])) for q in read_report(report)}  # type: ignore[misc]


async def test_gzip_archive_with_interleaved_segments(
    conns: tuple[asyncpg.Connection, asyncpg.Connection],
    embeddings: MemoryEmbeddings,
    tmp_path: Path,
) -> None:
    dataset = edge_case_dataset()
    namespaces = archive_of(dataset) | {
        ("other_db", "agents"): archive_of(edge_case_dataset())[(DB, "agents")]
    }
    archive = write_archive(tmp_path / "dump.archive.gz", namespaces, segment=2, compress=True)
    source = ArchiveSource(archive, DB)
    try:
        assert source.identity == f"archive:{archive.resolve()}"
        assert await source.count("chat_messages") == len(dataset.documents["chat_messages"])
        quarantined = await migrate_and_verify(source, conns, tmp_path / "q.jsonl", embeddings)
        assert quarantined == dataset.quarantined
    finally:
        await source.close()
    # Only the wanted database was taken: other_db's agents are not in the target.
    kept = len(dataset.documents["agents"]) - sum(c == "agents" for c, _, _ in dataset.quarantined)
    assert await conns[0].fetchval("SELECT count(*) FROM agents") == kept == 6


async def test_live_database_through_the_async_driver_api(
    conns: tuple[asyncpg.Connection, asyncpg.Connection],
    embeddings: MemoryEmbeddings,
    tmp_path: Path,
) -> None:
    dataset = edge_case_dataset(live=True, log_entries=200, big=20_000)
    client, database = emulated_database(dataset)
    source = MongoSource(
        database, label="emulated", identity="mongodb:emulated/" + DB, client=client
    )
    assert (
        await migrate_and_verify(source, conns, tmp_path / "q.jsonl", embeddings, batch_size=4)
        == dataset.quarantined
    )
    # The same data read from a dump verifies against what the live run wrote.
    dump = DumpSource(write_dump(tmp_path / "dump", dataset), DB)
    result = await Verifier(dump, *conns).run()
    assert result.ok
    await source.close()


async def test_wrong_or_empty_sources_are_refused_with_the_fix(
    conns: tuple[asyncpg.Connection, asyncpg.Connection], tmp_path: Path
) -> None:
    dump = write_dump(tmp_path / "dump", edge_case_dataset())
    with pytest.raises(
        InvalidData,
        match=r"holds no dump of database 'tbd_agents'; it holds dumps of copilot_agent_hub: set MONGO_DB_NAME",
    ):
        DumpSource(dump, "tbd_agents")
    archive = write_archive(tmp_path / "a.archive", archive_of(edge_case_dataset()))
    with pytest.raises(
        InvalidData,
        match=r"holds no collection of database 'tbd_agents'; it holds copilot_agent_hub",
    ):
        ArchiveSource(archive, "tbd_agents")
    with pytest.raises(InvalidData, match="not a mongodump archive"):
        ArchiveSource(dump / DB / "agents.bson", DB)

    foreign = Dataset(documents={"audit_log": [{"_id": 1}]})
    source = DumpSource(write_dump(tmp_path / "foreign", foreign), DB)
    log = ReportLog(tmp_path / "q.jsonl")
    with pytest.raises(
        InvalidData, match=r"has none of the collections to migrate .*--allow-empty"
    ):
        await Migration(source, conns[0], Options(), log).run()
    empty = DumpSource(write_dump(tmp_path / "empty", Dataset(documents={"agents": []})), DB)
    with pytest.raises(InvalidData, match="holds no documents in the collections to migrate"):
        await Migration(empty, conns[0], Options(), log).run()
    result = await Migration(empty, conns[0], Options(allow_empty=True), log).run()
    # The 15, our 3 entities, GridFS and our 9 tables.
    assert result.read == 0 and len(result.collections) == 28
    with pytest.raises(
        InvalidData,
        match=r"unknown collection agent; the collections are: agent_versions, agents, .*, fs.files \(GridFS files\), and qdrant:knowledge_chunks, qdrant:memories \(vectors\)",
    ):
        await Migration(empty, conns[0], Options(collections=["agent"]), log).run()
    log.close()


async def test_truncated_dump_file_is_an_error_not_a_short_migration(
    conns: tuple[asyncpg.Connection, asyncpg.Connection], tmp_path: Path
) -> None:
    dump = write_dump(tmp_path / "dump", edge_case_dataset())
    path = dump / DB / "chat_messages.bson"
    path.write_bytes(path.read_bytes()[:-10])
    log = ReportLog(tmp_path / "q.jsonl")
    with pytest.raises(InvalidData, match=r"chat_messages\.bson is truncated"):
        await Migration(
            DumpSource(dump, DB),
            conns[0],
            Options(collections=["chat_sessions", "chat_messages"]),
            log,
        ).run()
    log.close()
