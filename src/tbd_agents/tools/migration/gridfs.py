"""GridFS files (`fs.files` + `fs.chunks`) → `knowledge_files` (bytea), where the PostgreSQL
profile keeps uploaded files.

Chunks come in any order in a dump, so one pass over `fs.chunks` spools their bytes to a
temporary file and indexes them by (file id, chunk number); each file is then assembled from the
spool, checked, and loaded. A file is quarantined when a chunk is missing, duplicated or of the
wrong size, when the assembled length differs from `length`, when its recorded SHA-256 (or legacy
MD5) does not match the bytes, or when no knowledge item owns it.

Row of a file: `id` = the GridFS `_id` (24-hex), `item_id` = `metadata.item_id`, else the
knowledge item whose `file_id` is that id; `file_name` = `filename`; `content_type` =
`metadata.contentType` (or the legacy top-level `contentType`, else application/octet-stream);
`size` = `length`; `sha256` computed from the bytes; `created_at` = `uploadDate` (without one, the
ObjectId's time, else 1970-01-01, as for documents).
`chunkSize` and the recorded hashes (`md5`, `sha256`) describe the bytes, which are checked against
them. Any other key of the file document (or of its `metadata`) has no column: it is reported by
name as not migrated, and so is a NUL character removed from `filename` or the content type.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import asyncpg  # type: ignore[import-untyped]
from bson import ObjectId

from tbd_agents.domain.types import to_utc
from tbd_agents.tools.migration.batch import Rejection
from tbd_agents.tools.migration.bsonio import SourceDocument, Undecodable
from tbd_agents.tools.migration.convert import id_text
from tbd_agents.tools.migration.rows import row_digest
from tbd_agents.tools.migration.sources import Resume, Source
from tbd_agents.tools.migration.transform import UNKNOWN_TIME

FILES = "fs.files"
CHUNKS = "fs.chunks"
TABLE = "knowledge_files"
COLUMNS = ("id", "item_id", "file_name", "content_type", "size", "sha256", "created_at", "data")
#: Keys of a GridFS file document that are migrated or describe the bytes.
KNOWN_KEYS = frozenset(
    {"_id", "length", "chunkSize", "uploadDate", "filename", "md5", "sha256", "contentType"}
)
KNOWN_METADATA = frozenset({"contentType", "item_id", "sha256"})
_DEFAULT_CHUNK = 255 * 1024
#: Files are loaded in batches of at most this many bytes (and `batch_size` files).
BATCH_BYTES = 64 * 1024 * 1024


class ChunkSpool:
    """The bytes of every GridFS chunk of a source, on disk, indexed by (file id, n)."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="tbd-gridfs-")  # noqa: SIM115
        self._index: dict[str, dict[int, list[tuple[int, int]]]] = {}
        self.chunks = 0

    @classmethod
    async def build(cls, source: Source, batch_size: int) -> ChunkSpool:
        spool = cls()
        async for documents in source.batches(CHUNKS, batch_size):
            for document in documents:
                spool.add(document)
        return spool

    def add(self, document: SourceDocument) -> None:
        if isinstance(document, Undecodable):
            return
        files_id = id_text(document.get("files_id"))
        data = document.get("data")
        number = document.get("n")
        if (
            files_id is None
            or not isinstance(data, bytes | bytearray)
            or not isinstance(number, int)
        ):
            return
        offset = self._file.seek(0, 2)
        self._file.write(bytes(data))
        self._index.setdefault(files_id, {}).setdefault(int(number), []).append((offset, len(data)))
        self.chunks += 1

    def read(self, files_id: str) -> dict[int, list[bytes]]:
        """Every chunk stored for `files_id`: n → its copies (normally exactly one)."""
        out: dict[int, list[bytes]] = {}
        for number, places in self._index.get(files_id, {}).items():
            copies = []
            for offset, length in places:
                self._file.seek(offset)
                copies.append(self._file.read(length))
            out[number] = copies
        return out

    def close(self) -> None:
        self._file.close()


@dataclass(slots=True)
class ConvertedFile:
    id: str | None
    row: dict[str, Any] | None = None
    problem: str | None = None
    #: What of the file document has no place in its row (field names, see module docstring).
    dropped: tuple[str, ...] = ()


