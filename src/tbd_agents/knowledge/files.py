"""Where uploaded file bytes live: PostgreSQL (`knowledge_files`, bytea) in the all-PostgreSQL
stack, MongoDB GridFS in the qdrant profile. Both keep the file's name, content type, size and
SHA-256, and both delete a file with its knowledge item (PostgreSQL by ON DELETE CASCADE)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from bson import Binary, ObjectId
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tbd_agents.errors import NotFound
from tbd_agents.storage.postgres.schema_vectors import knowledge_files

GRIDFS_CHUNK_SIZE = 255 * 1024  # the GridFS default


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    item_id: str | None
    file_name: str | None
    content_type: str
    size: int
    sha256: str
    data: bytes


class FileStore(Protocol):
    def new_id(self) -> str:
        """A fresh id in this store's format."""
        ...

    def bind(self, repos: Any) -> FileStore:
        """This store on the unit of work's transaction when it shares the database."""
        ...

    async def put(
        self, file_id: str, item_id: str, data: bytes, *, file_name: str | None, content_type: str
    ) -> StoredFile: ...

    async def get(self, file_id: str) -> StoredFile:
        """The file; NotFound if there is none with that id."""
        ...

    async def delete_for_item(self, item_id: str) -> int: ...


class PgFileStore:
    """File bytes in `knowledge_files` (bytea), in the unit of work's transaction when bound."""

    def __init__(self, engine: AsyncEngine, conn: AsyncConnection | None = None) -> None:
        self.engine = engine
        self._conn = conn

    def new_id(self) -> str:
        import uuid

        return str(uuid.uuid4())

    def bind(self, repos: Any) -> FileStore:
        conn = getattr(repos, "connection", None)
        return PgFileStore(self.engine, conn) if isinstance(conn, AsyncConnection) else self

    async def _run(self, stmt: Any) -> Any:
        if self._conn is not None:
            return await self._conn.execute(stmt)
        async with self.engine.begin() as conn:
            return await conn.execute(stmt)

    async def put(
        self, file_id: str, item_id: str, data: bytes, *, file_name: str | None, content_type: str
    ) -> StoredFile:
        stored = StoredFile(
            file_id,
            item_id,
            file_name,
            content_type,
            len(data),
            hashlib.sha256(data).hexdigest(),
            data,
        )
        await self._run(
            sa.insert(knowledge_files).values(
                id=file_id,
                item_id=item_id,
                file_name=file_name,
                content_type=content_type,
                size=stored.size,
                sha256=stored.sha256,
                data=data,
            )
        )
        return stored

    async def get(self, file_id: str) -> StoredFile:
        kf = knowledge_files
        row = (await self._run(sa.select(kf).where(kf.c.id == file_id))).one_or_none()
        if row is None:
            raise NotFound("file", file_id)
        return StoredFile(
            row.id,
            row.item_id,
            row.file_name,
            row.content_type,
            row.size,
            row.sha256,
            bytes(row.data),
        )

    async def delete_for_item(self, item_id: str) -> int:
        kf = knowledge_files
        result = await self._run(sa.delete(kf).where(kf.c.item_id == item_id))
        return int(result.rowcount)


class GridFsFileStore:
    """File bytes in MongoDB GridFS (`fs.files` + `fs.chunks`, the standard layout, so
    `mongofiles` and every driver's GridFS API read them)."""

    def __init__(self, database: Any, bucket: str = "fs") -> None:
        self.files = database[f"{bucket}.files"]
        self.chunks = database[f"{bucket}.chunks"]

    def new_id(self) -> str:
        return str(ObjectId())

    def bind(self, repos: Any) -> FileStore:
        return self

    async def put(
        self, file_id: str, item_id: str, data: bytes, *, file_name: str | None, content_type: str
    ) -> StoredFile:
        oid = ObjectId(file_id)
        sha = hashlib.sha256(data).hexdigest()
        chunks = [
            {"files_id": oid, "n": n, "data": Binary(data[i : i + GRIDFS_CHUNK_SIZE])}
            for n, i in enumerate(range(0, len(data), GRIDFS_CHUNK_SIZE))
        ]
        if chunks:
            await self.chunks.insert_many(chunks)
        await self.files.insert_one(
            {
                "_id": oid,
                "length": len(data),
                "chunkSize": GRIDFS_CHUNK_SIZE,
                "uploadDate": datetime.now(UTC),
                "filename": file_name,
                "metadata": {"contentType": content_type, "sha256": sha, "item_id": item_id},
            }
        )
        return StoredFile(file_id, item_id, file_name, content_type, len(data), sha, data)

    async def get(self, file_id: str) -> StoredFile:
        if not ObjectId.is_valid(file_id):
            raise NotFound("file", file_id)
        oid = ObjectId(file_id)
        doc = await self.files.find_one({"_id": oid})
        if doc is None:
            raise NotFound("file", file_id)
        parts = await self.chunks.find({"files_id": oid}).sort("n", 1).to_list(None)
        data = b"".join(bytes(p["data"]) for p in parts)
        meta = doc.get("metadata") or {}
        return StoredFile(
            file_id,
            meta.get("item_id"),
            doc.get("filename"),
            meta.get("contentType", "application/octet-stream"),
            int(doc["length"]),
            meta.get("sha256", hashlib.sha256(data).hexdigest()),
            data,
        )

    async def delete_for_item(self, item_id: str) -> int:
        docs = await self.files.find({"metadata.item_id": item_id}).to_list(None)
        for doc in docs:
            await self.chunks.delete_many({"files_id": doc["_id"]})
            await self.files.delete_one({"_id": doc["_id"]})
        return len(docs)
