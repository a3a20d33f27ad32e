"""Acceptance: an existing TBD Agents database moves to the hub with nothing lost (issue #13).

The data is `tests.support.legacy_dump.legacy_database()`: every collection in every shape the
existing system's data model allows (reference section 2), none of it invalid. These tests state
the target:

* the mongodump migrates into a fresh PostgreSQL 18 database at head with nothing quarantined,
  every collection and every GridFS file landing;
* every source value is findable in the target row of the same id, in the column of the same
  name or, for fields without a column, in the row's `extras` JSONB under the field's name;
* `verify_migration.py` passes, then names the collection, id and field of each hand-made break;
* the MongoDB profile reads the existing database as it is and updates a record without
  touching the document's other keys.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import bson
import pytest
from bson import Decimal128, Int64, ObjectId
from cryptography.fernet import Fernet
from sqlalchemy.engine import URL

from tbd_agents.errors import InvalidData
from tbd_agents.security.cipher import TokenCipher, parse_key_ring
from tbd_agents.storage.mongo.repository import MongoStore
from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.storage.protocol import Query
from tests.support import pg
from tests.support.dumps import DB
from tests.support.legacy_dump import (
    COLLECTIONS,
    LEGACY_FERNET_KEY,
    LegacyDatabase,
    legacy_database,
    values_at,
)
from tests.support.mongo import EMULATION_TARGET, EmulatedClient

ROOT = Path(__file__).resolve().parents[2]
MIGRATE = ROOT / "scripts" / "migrate_mongo_to_postgres.py"
VERIFY = ROOT / "scripts" / "verify_migration.py"

#: Section 2.16 of the reference, copied by hand: the existing system's values, not ours.
SECTION_2_16: dict[str, tuple[str, ...]] = {
    "WorkflowStatus": (
        "active",
        "inactive",
        "running",
        "completed",
        "failed",
        "halted",
        "max_turns_reached",
    ),
    "TaskStatus": ("pending", "running", "completed", "failed", "halted", "max_turns_reached"),
    "TodoItemStatus": ("not-started", "in-progress", "completed"),
    "McpServerStatus": ("registered", "connected", "error"),
    "KnowledgeSourceStatus": ("registered", "connected", "error"),
    "TransportType": ("stdio", "sse", "http"),
    "KnowledgeSourceType": ("vector_db", "mongo_db", "pgvector"),
    "KnowledgeContentType": ("text", "file", "image"),
    "MemoryScope": ("session", "agent", "global"),
    "GuardrailType": ("prompt", "request", "output"),
    "ProviderType": ("github_copilot", "openai", "anthropic", "azure_openai", "custom"),
    "OutputFormat": ("json", "markdown"),
    "ScheduleInterval": ("minutes", "hours", "days"),
}
#: Where those values are stored in the existing system's documents (sections 2.2 to 2.15).
SECTION_2_16_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "WorkflowStatus": (("workflows", "status"),),
    "TaskStatus": (("task_executions", "status"),),
    "TodoItemStatus": (("task_executions", "progress.todos.*.status"),),
    "McpServerStatus": (("mcp_servers", "status"),),
    "KnowledgeSourceStatus": (("knowledge_sources", "status"),),
    "TransportType": (("mcp_servers", "transport_type"),),
    "KnowledgeSourceType": (("knowledge_sources", "source_type"),),
    "KnowledgeContentType": (("knowledge_items", "content_type"),),
    "MemoryScope": (("memories", "scope"),),
    "GuardrailType": (("guardrails", "guardrail_type"),),
    "ProviderType": (("providers", "provider_type"),),
    "OutputFormat": (("workflows", "output_format"),),
    "ScheduleInterval": (("scheduled_agents", "interval_unit"),),
}
#: Other choice fields the brief names: providers.auth_type and chat_messages.role (2.12, 2.15).
OTHER_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("providers", "auth_type"): ("x-api-key", "bearer"),
    ("chat_messages", "role"): ("user", "assistant"),
    ("workflows", "messages.*.role"): ("system", "user", "assistant", "tool"),
}

#: The string field of each collection (section 2) the MongoDB-profile test updates.
UPDATED_FIELD: dict[str, str] = {
    "agents": "description",
    "workflows": "title",
    "task_executions": "response",
    "scheduled_agents": "prompt",
    "mcp_servers": "last_error",
    "skills": "description",
    "custom_tools": "description",
    "guardrails": "description",
    "knowledge_sources": "description",
    "knowledge_items": "name",
    "memories": "value",
    "providers": "description",
    "tokens": "description",
    "chat_sessions": "title",
    "chat_messages": "content",
}


# --------------------------------------------------------------------------------- fixtures


@dataclass
class Migrated:
    url: URL
    run: subprocess.CompletedProcess[str]
    report: Path


@pytest.fixture(scope="module")
def legacy() -> LegacyDatabase:
    return legacy_database(scale=1)


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory, legacy: LegacyDatabase) -> Path:
    return legacy.write_dump(tmp_path_factory.mktemp("legacy-dump"))


def run_script(script: Path, *args: str, url: URL, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One of the guide's scripts, configured by the environment only (as a user runs it), with
    the deployment's TOKEN_ENCRYPTION_KEY being the key the existing system used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "MONGO_", "DB_"))}
    env.update(
        POSTGRES_URI=libpq_url(url),
        MONGO_DB_NAME=DB,
        TOKEN_ENCRYPTION_KEY=LEGACY_FERNET_KEY,
        TZ="America/St_Johns",  # a half-hour offset: naive BSON dates must not shift
        COLUMNS="250",
    )
    env.setdefault("EMBEDDING_PROVIDER", "hashing")
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def migrated(
    pg18_server: str, dump: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Migrated]:
    """The dump migrated (directory form) into a fresh database at head; the run is asserted by
    the tests, not here, so each of them reports what it checks."""
    url = pg.create_migrated_database(pg18_server, "legacy")
    work = tmp_path_factory.mktemp("legacy-run")
    report = work / "quarantine.jsonl"
    done = run_script(
        MIGRATE, "--from-dump", str(dump), "--quarantine-file", str(report), url=url, cwd=work
    )
    yield Migrated(url, done, report)
    pg.drop_database(url)


# ------------------------------------------------------------------ the generated data itself


def _dumped(dump: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for path in sorted((dump / DB).glob("*.bson")):
        out[path.name.removesuffix(".bson")] = bson.decode_all(path.read_bytes())
    return out


def test_dump_holds_every_enum_value_of_section_2_16_and_its_summary_is_true(
    dump: Path, legacy: LegacyDatabase
) -> None:
    documents = _dumped(dump)
    summary = json.loads((dump / "summary.json").read_text())
    assert summary["database"] == "copilot_agent_hub"
    assert set(documents) == {*COLLECTIONS, "fs.files", "fs.chunks"}
    assert summary["counts"] == {name: len(docs) for name, docs in documents.items()}
    for enum, values in SECTION_2_16.items():
        found = {
            v
            for collection, path in SECTION_2_16_FIELDS[enum]
            for doc in documents[collection]
            for v in values_at(doc, path)
        }
        assert found == set(values), enum
        assert set(summary["enums"][enum]) == set(values), enum
    for (collection, path), values in OTHER_CHOICES.items():
        found = {v for doc in documents[collection] for v in values_at(doc, path)}
        assert found == set(values), (collection, path)
    assert documents == {name: legacy.bson_documents(name) for name in documents}


def test_dump_has_every_shape_the_existing_system_writes(
    dump: Path, legacy: LegacyDatabase
) -> None:
    docs = _dumped(dump)
    ids = legacy.ids
    by_id = {name: {str(d["_id"]): d for d in docs[name]} for name in docs}

    def walk(value: Any) -> Iterator[Any]:
        yield value
        if isinstance(value, dict):
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, list):
            for v in value:
                yield from walk(v)

    every = [v for name in COLLECTIONS for d in docs[name] for v in walk(d)]
    kinds = {type(v) for v in every}
    assert {ObjectId, datetime, Decimal128, Int64, float, bool, type(None)} <= kinds
    assert any(isinstance(v, Decimal128) and v.to_decimal() % 1 == 0 for v in every)
    assert any(isinstance(v, Decimal128) and v.to_decimal() % 1 != 0 for v in every)
    assert all(v.tzinfo is None for v in every if isinstance(v, datetime))  # naive, as stored
    assert any(isinstance(v, str) and len(v) == 100_000 for v in walk(docs["chat_messages"]))
    assert any(isinstance(v, str) and len(v) == 100_000 for v in walk(docs["workflows"]))
    assert "\x00" in by_id["chat_messages"][ids["message_nul"]]["content"]
    assert "\x00" in by_id["workflows"][ids["workflow_full"]]["logs"][1]["detail"]
    assert any(isinstance(v, str) and "\u202e" in v for v in every)  # RTL override
    assert "" in every and [] in every and {} in every  # empty values
    # Old documents without later fields or timestamps.
    assert set(by_id["workflows"][ids["workflow_old"]]) == {
        "_id",
        "agent_id",
        "github_user",
        "model",
        "status",
    }
    assert set(by_id["task_executions"][ids["task_old"]]) == {
        "_id",
        "workflow_id",
        "prompt",
        "status",
    }
    for name in COLLECTIONS:
        assert any("created_at" not in d for d in docs[name]), name
        assert any(d.get("legacy_flag") is True for d in docs[name]), name  # unknown fields
    # References as strings and as ObjectIds; chat_sessions.agent_id as an ObjectId (2.14).
    assert isinstance(by_id["chat_sessions"][ids["session_full"]]["agent_id"], ObjectId)
    wf_refs = {type(d["workflow_id"]) for d in docs["task_executions"]}
    assert wf_refs == {str, ObjectId}
    # Orphans of a deleted workflow, and knowledge items of existing sources only.
    assert ids["workflow_deleted"] not in by_id["workflows"]
    assert by_id["task_executions"][ids["task_orphan"]]["workflow_id"] == ids["workflow_deleted"]
    assert (
        by_id["scheduled_agents"][ids["schedule_orphan"]]["workflow_id"] == ids["workflow_deleted"]
    )
    assert all(str(d["source_id"]) in by_id["knowledge_sources"] for d in docs["knowledge_items"])
    # GridFS: several chunks, empty, non-UTF-8; each file referenced by a knowledge item.
    chunks: dict[str, int] = {}
    for c in docs["fs.chunks"]:
        chunks[str(c["files_id"])] = chunks.get(str(c["files_id"]), 0) + 1
    lengths = {str(f["_id"]): int(f["length"]) for f in docs["fs.files"]}
    assert max(chunks.values()) >= 3 and 0 in lengths.values()
    non_utf8 = [fid for fid, data in legacy.files.items() if not _utf8(data)]
    assert non_utf8
    assert {str(d["file_id"]) for d in docs["knowledge_items"] if d.get("file_id")} == set(lengths)
    # Tokens decrypt with the legacy key.
    fernet = Fernet(LEGACY_FERNET_KEY)
    for token in docs["tokens"]:
        plain = fernet.decrypt(token["encrypted_value"].encode()).decode()
        assert plain == legacy.secrets[token["name"]]
    # Deterministic, and the volume knob adds ordinary documents.
    assert legacy_database(scale=1).documents == legacy.documents
    bigger = legacy_database(scale=3)
    assert all(len(bigger.documents[n]) > len(legacy.documents[n]) for n in COLLECTIONS)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ------------------------------------------------------------------------------ migration


def _quarantine_lines(report: Path) -> list[dict[str, Any]]:
    if not report.exists():
        return []
    return [json.loads(line) for line in report.read_text().splitlines() if line.strip()]


async def test_the_dump_migrates_with_nothing_quarantined(
    migrated: Migrated, legacy: LegacyDatabase
) -> None:
    lines = _quarantine_lines(migrated.report)
    shown = "\n".join(
        f"  {q.get('collection')} {q.get('id')}: {q.get('reason')}" for q in lines[:40]
    )
    assert not lines, f"{len(lines)} documents quarantined:\n{shown}"
    assert migrated.run.returncode == 0, migrated.run.stdout[-4000:] + migrated.run.stderr[-4000:]
    conn = await asyncpg.connect(libpq_url(migrated.url))
    try:
        counts = {
            name: await conn.fetchval(f'SELECT count(*) FROM "{name}"') for name in COLLECTIONS
        }
        files = {
            r["id"]: bytes(r["data"])
            for r in await conn.fetch("SELECT id, data FROM knowledge_files")
        }
    finally:
        await conn.close()
    assert counts == {name: len(legacy.documents[name]) for name in COLLECTIONS}
    assert files == legacy.files


async def test_every_source_value_is_in_the_target(
    migrated: Migrated, legacy: LegacyDatabase
) -> None:
    conn = await asyncpg.connect(libpq_url(migrated.url))
    try:
        rows = {name: await _rows(conn, name) for name in COLLECTIONS}
    finally:
        await conn.close()
    failures: list[tuple[str, str, str]] = []
    for name in COLLECTIONS:
        for doc in legacy.bson_documents(name):
            failures += _document_failures(name, doc, rows[name])
    # One line per (collection, field): how many documents, and the first message.
    grouped: dict[tuple[str, str], list[str]] = {}
    for collection, key, message in failures:
        grouped.setdefault((collection, key), []).append(message)
    shown = "\n".join(
        f"  {collection}.{key} ({len(messages)} documents): {messages[0]}"
        for (collection, key), messages in grouped.items()
    )
    assert not failures, f"{len(failures)} source values not found in the target:\n{shown}"


async def test_tokens_decrypt_with_the_deployments_key_after_migration(
    migrated: Migrated, legacy: LegacyDatabase
) -> None:
    conn = await asyncpg.connect(libpq_url(migrated.url))
    try:
        stored = {r["name"]: r["encrypted_value"] for r in await conn.fetch("SELECT * FROM tokens")}
    finally:
        await conn.close()
    cipher = TokenCipher(parse_key_ring(LEGACY_FERNET_KEY))
    assert {name: cipher.decrypt(value) for name, value in stored.items()} == legacy.secrets


async def _rows(conn: asyncpg.Connection, table: str) -> dict[str, dict[str, Any]]:
    """Every row of `table` by id, JSON columns parsed (numbers exact)."""
    json_columns = {
        r["column_name"]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = $1 AND data_type IN ('json', 'jsonb')",
            table,
        )
    }
    out = {}
    for record in await conn.fetch(f'SELECT * FROM "{table}"'):
        row = dict(record)
        for column in json_columns:
            if isinstance(row[column], str):
                row[column] = json.loads(row[column], parse_float=Decimal)
        out[str(row["id"])] = row
    return out


def _document_failures(
    collection: str, doc: dict[str, Any], rows: dict[str, dict[str, Any]]
) -> list[tuple[str, str, str]]:
    """(collection, field, why) for each value of the source document `doc` that its target row
    does not hold (`<row>` / `<extras>` / `created_at` for row-level problems)."""
    doc_id = str(doc["_id"])
    row = rows.get(doc_id)
    if row is None:
        return [(collection, "<row>", f"no row with id {doc_id}")]
    failures = []
    extras = row.get("extras")
    if not isinstance(extras, dict):
        problem = (
            "the table has no extras column" if "extras" not in row else f"extras is {extras!r:.60}"
        )
        failures.append((collection, "<extras>", f"{doc_id}: {problem}, not a JSON object"))
        extras = {}
    exact = extras.get("$exact", {})
    for key, value in doc.items():
        if key == "_id":
            continue
        if key in row and key != "extras":
            found, place = row[key], "column"
        elif key in extras:
            found, place = extras[key], "extras"
        else:
            failures.append((collection, key, f"{doc_id}: neither a column nor a key of extras"))
            continue
        problem = _mismatch(_source(value), found, key, exact)
        if problem:
            failures.append((collection, key, f"{doc_id}: {place} {problem}"))
    born = doc["_id"].generation_time if isinstance(doc["_id"], ObjectId) else None
    if "created_at" not in doc and row.get("created_at") != born:
        failures.append(
            (
                collection,
                "created_at",
                f"{doc_id}: no created_at in the source, so the ObjectId time {born} is the "
                f"creation time, not {row.get('created_at')}",
            )
        )
    return failures


def _source(value: Any) -> Any:
    """A BSON-decoded value in comparable form: ObjectId → hex text, naive datetime → UTC,
    Decimal128 → Decimal, Int64 → int, at any depth."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, Int64):
        return int(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, dict):
        return {k: _source(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_source(v) for v in value]
    return value


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _mismatch(expected: Any, actual: Any, path: str, exact: dict[str, Any]) -> str | None:
    """None if `actual` (target) holds `expected` (normalised source) at field `path`, else why.
    Dicts in the target may hold more keys than the source (defaults of nested models)."""
    if isinstance(expected, str):
        return text_mismatch(expected, actual, path, exact)
    if expected is None or isinstance(expected, bool):
        return None if actual is expected else f"{path}: {actual!r:.80} instead of {expected!r}"
    if _number(expected) is not None:
        same = _number(actual) is not None and _number(actual) == _number(expected)
        return None if same else f"{path}: {actual!r:.80} instead of the number {expected!r}"
    if isinstance(expected, datetime):
        when = actual
        if isinstance(actual, str):
            try:
                when = datetime.fromisoformat(actual)
            except ValueError:
                when = None
        ok = isinstance(when, datetime) and when.tzinfo is not None and when == expected
        return None if ok else f"{path}: {actual!r:.80} instead of the UTC time {expected}"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: {actual!r:.80} instead of an object"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key}: missing"
            problem = _mismatch(value, actual[key], f"{path}.{key}", exact)
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list | tuple) or len(actual) != len(expected):
            return f"{path}: {actual!r:.80} instead of a list of {len(expected)}"
        for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
            problem = _mismatch(want, got, f"{path}[{i}]", exact)
            if problem:
                return problem
        return None
    raise AssertionError(f"{path}: the test does not know how to compare {type(expected)}")