def _dropped(document: dict[str, Any]) -> tuple[str, ...]:
    names = [k for k in document if k not in KNOWN_KEYS and k != "metadata"]
    meta = document.get("metadata")
    if isinstance(meta, dict):
        names += [f"metadata.{k}" for k in meta if k not in KNOWN_METADATA]
    elif meta is not None:
        names.append("metadata")
    for key in ("filename", "contentType"):
        if isinstance(document.get(key), str) and "\x00" in document[key]:
            names.append(f"{key} (NUL removed)")
    inner = meta.get("contentType") if isinstance(meta, dict) else None
    if isinstance(inner, str) and "\x00" in inner:
        names.append("metadata.contentType (NUL removed)")
    return tuple(names)


def _upload_date(document: dict[str, Any]) -> datetime:
    """`uploadDate`; without one, the ObjectId's time, else 1970-01-01 (as for documents)."""
    value = document.get("uploadDate")
    if isinstance(value, datetime):
        return to_utc(value)
    raw_id = document.get("_id")
    return raw_id.generation_time if isinstance(raw_id, ObjectId) else UNKNOWN_TIME


def _metadata(document: dict[str, Any]) -> dict[str, Any]:
    meta = document.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _declared_hashes(document: dict[str, Any]) -> tuple[str | None, str | None]:
    meta = _metadata(document)
    sha = meta.get("sha256") or document.get("sha256")
    md5 = document.get("md5")
    return (str(sha).lower() if sha else None, str(md5).lower() if md5 else None)


def convert_file(document: SourceDocument, chunks: dict[int, list[bytes]]) -> ConvertedFile:
    """Assemble and check one GridFS file (see module docstring)."""
    if isinstance(document, Undecodable):
        return ConvertedFile(None, problem=f"undecodable: not valid BSON ({document.error})")
    file_id = id_text(document.get("_id"))
    if file_id is None:
        return ConvertedFile(None, problem="document has no _id")
    length = int(document.get("length") or 0)
    size = int(document.get("chunkSize") or _DEFAULT_CHUNK)
    expected = math.ceil(length / size) if length else 0
    for n in range(expected):
        copies = chunks.get(n, [])
        want = size if n < expected - 1 else length - size * (expected - 1)
        if len(copies) != 1 or len(copies[0]) != want:
            state = (
                "missing"
                if not copies
                else f"{len(copies)} copies"
                if len(copies) > 1
                else f"{len(copies[0])} bytes, {want} expected"
            )
            return ConvertedFile(
                file_id, problem=f"incomplete GridFS file: chunk {n} of {expected} {state}"
            )
    extra = sorted(n for n in chunks if n >= expected)
    if extra:
        return ConvertedFile(
            file_id,
            problem=f"incomplete GridFS file: unexpected chunk {extra[0]} (length {length})",
        )
    data = b"".join(chunks[n][0] for n in range(expected))
    sha = hashlib.sha256(data).hexdigest()
    declared_sha, declared_md5 = _declared_hashes(document)
    if declared_sha and declared_sha != sha:
        return ConvertedFile(
            file_id,
            problem=f"corrupt GridFS file: SHA-256 {sha} differs from the recorded {declared_sha}",
        )
    if declared_md5 and declared_md5 != hashlib.md5(data, usedforsecurity=False).hexdigest():
        return ConvertedFile(
            file_id, problem="corrupt GridFS file: MD5 differs from the recorded md5"
        )
    meta = _metadata(document)
    content_type = (
        meta.get("contentType") or document.get("contentType") or "application/octet-stream"
    )
    name = document.get("filename")
    item = id_text(meta.get("item_id")) if meta.get("item_id") is not None else None
    row = {
        "id": file_id,
        "item_id": item,
        "file_name": None if name is None else str(name).replace("\x00", ""),
        "content_type": str(content_type).replace("\x00", ""),
        "size": length,
        "sha256": sha,
        "created_at": _upload_date(document),
        "data": data,
    }
    return ConvertedFile(file_id, row=row, dropped=_dropped(document))


