"""`tbd-agents db backup` / `db restore`: a populated database (documents, vectors, file bytes)
restored into an empty one is identical, in both formats, with the right client tools."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner

from tbd_agents.cli import app
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.errors import StorageError
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.tools import backup
from tbd_agents.tools.migration.memvectors import MemoryEmbeddings
from tbd_agents.tools.migration.report import ReportLog
from tbd_agents.tools.migration.runner import Migration, Options
from tbd_agents.tools.migration.sources import DumpSource
from tbd_agents.tools.migration.transform import LOAD_ORDER
from tbd_agents.tools.migration.verify import Verifier
from tests.support import pg
from tests.support.dumps import DB, checksums, edge_case_dataset, write_dump

runner = CliRunner()


async def _populate(url: URL, dump: Path, tmp: Path) -> None:
    conn = await asyncpg.connect(libpq_url(url))
    engine = create_engine(url, pool_size=1, max_overflow=1)
    try:
        log = ReportLog(tmp / "q.jsonl")
        # The memory vectors come from the memories' embeddings (one has the column's size).
        embeddings = MemoryEmbeddings(HashingEmbedder(384).space, engine)
        await Migration(DumpSource(dump, DB), conn, Options(), log, embeddings=embeddings).run()
        log.close()
        item = await conn.fetchval("SELECT id FROM knowledge_items LIMIT 1")
        vector = "[" + ",".join(f"{(i % 7) / 7 - 0.3:.6f}" for i in range(384)) + "]"
        await conn.execute(
            "INSERT INTO knowledge_chunks (item_id, source_id, chunk_index, text, start_offset, end_offset, embedding) "
            "SELECT id, source_id, 0, 'chunk text', 0, 10, $2::vector FROM knowledge_items WHERE id = $1",
            item,
            vector,
        )
        await conn.execute(
            "INSERT INTO knowledge_files (item_id, content_type, size, sha256, data) VALUES ($1, 'application/pdf', 4, 'x', $2)",
            item,
            b"\x00\x01\xfe\xff",
        )
    finally:
        await conn.close()
        await engine.dispose()


async def _checksums(url: URL) -> dict[str, tuple[int, str]]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return await checksums(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def populated(
    pg18_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[URL, Path]]:
    tmp = tmp_path_factory.mktemp("backup")
    dump = write_dump(tmp / "dump", edge_case_dataset(log_entries=500, big=20_000))
    url = pg.create_migrated_database(pg18_server, "bk")
    pg.run(_populate(url, dump, tmp))
    yield url, dump
    pg.drop_database(url)


@pytest.mark.parametrize(("fmt", "jobs"), [("custom", "2"), ("plain", "1")])
def test_backup_restores_identically_into_an_empty_database(
    populated: tuple[URL, Path], pg18_server: str, tmp_path: Path, fmt: str, jobs: str
) -> None:
    source, dump = populated
    before = pg.run(_checksums(source))
    # Vectors of both tables, and file bytes (3 migrated from GridFS + 1 inserted here).
    assert before["knowledge_chunks"][0] == before["memory_vectors"][0] == 1
    assert before["knowledge_files"][0] == 4
    file = tmp_path / f"backup.{fmt}"
    made = runner.invoke(
        app, ["db", "backup", "--format", fmt, "--url", libpq_url(source), str(file)]
    )
    assert made.exit_code == 0, made.output
    # The server is 18: the PATH pg_dump (15) would refuse it; the embedded 18 one is used.
    assert "(PostgreSQL 18)" in made.output and "pginstall/bin/pg_dump (18)" in made.output
    assert backup.backup_format(file) == fmt

    empty = pg.create_database(pg18_server, "restored")
    try:
        restored = runner.invoke(
            app, ["db", "restore", str(file), "-j", jobs, "--url", libpq_url(empty)]
        )
        assert restored.exit_code == 0, restored.output
        # Every table, vectors and bytes included, row for row (and the Alembic revision).
        assert pg.run(_checksums(empty)) == before
        result = pg.run(_verify(DumpSource(dump, DB), empty))
        assert result.ok
        # A second restore into the now populated database is refused, with the way out.
        again = runner.invoke(app, ["db", "restore", str(file), "--url", libpq_url(empty)])
        assert (
            again.exit_code == 1
            and "already has tables" in again.output
            and "--clean" in again.output
        )
    finally:
        pg.drop_database(empty)


async def _verify(source: DumpSource, url: URL) -> object:
    a, b = await asyncpg.connect(libpq_url(url)), await asyncpg.connect(libpq_url(url))
    try:
        # The 15 collections (the file row the fixture adds is not in the source).
        return await Verifier(source, a, b).run(list(LOAD_ORDER))
    finally:
        await a.close()
        await b.close()


def test_restore_with_clean_replaces_and_client_tools_match_the_server(
    populated: tuple[URL, Path], tmp_path: Path
) -> None:
    source, _ = populated
    file = tmp_path / "b.dump"
    assert (
        runner.invoke(app, ["db", "backup", "--url", libpq_url(source), str(file)]).exit_code == 0
    )
    server = pg.start_embedded()
    copy = pg.create_database(server, "clean")
    try:
        assert (
            runner.invoke(app, ["db", "restore", str(file), "--url", libpq_url(copy)]).exit_code
            == 0
        )
        pg.run(_sql(copy, "DELETE FROM agents"))
        cleaned = runner.invoke(
            app, ["db", "restore", str(file), "--clean", "-j", "2", "--url", libpq_url(copy)]
        )
        assert cleaned.exit_code == 0, cleaned.output
        assert pg.run(_checksums(copy)) == pg.run(_checksums(source))
    finally:
        pg.drop_database(copy)
        pg.stop_embedded(server)
    assert backup.find_tool("pg_dump", 18).major >= 18
    assert backup.find_tool("pg_dump", 15).major >= 15
    with pytest.raises(
        StorageError, match=r"pg_dump 99 or newer is needed .* postgresql-client-99"
    ):
        backup.find_tool("pg_dump", 99)


async def _sql(url: URL, statement: str) -> None:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def test_backup_of_the_machine_postgresql_15_uses_a_client_that_accepts_it(
    pg15_server: str, tmp_path: Path
) -> None:
    url = pg.create_database(pg15_server, "bk15")
    try:
        pg.run(_sql(url, "CREATE TABLE t (id text PRIMARY KEY); INSERT INTO t VALUES ('a')"))
        done = runner.invoke(
            app,
            ["db", "backup", "--format", "plain", "--url", libpq_url(url), str(tmp_path / "x.sql")],
        )
        assert done.exit_code == 0, done.output
        assert "(PostgreSQL 15)" in done.output
        assert "CREATE TABLE public.t" in (tmp_path / "x.sql").read_text()
    finally:
        pg.drop_database(url)


def test_the_password_goes_in_a_private_passfile_not_the_command_line(
    populated: tuple[URL, Path], tmp_path: Path
) -> None:
    source, _ = populated
    url = source.set(password="pa:ss\\word")
    with backup._connection(url) as dsn:
        assert "pa:ss" not in dsn and "passfile=" in dsn
        passfile = Path(dsn.split("passfile=")[1].split("&")[0].replace("%2F", "/"))
        assert passfile.read_text() == "*:*:*:*:pa\\:ss\\\\word\n"
        assert passfile.stat().st_mode & 0o777 == 0o600
    assert not passfile.exists()
    # libpq accepts the passfile parameter (the test server trusts local connections).
    done = backup.backup(url, tmp_path / "p.dump", major=18)
    assert done.size > 0
