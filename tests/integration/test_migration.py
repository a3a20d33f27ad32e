"""MongoDB → PostgreSQL migration, end to end: mongodump directory through the guide's script
(under a non-UTC time zone), second run, verification, and what verification catches."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tbd_agents.storage.postgres.embedded import postgres_bin_dir
from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.tools.migration.report import read_report, warnings_path_for
from tbd_agents.tools.migration.transform import LOAD_ORDER
from tests.support import pg
from tests.support.dumps import Dataset, edge_case_dataset, snapshot, write_dump

ROOT = Path(__file__).resolve().parents[2]
MIGRATE = ROOT / "scripts" / "migrate_mongo_to_postgres.py"
VERIFY = ROOT / "scripts" / "verify_migration.py"


def run_script(
    script: Path, *args: str, url: URL, cwd: Path, tz: str = "Asia/Kolkata"
) -> subprocess.CompletedProcess[str]:
    """Run one of the guide's scripts as a user would: settings from the environment only
    (the offline hashing embedder unless the test sets EMBEDDING_PROVIDER)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "MONGO_", "DB_"))}
    env.update(POSTGRES_URI=libpq_url(url), TZ=tz, COLUMNS="200")
    env.setdefault("EMBEDDING_PROVIDER", "hashing")
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def quarantined(path: Path) -> set[tuple[str, str | None, str]]:
    return {
        (str(line["collection"]), line["id"], str(line["category"])) for line in read_report(path)
    }  # type: ignore[misc]


@pytest.fixture
def target(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, "mig")
    yield url
    pg.drop_database(url)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return edge_case_dataset()


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> Path:
    return write_dump(
        tmp_path_factory.mktemp("dump"),
        dataset,
        gzip_collections={"chat_messages", "workflows", "memories"},
    )