def text_mismatch(expected: str, actual: Any, path: str, exact: dict[str, Any]) -> str | None:
    """The NUL design, in one place. PostgreSQL TEXT and JSONB cannot hold U+0000: the column
    (or JSON value) holds the text without its NULs, and the row's `extras["$exact"]` maps the
    field path (`content`, `logs[1].detail`) to the base64 of the exact UTF-8 original."""
    if "\x00" not in expected:
        return None if actual == expected else f"{path}: {actual!r:.80} instead of {expected!r:.80}"
    if actual != expected.replace("\x00", ""):
        return f"{path}: {actual!r:.80} instead of the text without NULs"
    kept = exact.get(path) if isinstance(exact, dict) else None
    if not isinstance(kept, str) or base64.b64decode(kept) != expected.encode("utf-8"):
        return f'{path}: extras["$exact"][{path!r}] does not hold the original (got {kept!r:.60})'
    return None


# ----------------------------------------------------------------------------- verification


def _line_with(out: str, *needles: str) -> bool:
    return any(all(n in line for n in needles) for line in out.splitlines())


async def test_verify_passes_then_names_each_broken_value(
    migrated: Migrated, pg18_server: str, dump: Path, legacy: LegacyDatabase, tmp_path: Path
) -> None:
    # A copy of the migrated database, so breaking it leaves the module's target intact.
    url = pg.create_database(pg18_server, "legacy_verify", template=migrated.url.database)
    try:
        passed = run_script(VERIFY, "--from-dump", str(dump), url=url, cwd=tmp_path)
        out = passed.stdout
        assert passed.returncode == 0 and "RESULT: PASS" in out, out[-6000:] + passed.stderr
        counts = out[: out.index("RESULT: PASS")]
        for name in COLLECTIONS:
            count = len(legacy.documents[name])
            # The collection's first number is its source document count.
            assert re.search(rf"\b{name}\b\D*\b{count}\b", counts), f"no count for {name}"

        workflow, skill, agent = (
            legacy.ids["workflow_full"],
            legacy.ids["skill_full"],
            legacy.ids["agent_full"],
        )
        conn = await asyncpg.connect(libpq_url(url))
        try:
            changed = await conn.execute(
                "UPDATE workflows SET title = 'tampered' WHERE id = $1", workflow
            )
            deleted = await conn.execute("DELETE FROM skills WHERE id = $1", skill)
            stripped = await conn.execute(
                "UPDATE agents SET extras = extras - 'legacy_flag' WHERE id = $1 "
                "AND extras ? 'legacy_flag'",
                agent,
            )
        finally:
            await conn.close()
        assert (changed, deleted, stripped) == ("UPDATE 1", "DELETE 1", "UPDATE 1")

        failed = run_script(VERIFY, "--from-dump", str(dump), url=url, cwd=tmp_path)
        out = failed.stdout
        assert failed.returncode != 0 and "RESULT: FAIL" in out, out[-6000:] + failed.stderr
        assert _line_with(out, "workflows", workflow) and _line_with(out, workflow, "title"), out
        assert _line_with(out, "skills", skill), out
        assert _line_with(out, "agents", agent), out
        assert _line_with(out, agent, "legacy_flag") or _line_with(out, agent, "extras"), out
    finally:
        pg.drop_database(url)


