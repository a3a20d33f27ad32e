"""MongoDB data for the migration tests: an edge-case dataset, and three ways to serve it —
a mongodump directory, a mongodump archive, and the in-process MongoDB emulation.

`edge_case_dataset()` holds every case the migration must handle (see the comments at each
document) and states, next to the data, which documents must be quarantined and why, and which
migrate with a warning. The writers produce byte-for-byte what mongodump writes (BSON documents
back to back; `.bson.gz`; the archive format with interleaved segments).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
from bson import Decimal128, Int64, ObjectId
from bson.datetime_ms import DatetimeMS

from tests.support.mongo import EmulatedClient, EmulatedCollection, EmulatedDatabase

DB = "copilot_agent_hub"
_counter = itertools.count(1)


def oid(when: datetime | None = None) -> ObjectId:
    """A deterministic-looking, unique ObjectId whose timestamp is `when` (default 2024-03-01)."""
    stamp = int((when or datetime(2024, 3, 1, tzinfo=UTC)).timestamp())
    return ObjectId(f"{stamp:08x}{next(_counter):016x}")


@dataclass
class Dataset:
    """Documents per collection (insertion order) and what the migration must make of them."""

    documents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Extra raw frames appended to a collection's dump file (not valid BSON: dump sources only).
    raw: dict[str, list[bytes]] = field(default_factory=dict)
    #: (collection, id, category) of every document that must be quarantined.
    quarantined: set[tuple[str, str | None, str]] = field(default_factory=set)
    #: (collection, id) of every document that must migrate with a warning.
    warned: set[tuple[str, str]] = field(default_factory=set)
    #: Named ids for assertions.
    ids: dict[str, str] = field(default_factory=dict)

    def add(
        self, collection: str, document: dict[str, Any], name: str | None = None
    ) -> dict[str, Any]:
        self.documents.setdefault(collection, []).append(document)
        if name:
            self.ids[name] = str(document["_id"])
        return document

    def quarantine(self, collection: str, document: dict[str, Any], category: str) -> None:
        self.add(collection, document)
        self.quarantined.add((collection, str(document["_id"]), category))

    def frames(self, collection: str) -> list[bytes]:
        return [bson.encode(d) for d in self.documents.get(collection, [])] + self.raw.get(
            collection, []
        )


def _naive(*args: int) -> datetime:
    """A naive datetime, as old pymongo code stored them (BSON holds it as UTC)."""
    return datetime(*args)


def _gridfs(
    d: Dataset,
    data: bytes,
    *,
    chunk: int,
    name: str,
    meta: dict[str, Any] | None = None,
    file_id: ObjectId | None = None,
    sha256: bool = False,
    reverse: bool = False,
    drop_chunk: int | None = None,
) -> str:
    """Store `data` as mongofiles / a driver's GridFS bucket would (chunks in `fs.chunks`)."""
    file_id = file_id or oid()
    doc: dict[str, Any] = {
        "_id": file_id,
        "length": Int64(len(data)),
        "chunkSize": chunk,
        "uploadDate": _naive(2024, 3, 1),
        "filename": name,
    }
    if meta is not None:
        doc["metadata"] = meta
    if sha256:
        doc["sha256"] = hashlib.sha256(data).hexdigest()
    d.add("fs.files", doc)
    chunks = [
        {"_id": oid(), "files_id": file_id, "n": i, "data": data[o : o + chunk]}
        for i, o in enumerate(range(0, len(data), chunk))
        if i != drop_chunk
    ]
    for piece in reversed(chunks) if reverse else chunks:
        d.add("fs.chunks", piece)
    return str(file_id)


def _undecodable_skill() -> bytes:
    raw = bson.encode({"_id": "skill-bad-utf8", "name": "XXXX"})
    return raw.replace(b"XXXX", b"\xff\xfe\xfd\xfc")