async def test_dump_migrates_every_edge_case_and_verifies(
    target: URL, dump: Path, dataset: Dataset, tmp_path: Path
) -> None:
    report = tmp_path / "quarantine.jsonl"
    first = run_script(
        MIGRATE,
        "--from-dump",
        str(dump),
        "--batch-size",
        "2",
        "--quarantine-file",
        str(report),
        url=target,
        cwd=tmp_path,
    )
    # Documents were quarantined and not accepted: the run says so and exits 1.
    assert first.returncode == 1, first.stderr + first.stdout
    assert "documents quarantined" in first.stdout and "--accept-quarantine" in first.stdout
    assert f"Source: mongodump directory {dump / 'copilot_agent_hub'}" in first.stdout
    assert quarantined(report) == dataset.quarantined
    warned = {(str(w["collection"]), str(w["id"])) for w in read_report(warnings_path_for(report))}
    assert warned == dataset.warned
    assert (
        "legacy_flag (1)" in first.stdout and "old_config (1)" in first.stdout
    )  # dropped, reported
    assert "Not migrated (not TBD Agents collections): audit_log" in first.stdout

    verified = run_script(VERIFY, "--from-dump", str(dump), url=target, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "RESULT: PASS" in verified.stdout

    conn = await asyncpg.connect(libpq_url(target))
    try:
        await _check_values(conn, dataset)
        before = await snapshot(conn, LOAD_ORDER)
        second = run_script(
            MIGRATE,
            "--from-dump",
            str(dump),
            "--batch-size",
            "500",
            "--accept-quarantine",
            "--quarantine-file",
            str(tmp_path / "second.jsonl"),
            url=target,
            cwd=tmp_path,
        )
        assert second.returncode == 0, second.stdout + second.stderr
        # Nothing rewritten: same rows, same xmin (an identical UPDATE would change it).
        assert await snapshot(conn, LOAD_ORDER) == before
        assert quarantined(tmp_path / "second.jsonl") == dataset.quarantined
    finally:
        await conn.close()


async def _check_values(conn: asyncpg.Connection, d: Dataset) -> None:
    agent = await conn.fetchrow("SELECT * FROM agents WHERE id = $1", d.ids["agent_full"])
    # Naive BSON datetimes are UTC instants: no shift by the machine's zone (Asia/Kolkata here).
    assert agent["created_at"] == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert agent["updated_at"] == datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    assert (
        agent["temperature"] == 0.7
        and agent["max_turns"] == 10
        and agent["output_format"] == "markdown"
    )
    assert len(agent["system_prompt"]) == 120_000 and agent["system_prompt"].startswith(
        "Grüße, 世界! 🚀"
    )
    assert agent["mcp_server_ids"] == [str(x) for x in d.documents["agents"][0]["mcp_server_ids"]]
    tool = json.loads(agent["tool_definitions"], parse_float=Decimal)[0]
    assert tool["limits"] == {"max": 2**40, "price": Decimal("0.000123456789012345678901234567")}
    assert tool["added"] == "2024-01-02T03:04:05.678000+00:00"
    assert tool["far_future"] == {"$date": {"$numberLong": str(2**50)}}
    minimal = await conn.fetchrow("SELECT * FROM agents WHERE id = $1", d.ids["agent_string_id"])
    assert minimal["system_prompt"] == "You are a helpful assistant." and minimal["tags"] == []
    assert minimal["created_at"] == datetime(1970, 1, 1, tzinfo=UTC) == minimal["updated_at"]
    from_oid = await conn.fetchrow(
        "SELECT created_at, tags FROM agents WHERE id = $1", d.ids["agent_oid_time"]
    )
    assert (
        from_oid["created_at"] == datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)
        and from_oid["tags"] == []
    )
    nul = await conn.fetchrow(
        "SELECT name, description, tool_definitions FROM agents WHERE id = $1", d.ids["agent_nul"]
    )
    assert (nul["name"], nul["description"], json.loads(nul["tool_definitions"])) == (
        "nulname",
        "ab",
        [{"text": "xy"}],
    )

    session = await conn.fetchrow(
        "SELECT * FROM chat_sessions WHERE id = $1", d.ids["session_extra"]
    )
    assert json.loads(session["metadata"]) == {}
    assert json.loads(session["extras"]) == {"pinned": True, "labels": ["x"]}
    assert session["agent_id"] == d.ids["agent_full"]
    last = await conn.fetchval(
        "SELECT last_message_at FROM chat_sessions WHERE id = $1", d.ids["session_oid_ref"]
    )
    assert last == datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC)
    message = await conn.fetchrow(
        "SELECT * FROM chat_messages WHERE id = $1", d.ids["message_string_ref"]
    )
    assert message["role"] == "assistant" and len(message["content"]) == 120_000
    usage = json.loads(message["usage"], parse_float=Decimal)
    assert usage == {"prompt_tokens": 12, "cost": Decimal("0.0012"), "nested": [{"n": -5}]}
    assert (
        await conn.fetchval("SELECT content FROM chat_messages WHERE id = $1", d.ids["message_nul"])
        == "zerobyte"
    )

    memory = await conn.fetchrow("SELECT * FROM memories WHERE id = $1", d.ids["memory_newest"])
    assert memory["value"] == "blue" and len(memory["embedding"]) == 384
    assert memory["embedding"] == d.documents["memories"][1]["embedding"]
    mixed = await conn.fetchrow(
        "SELECT * FROM memories WHERE id = $1", d.ids["memory_mixed_numbers"]
    )
    assert mixed["embedding"] == [1.0, 2.0, 0.25, 0.5] and mixed["scope"] == "session"
    assert json.loads(mixed["metadata"]) == {"source": "chat"}
    assert json.loads(mixed["extras"]) == {"importance": 0.9}
    assert await conn.fetchval("SELECT encrypted_value FROM tokens") == "gAAAA-new"

    workflow = await conn.fetchrow(
        "SELECT status, logs FROM workflows WHERE id = $1", d.ids["workflow_logs"]
    )
    logs = json.loads(workflow["logs"])
    assert workflow["status"] == "max_turns_reached" and len(logs) == 3000
    assert logs[-1] == {
        "at": "2024-04-01T09:49:59+00:00",
        "level": "info",
        "message": "step 2999 ✓",
        "tokens": 2999,
    }
    schedule = await conn.fetchrow(
        "SELECT * FROM scheduled_agents WHERE id = $1", d.ids["schedule"]
    )
    assert (schedule["interval_value"], schedule["interval_unit"]) == (6, "hours")
    assert schedule["workflow_id"] == d.ids["workflow_logs"]
    item = await conn.fetchrow("SELECT * FROM knowledge_items WHERE id = $1", d.ids["kitem"])
    assert item["file_id"] == str(d.documents["fs.files"][0]["_id"]) and item["file_size"] == 11
    files = {r["id"]: r for r in await conn.fetch("SELECT * FROM knowledge_files")}
    assert set(files) == {d.ids["file_via_item"], d.ids["file_meta"], d.ids["file_empty"]}
    pdf = files[d.ids["file_via_item"]]
    chunks = sorted(
        (c for c in d.documents["fs.chunks"] if str(c["files_id"]) == d.ids["file_via_item"]),
        key=lambda c: c["n"],
    )
    original = b"".join(c["data"] for c in chunks)
    assert bytes(pdf["data"]) == original and pdf["size"] == len(original) > 10_000
    assert (
        pdf["sha256"] == hashlib.sha256(original).hexdigest() and pdf["item_id"] == d.ids["kitem"]
    )
    assert (pdf["file_name"], pdf["content_type"]) == ("manual.pdf", "application/pdf")
    notes = files[d.ids["file_meta"]]
    assert (
        bytes(notes["data"]) == "# Notes ✓\n".encode() and notes["item_id"] == d.ids["kitem_meta"]
    )
    assert (
        bytes(files[d.ids["file_empty"]]["data"]) == b""
        and files[d.ids["file_empty"]]["content_type"] == "application/octet-stream"
    )
    provider = await conn.fetchrow("SELECT * FROM providers WHERE id = $1", d.ids["provider"])
    assert provider["provider_type"] == "azure_openai" and json.loads(
        provider["extra_headers"]
    ) == {"x-team": "ml"}
    assert (
        await conn.fetchval(
            "SELECT transport_type FROM mcp_servers WHERE id = $1", d.ids["mcp_http"]
        )
        == "streamable_http"
    )


