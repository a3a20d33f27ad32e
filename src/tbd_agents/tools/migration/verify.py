"""Verification by content: does PostgreSQL hold exactly what the migration rules say it should?

For each collection the source is converted again, independently of any earlier run, with the
same rules (model validation, newest-wins for unique keys, children of a missing parent left out),
and every expected row is reduced to a canonical digest (`rows.row_digest`, every column). The
target table is read back row by row through the driver and digested the same way. Digests are
compared in temporary tables on the target (memory stays flat whatever the size), giving counts
and the first ids that are missing, extra or different, with a field-level diff for a sample of
the different ones. Vectors (`memories.embedding`) are columns like any other: compared value by
value, and a dimension mismatch shows in the diff.

The pgvector tables are compared with where their vectors came from: the Qdrant collections when
a Qdrant source is given, else `memory_vectors` with the migrated memories' embeddings (step
`embedding:memories`: the rows the migration builds from them, memories without an embedding or
with one the column cannot hold counted as excluded).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tbd_agents.tools.migration.batch import category_of, classify
from tbd_agents.tools.migration.bsonio import SourceDocument
from tbd_agents.tools.migration.gridfs import (
    FILES,
    ChunkSpool,
    digest_row,
    file_batches,
    resolve_owners,
)
from tbd_agents.tools.migration.loader import WRITE_ERRORS, row_level
from tbd_agents.tools.migration.memvectors import (
    NO_EMBEDDING,
    column_dimension,
    embedding_batch,
    target_memories,
)
from tbd_agents.tools.migration.memvectors import STEP as MEMORY_VECTORS
from tbd_agents.tools.migration.rows import field_diff, parse_json, row_digest
from tbd_agents.tools.migration.runner import check_source, find_superseded, wanted_collections
from tbd_agents.tools.migration.sources import Source
from tbd_agents.tools.migration.transform import SPECS, CollectionSpec, Row, to_record
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


@dataclass
class CollectionCheck:
    """The verification of one collection."""

    name: str
    source_documents: int = 0
    expected: int = 0
    target_rows: int = 0
    #: Source documents the rules keep out of PostgreSQL, by reason category.
    excluded: Counter[str] = field(default_factory=Counter)
    #: What `excluded` means, for the report.
    excluded_note: str = "kept out by the conversion rules (quarantined)"
    missing: int = 0
    extra: int = 0
    differing: int = 0
    duplicate_ids: int = 0
    missing_ids: list[str] = field(default_factory=list)
    extra_ids: list[str] = field(default_factory=list)
    differing_ids: list[str] = field(default_factory=list)
    #: id → column → (source value, target value), for a sample of differing rows.
    diffs: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differing or self.duplicate_ids)


@dataclass
class VerifyResult:
    collections: list[CollectionCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.collections)


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
        sample: int = 3,
        probe_limit: int = 1000,
        vectors: VectorSource | None = None,
    ) -> None:
        self.source = source
        self.conn = conn
        self.reader = reader
        self.batch_size = batch_size
        self.show = show
        self.sample = sample
        self.probe_limit = probe_limit
        self.vectors = vectors

    async def run(
        self, collections: Sequence[str] | None = None, allow_empty: bool = False
    ) -> VerifyResult:
        names = wanted_collections(collections)
        await check_source(self.source, names, allow_empty)
        await self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_SRC} (id text, digest bytea, parent text);"
            f"CREATE TEMP TABLE IF NOT EXISTS {_TGT} (id text, digest bytea);"
            f"CREATE INDEX IF NOT EXISTS {_SRC}_id ON {_SRC} (id);"
            f"CREATE INDEX IF NOT EXISTS {_TGT}_id ON {_TGT} (id)"
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
            else:
                result.collections.append(await self._collection(SPECS[name], name in present))
        return result

    async def _collection(self, spec: CollectionSpec, present: bool) -> CollectionCheck:
        check = CollectionCheck(name=spec.name)
        await self.conn.execute(f"TRUNCATE {_SRC}, {_TGT}")
        if present:
            await self._load_source(spec, check)
        columns = ", ".join(f'"{c}"' for c in spec.columns)
        await self._load_target(
            f'SELECT {columns} FROM "{spec.name}"',
            lambda r: (r["id"], row_digest(target_row(spec, r))),
            check,
        )
        await self._compare(check)
        if present and 0 < check.missing <= self.probe_limit:
            await self._probe_missing(spec, check)
        if check.differing_ids and present:
            await self._diff_sample(spec, check)
        return check

    async def _load_source(self, spec: CollectionSpec, check: CollectionCheck) -> None:
        superseded = await find_superseded(self.source, spec, self.batch_size)
        parent_column = spec.parent[0] if spec.parent else None

        def digest(documents: list[SourceDocument]) -> list[tuple[str, bytes, str | None]]:
            out = []
            for document in documents:
                converted = classify(spec, document, superseded)
                if converted.row is None:
                    check.excluded[category_of(converted.problem)] += 1
                    continue
                row = converted.row
                out.append(
                    (row["id"], row_digest(row), row[parent_column] if parent_column else None)
                )
            return out

        async for documents in self.source.batches(spec.name, self.batch_size):
            check.source_documents += len(documents)
            records = await in_worker(digest, documents)
            await self.conn.copy_records_to_table(_SRC, records=records)
        if spec.parent is not None:
            parent = spec.parent[1]
            orphans = await self.conn.fetchval(
                f"WITH gone AS (DELETE FROM {_SRC} s WHERE NOT EXISTS "
                f'(SELECT 1 FROM "{parent}" p WHERE p.id = s.parent) RETURNING 1) '
                "SELECT count(*) FROM gone"
            )
            if orphans:
                check.excluded["orphan"] += orphans
        await self.conn.execute(f"ANALYZE {_SRC}")

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
            "sha256 AS stored FROM knowledge_files",
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

    async def _source_rows(self, spec: CollectionSpec, wanted: set[str]) -> dict[str, Row]:
        """The converted rows of the documents with ids in `wanted` (one more source pass)."""
        superseded = await find_superseded(self.source, spec, self.batch_size)
        found: dict[str, Row] = {}
        async with aclosing(self.source.batches(spec.name, self.batch_size)) as batches:
            async for documents in batches:
                for document in documents:
                    converted = classify(spec, document, superseded)
                    if converted.row is not None and converted.id in wanted:
                        found[converted.row["id"]] = converted.row
                if len(found) == len(wanted):
                    break
        return found

    async def _probe_missing(self, spec: CollectionSpec, check: CollectionCheck) -> None:
        """Try each missing row against the target's constraints in a transaction that is always
        rolled back: a row PostgreSQL refuses (and the migration quarantined) is excluded with
        the database's reason; one it would accept stays missing."""
        ids = [
            r["id"]
            for r in await self.conn.fetch(
                f"SELECT id FROM {_SRC} s WHERE NOT EXISTS "
                f"(SELECT 1 FROM {_TGT} t WHERE t.id = s.id)"
            )
        ]
        refused: list[str] = []
        for doc_id, row in (await self._source_rows(spec, set(ids))).items():
            probe = self.conn.transaction()
            await probe.start()
            try:
                await self.conn.copy_records_to_table(
                    spec.name, records=[to_record(spec, row)], columns=spec.columns
                )
            except WRITE_ERRORS as exc:
                if not row_level(exc):
                    raise
                refused.append(doc_id)
            finally:
                await probe.rollback()
        if refused:
            await self.conn.execute(f"DELETE FROM {_SRC} WHERE id = ANY($1::text[])", refused)
            check.excluded["database"] += len(refused)
            await self._compare(check)

    async def _diff_sample(self, spec: CollectionSpec, check: CollectionCheck) -> None:
        """Field-level differences for the first few differing ids (one more source pass)."""
        wanted = set(check.differing_ids[: self.sample])
        source_rows = await self._source_rows(spec, wanted)
        columns = ", ".join(f'"{c}"' for c in spec.columns)
        records = await self.reader.fetch(
            f'SELECT {columns} FROM "{spec.name}" WHERE id = ANY($1::text[])', list(wanted)
        )
        for record in records:
            row = target_row(spec, record)
            if row["id"] in source_rows:
                check.diffs[row["id"]] = field_diff(source_rows[row["id"]], row)


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