# ---------------------------------------------------------------------------- MongoDB profile


def _utc_times(value: Any) -> Any:
    """`value` with every datetime made aware UTC (the emulated client is `tz_aware`); every
    other BSON type left as it is."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, dict):
        return {k: _utc_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_utc_times(v) for v in value]
    return value


async def _legacy_store(legacy: LegacyDatabase) -> tuple[MongoStore, Any]:
    """A MongoStore opened (indexes created) on the existing database, loaded as it is."""
    client = EmulatedClient(tz_aware=True)
    database = client.get_database(DB)
    legacy.load_into(database)
    store = MongoStore(database, client=client, target=EMULATION_TARGET)  # type: ignore[arg-type]
    await store.open()
    return store, database


async def test_mongo_profile_lists_and_gets_every_existing_record(legacy: LegacyDatabase) -> None:
    store, _ = await _legacy_store(legacy)
    problems: list[str] = []
    try:
        async with store.unit_of_work(readonly=True) as repos:
            for name in COLLECTIONS:
                repo = getattr(repos, name)
                expected = sorted(str(d["_id"]) for d in legacy.documents[name])
                try:
                    listed = sorted(r.id for r in (await repo.list(Query())).items)
                except InvalidData as exc:
                    problems.append(f"{name}: list: {exc}")
                else:
                    if listed != expected:
                        problems.append(f"{name}: list gave {listed}, not {expected}")
                for record_id in expected:
                    try:
                        got = await repo.get(record_id)
                    except InvalidData as exc:
                        problems.append(f"{name}: get {record_id}: {exc}")
                    else:
                        if got.id != record_id:
                            problems.append(f"{name}: get {record_id} gave {got.id}")
    finally:
        await store.close()
    assert not problems, "\n".join(problems)


async def test_mongo_profile_update_keeps_the_documents_other_keys(legacy: LegacyDatabase) -> None:
    store, database = await _legacy_store(legacy)
    problems: list[str] = []
    try:
        async with store.unit_of_work() as repos:
            for name in COLLECTIONS:
                field = UPDATED_FIELD[name]
                # The document with unknown extra fields (and the most keys) of the collection.
                original = max(
                    (d for d in legacy.bson_documents(name) if "legacy_flag" in d), key=len
                )
                try:
                    await getattr(repos, name).update(str(original["_id"]), {field: "changed ✓"})
                except InvalidData as exc:
                    problems.append(f"{name}: update of {field}: {exc}")
                    continue
                raw = database.sync.get_collection(name).find_one({"_id": original["_id"]})
                if raw.get(field) != "changed ✓":
                    problems.append(f"{name}: {field} holds {raw.get(field)!r} after the update")
                for key, value in original.items():
                    if key in (field, "updated_at"):
                        continue
                    if key not in raw:
                        problems.append(f"{name}: key {key!r} was removed by the update")
                    elif _utc_times(raw[key]) != _utc_times(value):
                        problems.append(f"{name}: key {key!r} changed: {raw[key]!r:.80}")
    finally:
        await store.close()
    assert not problems, "\n".join(problems)