async def test_verify_catches_missing_extra_and_changed_rows(
    target: URL, dump: Path, tmp_path: Path
) -> None:
    report = tmp_path / "q.jsonl"
    done = run_script(
        MIGRATE,
        "--from-dump",
        str(dump),
        "--accept-quarantine",
        "--quarantine-file",
        str(report),
        url=target,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    conn = await asyncpg.connect(libpq_url(target))
    try:
        changed = await conn.fetchval(
            "UPDATE chat_messages SET content = content || '!' WHERE role = 'user' RETURNING id"
        )
        removed = await conn.fetchval("DELETE FROM skills RETURNING id")
        await conn.execute("INSERT INTO guardrails (id, name) VALUES ('not-in-source', 'x')")
        tampered = await conn.fetchval(
            "UPDATE knowledge_files SET data = data || '\\x00'::bytea, size = size + 1 "
            "WHERE id = (SELECT min(id) FROM knowledge_files WHERE size > 0) RETURNING id"
        )
        vector = await conn.fetchval(
            "UPDATE memories SET embedding = embedding[1:383] WHERE cardinality(embedding) = 384 RETURNING id"
        )
    finally:
        await conn.close()
    result = run_script(VERIFY, "--from-dump", str(dump), "--verbose", url=target, cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 1 and "RESULT: FAIL" in out
    assert f"chat_messages: differing ids (first 1): {changed}" in out
    assert f"chat_messages {changed} differs in: content" in out and "héllo 👋!" in out
    assert f"skills: missing ids (first 1): {removed}" in out
    assert "guardrails: extra ids (first 1): not-in-source" in out
    assert f"memories {vector} differs in: embedding" in out  # a vector one dimension short
    assert f"fs.files: differing ids (first 1): {tampered}" in out  # file bytes: SHA-256 compared
    only_agents = run_script(
        VERIFY, "--from-dump", str(dump), "--collection", "agents", url=target, cwd=tmp_path
    )
    assert only_agents.returncode == 0 and "RESULT: PASS" in only_agents.stdout


async def test_a_user_without_write_privileges_gets_the_guides_fix(
    target: URL, dump: Path, tmp_path: Path
) -> None:
    role = f"ro_{target.database}"
    conn = await asyncpg.connect(libpq_url(target))
    try:
        await conn.execute(
            f'CREATE ROLE "{role}" LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'
        )
    finally:
        await conn.close()
    try:
        denied = run_script(
            MIGRATE, "--from-dump", str(dump), url=target.set(username=role), cwd=tmp_path
        )
        assert denied.returncode == 1
        assert (
            "Permission denied" in denied.stderr and "permission denied for table" in denied.stderr
        )
        assert f"GRANT CREATE ON DATABASE {target.database} TO {role};" in denied.stderr
        assert "Traceback" not in denied.stderr
    finally:
        conn = await asyncpg.connect(libpq_url(target))
        try:
            await conn.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
        finally:
            await conn.close()


def test_embedded_target_is_migrated_first_then_backed_up(tmp_path: Path) -> None:
    """No POSTGRES_URI: the tools use the embedded PostgreSQL in DATA_DIR, migrate its schema to
    head before loading, and `tbd-agents db backup` dumps it with the embedded server's pg_dump."""
    data = pg.private_dir("tbd-mig-embedded-")
    dump = write_dump(tmp_path / "dump", edge_case_dataset(log_entries=20, big=500))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "MONGO_", "DB_"))}
    env.update(DATA_DIR=str(data))
    run = subprocess.run(
        [
            sys.executable,
            str(MIGRATE),
            "--from-dump",
            str(dump),
            "--accept-quarantine",
            "--collection",
            "agents",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(embedded PostgreSQL)" in run.stdout and "tbd_agents" in run.stdout
    out = tmp_path / "embedded.dump"
    cli = ROOT / ".venv" / "bin" / "tbd-agents"
    made = subprocess.run(
        [str(cli), "db", "backup", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    listing = subprocess.run(
        [str(postgres_bin_dir() / "pg_restore"), "--list", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "TABLE DATA public agents" in listing and "TABLE DATA public alembic_version" in listing
