"""MongoDB → PostgreSQL migration, end to end: mongodump directory through the guide's script
(under a non-UTC time zone), second run, verification, and what verification catches."""

from __future__ import annotations

import base64
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
    # Documents were quarantined and not accepted: the run says so, and why, and exits 1.
    assert first.returncode == 1, first.stderr + first.stdout
    assert "documents quarantined" in first.stdout and "--accept-losses" in first.stdout
    assert "chat_messages: quarantined 3 orphan: their chat session is not in the source" in (
        first.stdout
    )
    assert f"Source: mongodump directory {dump / 'copilot_agent_hub'}" in first.stdout
    assert quarantined(report) == dataset.quarantined
    warned = {(str(w["collection"]), str(w["id"])) for w in read_report(warnings_path_for(report))}
    assert warned == dataset.warned
    assert "unknown fields kept in the extras column: " in first.stdout
    assert "legacy_flag (1)" in first.stdout and "old_config (1)" in first.stdout  # reported
    assert "Not migrated (not TBD Agents collections): audit_log" in first.stdout

    verified = run_script(VERIFY, "--from-dump", str(dump), url=target, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "RESULT: PASS" in verified.stdout
    # The counts come first; quarantined documents are listed with their reason, not skipped.
    assert verified.stdout.index("Verification by content") < verified.stdout.index("Source:")
    assert "chat_messages: 3 orphan, quarantined by the migration" in verified.stdout
    assert "scheduled_agents: 1 invalid, quarantined by the migration" in verified.stdout

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
            "--accept-losses",
            "--quarantine-file",
            str(tmp_path / "second.jsonl"),
            url=target,
            cwd=tmp_path,
        )
        assert second.returncode == 0, second.stdout + second.stderr
        # Nothing rewritten: same rows, same xmin (an identical UPDATE would change it).
        assert await snapshot(conn, LOAD_ORDER) == before
        assert quarantined(tmp_path / "second.jsonl") == dataset.quarantined

        # A row changed in PostgreSQL since is overwritten from the source by the next run, and
        # gets its next version, not the source's: an ETag read before must not match again.
        agent_id, description = await conn.fetchrow(
            "SELECT id, description FROM agents ORDER BY id LIMIT 1"
        )
        await conn.execute(
            "UPDATE agents SET description = 'edited', version = version + 1 WHERE id = $1",
            agent_id,
        )
        third = run_script(
            MIGRATE, "--from-dump", str(dump), "--accept-losses", url=target, cwd=tmp_path
        )
        assert third.returncode == 0, third.stdout + third.stderr
        row = await conn.fetchrow("SELECT description, version FROM agents WHERE id = $1", agent_id)
        assert (row["description"], row["version"]) == (description, 3)
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
        "SELECT name, description, tool_definitions, extras FROM agents WHERE id = $1",
        d.ids["agent_nul"],
    )
    assert (nul["name"], nul["description"], json.loads(nul["tool_definitions"])) == (
        "nulname",
        "ab",
        [{"text": "xy"}],
    )
    # The exact originals are in extras["$exact"], by field path: nothing is unrecoverable.
    extras = json.loads(nul["extras"])
    assert extras["old_label"] == ["ok", "z"]
    source = next(a for a in d.documents["agents"] if str(a["_id"]) == d.ids["agent_nul"])
    originals = {p: base64.b64decode(v).decode() for p, v in extras["$exact"].items()}
    assert originals == {
        "name": source["name"],
        "description": source["description"],
        "tool_definitions[0].text": "x\x00y",
        "old_label[1]": "z\x00",
    }
    nan = await conn.fetchrow(
        "SELECT metadata, extras FROM chat_sessions WHERE id = $1", d.ids["session_nan"]
    )
    assert json.loads(nan["metadata"]) == {"score": "NaN", "inf": "Infinity"}
    assert json.loads(nan["extras"]) == {
        "$exact": {
            "metadata.score": {"$numberDouble": "NaN"},
            "metadata.inf": {"$numberDouble": "Infinity"},
        }
    }

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
    # A task execution and a schedule whose workflow was deleted are kept, as they were.
    orphans = await conn.fetch(
        "SELECT id, workflow_id FROM task_executions WHERE id = $1 UNION ALL "
        "SELECT id, workflow_id FROM scheduled_agents WHERE id = $2",
        d.ids["task_orphan"],
        d.ids["schedule_orphan"],
    )
    deleted = next(
        t for t in d.documents["task_executions"] if str(t["_id"]) == d.ids["task_orphan"]
    )
    assert [r["workflow_id"] for r in orphans] == [str(deleted["workflow_id"]), "gone"]
    task = await conn.fetchrow("SELECT * FROM task_executions WHERE id = $1", d.ids["task"])
    assert task["finished_at"] == datetime(2024, 4, 1, 9, 5, tzinfo=UTC)

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
    assert (item["content_type"], item["mime_type"]) == ("file", "application/pdf")
    media = await conn.fetchrow(
        "SELECT content_type, mime_type FROM knowledge_items WHERE id = $1",
        d.ids["kitem_media_type"],
    )
    assert (media["content_type"], media["mime_type"]) == ("image", "image/png")
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
    assert pdf["created_at"] == datetime(2024, 3, 1, tzinfo=UTC)  # the GridFS uploadDate
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