def edge_case_dataset(
    *, live: bool = False, log_entries: int = 3000, big: int = 120_000
) -> Dataset:
    """Every edge case of the migration (all 15 collections, plus GridFS and a foreign collection).

    `live`: only what a MongoDB server can hold and the emulation can return (no undecodable
    document, no date beyond the year 9999)."""
    d = Dataset()
    unit = "Grüße, 世界! 🚀 "
    long_text = (unit * (big // len(unit) + 1))[:big]

    # --- agents -------------------------------------------------------------------------
    provider = oid()
    tool_a, tool_b = oid(), oid()
    d.add(
        "agents",
        {
            "_id": oid(),
            "name": "Résumé agent 🤖",
            "description": "unicode ✓ — ok",
            "system_prompt": long_text,  # 100 KB+ string
            "model": "gpt-4o",
            "provider_id": provider,  # reference stored as an ObjectId
            "mcp_server_ids": [oid(), oid()],
            "custom_tool_ids": [str(tool_a), str(tool_b)],
            "tool_definitions": [
                {
                    "name": "calc",
                    "limits": {
                        "max": Int64(2**40),
                        "price": Decimal128("0.000123456789012345678901234567"),
                    },
                    "added": _naive(2024, 1, 2, 3, 4, 5, 678000),
                    **({} if live else {"far_future": DatetimeMS(2**50)}),
                }
            ],
            "output_format": "MARKDOWN",
            "max_turns": Int64(10),
            "temperature": Decimal128("0.7"),
            "tags": ["prod", "ops"],
            "created_at": _naive(2024, 1, 1, 12, 0, 0),
            "updated_at": _naive(2024, 6, 1, 8, 30, 0),
        },
        "agent_full",
    )
    d.add(
        "agents",
        {"_id": "3f1c2a9d-8b47-4e0a-9c1d-2e3f4a5b6c7d", "name": "minimal"},
        "agent_string_id",
    )
    d.add(
        "agents",
        {
            "_id": oid(datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)),
            "name": "from oid time",
            "tags": None,
        },
        "agent_oid_time",
    )
    d.add(
        "agents",
        {"_id": oid(), "name": "legacy fields", "legacy_flag": True, "old_config": {"a": 1}},
        "agent_extra",
    )
    nul_agent = d.add(
        "agents",
        {
            "_id": oid(),
            "name": "nul\x00name",
            "description": "a\x00b",
            "tool_definitions": [{"text": "x\x00y"}],
            "old_label": ["ok", "z\x00"],  # unknown field: kept in extras, NUL rule too
        },
        "agent_nul",
    )
    d.warned.add(("agents", str(nul_agent["_id"])))
    d.quarantine("agents", {"_id": oid(), "name": "bad enum", "output_format": "yaml"}, "invalid")
    d.quarantine("agents", {"_id": oid(), "description": "no name"}, "invalid")
    # The existing system had no limit on names: a long one migrates (only requests are limited).
    d.add("agents", {"_id": oid(), "name": "n" * 600}, "agent_long_name")

    # --- chat sessions and messages (parent → child) -----------------------------------
    agent_ref = d.ids["agent_full"]
    s1 = d.add(
        "chat_sessions",
        {
            "_id": oid(),
            "agent_id": ObjectId(agent_ref),
            "github_user": "octo",
            "title": "Ünïcode chat",
            "message_count": Int64(3),
            "last_message_at": _naive(2024, 2, 29, 23, 59, 59, 999000),
        },
        "session_oid_ref",
    )
    s2 = d.add(
        "chat_sessions",
        {
            "_id": oid(),
            "agent_id": agent_ref,
            "title": "string ref",
            "pinned": True,
            "labels": ["x"],
        },
        "session_extra",
    )  # extra → metadata
    nan_session = d.add(
        "chat_sessions",
        {
            "_id": oid(),
            "agent_id": agent_ref,
            "metadata": {"score": float("nan"), "inf": float("inf")},
        },
        "session_nan",
    )
    d.warned.add(("chat_sessions", str(nan_session["_id"])))
    bad_session = {"_id": oid(), "agent_id": agent_ref, "message_count": -1}
    d.quarantine("chat_sessions", bad_session, "invalid")
    # Valid for the model, refused by PostgreSQL (INTEGER column): isolated from its batch.
    d.quarantine(
        "chat_sessions",
        {"_id": oid(), "agent_id": agent_ref, "message_count": Int64(2**40)},
        "database",
    )
    d.add(
        "chat_messages",
        {
            "_id": oid(),
            "session_id": s1["_id"],
            "role": "user",
            "content": "héllo 👋",
            "created_at": _naive(2024, 3, 1, 0, 0, 1),
        },
        "message_oid_ref",
    )
    d.add(
        "chat_messages",
        {
            "_id": oid(),
            "session_id": str(s2["_id"]),
            "role": "ASSISTANT",
            "content": long_text,
            "usage": {
                "prompt_tokens": Int64(12),
                "cost": Decimal128("0.0012"),
                "nested": [{"n": Int64(-5)}],
            },
            "tool_calls": [{"id": "c1", "args": {"x": Decimal128("1E+3")}}],
        },
        "message_string_ref",
    )
    nul_message = d.add(
        "chat_messages",
        {
            "_id": oid(),
            "session_id": s1["_id"],
            "role": "tool",
            "content": "zero\x00byte",
            "tool_call_id": "c1",
        },
        "message_nul",
    )
    d.warned.add(("chat_messages", str(nul_message["_id"])))
    d.quarantine(
        "chat_messages", {"_id": oid(), "session_id": s1["_id"], "role": "robot"}, "invalid"
    )
    d.quarantine("chat_messages", {"_id": oid(), "session_id": oid(), "role": "user"}, "orphan")
    d.quarantine(
        "chat_messages", {"_id": oid(), "session_id": "no-such-session", "role": "user"}, "orphan"
    )
    d.quarantine(
        "chat_messages", {"_id": oid(), "session_id": bad_session["_id"], "role": "user"}, "orphan"
    )

    # --- memories: duplicates of (agent_id, scope, key), embeddings ----------------------
    embedding = [((i * 37) % 101) / 101 - 0.5 for i in range(384)]
    old = {
        "_id": oid(),
        "agent_id": agent_ref,
        "scope": "agent",
        "key": "favourite colour",
        "value": "red",
        "created_at": _naive(2024, 1, 1),
        "updated_at": _naive(2024, 1, 2),
    }
    tie_loser = {
        "_id": oid(),
        "agent_id": ObjectId(agent_ref),
        "scope": "AGENT",
        "key": "favourite colour",
        "value": "green",
        "created_at": _naive(2024, 1, 1),
        "updated_at": _naive(2024, 2, 1),
    }
    newest = {
        "_id": oid(),
        "agent_id": agent_ref,
        "scope": "agent",
        "key": "favourite colour",
        "value": "blue",
        "created_at": _naive(2024, 1, 5),
        "updated_at": _naive(2024, 2, 1),
        "embedding": embedding,
    }
    d.quarantine("memories", old, "duplicate key")
    d.add("memories", newest, "memory_newest")
    d.quarantine("memories", tie_loser, "duplicate key")
    d.add(
        "memories",
        {
            "_id": oid(),
            "agent_id": agent_ref,
            "scope": "SESSION",
            "key": "k2",
            "session_id": s1["_id"],
            "embedding": [Int64(1), 2, 0.25, Decimal128("0.5")],
            "ttl": _naive(2030, 1, 1),
            "metadata": {"source": "chat"},
            "importance": 0.9,
        },
        "memory_mixed_numbers",
    )
    # An embedding of 4 dimensions: migrated in its row, but no memory vector (the column holds
    # 384), which the memory vectors step reports as a warning.
    d.warned.add(("embedding:memories", d.ids["memory_mixed_numbers"]))
    d.quarantine(
        "memories", {"_id": oid(), "agent_id": agent_ref, "scope": "team", "key": "k3"}, "invalid"
    )

    # --- small collections with unique names and enums ----------------------------------
    d.add(
        "skills",
        {"_id": oid(), "name": "summarise", "instructions": "Sum\x00marise", "tags": ["a"]},
        "skill_nul",
    )
    d.warned.add(("skills", d.ids["skill_nul"]))
    if not live:
        d.raw["skills"] = [_undecodable_skill()]
        d.quarantined.add(("skills", None, "undecodable"))
    d.add(
        "tokens",
        {
            "_id": oid(),
            "name": "GITHUB",
            "encrypted_value": "gAAAA-old",
            "updated_at": _naive(2024, 1, 1),
        },
    )
    d.quarantined.add(("tokens", str(d.documents["tokens"][-1]["_id"]), "duplicate key"))
    d.add(
        "tokens",
        {
            "_id": oid(),
            "name": "GITHUB",
            "encrypted_value": "gAAAA-new",
            "updated_at": _naive(2024, 5, 1),
        },
        "token_newest",
    )
    d.add(
        "providers",
        {
            "_id": oid(),
            "name": "azure",
            "provider_type": "AZURE-OPENAI",
            "auth_type": "API_KEY",
            "extra_headers": {"x-team": "ml"},
            "models": ["gpt-4o"],
        },
        "provider",
    )
    d.quarantine("providers", {"_id": oid(), "name": "weird", "auth_type": "kerberos"}, "invalid")
    source = d.add(
        "knowledge_sources",
        {
            "_id": oid(),
            "name": "docs",
            "source_type": "FILE",
            "connection_config": {"chunk": Int64(512), "ratio": Decimal128("0.25")},
        },
        "ksource",
    )
    file_id = oid()
    d.add(
        "knowledge_items",
        {
            "_id": oid(),
            "source_id": source["_id"],
            "name": "manual.pdf",
            "file_id": file_id,
            "file_name": "manual.pdf",
            "file_size": Int64(11),
            "content_type": "FILE",
            "mime_type": "application/pdf",
            "status": "INDEXED",
        },
        "kitem",
    )
    d.quarantine("knowledge_items", {"_id": oid(), "source_id": oid(), "name": "lost"}, "orphan")
    # Earlier versions of this hub kept the media type in content_type: read as the kind.
    d.add(
        "knowledge_items",
        {"_id": oid(), "source_id": source["_id"], "content_type": "image/png"},
        "kitem_media_type",
    )
    d.quarantine(
        "knowledge_items",
        {"_id": oid(), "source_id": source["_id"], "content_type": "video"},
        "invalid",
    )
    d.add(
        "custom_tools",
        {
            "_id": oid(),
            "name": "fetch",
            "parameters_schema": {"type": "object", "properties": {"url": {"type": "string"}}},
            "timeout_seconds": Int64(60),
        },
        "tool",
    )
    d.quarantine("custom_tools", {"_id": oid(), "name": "never", "timeout_seconds": 0}, "invalid")
    d.add(
        "guardrails",
        {
            "_id": oid(),
            "name": "pii",
            "guardrail_type": "OUTPUT",
            "action": "redact",
            "patterns": [r"\d{3}-\d{2}"],
        },
        "guardrail",
    )
    d.quarantine("guardrails", {"_id": oid(), "name": "odd", "action": "explode"}, "invalid")
    d.add(
        "mcp_servers",
        {
            "_id": oid(),
            "name": "fs",
            "transport_type": "STDIO",
            "status": "CONNECTED",
            "connection_config": {"command": "npx", "args": ["-y", "server"], "env": {"A": "1"}},
        },
        "mcp_stdio",
    )
    d.add(
        "mcp_servers",
        {"_id": oid(), "name": "remote", "transport_type": "streamable-http"},
        "mcp_http",
    )

    # --- workflows (a task with thousands of log entries), executions, schedules ---------
    start = _naive(2024, 4, 1, 9, 0, 0)
    logs = [
        {
            "at": start + timedelta(seconds=i),
            "level": "info",
            "message": f"step {i} ✓",
            "tokens": Int64(i),
        }
        for i in range(log_entries)
    ]
    wf = d.add(
        "workflows",
        {
            "_id": oid(),
            "agent_id": ObjectId(agent_ref),
            "title": "nightly",
            "status": "MAX_TURNS_REACHED",
            "messages": [{"role": "user", "content": "go"}],
            "logs": logs,
            "last_run_at": start,
        },
        "workflow_logs",
    )
    d.add("workflows", {"_id": oid(), "agent_id": agent_ref}, "workflow_minimal")
    d.add(
        "task_executions",
        {
            "_id": oid(),
            "workflow_id": wf["_id"],
            "status": "completed",
            "trigger": "SCHEDULE",
            "usage": {"total_tokens": Int64(1234), "cost": Decimal128("0.02")},
            "tool_calls": Int64(4),
            "started_at": _naive(2024, 4, 1, 9, 0, 0),
            "finished_at": _naive(2024, 4, 1, 9, 5, 0),
        },
        "task",
    )
    # The workflow was deleted: the existing system kept its executions and schedules, and so
    # does the migration.
    d.add(
        "task_executions",
        {"_id": oid(), "workflow_id": oid(), "status": "completed"},
        "task_orphan",
    )
    d.add(
        "scheduled_agents",
        {
            "_id": oid(),
            "workflow_id": str(wf["_id"]),
            "interval_value": Int64(6),
            "interval_unit": "HOURS",
            "start_at": _naive(2024, 4, 1),
        },
        "schedule",
    )
    d.quarantine(
        "scheduled_agents", {"_id": oid(), "workflow_id": wf["_id"], "interval_value": 0}, "invalid"
    )
    d.add(
        "scheduled_agents",
        {"_id": oid(), "workflow_id": "gone", "interval_value": 1},
        "schedule_orphan",
    )

    # --- GridFS: files owned through knowledge_items.file_id or metadata.item_id ---------
    second_item = d.add(
        "knowledge_items",
        {
            "_id": oid(),
            "source_id": str(source["_id"]),
            "name": "notes",
            "content_type": "text",
            "mime_type": "text/markdown",
        },
        "kitem_meta",
    )
    pdf = b"%PDF-1.4 " + bytes(range(256)) * 40 + b"%%EOF"  # 10 KB+, every byte value
    _gridfs(
        d,
        pdf,
        file_id=file_id,
        chunk=4096,
        name="manual.pdf",
        meta={"contentType": "application/pdf"},
        sha256=True,
        reverse=True,
    )
    d.ids["file_via_item"] = str(file_id)
    d.ids["file_meta"] = _gridfs(
        d,
        "# Notes ✓\n".encode(),
        chunk=255 * 1024,
        name="notes.md",
        meta={"contentType": "text/markdown", "item_id": str(second_item["_id"])},
    )
    d.ids["file_empty"] = _gridfs(
        d, b"", chunk=1024, name="empty.txt", meta={"item_id": str(second_item["_id"])}
    )
    broken = _gridfs(
        d,
        b"abcdefgh",
        chunk=4,
        name="broken",
        meta={"item_id": str(second_item["_id"])},
        drop_chunk=1,
    )
    d.quarantined.add(("fs.files", broken, "incomplete GridFS file"))
    corrupt = _gridfs(
        d,
        b"payload",
        chunk=4,
        name="c",
        meta={"item_id": str(second_item["_id"]), "sha256": "0" * 64},
    )
    d.quarantined.add(("fs.files", corrupt, "corrupt GridFS file"))
    lonely = _gridfs(d, b"nobody owns me", chunk=4, name="lonely.txt")
    d.quarantined.add(("fs.files", lonely, "orphan"))
    d.add("audit_log", {"_id": oid(), "event": "login"})
    return d


# ----------------------------------------------------------------------------------- writers


def write_dump(
    root: Path, dataset: Dataset, *, gzip_collections: Iterable[str] = (), db: str = DB
) -> Path:
    """Write `dataset` as `mongodump --out=root` would; return `root`."""
    directory = root / db
    directory.mkdir(parents=True, exist_ok=True)
    zipped = set(gzip_collections)
    for name in set(dataset.documents) | set(dataset.raw):
        data = b"".join(dataset.frames(name))
        if name in zipped:
            (directory / f"{name}.bson.gz").write_bytes(gzip.compress(data))
        else:
            (directory / f"{name}.bson").write_bytes(data)
        (directory / f"{name}.metadata.json").write_text(
            json.dumps({"indexes": [], "uuid": "", "collectionName": name})
        )
    return root


_INT32 = struct.Struct("<i")


def write_archive(
    path: Path,
    namespaces: dict[tuple[str, str], list[bytes]],
    *,
    segment: int = 7,
    compress: bool = False,
) -> Path:
    """Write a `mongodump --archive` file: magic, header, metadata, interleaved segments, EOFs."""
    out = io.BytesIO()
    terminator = _INT32.pack(-1)
    out.write(struct.pack("<I", 0x8199E26D))
    out.write(
        bson.encode(
            {
                "concurrent_collections": 4,
                "version": "0.1",
                "server_version": "7.0.14",
                "tool_version": "100.10.0",
            }
        )
    )
    for db, name in namespaces:
        out.write(
            bson.encode(
                {"db": db, "collection": name, "metadata": "{}", "size": 0, "type": "collection"}
            )
        )
    out.write(terminator)
    offsets = dict.fromkeys(namespaces, 0)
    while offsets:
        for ns in list(offsets):
            chunk = namespaces[ns][offsets[ns] : offsets[ns] + segment]
            eof = not chunk
            out.write(bson.encode({"db": ns[0], "collection": ns[1], "EOF": eof, "CRC": Int64(0)}))
            out.writelines(chunk)
            out.write(terminator)
            if eof:
                del offsets[ns]
            else:
                offsets[ns] += len(chunk)
    data = out.getvalue()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def archive_of(dataset: Dataset, db: str = DB) -> dict[tuple[str, str], list[bytes]]:
    names = set(dataset.documents) | set(dataset.raw)
    return {(db, name): dataset.frames(name) for name in sorted(names)}


# --------------------------------------------------------------------------- live (emulated)


class _SourceCollection(EmulatedCollection):
    async def estimated_document_count(self) -> int:
        return int(self.sync.estimated_document_count())


class _SourceDatabase(EmulatedDatabase):
    """The emulated database plus the two calls a migration source makes that the store does not."""

    def get_collection(self, name: str) -> EmulatedCollection:
        if name not in self._collections:
            self._collections[name] = _SourceCollection(self, self.sync.get_collection(name))
        return self._collections[name]

    async def list_collection_names(self) -> list[str]:
        return list(self.sync.list_collection_names())


def emulated_database(dataset: Dataset, db: str = DB) -> tuple[EmulatedClient, _SourceDatabase]:
    """An in-process MongoDB holding `dataset` (its BSON-valid documents), as the driver returns
    them (`tz_aware=False`: naive UTC datetimes, as pymongo's default)."""
    client = EmulatedClient(tz_aware=False)
    database = _SourceDatabase(client, db)
    for name, documents in dataset.documents.items():
        for document in documents:
            database.sync.get_collection(name).insert_one(bson.decode(bson.encode(document)))
    return client, database


# ------------------------------------------------------------------------ target inspection


async def snapshot(conn: Any, tables: Iterable[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Every row of `tables` as id → (xmin, md5 of the row's text): equal snapshots mean nothing
    was written, not even an identical rewrite (a rewrite changes xmin)."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for table in tables:
        rows = await conn.fetch(
            f'SELECT id::text AS id, xmin::text AS x, md5(t::text) AS h FROM "{table}" t'
        )
        out[table] = {r["id"]: (r["x"], r["h"]) for r in rows}
    return out


async def checksums(conn: Any, *, with_xmin: bool = False) -> dict[str, tuple[int, str]]:
    """Row count and checksum of every table of the `public` schema (with `with_xmin`, the
    checksum also changes when a row is rewritten with the same content)."""
    tables = [
        r["tablename"]
        for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]
    text = "t::text || xmin::text" if with_xmin else "t::text"
    out: dict[str, tuple[int, str]] = {}
    for table in sorted(tables):
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, md5(coalesce(string_agg({text}, ',' ORDER BY {text}), '')) AS h FROM \"{table}\" t"
        )
        out[table] = (row["n"], row["h"])
    return out