def digest_row(row: dict[str, Any], stored_sha256: str | None = None) -> bytes:
    """Canonical digest of a file row: its metadata, the SHA-256 of its bytes, and the SHA-256
    recorded next to them (`stored_sha256`; for a source row, the computed one)."""
    fields = {k: v for k, v in row.items() if k != "data"}
    fields["stored_sha256"] = stored_sha256 if stored_sha256 is not None else row["sha256"]
    return row_digest(fields)


async def resolve_owners(
    conn: asyncpg.Connection | None,
    rows: Sequence[dict[str, Any]],
    items: Set[str] = frozenset(),
    owners: Mapping[str, str] | None = None,
) -> list[tuple[dict[str, Any], str | None]]:
    """Each row with its knowledge item filled in, or the reason it has none. Items are looked up
    in the target (`conn`, read-only) and in `items` / `owners` (item ids, file id → item id: what
    a dry run would have written)."""
    owners = dict(owners or {})
    existing = set(items)
    wanted = [r["id"] for r in rows if r["item_id"] is None and r["id"] not in owners]
    named = sorted({r["item_id"] for r in rows if r["item_id"] is not None} - existing)
    if conn is not None and wanted:
        found = await conn.fetch(
            "SELECT file_id, min(id) AS id FROM knowledge_items WHERE file_id = ANY($1::text[]) "
            "GROUP BY file_id",
            wanted,
        )
        owners.update({r["file_id"]: r["id"] for r in found})
    if conn is not None and named:
        found = await conn.fetch("SELECT id FROM knowledge_items WHERE id = ANY($1::text[])", named)
        existing.update(r["id"] for r in found)
    out: list[tuple[dict[str, Any], str | None]] = []
    for row in rows:
        if row["item_id"] is None:
            owner = owners.get(row["id"])
            if owner is None:
                out.append((row, f"orphan: no knowledge_items row has file_id {row['id']}"))
                continue
            row = {**row, "item_id": owner}
        elif row["item_id"] not in existing:
            out.append((row, f"orphan: knowledge_items {row['item_id']} not found"))
            continue
        out.append((row, None))
    return out


@dataclass
class FileBatch:
    read: int = 0
    last_id: Any = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    documents: list[SourceDocument] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    bytes: int = 0
    #: Fields of the batch's file documents that have no column, with how many files had each.
    dropped: Counter[str] = field(default_factory=Counter)


async def file_batches(
    source: Source, spool: ChunkSpool, batch_size: int, resume: Resume | None = None
) -> AsyncIterator[FileBatch]:
    """The files of the source in batches (bounded by count and by bytes)."""
    batch = FileBatch()
    async for documents in source.batches(FILES, batch_size, resume):
        for document in documents:
            raw_id = None if isinstance(document, Undecodable) else document.get("_id")
            converted = convert_file(
                document, spool.read(id_text(raw_id) or "") if raw_id is not None else {}
            )
            batch.read += 1
            batch.last_id = raw_id
            if converted.row is None:
                batch.rejected.append(
                    Rejection(converted.id, converted.problem or "not convertible", document)
                )
            else:
                batch.dropped.update(converted.dropped)
                batch.rows.append(converted.row)
                batch.documents.append(document)
                batch.bytes += converted.row["size"]
            if batch.read >= batch_size or batch.bytes >= BATCH_BYTES:
                yield batch
                batch = FileBatch()
    if batch.read:
        yield batch


_UPSERT = (
    f"INSERT INTO {TABLE} AS t ({', '.join(COLUMNS)}) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], "
    "$6::text[], $7::timestamptz[], $8::bytea[]) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
    + " WHERE ("
    + ", ".join(f"t.{c}" for c in COLUMNS[1:])
    + ") IS DISTINCT FROM ("
    + ", ".join(f"EXCLUDED.{c}" for c in COLUMNS[1:])
    + ") "
    "RETURNING (xmax = 0) AS inserted"
)


async def write_files(conn: asyncpg.Connection, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Upsert file rows (rewriting only what differs); return (inserted, updated)."""
    if not rows:
        return 0, 0
    columns = [[row[c] for row in rows] for c in COLUMNS]
    written = await conn.fetch(_UPSERT, *columns)
    inserted = sum(1 for r in written if r["inserted"])
    return inserted, len(written) - inserted
