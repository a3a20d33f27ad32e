"""Verification by content: does PostgreSQL hold every value of the source?

The 15 collections (and our own entities: API keys, agent versions, tool approvals) are checked
from the source documents themselves, not by converting them
again: each batch of documents is read from the source, the rows with their ids are read from the
target in one query (`WHERE id = ANY($1)`), and every document is compared with its row field by
field (`compare.DocumentComparer`: the column of the key's name, or `extras[key]`, under the
documented value rules; defaults where the document has no value; nothing in the row that the
document lacks). A document without a row is either recorded by the migration as quarantined
(`migration_quarantine`: expected to be absent, and counted with its reason) or missing. The ids
seen are copied to a temporary table, which then gives the target rows no document has (extra)
and the ids the source holds twice. Memory stays bounded by the batch size.

Our own non-entity collections (usage, webhooks, run-time records) are compared row by row with
their conversion (`tableverify`).

GridFS files are compared by metadata and by the SHA-256 PostgreSQL computes from the stored
bytes. The pgvector tables are compared with where their vectors came from: the Qdrant
collections when a Qdrant source is given, else `memory_vectors` with the migrated memories'
embeddings (step `embedding:memories`: memories without an embedding, or with one the column
cannot hold, counted apart). These compare canonical digests in temporary tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tbd_agents.tools.migration.batch import Rejection, category_of
from tbd_agents.tools.migration.bsonio import SourceDocument, Undecodable
from tbd_agents.tools.migration.compare import Difference, DocumentComparer
from tbd_agents.tools.migration.convert import id_text
from tbd_agents.tools.migration.gridfs import (
    FILES,
    ChunkSpool,
    digest_row,
    file_batches,
    resolve_owners,
)
from tbd_agents.tools.migration.memvectors import (
    NO_EMBEDDING,
    column_dimension,
    embedding_batch,
    target_memories,
)
from tbd_agents.tools.migration.memvectors import STEP as MEMORY_VECTORS
from tbd_agents.tools.migration.quarantine import key_of
from tbd_agents.tools.migration.rows import parse_json
from tbd_agents.tools.migration.runner import check_source, wanted_collections
from tbd_agents.tools.migration.sources import Source
from tbd_agents.tools.migration.tables import TABLE_SPECS
from tbd_agents.tools.migration.tableverify import TableVerifier, account_batch
from tbd_agents.tools.migration.transform import SPECS, CollectionSpec, Row
from tbd_agents.tools.migration.vectors import COLLECTION_NAMES as VECTOR_COLLECTIONS
from tbd_agents.tools.migration.vectors import PREFIX as VECTOR_PREFIX
from tbd_agents.tools.migration.vectors import VectorSource
from tbd_agents.tools.migration.vectors import batches as vector_batches
from tbd_agents.tools.migration.vectors import digest as vector_digest
from tbd_agents.tools.migration.vectors import target_rows as vector_target_rows
from tbd_agents.tools.migration.worker import in_worker
from tbd_agents.vectors.base import MEMORIES

_SRC = "_verify_source"
_TGT = "_verify_target"
_SEEN = "_verify_seen"


@dataclass
class CollectionCheck:
    """The verification of one collection."""

    name: str
    source_documents: int = 0
    expected: int = 0
    target_rows: int = 0
    #: Source documents expected to be absent, by reason category: the documents the migration
    #: recorded as quarantined (vectors: the rules' exclusions).
    excluded: Counter[str] = field(default_factory=Counter)
    #: What `excluded` means, for the report.
    excluded_note: str = "quarantined by the migration (expected to be absent)"
    #: An example reason of each excluded category.
    reasons: dict[str, str] = field(default_factory=dict)
    missing: int = 0
    extra: int = 0
    differing: int = 0
    duplicate_ids: int = 0
    missing_ids: list[str] = field(default_factory=list)
    extra_ids: list[str] = field(default_factory=list)
    differing_ids: list[str] = field(default_factory=list)
    #: id → the fields that differ, for the first differing documents.
    differences: dict[str, list[Difference]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differing or self.duplicate_ids)


@dataclass
class VerifyResult:
    collections: list[CollectionCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.collections)


@dataclass
class _BatchComparison:
    """What comparing one batch of documents found (computed in the worker thread)."""

    seen: list[str] = field(default_factory=list)
    #: Ids of documents without a row, and keys of documents without a usable id.
    absent: list[str] = field(default_factory=list)
    unidentified: dict[str, str] = field(default_factory=dict)
    differing: dict[str, list[Difference]] = field(default_factory=dict)


def _compare_batch(
    comparer: DocumentComparer, documents: list[SourceDocument], rows: dict[str, Row]
) -> _BatchComparison:
    out = _BatchComparison()
    for document in documents:
        if isinstance(document, Undecodable):
            key = key_of(Rejection(None, "undecodable", document))
            out.unidentified[key] = "not valid BSON"
            continue
        raw_id = document.get("_id")
        doc_id = id_text(raw_id)
        if doc_id is None:
            key = key_of(Rejection(None, "no _id", document))
            out.unidentified[key] = "no _id" if raw_id is None else f"unusable _id {raw_id!r}"
            continue
        row = rows.get(doc_id)
        if row is None:
            out.absent.append(doc_id)
            continue
        out.seen.append(doc_id)
        found = comparer.compare(document, row)
        if found:
            out.differing[doc_id] = found
    return out


class Verifier:
    """Compares a source with a migrated PostgreSQL database (see module docstring)."""

    def __init__(
        self,
        source: Source,
        conn: asyncpg.Connection,
        reader: asyncpg.Connection,
        *,
        batch_size: int = 2000,
        show: int = 10,
        vectors: VectorSource | None = None,
    ) -> None:
        self.source = source
        self.conn = conn
        self.reader = reader
        self.batch_size = batch_size
        self.show = show
        self.vectors = vectors

    async def run(
        self, collections: Sequence[str] | None = None, allow_empty: bool = False
    ) -> VerifyResult:
        names = wanted_collections(collections)
        await check_source(self.source, names, allow_empty)
        await self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_SRC} (id text, digest bytea, parent text);"
            f"CREATE TEMP TABLE IF NOT EXISTS {_TGT} (id text, digest bytea);"
            f"CREATE TEMP TABLE IF NOT EXISTS {_SEEN} (id text);"
            f"CREATE INDEX IF NOT EXISTS {_SRC}_id ON {_SRC} (id);"
            f"CREATE INDEX IF NOT EXISTS {_TGT}_id ON {_TGT} (id);"
            f"CREATE INDEX IF NOT EXISTS {_SEEN}_id ON {_SEEN} (id)"
        )
        present = await self.source.collections()
        result = VerifyResult()
        for name in names:
            if name in VECTOR_COLLECTIONS:
                if self.vectors is not None:
                    result.collections.append(await self._vectors(name))
            elif name == MEMORY_VECTORS:
                if self.vectors is None:
                    result.collections.append(await self._memory_vectors())
            elif name == FILES:
                result.collections.append(await self._files(name in present))
            elif name in TABLE_SPECS:
                check = CollectionCheck(name=name)
                tables = TableVerifier(
                    self.source, self.conn, self.reader, batch_size=self.batch_size, show=self.show
                )
                await tables.run(TABLE_SPECS[name], name in present, check)
                result.collections.append(check)
            else:
                result.collections.append(await self._collection(SPECS[name], name in present))
        return result

    # ------------------------------------------------------------------------- documents

    async def _collection(self, spec: CollectionSpec, present: bool) -> CollectionCheck:
        """Every document of the collection against its row (see module docstring)."""
        check = CollectionCheck(name=spec.name)
        await self.conn.execute(f"TRUNCATE {_SEEN}")
        comparer = DocumentComparer(spec)
        columns = ", ".join(f'"{c}"' for c in spec.columns)
        select = f'SELECT {columns} FROM "{spec.name}" WHERE id = ANY($1::text[])'

        async with self.reader.transaction(readonly=True, isolation="repeatable_read"):
            check.target_rows = await self.reader.fetchval(f'SELECT count(*) FROM "{spec.name}"')
            if present:
                async with aclosing(self.source.batches(spec.name, self.batch_size)) as batches:
                    async for documents in batches:
                        check.source_documents += len(documents)
                        ids = {
                            i
                            for d in documents
                            if not isinstance(d, Undecodable)
                            and (i := id_text(d.get("_id"))) is not None
                        }
                        records = await self.reader.fetch(select, list(ids))
                        rows = {r["id"]: target_row(spec, r) for r in records}
                        found = await in_worker(_compare_batch, comparer, documents, rows)
                        await self._account(spec.name, check, found)
        await self._extra_rows(spec.name, check)
        check.expected = check.source_documents - sum(check.excluded.values())
        return check

    async def _account(
        self, collection: str, check: CollectionCheck, found: _BatchComparison
    ) -> None:
        """Count a compared batch: seen ids, differences, and the absent documents split into
        quarantined (recorded by the migration) and missing."""
        absent: dict[str, str | None] = {**dict.fromkeys(found.absent), **found.unidentified}
        await account_batch(
            self.conn, _SEEN, self.show, collection, check, found.seen, found.differing, absent
        )

    async def _extra_rows(self, table: str, check: CollectionCheck) -> None:
        """Target rows no source document has, and ids the source holds more than once."""
        await self.conn.execute(f"ANALYZE {_SEEN}")
        absent = f'FROM "{table}" t WHERE NOT EXISTS (SELECT 1 FROM {_SEEN} s WHERE s.id = t.id)'
        found = await self.conn.fetchrow(
            f"SELECT (SELECT count(*) {absent}) AS extra, "
            f"(SELECT coalesce(array_agg(id ORDER BY id), '{{}}') FROM "
            f"(SELECT t.id {absent} ORDER BY t.id LIMIT {int(self.show)}) x) AS extra_ids, "
            f"(SELECT count(*) FROM (SELECT id FROM {_SEEN} GROUP BY id HAVING count(*) > 1) d) "
            "AS duplicate_ids"
        )
        check.extra = found["extra"]
        check.extra_ids = list(found["extra_ids"])
        check.duplicate_ids = found["duplicate_ids"]

    async def _load_target(
        self,
        query: str,
        digest: Callable[[asyncpg.Record], tuple[str, bytes]],
        check: CollectionCheck,
    ) -> None:
        """Digest every row `query` returns (read in one snapshot) into the target table."""

        async def copy(batch: list[asyncpg.Record]) -> None:
            records = await in_worker(lambda: [digest(r) for r in batch])
            await self.conn.copy_records_to_table(_TGT, records=records)

        async with self.reader.transaction(readonly=True, isolation="repeatable_read"):
            batch: list[asyncpg.Record] = []
            async for record in self.reader.cursor(query, prefetch=self.batch_size):
                batch.append(record)
                if len(batch) >= self.batch_size:
                    await copy(batch)
                    batch = []
            if batch:
                await copy(batch)
        check.target_rows = await self.conn.fetchval(f"SELECT count(*) FROM {_TGT}")
        await self.conn.execute(f"ANALYZE {_TGT}")

    # ---------------------------------------------------------------- files and vectors

    async def _files(self, present: bool) -> CollectionCheck:
        """GridFS files against `knowledge_files`: metadata and the SHA-256 of the bytes (the
        target's computed by PostgreSQL from the stored bytes, and the one stored beside them)."""
        check = CollectionCheck(name=FILES)
        await self.conn.execute(f"TRUNCATE {_SRC}, {_TGT}")
        if present:
            spool = await ChunkSpool.build(self.source, self.batch_size)
            try:
                async for batch in file_batches(self.source, spool, self.batch_size):
                    check.source_documents += batch.read
                    check.excluded.update(r.category for r in batch.rejected)
                    records = []
                    for row, problem in await resolve_owners(self.conn, batch.rows):
                        if problem is None:
                            records.append((row["id"], digest_row(row), row["item_id"]))
                        else:
                            check.excluded[category_of(problem)] += 1
                    await self.conn.copy_records_to_table(_SRC, records=records)
            finally:
                spool.close()
            await self.conn.execute(f"ANALYZE {_SRC}")
        await self._load_target(
            "SELECT id, item_id, file_name, content_type, size, encode(sha256(data), 'hex') AS sha256, "
            "created_at, sha256 AS stored FROM knowledge_files",
            _file_digest,
            check,
        )
        await self._compare(check)
        return check

    async def _vectors(self, prefixed: str) -> CollectionCheck:
        """A Qdrant collection against its pgvector table: ids, texts, payload fields and the
        vectors (dimension and every value at float32 precision)."""
        assert self.vectors is not None
        name = prefixed.removeprefix(VECTOR_PREFIX)
        check = CollectionCheck(name=prefixed)
        await self.conn.execute(f"TRUNCATE {_SRC}, {_TGT}")
        if await self.vectors.qdrant.collection_info(name) is not None:
            async for batch in vector_batches(
                self.vectors.qdrant, self.conn, name, self.batch_size
            ):
                check.source_documents += batch.read
                check.excluded.update(r.category for r in batch.rejected)
                records = [(r["id"], vector_digest(r), None) for r in batch.rows]
                await self.conn.copy_records_to_table(_SRC, records=records)
        await self.conn.execute(f"ANALYZE {_SRC}")
        async for digests in vector_target_rows(self.reader, name):
            await self.conn.copy_records_to_table(_TGT, records=digests)
        check.target_rows = await self.conn.fetchval(f"SELECT count(*) FROM {_TGT}")
        await self._compare(check)
        return check

    async def _memory_vectors(self) -> CollectionCheck:
        """`memory_vectors` against the vector rows the migrated memories' embeddings make:
        ids, texts, payload fields and every vector value at float32 precision."""
        check = CollectionCheck(name=MEMORY_VECTORS, excluded_note="memories without a vector")
        await self.conn.execute(f"TRUNCATE {_SRC}, {_TGT}")
        _, dimension = await column_dimension(self.conn)
        async with self.reader.transaction(readonly=True, isolation="repeatable_read"):
            async for memories in target_memories(self.reader, self.batch_size):
                batch = await in_worker(embedding_batch, memories, dimension)
                check.source_documents += batch.read
                if batch.no_embedding:
                    check.excluded[NO_EMBEDDING] += batch.no_embedding
                check.excluded.update(w.message.split(":", 1)[0] for w in batch.warnings)
                records = [(r["id"], vector_digest(r), None) for r in batch.rows]
                await self.conn.copy_records_to_table(_SRC, records=records)
        await self.conn.execute(f"ANALYZE {_SRC}")
        async for digests in vector_target_rows(self.reader, MEMORIES.name):
            await self.conn.copy_records_to_table(_TGT, records=digests)
        check.target_rows = await self.conn.fetchval(f"SELECT count(*) FROM {_TGT}")
        await self._compare(check)
        return check

    async def _compare(self, check: CollectionCheck) -> None:
        """Counts and first ids of missing, extra and differing rows (one round trip)."""
        sets = {
            "missing": f"FROM {_SRC} s WHERE NOT EXISTS (SELECT 1 FROM {_TGT} t WHERE t.id = s.id)",
            "extra": f"FROM {_TGT} t WHERE NOT EXISTS (SELECT 1 FROM {_SRC} s WHERE s.id = t.id)",
            "differing": f"FROM {_SRC} s JOIN {_TGT} t USING (id) WHERE s.digest <> t.digest",
        }
        parts = [
            f"(SELECT count(*) FROM {_SRC}) AS expected",
            f"(SELECT count(*) FROM (SELECT id FROM {_SRC} GROUP BY id HAVING count(*) > 1) d) AS duplicate_ids",
        ]
        for name, rows in sets.items():
            parts.append(f"(SELECT count(*) {rows}) AS {name}")
            parts.append(
                f"(SELECT coalesce(array_agg(id ORDER BY id), '{{}}') FROM "
                f"(SELECT id {rows} ORDER BY id LIMIT {int(self.show)}) x) AS {name}_ids"
            )
        found = await self.conn.fetchrow("SELECT " + ", ".join(parts))
        for key, value in found.items():
            setattr(check, key, list(value) if isinstance(value, list) else value)


def target_row(spec: CollectionSpec, record: asyncpg.Record) -> Row:
    """A row read from PostgreSQL as the same Python values the conversion produces."""
    row: dict[str, Any] = dict(record)
    for column in spec.json_columns:
        if row[column] is not None:
            row[column] = parse_json(row[column])
    return row


def _file_digest(record: asyncpg.Record) -> tuple[str, bytes]:
    row = dict(record)
    stored = row.pop("stored")
    return row["id"], digest_row(row, stored)
