"""The migration itself: every wanted collection, parents first, batch by batch.

For each collection: decide where to start (a checkpoint of an interrupted run, else the
beginning), find the documents that lose a unique key to a newer duplicate (one extra read, only
for collections with unique keys), then read → convert (worker thread) → load (transaction with
the checkpoint), converting batch N+1 while PostgreSQL writes batch N. Chat messages are then
numbered per session in their original order (`numbering`).

A dry run reads and converts everything the same way and asks the target only read-only
questions (which ids exist, which parents exist); it opens no write transaction.

Our own non-entity collections (usage, webhooks, run-time records: `tables`) are migrated after
GridFS by `tablestep`, with the same checkpoints, quarantine and dry run. Vectors come after
the documents: from Qdrant when a Qdrant source is given (`vectors`), else the
memories' own embeddings (`memvectors`, step `embedding:memories`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tbd_agents.errors import InvalidData
from tbd_agents.tools.migration.batch import PreparedBatch, Rejection, prepare_batch
from tbd_agents.tools.migration.convert import id_from_extended_json
from tbd_agents.tools.migration.deferred import DEFERRED_FROM, DeferredSchema, ParentCheck
from tbd_agents.tools.migration.gridfs import (
    FILES,
    ChunkSpool,
    FileBatch,
    file_batches,
    resolve_owners,
    write_files,
)
from tbd_agents.tools.migration.loader import BatchOutcome, Checkpoints, Progress, TableLoader
from tbd_agents.tools.migration.memvectors import STEP as MEMORY_VECTORS
from tbd_agents.tools.migration.memvectors import (
    MemoryEmbeddings,
    MemoryVectorStep,
    source_memories,
    target_memories,
)
from tbd_agents.tools.migration.numbering import number_rows
from tbd_agents.tools.migration.procpool import ConverterPool
from tbd_agents.tools.migration.quarantine import QuarantineRecord
from tbd_agents.tools.migration.report import ReportLog
from tbd_agents.tools.migration.results import (
    BatchStep,
    CollectionResult,
    MeteredReporter,
    MigrationResult,
    Reporter,
    SilentReporter,
)
from tbd_agents.tools.migration.selection import (
    ALL_COLLECTIONS,
    check_source,
    find_superseded,
    wanted_collections,
)
from tbd_agents.tools.migration.sources import Resume, Source
from tbd_agents.tools.migration.tables import TABLE_PARENTS, TABLE_SPECS
from tbd_agents.tools.migration.tablestep import TableStep
from tbd_agents.tools.migration.transform import SPECS, CollectionSpec
from tbd_agents.tools.migration.vectors import COLLECTION_NAMES as VECTOR_COLLECTIONS
from tbd_agents.tools.migration.vectors import PREFIX, VectorSource, column_type, prepare_target
from tbd_agents.tools.migration.vectors import batches as vector_batches
from tbd_agents.tools.migration.vectors import write as write_vectors
from tbd_agents.tools.migration.worker import in_worker

__all__ = ["ALL_COLLECTIONS", "Migration", "Options", "check_source", "wanted_collections"]


@dataclass(frozen=True)
class Options:
    """What to migrate and how (the command-line flags)."""

    collections: Sequence[str] | None = None
    batch_size: int = 500
    dry_run: bool = False
    restart: bool = False
    allow_empty: bool = False
    #: Converter processes for dump sources (0: convert in the worker thread); see `procpool`.
    workers: int = 0
    #: A first load of at least this many documents builds the table's secondary indexes and
    #: foreign key after the load (see `deferred`).
    defer_schema_from: int = DEFERRED_FROM


class Migration:
    """One run of the migration (see module docstring)."""

    def __init__(
        self,
        source: Source,
        conn: asyncpg.Connection | None,
        options: Options,
        log: ReportLog,
        reporter: Reporter | None = None,
        vectors: VectorSource | None = None,
        embeddings: MemoryEmbeddings | None = None,
    ) -> None:
        """`vectors`: the Qdrant source, if any. `embeddings`: the space memory vectors copied
        from the memories' embeddings are recorded as (used without `vectors`; None: that step
        is left out)."""
        if conn is None and not options.dry_run:
            raise ValueError("a target connection is required unless dry_run")
        self.source = source
        self.conn = conn
        self.options = options
        self.log = log
        self.reporter: Reporter = MeteredReporter(reporter or SilentReporter())
        self.vectors = vectors
        self.embeddings = embeddings
        # Dry run only: ids the run would have written, for the checks that look them up
        # (parents of children; knowledge items and their file_id, owners of GridFS files).
        self._dry_parents: dict[str, set[str]] = {}
        self._dry_file_owners: dict[str, str] = {}
        self._pool: ConverterPool | None = None

    async def run(self) -> MigrationResult:
        """Migrate every wanted collection (converter processes, if any, are stopped at the end)."""
        if self.options.workers < 0:
            raise InvalidData("workers must be 0 (convert in a thread) or a positive number")
        try:
            return await self._run()
        finally:
            if self._pool is not None:
                self._pool.close()

    def children_peak_rss(self) -> int:
        """Sum of the converter processes' peak resident memory in bytes (0 without them)."""
        return self._pool.children_peak_rss() if self._pool is not None else 0

    async def _run(self) -> MigrationResult:
        names = wanted_collections(self.options.collections)
        result = MigrationResult(
            ignored=await check_source(self.source, names, self.options.allow_empty)
        )
        present = await self.source.collections()
        for name in names:
            if name in VECTOR_COLLECTIONS:
                if self.vectors is not None:
                    result.collections.append(await self._vector_collection(name))
                elif self.options.collections:
                    raise InvalidData(
                        f"{name} needs a Qdrant source: set QDRANT_URL or pass --qdrant-path"
                    )
            elif name == MEMORY_VECTORS:
                if self.vectors is None and self.embeddings is not None:
                    await self._memory_vectors(result, "memories" in present)
                elif self.options.collections and name in self.options.collections:
                    raise InvalidData(
                        f"{name} copies memory vectors only without a Qdrant source (with one, "
                        "they come from qdrant:memories)"
                    )
            elif name == FILES:
                result.collections.append(await self._files(name in present))
            elif name in TABLE_SPECS:
                result.collections.append(
                    await self._tables().run(TABLE_SPECS[name], name in present)
                )
            else:
                result.collections.append(await self._collection(SPECS[name], name in present))
        if result.read == 0 and not self.options.allow_empty:
            raise InvalidData(
                f"{self.source.label} holds no documents in the collections to migrate. Check "
                "MONGO_DB_NAME and the dump path, or pass --allow-empty."
            )
        return result

    async def _collection(self, spec: CollectionSpec, present: bool) -> CollectionResult:
        result = CollectionResult(name=spec.name)
        started = time.perf_counter()
        result.total = await self.source.count(spec.name) if present else 0
        if self.options.dry_run:
            await self._dry_collection(spec, result, present)
        else:
            await self._load_collection(spec, result, present)
        result.seconds = time.perf_counter() - started
        self.reporter.collection_done(result)
        return result

    # ---------------------------------------------------------------------------- real run

    async def _load_collection(
        self, spec: CollectionSpec, result: CollectionResult, present: bool
    ) -> None:
        assert self.conn is not None
        loader = TableLoader(self.conn, spec, self.source.identity, self.log.run_id)
        await loader.setup()
        progress, resume = await self._start(loader.checkpoints, result, loader.table_is_empty)
        deferred = DeferredSchema(self.conn, spec)
        if result.mode == "copy" and resume is None and present:
            if result.total is None or result.total >= self.options.defer_schema_from:
                await deferred.drop()
        elif result.mode != "copy":
            await self._restore(deferred, spec, result)
        if spec.parent is not None and await deferred.foreign_key_missing():
            loader.parent_check = ParentCheck(self.conn, spec.parent[1])
        self.reporter.collection_started(result)
        if present:
            superseded = await find_superseded(self.source, spec, self.options.batch_size)
            await self._pipeline(spec, loader, result, progress, resume, superseded)
        result.numbered = await number_rows(self.conn, spec)
        await self._restore(deferred, spec, result)
        await loader.checkpoints.complete()

    @staticmethod
    async def _restore(
        deferred: DeferredSchema, spec: CollectionSpec, result: CollectionResult
    ) -> None:
        """Build the indexes and foreign key a first load deferred (if any are missing)."""
        lost = await deferred.restore()
        if lost and spec.parent is not None:
            result.warnings[
                f"deleted after the load (their {spec.parent[1]} row was deleted meanwhile)"
            ] += lost

    async def _start(
        self,
        checkpoints: Checkpoints,
        result: CollectionResult,
        empty: Callable[[], Awaitable[bool]],
    ) -> tuple[Progress, Resume | None]:
        """Resume an interrupted collection from its checkpoint, or start it over."""
        checkpoint = None if self.options.restart else await checkpoints.read()
        if checkpoint is not None and not checkpoint.completed:
            result.mode = checkpoint.mode
            progress = checkpoint.progress
            result.resumed_from = progress.position
            result.quarantined_before = progress.quarantined
            last_id = id_from_extended_json(checkpoint.last_id) if checkpoint.last_id else None
            return progress, Resume(progress.position, last_id) if progress.position else None
        result.mode = "copy" if await empty() else "upsert"
        await checkpoints.begin(result.mode)
        return Progress(), None

    async def _pipeline(
        self,
        spec: CollectionSpec,
        loader: TableLoader,
        result: CollectionResult,
        progress: Progress,
        resume: Resume | None,
        superseded: dict[str, str],
    ) -> None:
        pending: asyncio.Task[BatchOutcome] | None = None
        in_flight: PreparedBatch | None = None
        try:
            async for batch in self._prepared(spec, resume, superseded):
                self._record(spec, result, batch)
                if pending is not None and in_flight is not None:
                    self._loaded(result, in_flight, await pending)
                in_flight = batch
                pending = asyncio.create_task(
                    loader.load(
                        batch,
                        mode=result.mode,
                        progress=progress,
                        before_commit=self._before_commit(spec),
                    )
                )
            if pending is not None and in_flight is not None:
                self._loaded(result, in_flight, await pending)
                pending = None
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with suppress(asyncio.CancelledError):
                    await pending

    async def _prepared(
        self, spec: CollectionSpec, resume: Resume | None, superseded: dict[str, str]
    ) -> AsyncIterator[PreparedBatch]:
        """The collection's converted batches, in source order: from converter processes when
        configured and the source hands out raw frames (and no document loses a unique key),
        else from the worker thread."""
        size = self.options.batch_size
        frame_batches = getattr(self.source, "frame_batches", None)
        if self.options.workers and frame_batches is not None and not superseded:
            if self._pool is None:
                self._pool = ConverterPool(self.options.workers).__enter__()
            async for batch in self._pool.ordered(
                spec.name, frame_batches(spec.name, size, resume)
            ):
                yield batch
            return
        async for documents in self.source.batches(spec.name, size, resume):
            yield await in_worker(prepare_batch, spec, documents, superseded)

    def _before_commit(self, spec: CollectionSpec) -> Callable[[list[Rejection]], None]:
        def write(rejected: list[Rejection]) -> None:
            self.log.rejected(spec.name, rejected)
            self.log.sync()

        return write

    def _record(self, spec: CollectionSpec, result: CollectionResult, batch: PreparedBatch) -> None:
        """Account for a converted batch and write its quarantine/warning lines."""
        result.read += batch.read
        result.quarantined.update(r.category for r in batch.rejected)
        result.warnings.update(w.message.split(":", 1)[0] for w in batch.warnings)
        result.extra_kept.update(batch.extra_kept)
        result.extra_dropped.update(batch.extra_dropped)
        self.log.rejected(spec.name, batch.rejected)
        self.log.warned(spec.name, batch.warnings)

    def _loaded(
        self, result: CollectionResult, batch: PreparedBatch, outcome: BatchOutcome
    ) -> None:
        result.inserted += outcome.inserted
        result.updated += outcome.updated
        result.unchanged += outcome.unchanged
        result.quarantined.update(r.category for r in outcome.rejected)
        self.reporter.batch_done(
            result,
            BatchStep(
                batch.read, batch.row_count, len(batch.rejected) + len(outcome.rejected), outcome
            ),
        )

    # ----------------------------------------------------------------------------- dry run

    async def _dry_collection(
        self, spec: CollectionSpec, result: CollectionResult, present: bool
    ) -> None:
        self.reporter.collection_started(result)
        if not present:
            return
        superseded = await find_superseded(self.source, spec, self.options.batch_size)
        accepted = self._dry_parents.setdefault(spec.name, set()) if self._is_parent(spec) else None
        async for documents in self.source.batches(spec.name, self.options.batch_size):
            batch = await in_worker(prepare_batch, spec, documents, superseded)
            orphans = await self._dry_orphans(spec, batch)
            batch.rejected.extend(orphans)
            self._record(spec, result, batch)
            orphan_ids = {o.id for o in orphans}
            ids = [i for i in batch.ids if i not in orphan_ids]
            existing = await self._existing_in(spec.name, ids)
            result.would_overwrite += existing
            result.would_insert += len(ids) - existing
            if accepted is not None:
                accepted.update(ids)
            if spec.name == "knowledge_items":
                self._remember_files(spec, batch, orphan_ids)
            self.reporter.batch_done(result, BatchStep(batch.read, len(ids), len(batch.rejected)))
        self.log.sync()

    def _tables(self) -> TableStep:
        return TableStep(
            self.source,
            self.conn,
            batch_size=self.options.batch_size,
            dry_run=self.options.dry_run,
            log=self.log,
            reporter=self.reporter,
            start=self._start,
            dry_parents=self._dry_parents,
        )

    @staticmethod
    def _is_parent(spec: CollectionSpec) -> bool:
        return spec.name in ("knowledge_items", *TABLE_PARENTS) or any(
            s.parent and s.parent[1] == spec.name for s in SPECS.values()
        )

    def _remember_files(
        self, spec: CollectionSpec, batch: PreparedBatch, skip: set[str | None]
    ) -> None:
        column = spec.columns.index("file_id")
        for item_id, record in zip(batch.ids, batch.records, strict=True):
            if item_id not in skip and record[column] is not None:
                self._dry_file_owners.setdefault(record[column], item_id)

    async def _existing_in(self, table: str, ids: list[str]) -> int:
        if self.conn is None or not ids:
            return 0
        return int(
            await self.conn.fetchval(
                f'SELECT count(*) FROM "{table}" WHERE id = ANY($1::text[])', ids
            )
        )

    async def _dry_orphans(self, spec: CollectionSpec, batch: PreparedBatch) -> list[Rejection]:
        if spec.parent is None or not batch.ids:
            return []
        parent = spec.parent[1]
        known = self._dry_parents.get(parent, set())
        unknown = sorted({p for p in batch.parent_ids if p not in known})
        found: set[str] = set()
        if unknown and self.conn is not None:
            rows = await self.conn.fetch(
                f'SELECT id FROM "{parent}" WHERE id = ANY($1::text[])', unknown
            )
            found = {r["id"] for r in rows}
        orphans = []
        for i, parent_id in enumerate(batch.parent_ids):
            if parent_id not in known and parent_id not in found:
                orphans.append(
                    Rejection(
                        batch.ids[i], f"orphan: {parent} {parent_id} not found", batch.documents[i]
                    )
                )
        return orphans

    # --------------------------------------------------------------------------- GridFS

    async def _files(self, present: bool) -> CollectionResult:
        result = CollectionResult(name=FILES)
        started = time.perf_counter()
        result.total = await self.source.count(FILES) if present else 0
        spool = await ChunkSpool.build(self.source, self.options.batch_size) if present else None
        try:
            if self.options.dry_run:
                self.reporter.collection_started(result)
                if spool is not None:
                    async for batch in file_batches(self.source, spool, self.options.batch_size):
                        await self._dry_files(result, batch)
            else:
                await self._load_files(result, spool)
        finally:
            if spool is not None:
                spool.close()
        result.seconds = time.perf_counter() - started
        self.reporter.collection_done(result)
        return result

    async def _load_files(self, result: CollectionResult, spool: ChunkSpool | None) -> None:
        assert self.conn is not None
        checkpoints = Checkpoints(self.conn, self.source.identity, FILES)
        quarantine = QuarantineRecord(self.conn, FILES, self.source.identity, self.log.run_id)
        await quarantine.setup()
        progress, resume = await self._start(checkpoints, result, _not_empty)
        self.reporter.collection_started(result)
        if spool is not None:
            async for batch in file_batches(self.source, spool, self.options.batch_size, resume):
                await self._write_files(result, batch, checkpoints, progress, quarantine)
        await checkpoints.complete()

    async def _owned(self, batch: FileBatch) -> list[dict[str, Any]]:
        """The batch's rows whose knowledge item exists; the others join `batch.rejected`.
        A dry run also counts the knowledge items it would have written."""
        items = self._dry_parents.get("knowledge_items", set())
        rows = []
        resolved = await resolve_owners(self.conn, batch.rows, items, self._dry_file_owners)
        for (row, problem), document in zip(resolved, batch.documents, strict=True):
            if problem is None:
                rows.append(row)
            else:
                batch.rejected.append(Rejection(row["id"], problem, document))
        return rows

    async def _write_files(
        self,
        result: CollectionResult,
        batch: FileBatch,
        checkpoints: Checkpoints,
        progress: Progress,
        quarantine: QuarantineRecord,
    ) -> None:
        assert self.conn is not None
        async with self.conn.transaction():
            rows = await self._owned(batch)
            inserted, updated = await write_files(self.conn, rows)
            outcome = BatchOutcome(
                inserted=inserted, updated=updated, unchanged=len(rows) - inserted - updated
            )
            progress.advance(batch.read, outcome, len(batch.rejected))
            await checkpoints.save(progress, batch.last_id)
            await quarantine.write([r["id"] for r in rows], batch.rejected)
            self.log.rejected(FILES, batch.rejected)
            self.log.sync()
        result.read += batch.read
        result.inserted += inserted
        result.updated += updated
        result.unchanged += outcome.unchanged
        result.quarantined.update(r.category for r in batch.rejected)
        result.extra_dropped.update(batch.dropped)
        self.reporter.batch_done(
            result, BatchStep(batch.read, len(rows), len(batch.rejected), outcome)
        )

    async def _dry_files(self, result: CollectionResult, batch: FileBatch) -> None:
        rows = await self._owned(batch)
        existing = await self._existing_in("knowledge_files", [r["id"] for r in rows])
        result.read += batch.read
        result.would_overwrite += existing
        result.would_insert += len(rows) - existing
        result.quarantined.update(r.category for r in batch.rejected)
        result.extra_dropped.update(batch.dropped)
        self.log.rejected(FILES, batch.rejected)
        self.reporter.batch_done(result, BatchStep(batch.read, len(rows), len(batch.rejected)))

    # -------------------------------------------------------------------------- vectors

    async def _memory_vectors(self, result: MigrationResult, present: bool) -> None:
        """Memory vectors from the memories' embeddings: the migrated rows of the target; in a
        dry run, the converted source documents (see `memvectors`)."""
        assert self.embeddings is not None
        size = self.options.batch_size
        step = MemoryVectorStep(
            self.conn, self.embeddings, self.log, self.reporter, dry_run=self.options.dry_run
        )
        memories: AsyncIterator[Sequence[Mapping[str, Any]]] = _no_memories()
        total = 0
        if not self.options.dry_run:
            assert self.conn is not None
            memories = target_memories(self.conn, size)
            total = int(await self.conn.fetchval("SELECT count(*) FROM memories"))
        elif present:
            superseded = await find_superseded(self.source, SPECS["memories"], size)
            memories = source_memories(self.source, size, superseded)
            total = await self.source.count("memories") or 0
        result.collections.append(await step.run(memories, total))
        if step.problem is not None:
            result.problems.append(step.problem)

    async def _vector_collection(self, prefixed: str) -> CollectionResult:
        """Copy one Qdrant collection into its pgvector table (dry run: read and check only)."""
        assert self.vectors is not None
        name = prefixed.removeprefix(PREFIX)
        result = CollectionResult(name=prefixed, mode="upsert")
        started = time.perf_counter()
        info = await self.vectors.qdrant.collection_info(name)
        result.total = info.count if info else 0
        self.reporter.collection_started(result)
        if info is not None:
            vector_type = ""
            if self.conn is not None and not self.options.dry_run:
                await prepare_target(self.vectors.engine, name, info.space)
                vector_type = await column_type(
                    self.conn, "memory_vectors" if name == "memories" else name
                )
            quarantine = None
            if self.conn is not None and not self.options.dry_run:
                quarantine = QuarantineRecord(
                    self.conn, prefixed, self.source.identity, self.log.run_id
                )
                await quarantine.setup()
            async for batch in vector_batches(
                self.vectors.qdrant, self.conn, name, self.options.batch_size
            ):
                outcome = None
                if self.conn is not None and quarantine is not None:
                    async with self.conn.transaction():
                        inserted, updated = await write_vectors(
                            self.conn, name, batch.rows, vector_type
                        )
                        await quarantine.write([r["id"] for r in batch.rows], batch.rejected)
                        self.log.rejected(prefixed, batch.rejected)
                        self.log.sync()
                    outcome = BatchOutcome(
                        result.read + batch.read,
                        inserted,
                        updated,
                        len(batch.rows) - inserted - updated,
                    )
                    result.inserted += inserted
                    result.updated += updated
                    result.unchanged += outcome.unchanged
                else:
                    self.log.rejected(prefixed, batch.rejected)
                    result.would_insert += len(batch.rows)
                result.read += batch.read
                result.quarantined.update(r.category for r in batch.rejected)
                self.reporter.batch_done(
                    result, BatchStep(batch.read, len(batch.rows), len(batch.rejected), outcome)
                )
        result.seconds = time.perf_counter() - started
        self.reporter.collection_done(result)
        return result


async def _no_memories() -> AsyncIterator[list[Mapping[str, Any]]]:
    return
    yield


async def _not_empty() -> bool:
    """File batches are always upserted (there is no COPY fast path for them)."""
    return False
