"""Knowledge ingestion: text or an uploaded file → extracted text → chunks → vectors.

Embedding happens before any transaction opens (it is the slow part). Then, in one unit of work,
the knowledge item, its file bytes and its chunks are written; on the all-PostgreSQL stack that is
one transaction, so an item is never visible without its chunks. Re-uploading the same bytes to
the same source returns the existing item (matched by SHA-256) instead of indexing them twice.
Text is extracted in a worker process within `ExtractLimits` (see knowledge/isolate.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tbd_agents.domain.enums import KnowledgeContentType, KnowledgeItemStatus
from tbd_agents.domain.models import KnowledgeItem, KnowledgeSource
from tbd_agents.embeddings.base import Embedder
from tbd_agents.errors import InvalidData
from tbd_agents.knowledge.chunking import Chunk, chunk_text
from tbd_agents.knowledge.extract import ExtractLimits, content_type_of
from tbd_agents.knowledge.files import FileStore
from tbd_agents.knowledge.isolate import extract_isolated
from tbd_agents.storage.protocol import DocumentStore, eq
from tbd_agents.vectors.base import KNOWLEDGE_CHUNKS, VectorRecord, VectorStore, Where


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    size: int = 1200
    overlap: int = 150


def chunk_id(item_id: str, index: int) -> str:
    return f"{item_id}:{index}"


class KnowledgeIngestion:
    """Turns text and files into indexed knowledge items."""

    def __init__(
        self,
        documents: DocumentStore,
        vectors: VectorStore,
        embedder: Embedder,
        files: FileStore,
        chunking: ChunkingOptions | None = None,
        limits: ExtractLimits | None = None,
    ) -> None:
        self.documents = documents
        self.vectors = vectors
        self.embedder = embedder
        self.files = files
        self.chunking = chunking or ChunkingOptions()
        self.limits = limits or ExtractLimits()

    async def _source(self, source_id: str) -> KnowledgeSource:
        async with self.documents.unit_of_work() as repos:
            return await repos.for_model(KnowledgeSource).get(source_id)

    async def ingest_text(
        self,
        source_id: str,
        text: str,
        *,
        title: str = "",
        tags: Sequence[str] = (),
        content_type: str = "text/plain",
        metadata: Mapping[str, Any] | None = None,
    ) -> KnowledgeItem:
        """Index `text` (plain or Markdown) as a new item of the source."""
        source = await self._source(source_id)
        if content_type == "text/html":
            text, found_title = await extract_isolated(text.encode(), content_type, self.limits)
            title = title or found_title
        item = KnowledgeItem(
            source_id=source.id,
            name=title,
            content_type=KnowledgeContentType.TEXT,
            mime_type=content_type,
            text_content=text,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            tags=list(tags),
            metadata=dict(metadata or {}),
        )
        return await self._index(source, item, None)

    async def ingest_file(
        self,
        source_id: str,
        file_name: str,
        data: bytes,
        *,
        content_type: str | None = None,
        tags: Sequence[str] = (),
        title: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> KnowledgeItem:
        """Store the file's bytes, extract its text and index it (same bytes → same item)."""
        source = await self._source(source_id)
        ctype = content_type_of(file_name, content_type)
        sha = hashlib.sha256(data).hexdigest()
        async with self.documents.unit_of_work() as repos:
            existing = await repos.for_model(KnowledgeItem).find_one(
                eq("source_id", source.id), eq("sha256", sha)
            )
        if existing is not None:
            return existing
        text, found_title = await extract_isolated(data, ctype, self.limits)
        item = KnowledgeItem(
            source_id=source.id,
            name=title or found_title or file_name,
            content_type=(
                KnowledgeContentType.IMAGE
                if ctype.startswith("image/")
                else KnowledgeContentType.FILE
            ),
            mime_type=ctype,
            text_content=text,
            file_name=file_name,
            file_size=len(data),
            file_id=self.files.new_id(),
            sha256=sha,
            tags=list(tags),
            metadata=dict(metadata or {}),
        )
        return await self._index(source, item, data)

    async def _index(
        self, source: KnowledgeSource, item: KnowledgeItem, data: bytes | None
    ) -> KnowledgeItem:
        chunks = chunk_text(item.text_content or "", self.chunking.size, self.chunking.overlap)
        if not chunks:
            raise InvalidData(f"{item.file_name or 'the text'} contains no text to index")
        vectors = await self.embedder.embed([c.text for c in chunks])
        tags = sorted({*item.tags, *source.tags})
        records = [self._record(item, c, v, tags) for c, v in zip(chunks, vectors, strict=True)]
        async with self.documents.unit_of_work() as repos:
            items = repos.for_model(KnowledgeItem)
            created = await items.create(item)
            if data is not None and item.file_id:
                await self.files.bind(repos).put(
                    item.file_id,
                    created.id,
                    data,
                    file_name=item.file_name,
                    content_type=item.mime_type or "application/octet-stream",
                )
            await self.vectors.bind(repos).upsert(
                KNOWLEDGE_CHUNKS.name, records, self.embedder.space
            )
            return await items.update(
                created.id,
                {
                    "status": KnowledgeItemStatus.INDEXED,
                    "metadata": {**item.metadata, "chunks": len(chunks)},
                },
            )

    @staticmethod
    def _record(
        item: KnowledgeItem, chunk: Chunk, vector: list[float], tags: list[str]
    ) -> VectorRecord:
        return VectorRecord(
            id=chunk_id(item.id, chunk.index),
            vector=vector,
            text=chunk.text,
            payload={
                "item_id": item.id,
                "source_id": item.source_id,
                "chunk_index": chunk.index,
                "start_offset": chunk.start,
                "end_offset": chunk.end,
                "tags": tags,
            },
        )

    async def reindex(
        self,
        item: KnowledgeItem,
        *,
        text: str | None = None,
        tags: Sequence[str] | None = None,
        expected_version: int | None = None,
    ) -> KnowledgeItem:
        """Replace an item's text and/or tags: its chunks are made again (the old ones go in the
        same transaction), so search sees either the old item or the new one. With
        `expected_version`, the item's row is written only at that version (VersionConflict
        otherwise; on PostgreSQL the chunks are rolled back with it)."""
        source = await self._source(item.source_id)
        new_text = item.text_content or "" if text is None else text
        new_tags = list(item.tags if tags is None else tags)
        chunks = chunk_text(new_text, self.chunking.size, self.chunking.overlap)
        if not chunks:
            raise InvalidData("text_content: no text to index", details={"field": "text_content"})
        vectors = await self.embedder.embed([c.text for c in chunks])
        changed = item.model_copy(update={"text_content": new_text, "tags": new_tags})
        all_tags = sorted({*new_tags, *source.tags})
        records = [
            self._record(changed, c, v, all_tags) for c, v in zip(chunks, vectors, strict=True)
        ]
        async with self.documents.unit_of_work() as repos:
            vectors_of = self.vectors.bind(repos)
            await vectors_of.delete_where(KNOWLEDGE_CHUNKS.name, Where((eq("item_id", item.id),)))
            await vectors_of.upsert(KNOWLEDGE_CHUNKS.name, records, self.embedder.space)
            updated: KnowledgeItem = await repos.for_model(KnowledgeItem).update(
                item.id,
                {
                    "text_content": new_text,
                    "tags": new_tags,
                    "sha256": hashlib.sha256(new_text.encode()).hexdigest()
                    if item.file_id is None
                    else item.sha256,
                    "status": KnowledgeItemStatus.INDEXED,
                    "metadata": {**item.metadata, "chunks": len(chunks)},
                },
                expected_version=expected_version,
            )
            return updated

    async def delete_item(self, item_id: str, *, expected_version: int | None = None) -> bool:
        """Delete an item with its chunks and file bytes; True if it existed. With
        `expected_version`, only at that version (VersionConflict otherwise, nothing deleted)."""
        async with self.documents.unit_of_work() as repos:
            existed = await repos.for_model(KnowledgeItem).delete(
                item_id, expected_version=expected_version
            )
            await self.vectors.bind(repos).delete_where(
                KNOWLEDGE_CHUNKS.name, Where((eq("item_id", item_id),))
            )
            await self.files.bind(repos).delete_for_item(item_id)
        return existed
