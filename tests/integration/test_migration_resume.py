"""A migration killed mid-collection resumes after its last committed batch; a dry run writes
nothing at all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import bson
import pytest
from bson import ObjectId
from sqlalchemy.engine import URL

from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.tools.migration.report import read_report
from tests.integration.test_migration import MIGRATE, VERIFY, run_script
from tests.support import pg
from tests.support.dumps import DB, checksums, edge_case_dataset, write_dump

MESSAGES = 40_000


@pytest.fixture
def target(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, "resume")
    yield url
    pg.drop_database(url)


def _chat_dump(root: Path) -> Path:
    directory = root / DB
    directory.mkdir(parents=True)
    sessions = [ObjectId() for _ in range(20)]
    (directory / "chat_sessions.bson").write_bytes(
        b"".join(
            bson.encode({"_id": s, "agent_id": "a", "title": f"s{i}"})
            for i, s in enumerate(sessions)
        )
    )
    at = datetime(2024, 1, 1, tzinfo=UTC)
    with (directory / "chat_messages.bson").open("wb") as out:
        for i in range(MESSAGES):
            out.write(
                bson.encode(
                    {
                        "_id": ObjectId(),
                        "session_id": sessions[i % 20],
                        "role": "user",
                        "content": f"message {i} " + "x" * 200,
                        "created_at": at,
                    }
                )
            )
    return root


async def _position(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval(
        "SELECT position FROM migration_checkpoints WHERE collection = 'chat_messages'"
    )
    return int(value or 0)


async def test_killed_run_resumes_after_the_last_committed_batch(
    target: URL, tmp_path: Path
) -> None:
    dump = _chat_dump(tmp_path / "dump")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "MONGO_", "DB_"))}
    env["POSTGRES_URI"] = libpq_url(target)
    args = [sys.executable, str(MIGRATE), "--from-dump", str(dump), "--batch-size", "500"]
    conn = await asyncpg.connect(libpq_url(target))
    try:
        process = subprocess.Popen(
            args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while await _position(conn) < 2_000:
            assert process.poll() is None, "the migration ended before it could be killed"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = await _position(conn)
        assert 2_000 <= killed_at < MESSAGES and killed_at % 500 == 0
        # The checkpoint and the table agree: every committed batch is there, nothing more.
        assert await conn.fetchval("SELECT count(*) FROM chat_messages") == killed_at

        resumed = run_script(
            MIGRATE,
            "--from-dump",
            str(dump),
            "--batch-size",
            "500",
            "--verbose",
            url=target,
            cwd=tmp_path,
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"chat_messages (resuming after {killed_at:,})" in resumed.stdout
        assert f"batch of 500 (up to #{killed_at + 500})" in resumed.stdout
        assert await conn.fetchval("SELECT count(*) FROM chat_messages") == MESSAGES
        row = await conn.fetchrow(
            "SELECT position, inserted, completed_at FROM migration_checkpoints WHERE collection = 'chat_messages'"
        )
        assert (row["position"], row["inserted"]) == (MESSAGES, MESSAGES) and row[
            "completed_at"
        ] is not None
    finally:
        await conn.close()
    verified = run_script(VERIFY, "--from-dump", str(dump), url=target, cwd=tmp_path)
    assert verified.returncode == 0 and "RESULT: PASS" in verified.stdout, verified.stdout


async def _fingerprint(url: URL) -> dict[str, tuple[int, str]]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return await checksums(conn, with_xmin=True)
    finally:
        await conn.close()


async def test_dry_run_writes_nothing_and_says_what_it_would_do(
    target: URL, tmp_path: Path
) -> None:
    dataset = edge_case_dataset()
    dump = write_dump(tmp_path / "dump", dataset)
    empty = await _fingerprint(target)
    dry = run_script(
        MIGRATE,
        "--from-dump",
        str(dump),
        "--dry-run",
        "--quarantine-file",
        str(tmp_path / "dry.jsonl"),
        url=target,
        cwd=tmp_path,
    )
    assert dry.returncode == 1 and "DRY RUN: nothing will be written" in dry.stdout, (
        dry.stdout + dry.stderr
    )
    assert "Dry run: nothing was written" in dry.stdout
    assert await _fingerprint(target) == empty
    # Orphans are found without writing: against the parents the dry run has read.
    found = {
        (str(q["collection"]), q["id"], str(q["category"]))
        for q in read_report(tmp_path / "dry.jsonl")
    }
    assert found == {q for q in dataset.quarantined if q[2] != "database"}

    real = run_script(
        MIGRATE, "--from-dump", str(dump), "--accept-losses", url=target, cwd=tmp_path
    )
    assert real.returncode == 0, real.stdout
    populated = await _fingerprint(target)
    again = run_script(
        MIGRATE,
        "--from-dump",
        str(dump),
        "--dry-run",
        "--accept-losses",
        url=target,
        cwd=tmp_path,
    )
    assert again.returncode == 0
    assert await _fingerprint(target) == populated
    line = next(line for line in again.stdout.splitlines() if line.startswith("│ chat_messages"))
    cells = [c.strip() for c in line.strip("│").split("│")]
    assert cells[:5] == [
        "chat_messages",
        "7",
        "0",
        "3",
        "4",
    ]  # read, would insert, would overwrite, quarantined
