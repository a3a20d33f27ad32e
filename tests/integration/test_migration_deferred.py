"""A large first load builds the table's secondary indexes and foreign key after the load
(`tools/migration/deferred.py`): same rows, quarantine and checkpoints as loading with them in
place; the schema is whole again at the end, after a resumed run, and before any other run loads."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import bson
from bson import ObjectId
from sqlalchemy.engine import URL

from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.storage.postgres.migrate import schema_differences
from tbd_agents.tools.migration.deferred import DeferredSchema, ParentCheck
from tbd_agents.tools.migration.report import ReportLog, read_report
from tbd_agents.tools.migration.runner import Migration, Options
from tbd_agents.tools.migration.sources import DumpSource
from tbd_agents.tools.migration.transform import LOAD_ORDER, SPECS
from tests.integration.test_migration import MIGRATE
from tests.integration.test_migration_resume import MESSAGES, _chat_dump, _position
from tests.support import pg
from tests.support.dumps import DB, edge_case_dataset, write_dump

DEFERRED = ("idx_chat_messages_created_at", "idx_chat_messages_session_id")
FOREIGN_KEY = "fk_chat_messages_session_id_chat_sessions"


async def _schema_state(conn: asyncpg.Connection) -> tuple[list[str], bool]:
    indexes = [
        name for name in DEFERRED if await conn.fetchval("SELECT to_regclass($1)", name) is not None
    ]
    fk = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = $1)", FOREIGN_KEY
    )
    return indexes, bool(fk)


async def _migrate(
    url: URL, dump: Path, report: Path, defer_from: int, workers: int
) -> dict[str, Any]:
    conn = await asyncpg.connect(libpq_url(url))
    log = ReportLog(report)
    dropped: list[tuple[list[str], bool]] = []
    try:
        options = Options(batch_size=2, workers=workers, defer_schema_from=defer_from)
        migration = Migration(DumpSource(dump, DB), conn, options, log)

        # Record the schema as the chat_messages load sees it (after the drop, before the restore).
        original = migration._pipeline

        async def observed(spec: Any, *args: Any) -> None:
            if spec.name == "chat_messages":
                dropped.append(await _schema_state(conn))
            await original(spec, *args)

        migration._pipeline = observed  # type: ignore[method-assign]
        result = await migration.run()
        rows = {}
        for table in LOAD_ORDER:
            fetched = await conn.fetch(f'SELECT id::text, md5(t::text) AS h FROM "{table}" t')
            rows[table] = {r["id"]: r["h"] for r in fetched}
        checkpoints = await conn.fetch(
            "SELECT collection, position, inserted, updated, unchanged, quarantined, last_id "
            "FROM migration_checkpoints ORDER BY collection"
        )
        after = await _schema_state(conn)
    finally:
        log.close()
        await conn.close()
    return {
        "rows": rows,
        "checkpoints": [tuple(r) for r in checkpoints],
        # worker processes append to the report as they go: its order is not the data's
        "quarantine": sorted(
            ({k: v for k, v in q.items() if k != "run"} for q in read_report(report)),
            key=lambda q: (q["collection"], q["id"], q["reason"]),
        ),
        "counts": [(c.name, c.read, c.inserted, c.quarantined) for c in result.collections],
        "during": dropped,
        "after": after,
        "differences": await schema_differences(url),
    }


async def test_deferred_first_load_matches_the_loaded_with_indexes(
    pg18_server: str, tmp_path: Path
) -> None:
    dataset = edge_case_dataset()
    dump = write_dump(tmp_path / "dump", dataset)
    results = {}
    for name, defer_from, workers in (("kept", 10**9, 0), ("deferred", 0, 0), ("procs", 0, 2)):
        url = pg.create_migrated_database(pg18_server, f"d{name}")
        try:
            results[name] = await _migrate(
                url, dump, tmp_path / f"{name}.jsonl", defer_from, workers
            )
        finally:
            pg.drop_database(url)
    kept, deferred = results["kept"], results["deferred"]
    assert kept["during"] == [(list(DEFERRED), True)]
    assert deferred["during"] == [([], False)], "the first load did not defer the schema"
    # Orphans are quarantined by the loader's own parent check, as the foreign key did.
    orphans = {q["id"] for q in kept["quarantine"] if q["category"] == "orphan"}
    assert any(q[0] == "chat_messages" and q[2] == "orphan" for q in dataset.quarantined)
    assert orphans
    for other in (deferred, results["procs"]):
        for key in ("rows", "checkpoints", "quarantine", "counts"):
            assert other[key] == kept[key], key
        assert other["after"] == (list(DEFERRED), True)
        assert other["differences"] == []


async def test_killed_deferred_load_resumes_and_restores_the_schema(
    pg18_server: str, tmp_path: Path
) -> None:
    url = pg.create_migrated_database(pg18_server, "dkill")
    dump = _chat_dump(tmp_path / "dump")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "MONGO_", "DB_"))}
    env["POSTGRES_URI"] = libpq_url(url)
    args = [sys.executable, str(MIGRATE), "--from-dump", str(dump), "--batch-size", "500"]
    conn = await asyncpg.connect(libpq_url(url))
    try:
        process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while await _position(conn) < 2_000:
            assert process.poll() is None, "the migration ended before it could be killed"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        # Killed mid-load: the indexes and the foreign key are not there yet.
        assert await _schema_state(conn) == ([], False)
        assert await schema_differences(url) != []

        resumed = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resuming after" in resumed.stdout
        assert await conn.fetchval("SELECT count(*) FROM chat_messages") == MESSAGES
        assert await _schema_state(conn) == (list(DEFERRED), True)
        assert await schema_differences(url) == []
        # The foreign key is enforced again: its cascade works.
        session = await conn.fetchval("SELECT session_id FROM chat_messages LIMIT 1")
        await conn.execute("DELETE FROM chat_sessions WHERE id = $1", session)
        assert not await conn.fetchval(
            "SELECT count(*) FROM chat_messages WHERE session_id = $1", session
        )
    finally:
        await conn.close()
        pg.drop_database(url)


async def test_a_run_that_does_not_resume_restores_the_schema_before_it_loads(
    pg18_server: str, tmp_path: Path
) -> None:
    """After an interrupted first load, `--restart` (the table is not empty: upsert) builds the
    indexes and foreign key before loading anything."""
    url = pg.create_migrated_database(pg18_server, "dnext")
    dump = _chat_dump(tmp_path / "dump")
    conn = await asyncpg.connect(libpq_url(url))
    try:
        log = ReportLog(tmp_path / "q.jsonl")
        await Migration(DumpSource(dump, DB), conn, Options(batch_size=5000), log).run()
        await DeferredSchema(conn, SPECS["chat_messages"]).drop()  # as a killed first load left it
        migration = Migration(
            DumpSource(dump, DB), conn, Options(batch_size=5000, restart=True), log
        )
        seen: list[tuple[list[str], bool]] = []
        original = migration._pipeline

        async def observed(spec: Any, *args: Any) -> None:
            if spec.name == "chat_messages":
                seen.append(await _schema_state(conn))
            await original(spec, *args)

        migration._pipeline = observed  # type: ignore[method-assign]
        result = await migration.run()
        log.close()
        messages = next(c for c in result.collections if c.name == "chat_messages")
        assert messages.mode == "upsert" and messages.unchanged == MESSAGES
        assert seen == [(list(DEFERRED), True)]
        assert await schema_differences(url) == []
        # Batches commit without waiting for the disk; the connection itself is left as it was.
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await conn.close()
        pg.drop_database(url)


async def test_rows_whose_parent_went_away_meanwhile_are_deleted_as_the_cascade_would(
    pg18_server: str, tmp_path: Path
) -> None:
    url = pg.create_migrated_database(pg18_server, "dgone")
    directory = tmp_path / "dump" / DB
    directory.mkdir(parents=True)
    sessions = [ObjectId() for _ in range(3)]
    (directory / "chat_sessions.bson").write_bytes(
        b"".join(bson.encode({"_id": s, "agent_id": "a", "title": "t"}) for s in sessions)
    )
    (directory / "chat_messages.bson").write_bytes(
        b"".join(
            bson.encode(
                {"_id": ObjectId(), "session_id": sessions[i % 3], "role": "user", "content": "c"}
            )
            for i in range(30)
        )
    )
    conn = await asyncpg.connect(libpq_url(url))
    try:
        log = ReportLog(tmp_path / "q.jsonl")
        migration = Migration(
            DumpSource(tmp_path / "dump", DB), conn, Options(batch_size=4, defer_schema_from=0), log
        )
        gone = str(sessions[1])
        original = migration._pipeline

        async def delete_a_parent_midway(spec: Any, *args: Any) -> None:
            await original(spec, *args)
            if spec.name == "chat_messages":  # loaded, schema still deferred
                await conn.execute("DELETE FROM chat_sessions WHERE id = $1", gone)

        migration._pipeline = delete_a_parent_midway  # type: ignore[method-assign]
        result = await migration.run()
        log.close()
        messages = next(c for c in result.collections if c.name == "chat_messages")
        assert messages.inserted == 30
        assert sum(messages.warnings.values()) == 10
        assert await conn.fetchval("SELECT count(*) FROM chat_messages") == 20
        assert not await conn.fetchval(
            "SELECT count(*) FROM chat_messages WHERE session_id = $1", gone
        )
        assert await _schema_state(conn) == (list(DEFERRED), True)
    finally:
        await conn.close()
        pg.drop_database(url)


async def test_parent_check_remembers_what_it_found(pg18_server: str) -> None:
    url = pg.create_migrated_database(pg18_server, "dcheck")
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(
            "INSERT INTO chat_sessions (id, agent_id) SELECT 's' || i, 'a' FROM generate_series(1, 5) i"
        )
        check = ParentCheck(conn, "chat_sessions", limit=3)
        assert await check.all_exist(["s1", "s2", "s1"])
        assert check.known == {"s1", "s2"}
        assert not await check.all_exist(["s1", "nope"])
        assert not await check.all_exist([None])
        assert await check.all_exist(["s3", "s4"])  # over the limit: forgotten, then found
        assert check.known == {"s3", "s4"}
        await conn.execute("DELETE FROM chat_sessions WHERE id = 's3'")
        assert await check.all_exist(["s3"]), "found once, it is not asked again"
    finally:
        await conn.close()
        pg.drop_database(url)
