"""Converter processes (`Options.workers`) give exactly what the worker-thread path gives: same
rows, same quarantine lines (documents included, for rows PostgreSQL refuses too), same warnings,
same checkpoints; and the children are gone when the run ends."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.tools.migration.report import ReportLog, read_report, warnings_path_for
from tbd_agents.tools.migration.runner import Migration, Options
from tbd_agents.tools.migration.sources import DumpSource
from tbd_agents.tools.migration.transform import LOAD_ORDER
from tests.support import pg
from tests.support.dumps import edge_case_dataset, write_dump

DB = "copilot_agent_hub"


def _lines(path: Path) -> list[dict[str, object]]:
    """The report's lines without their run id, in a stable order: with several converter
    processes, lines of one collection (a converter's refusal, the loader's orphan check) may
    be appended in another order than the thread path's."""
    lines = [{k: v for k, v in line.items() if k != "run"} for line in read_report(path)]
    return sorted(lines, key=lambda line: json.dumps(line, sort_keys=True, default=str))


async def _migrate(url: Any, dump: Path, report: Path, workers: int, batch: int) -> dict[str, Any]:
    conn = await asyncpg.connect(libpq_url(url))
    log = ReportLog(report)
    try:
        options = Options(batch_size=batch, workers=workers)
        migration = Migration(DumpSource(dump, DB), conn, options, log)
        result = await migration.run()
        pool = migration._pool
        children = pool.pids if pool is not None else []
        rows = {}
        for table in LOAD_ORDER:
            fetched = await conn.fetch(f'SELECT id::text, md5(t::text) AS h FROM "{table}" t')
            rows[table] = {r["id"]: r["h"] for r in fetched}
        checkpoints = await conn.fetch(
            "SELECT collection, position, inserted, updated, unchanged, quarantined, last_id "
            "FROM migration_checkpoints ORDER BY collection"
        )
    finally:
        log.close()
        await conn.close()
    return {
        "rows": rows,
        "checkpoints": [tuple(r) for r in checkpoints],
        "quarantine": _lines(report),
        "warnings": _lines(warnings_path_for(report)),
        "counts": [
            (c.name, c.read, c.inserted, c.updated, c.unchanged) for c in result.collections
        ],
        "pool_used": pool is not None,
        "children_alive": children,
    }


@pytest.mark.parametrize("batch", [1, 3])
async def test_converter_processes_match_the_thread_path(
    pg18_server: str, tmp_path: Path, batch: int
) -> None:
    dataset = edge_case_dataset()
    dump = write_dump(tmp_path / "dump", dataset, gzip_collections={"chat_messages"})
    results = {}
    for workers in (0, 2):
        url = pg.create_migrated_database(pg18_server, f"w{workers}")
        try:
            results[workers] = await _migrate(
                url, dump, tmp_path / f"q{workers}.jsonl", workers, batch
            )
            # Second run over the same rows (upsert path): identical again.
            results[workers]["second"] = await _migrate(
                url, dump, tmp_path / f"r{workers}.jsonl", workers, batch
            )
        finally:
            pg.drop_database(url)
    thread, procs = results[0], results[2]
    assert procs["pool_used"] and not thread["pool_used"]
    assert len(procs["children_alive"]) == 2
    assert thread["quarantine"], "the dataset must exercise quarantine"
    # Some rows are refused by PostgreSQL itself (orphans): their documents come from the frames.
    assert any(line["category"] == "orphan" for line in procs["quarantine"])
    for key in ("rows", "checkpoints", "quarantine", "warnings", "counts"):
        assert procs[key] == thread[key], key
        assert procs["second"][key] == thread["second"][key], key
    for pid in procs["children_alive"]:
        assert (
            not os.path.exists(f"/proc/{pid}")
            or "zombie" in Path(f"/proc/{pid}/status").read_text()
        ), f"converter process {pid} still running"


async def test_negative_workers_is_refused(tmp_path: Path) -> None:
    from tbd_agents.errors import InvalidData

    dump = write_dump(tmp_path / "dump", edge_case_dataset())
    with pytest.raises(InvalidData, match="workers"):
        await Migration(
            DumpSource(dump, DB), None, Options(dry_run=True, workers=-1), ReportLog(tmp_path / "q")
        ).run()


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
async def test_converter_processes_end_with_the_run_and_resume_is_exact(
    pg18_server: str, tmp_path: Path, sig: signal.Signals
) -> None:
    from tests.integration.test_migration import MIGRATE
    from tests.integration.test_migration_resume import MESSAGES, _chat_dump, _position

    url = pg.create_migrated_database(pg18_server, "wkill")
    dump = _chat_dump(tmp_path / "dump")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "MONGO_", "DB_"))}
    env["POSTGRES_URI"] = libpq_url(url)
    args = [sys.executable, str(MIGRATE), "--from-dump", str(dump), "--batch-size", "500"]
    conn = await asyncpg.connect(libpq_url(url))
    try:
        process = subprocess.Popen(
            [*args, "--workers", "1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while await _position(conn) < 2_000:
            assert process.poll() is None, "the migration ended before it could be stopped"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        children = [c for c in _children_of(process.pid) if _running(c)]
        assert children, "no converter process was running"
        process.send_signal(sig)
        process.wait(timeout=60)
        gone_by = time.monotonic() + 10
        while any(_running(c) for c in children) and time.monotonic() < gone_by:
            await asyncio.sleep(0.05)
        assert not any(_running(c) for c in children), "a converter process outlived the run"
        stopped_at = await _position(conn)
        assert await conn.fetchval("SELECT count(*) FROM chat_messages") == stopped_at
        resumed = subprocess.run(
            [*args, "--workers", "1"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert await conn.fetchval("SELECT count(*) FROM chat_messages") == MESSAGES
        assert await _position(conn) == MESSAGES
    finally:
        await conn.close()
        pg.drop_database(url)
