"""The migration itself: every wanted collection, parents first, batch by batch.

For each collection: decide where to start (a checkpoint of an interrupted run, else the
beginning), find the documents that lose a unique key to a newer duplicate (one extra read, only
for collections with unique keys), then read → convert (worker thread) → load (transaction with
the checkpoint), converting batch N+1 while PostgreSQL writes batch N.

A dry run reads and converts everything the same way and asks the target only read-only
questions (which ids exist, which parents exist); it opens no write transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]

from tbd_agents.errors import InvalidData
from tbd_agents.tools.migration.batch import PreparedBatch, Rejection, classify, prepare_batch
from tbd_agents.tools.migration.bsonio import SourceDocument
from tbd_agents.tools.migration.convert import id_from_extended_json
from tbd_agents.tools.migration.loader import BatchOutcome, Progress, TableLoader, read_checkpoint
from tbd_agents.tools.migration.report import ReportLog
from tbd_agents.tools.migration.sources import Resume, Source
from tbd_agents.tools.migration.transform import (
    LOAD_ORDER,
    SPECS,
    CollectionSpec,
    UniqueKeyResolver,
)


@dataclass(frozen=True)
class Options:
    """What to migrate and how (the command-line flags)."""

    collections: Sequence[str] | None = None
    batch_size: int = 500
    dry_run: bool = False
    restart: bool = False
    allow_empty: bool = False


@dataclass
class CollectionResult:
    """What happened to one collection in this run (counts of this run unless noted)."""

    name: str
    mode: str = "upsert"
    total: int | None = None
    resumed_from: int = 0
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    #: Dry run only: rows that would be written, split by whether their id already exists.
    would_insert: int = 0
    would_overwrite: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    #: Quarantined before this run resumed (from the checkpoint).
    quarantined_before: int = 0
    warnings: Counter[str] = field(default_factory=Counter)
    extra_kept: Counter[str] = field(default_factory=Counter)
    extra_dropped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def quarantined_total(self) -> int:
        return self.quarantined_before + sum(self.quarantined.values())


@dataclass
class MigrationResult:
    collections: list[CollectionResult] = field(default_factory=list)
    #: Source collections that are not among the 15 (reported, not migrated).
    ignored: list[str] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return sum(c.quarantined_total for c in self.collections)

    @property
    def read(self) -> int:
        return sum(c.read + c.resumed_from for c in self.collections)


class Reporter(Protocol):
    """Receives progress events (the CLI draws progress bars from them)."""

    def collection_started(self, result: CollectionResult) -> None: ...

    def batch_done(
        self, result: CollectionResult, batch: PreparedBatch, outcome: BatchOutcome | None
    ) -> None: ...

    def collection_done(self, result: CollectionResult) -> None: ...


class SilentReporter:
    def collection_started(self, result: CollectionResult) -> None:
        return None

    def batch_done(
        self, result: CollectionResult, batch: PreparedBatch, outcome: BatchOutcome | None
    ) -> None:
        return None

    def collection_done(self, result: CollectionResult) -> None:
        return None


def wanted_collections(names: Sequence[str] | None) -> list[str]:
    """`names` (default: all 15) in load order; unknown names raise InvalidData."""
    if not names:
        return list(LOAD_ORDER)
    unknown = sorted(set(names) - set(LOAD_ORDER))
    if unknown:
        raise InvalidData(
            f"unknown collection {', '.join(unknown)}; the collections are: {', '.join(sorted(LOAD_ORDER))}"
        )
    return [n for n in LOAD_ORDER if n in names]


async def check_source(source: Source, names: Sequence[str], allow_empty: bool) -> list[str]:
    """Refuse a source that holds none of the wanted collections (unless `allow_empty`); return
    the source collections that are not migrated."""
    present = await source.collections()
    if not present & set(names) and not allow_empty:
        held = ", ".join(sorted(present)) or "no collections at all"
        raise InvalidData(
            f"{source.label} has none of the collections to migrate ({held}). Check MONGO_DB_NAME "
            "(the application's default is copilot_agent_hub) or the dump path; pass "
            "--allow-empty to accept an empty source."
        )
    return sorted(n for n in present - set(LOAD_ORDER) if not n.startswith("system."))


async def find_superseded(source: Source, spec: CollectionSpec, batch_size: int) -> dict[str, str]:
    """For a collection with unique keys: losing id → winning id (newest wins)."""
    if not spec.unique_keys:
        return {}
    resolver = UniqueKeyResolver(spec)

    def offer(documents: list[SourceDocument]) -> None:
        for document in documents:
            converted = classify(spec, document, {})
            if converted.row is not None:
                resolver.offer(converted.row)

    async for documents in source.batches(spec.name, batch_size):
        await asyncio.to_thread(offer, documents)
    return resolver.superseded()


class Migration:
    """One run of the migration (see module docstring)."""

    def __init__(
        self,
        source: Source,
        conn: asyncpg.Connection | None,
        options: Options,
        log: ReportLog,
        reporter: Reporter | None = None,
    ) -> None:
        if conn is None and not options.dry_run:
            raise ValueError("a target connection is required unless dry_run")
        self.source = source
        self.conn = conn
        self.options = options
        self.log = log
        self.reporter = reporter or SilentReporter()
        self._dry_parents: dict[str, set[str]] = {}

    async def run(self) -> MigrationResult:
        names = wanted_collections(self.options.collections)
        result = MigrationResult(
            ignored=await check_source(self.source, names, self.options.allow_empty)
        )
        present = await self.source.collections()
        for name in names:
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
        loader = TableLoader(self.conn, spec, self.source.identity)
        await loader.setup()
        checkpoint = (
            None
            if self.options.restart
            else await read_checkpoint(self.conn, self.source.identity, spec.name)
        )
        if checkpoint is not None and not checkpoint.completed:
            result.mode = checkpoint.mode
            progress = checkpoint.progress
            result.resumed_from = progress.position
            result.quarantined_before = progress.quarantined
            last_id = id_from_extended_json(checkpoint.last_id) if checkpoint.last_id else None
            resume = Resume(progress.position, last_id) if progress.position else None
        else:
            result.mode = "copy" if await loader.table_is_empty() else "upsert"
            await loader.begin(result.mode)
            progress, resume = Progress(), None
        self.reporter.collection_started(result)
        if present:
            superseded = await find_superseded(self.source, spec, self.options.batch_size)
            await self._pipeline(spec, loader, result, progress, resume, superseded)
        await loader.complete()

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
            async for documents in self.source.batches(spec.name, self.options.batch_size, resume):
                batch = await asyncio.to_thread(prepare_batch, spec, documents, superseded)
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

    def _before_commit(self, spec: CollectionSpec) -> Any:
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
        self.reporter.batch_done(result, batch, outcome)

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
            batch = await asyncio.to_thread(prepare_batch, spec, documents, superseded)
            orphans = await self._dry_orphans(spec, batch)
            batch.rejected.extend(orphans)
            self._record(spec, result, batch)
            orphan_ids = {o.id for o in orphans}
            ids = [i for i in batch.ids if i not in orphan_ids]
            existing = await self._existing(spec, ids)
            result.would_overwrite += existing
            result.would_insert += len(ids) - existing
            if accepted is not None:
                accepted.update(ids)
            self.reporter.batch_done(result, batch, None)
        self.log.sync()

    @staticmethod
    def _is_parent(spec: CollectionSpec) -> bool:
        return any(s.parent and s.parent[1] == spec.name for s in SPECS.values())

    async def _existing(self, spec: CollectionSpec, ids: list[str]) -> int:
        if self.conn is None or not ids:
            return 0
        return int(
            await self.conn.fetchval(
                f'SELECT count(*) FROM "{spec.name}" WHERE id = ANY($1::text[])', ids
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
