"""A generated database of the existing TBD Agents (MongoDB), shaped like real deployments.

`legacy_database(scale=1)` returns every one of the 15 collections (plus GridFS) in every shape
section 2 of the reference allows: each enum value, optional fields absent / null / set, old
documents that predate later fields (and have no `created_at`), references stored as strings and
as ObjectIds, orphaned task executions and schedules of deleted workflows, naive datetimes,
Decimal128, Int64, NUL characters, 100k-character texts, unicode, empty values, unknown extra
fields, GridFS files, and tokens encrypted with a Fernet key the tests know. Nothing here is
invalid: every document is one the existing system could have written, so a migration must take
all of them.

Three ways to use it: `.documents` (collection → raw BSON-ready documents), `.write_dump(root)`
(a `mongodump --out` directory plus `summary.json`), `.load_into(database)` / `.emulated_source()`
(the in-process MongoDB emulation). Output is deterministic for a given `(scale, seed)`. The
documents themselves are made in `legacy_entities` (configuration) and `legacy_activity` (runs,
memories, chats, volume). docs/legacy-data.md describes the data and the acceptance tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC

from tests.support.dumps import (
    DB,
    Dataset,
    archive_of,
    emulated_database,
    write_archive,
    write_dump,
)
from tests.support.mongo import EmulatedDatabase

Doc = dict[str, Any]

#: The 15 collections of section 2, in the reference's order.
COLLECTIONS: tuple[str, ...] = (
    "agents",
    "workflows",
    "task_executions",
    "scheduled_agents",
    "mcp_servers",
    "skills",
    "custom_tools",
    "guardrails",
    "knowledge_sources",
    "knowledge_items",
    "memories",
    "providers",
    "tokens",
    "chat_sessions",
    "chat_messages",
)
GRIDFS: tuple[str, ...] = ("fs.files", "fs.chunks")

#: The Fernet key the legacy deployment encrypted its tokens with (TOKEN_ENCRYPTION_KEY).
LEGACY_FERNET_KEY = base64.urlsafe_b64encode(
    hashlib.sha256(b"tbd-agents legacy dump test key").digest()
).decode("ascii")

#: Where each enum of the existing system lives: name → [(collection, dotted path; `*` = list)].
ENUM_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
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
    "AuthType": (("providers", "auth_type"),),
    "ChatMessageRole": (("chat_messages", "role"),),
    "MessageRole": (("workflows", "messages.*.role"), ("task_executions", "messages.*.role")),
}

UNICODE = "Grüße 世界 🚀 👩‍💻 مرحبا بالعالم שלום é ñ 한국어"
#: GridFS chunk size of the files (the drivers' default, 255 KiB).
CHUNK_SIZE = 255 * 1024


def utc(naive: datetime) -> datetime:
    """A naive datetime read as UTC (what BSON stores), made aware."""
    return naive.replace(tzinfo=UTC)


def long_text(length: int = 100_000) -> str:
    """`length` characters of mixed scripts (multi-byte UTF-8, an emoji every few words)."""
    unit = "Lorem ipsum 世界 🚀 مرحبا e\u0301 — "
    return (unit * (length // len(unit) + 1))[:length]


def fernet_token(key: str, plaintext: str, *, at: int, iv: bytes) -> str:
    """A Fernet token, as `Fernet(key).encrypt` makes, with a fixed time and IV (deterministic)."""
    raw = base64.urlsafe_b64decode(key)
    signing, encryption = raw[:16], raw[16:]
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(encryption), modes.CBC(iv)).encryptor()
    body = b"\x80" + struct.pack(">Q", at) + iv + encryptor.update(padded) + encryptor.finalize()
    mac = HMAC(signing, hashes.SHA256())
    mac.update(body)
    return base64.urlsafe_b64encode(body + mac.finalize()).decode("ascii")


def values_at(document: Any, path: str) -> Iterator[Any]:
    """Every value at a dotted `path` of `document` (`*` steps into each list element)."""
    head, _, rest = path.partition(".")
    if head == "*":
        items = document if isinstance(document, list) else []
    elif isinstance(document, dict) and head in document:
        items = [document[head]]
    else:
        items = []
    for item in items:
        if rest:
            yield from values_at(item, rest)
        else:
            yield item


@dataclass
class LegacyDatabase:
    """The generated database and what the tests need to know about it."""

    scale: int
    seed: int
    documents: dict[str, list[Doc]] = field(default_factory=dict)
    #: Named ids (24-hex text) of notable documents, for assertions.
    ids: dict[str, str] = field(default_factory=dict)
    #: Token name → plaintext (the value `encrypted_value` decrypts to with LEGACY_FERNET_KEY).
    secrets: dict[str, str] = field(default_factory=dict)
    #: GridFS file id → the file's bytes.
    files: dict[str, bytes] = field(default_factory=dict)
    fernet_key: str = LEGACY_FERNET_KEY

    def enums(self) -> dict[str, list[str]]:
        """Enum name → the values that occur in the data (sorted)."""
        out: dict[str, list[str]] = {}
        for name, places in ENUM_FIELDS.items():
            found = {
                v
                for collection, path in places
                for doc in self.documents.get(collection, [])
                for v in values_at(doc, path)
                if isinstance(v, str)
            }
            out[name] = sorted(found)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts per collection, enum values covered, files and named ids (JSON-ready)."""
        return {
            "database": DB,
            "scale": self.scale,
            "seed": self.seed,
            "counts": {name: len(self.documents.get(name, [])) for name in (*COLLECTIONS, *GRIDFS)},
            "enums": self.enums(),
            "files": {
                fid: {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for fid, data in self.files.items()
            },
            "ids": dict(self.ids),
            "token_encryption_key": self.fernet_key,
        }

    def dataset(self) -> Dataset:
        return Dataset(documents={k: list(v) for k, v in self.documents.items()})

    def write_dump(self, root: Path, *, gzip_collections: tuple[str, ...] = ()) -> Path:
        """A `mongodump --out=root` directory (database `copilot_agent_hub`) and
        `root/summary.json`; returns `root`."""
        write_dump(root, self.dataset(), gzip_collections=gzip_collections, db=DB)
        (root / "summary.json").write_text(json.dumps(self.summary(), indent=2, sort_keys=True))
        return root

    def write_archive(self, path: Path, *, compress: bool = False) -> Path:
        """A `mongodump --archive` file of the database."""
        return write_archive(path, archive_of(self.dataset(), DB), compress=compress)

    def load_into(self, database: EmulatedDatabase) -> None:
        """Insert every document into an emulated database, through BSON (as a restore would)."""
        for name, documents in self.documents.items():
            collection = database.sync.get_collection(name)
            for document in documents:
                collection.insert_one(bson.decode(bson.encode(document)))

    def emulated_source(self) -> tuple[Any, Any]:
        """(client, database) of the emulation holding the data, as a migration source reads it."""
        return emulated_database(self.dataset(), DB)

    def bson_documents(self, collection: str) -> list[Doc]:
        """The documents of `collection` as a driver returns them (naive UTC datetimes)."""
        return [bson.decode(bson.encode(d)) for d in self.documents.get(collection, [])]


def legacy_database(*, scale: int = 1, seed: int = 1) -> LegacyDatabase:
    """The generated database. `scale=1`: every shape once (~80 documents, small enough for
    tests); each extra unit adds ~100 ordinary documents (for benchmarks). Deterministic for a
    given `(scale, seed)`."""
    if scale < 1:
        raise ValueError(f"scale must be 1 or more, not {scale}")
    if not 0 <= seed < 2**24:
        raise ValueError(f"seed must be in [0, 2**24), not {seed}")
    from tests.support.legacy_activity import build

    return build(scale, seed)


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.support.legacy_dump OUT [--scale N] [--seed S] [--gzip]`: write the dump
    (e.g. a large one for a benchmark) and print its summary counts."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", type=Path, help="dump root to create (mongodump --out layout)")
    parser.add_argument("--scale", type=int, default=1, help="volume units (1: every shape once)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gzip", action="store_true", help="write .bson.gz files")
    args = parser.parse_args(argv)
    database = legacy_database(scale=args.scale, seed=args.seed)
    names = tuple(database.documents) if args.gzip else ()
    database.write_dump(args.out, gzip_collections=names)
    print(json.dumps(database.summary()["counts"], indent=2))


if __name__ == "__main__":
    main()