async def test_verify_names_collection_id_and_field_of_each_break(
    target: URL, dump: Path, dataset: Dataset, tmp_path: Path
) -> None:
    report = tmp_path / "q.jsonl"
    done = run_script(
        MIGRATE,
        "--from-dump",
        str(dump),
        "--accept-losses",
        "--quarantine-file",
        str(report),
        url=target,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    d = dataset
    conn = await asyncpg.connect(libpq_url(target))
    try:
        changed = await conn.fetchval(
            "UPDATE chat_messages SET content = content || '!' WHERE role = 'user' RETURNING id"
        )
        removed = await conn.fetchval("DELETE FROM skills RETURNING id")
        await conn.execute("INSERT INTO guardrails (id, name) VALUES ('not-in-source', 'x')")
        # An unknown field dropped from extras; a value nobody had added to extras.
        await conn.execute(
            "UPDATE chat_sessions SET extras = extras - 'pinned' WHERE id = $1",
            d.ids["session_extra"],
        )
        await conn.execute(
            "UPDATE workflows SET extras = extras || '{\"added\": 1}' WHERE id = $1",
            d.ids["workflow_minimal"],
        )
        # A column the document lacks that no longer holds its default; a nested JSON value.
        await conn.execute(
            "UPDATE agents SET description = 'filled in' WHERE id = $1", d.ids["agent_string_id"]
        )
        await conn.execute(
            "UPDATE workflows SET logs = jsonb_set(logs, '{7,message}', '\"edited\"') "
            "WHERE id = $1",
            d.ids["workflow_logs"],
        )
        # The exact original of a NUL string lost.
        await conn.execute(
            "UPDATE agents SET extras = extras #- '{$exact,description}' WHERE id = $1",
            d.ids["agent_nul"],
        )
        # A quarantine record forgotten: its document is now missing, not quarantined.
        forgotten = await conn.fetchval(
            "DELETE FROM migration_quarantine WHERE collection = 'providers' RETURNING id"
        )
        tampered = await conn.fetchval(
            "UPDATE knowledge_files SET data = data || '\\x00'::bytea, size = size + 1 "
            "WHERE id = (SELECT min(id) FROM knowledge_files WHERE size > 0) RETURNING id"
        )
        vector = await conn.fetchval(
            "UPDATE memories SET embedding = embedding[1:383] WHERE cardinality(embedding) = 384 RETURNING id"
        )
    finally:
        await conn.close()
    result = run_script(VERIFY, "--from-dump", str(dump), url=target, cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 1 and "RESULT: FAIL" in out, out + result.stderr

    def failure(*needles: str) -> bool:
        return any(
            line.lstrip().startswith("FAIL") and all(n in line for n in needles)
            for line in out.splitlines()
        )

    assert failure("chat_messages", changed, "content: source 'héllo 👋' · target 'héllo 👋!'")
    assert failure("skills", removed, "missing row")
    assert failure("guardrails", "not-in-source", "extra row")
    assert failure("chat_sessions", d.ids["session_extra"], "pinned: source True", "absent")
    assert failure("workflows", d.ids["workflow_minimal"], "extras.added")
    assert failure("agents", d.ids["agent_string_id"], "description", "filled in")
    assert failure("workflows", d.ids["workflow_logs"], "logs[7].message", "'edited'")
    assert failure("agents", d.ids["agent_nul"], "$exact", "description")
    assert failure("providers", forgotten, "missing row")
    assert failure("memories", vector, "embedding")  # a vector one dimension short
    assert failure("fs.files", tampered)  # file bytes: SHA-256 compared
    only_agents = run_script(
        VERIFY, "--from-dump", str(dump), "--collection", "tokens", url=target, cwd=tmp_path
    )
    assert only_agents.returncode == 0 and "RESULT: PASS" in only_agents.stdout


async def test_exit_status_says_whether_anything_was_left_out(
    target: URL, dump: Path, tmp_path: Path
) -> None:
    """Exit 1 when documents were quarantined (or fields not migrated) unless --accept-losses;
    exit 0 when everything of the source is in PostgreSQL."""
    clean = run_script(
        MIGRATE, "--from-dump", str(dump), "--collection", "workflows", url=target, cwd=tmp_path
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "documents quarantined" not in clean.stdout and "Exit status" not in clean.stdout
    lossy = ("--from-dump", str(dump), "--collection", "custom_tools")
    refused = run_script(MIGRATE, *lossy, url=target, cwd=tmp_path)
    assert refused.returncode == 1
    assert "custom_tools: quarantined 1 invalid: the data model refuses a value" in refused.stdout
    assert "pass --accept-losses to accept this" in refused.stdout
    accepted = run_script(MIGRATE, *lossy, "--accept-losses", url=target, cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    older = run_script(MIGRATE, *lossy, "--accept-quarantine", url=target, cwd=tmp_path)
    assert older.returncode == 0, older.stdout + older.stderr  # the earlier name still works


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
            "--accept-losses",
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
    cli = Path(sys.executable).with_name("tbd-agents")  # the environment running the tests
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
