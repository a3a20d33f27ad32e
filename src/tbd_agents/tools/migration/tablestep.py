"""Migrating one of TBD Agents' own non-entity collections (`tables.TABLE_SPECS`).

The same guarantees as the 15 collections, through the same parts: each batch is converted in
the worker thread (`tables.convert_row`), its rows whose parent is not in PostgreSQL are
quarantined as orphans (`cleared` references set to NULL, with a warning), and the rest is
written by `loader.TableLoader` — COPY into an empty table, else staged and upserted on the
table's primary key (only rows whose content differs are rewritten) — in one transaction with
the checkpoint and the quarantine record, so a killed run resumes after its last batch.

A dry run converts and checks the same way, and asks the target only which keys and parents
exist. After `usage_daily`, `usage_monthly` and `usage_rollup` are rebuilt from it (on
PostgreSQL they always equal its sums; MongoDB has neither).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.dialects import postgresql

from tbd_agents.observability.usage.mongo import DAILY
from tbd_agents.observability.usage.records import COLUMN
from tbd_agents.observability.usage.rollup import ALL
from tbd_agents.tools.migration.batch import PreparedBatch, Rejection, Warning, document_id
from tbd_agents.tools.migration.bsonio import SourceDocument, Undecodable
from tbd_agents.tools.migration.loader import Checkpoints, Progress, TableLoader
from tbd_agents.tools.migration.report import ReportLog
from tbd_agents.tools.migration.results import BatchStep, CollectionResult, Reporter
from tbd_agents.tools.migration.sources import Resume, Source
from tbd_agents.tools.migration.tables import (
    TABLE_PARENTS,
    ConvertedRow,
    Row,
    TableSpec,
    convert_row,
    to_record,
)
from tbd_agents.tools.migration.worker import in_worker

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

Start = Callable[
    [Checkpoints, CollectionResult, Callable[[], Awaitable[bool]]],
    Awaitable[tuple[Progress, Resume | None]],
]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def convert_batch(
    spec: TableSpec, documents: Sequence[SourceDocument]
) -> list[tuple[SourceDocument, ConvertedRow]]:
    """Convert every document of a batch (pure; run in the worker thread)."""
    out = []
    for document in documents:
        if isinstance(document, Undecodable):
            converted = ConvertedRow(
                id=None, problem=f"undecodable: not valid BSON ({document.error})"
            )
        else:
            converted = convert_row(spec, document)
        out.append((document, converted))
    return out


def key_query(spec: TableSpec, select: str) -> str:
    """`select` (columns of the table `t`) for the rows whose key is in the arrays $1..$n."""
    columns = spec.table.columns
    arrays = ", ".join(
        f"${i}::{columns[c].type.compile(dialect=_DIALECT)}[]" for i, c in enumerate(spec.key, 1)
    )
    names = ", ".join(_q(c) for c in spec.key)
    return f"SELECT {select} FROM {_q(spec.name)} t JOIN unnest({arrays}) AS k({names}) USING ({names})"


def key_arrays(spec: TableSpec, rows: Iterable[Row]) -> list[list[Any]]:
    """The keys of `rows`, one array per key column (the arguments of `key_query`)."""
    rows = list(rows)
    return [[row[c] for row in rows] for c in spec.key]


class TableStep:
    """Migrates the collections of `TABLE_SPECS` for one run (see module docstring)."""

    def __init__(
        self,
        source: Source,
        conn: asyncpg.Connection | None,
        *,
        batch_size: int,
        dry_run: bool,
        log: ReportLog,
        reporter: Reporter,
        start: Start,
        dry_parents: dict[str, set[str]],
    ) -> None:
        """`start`: where a collection starts (the runner's checkpoint logic). `dry_parents`:
        ids a dry run would have written, by table (read for parents, filled for children)."""
        self.source = source
        self.conn = conn
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.log = log
        self.reporter = reporter
        self.start = start
        self.dry_parents = dry_parents

    async def run(self, spec: TableSpec, present: bool) -> CollectionResult:
        result = CollectionResult(name=spec.name)
        started = time.perf_counter()
        result.total = await self.source.count(spec.name) if present else 0
        if self.dry_run:
            await self._dry(spec, result, present)
        else:
            await self._load(spec, result, present)
        result.seconds = time.perf_counter() - started
        self.reporter.collection_done(result)
        return result

    async def _load(self, spec: TableSpec, result: CollectionResult, present: bool) -> None:
        assert self.conn is not None
        loader = TableLoader(self.conn, spec, self.source.identity, self.log.run_id)
        await loader.setup()
        progress, resume = await self.start(loader.checkpoints, result, loader.table_is_empty)
        self.reporter.collection_started(result)

        def write(rejected: list[Rejection]) -> None:
            self.log.rejected(spec.name, rejected)
            self.log.sync()

        if present:
            async for documents in self.source.batches(spec.name, self.batch_size, resume):
                batch = await self._prepare(spec, documents)
                self._record(spec, result, batch)
                outcome = await loader.load(
                    batch, mode=result.mode, progress=progress, before_commit=write
                )
                result.inserted += outcome.inserted
                result.updated += outcome.updated
                result.unchanged += outcome.unchanged
                result.quarantined.update(r.category for r in outcome.rejected)
                rejected = len(batch.rejected) + len(outcome.rejected)
                self.reporter.batch_done(
                    result, BatchStep(batch.read, batch.row_count, rejected, outcome)
                )
        if spec.name == DAILY:
            await rebuild_usage_aggregates(self.conn)
        await loader.checkpoints.complete()

    async def _dry(self, spec: TableSpec, result: CollectionResult, present: bool) -> None:
        self.reporter.collection_started(result)
        if not present:
            return
        accepted = (
            self.dry_parents.setdefault(spec.name, set()) if spec.name in TABLE_PARENTS else None
        )
        async for documents in self.source.batches(spec.name, self.batch_size):
            batch = await self._prepare(spec, documents)
            self._record(spec, result, batch)
            existing = 0
            if self.conn is not None and batch.rows:
                query = key_query(spec, "count(*)")
                existing = int(await self.conn.fetchval(query, *key_arrays(spec, batch.rows)))
            result.would_overwrite += existing
            result.would_insert += batch.row_count - existing
            if accepted is not None:
                accepted.update(batch.ids)
            self.reporter.batch_done(
                result, BatchStep(batch.read, batch.row_count, len(batch.rejected))
            )
        self.log.sync()

    async def _prepare(self, spec: TableSpec, documents: list[SourceDocument]) -> _Batch:
        """Convert a batch, check its parents, and encode the rows to load."""
        converted = await in_worker(convert_batch, spec, documents)
        batch = _Batch(read=len(documents), last_id=document_id(documents[-1]))
        accepted: list[tuple[SourceDocument, Row, str]] = []
        for document, outcome in converted:
            batch.extra_dropped.update(outcome.dropped)
            if outcome.row is None or outcome.id is None:
                reason = outcome.problem or "not convertible"
                batch.rejected.append(Rejection(outcome.id, reason, document))
                continue
            if outcome.warning is not None:
                batch.warnings.append(Warning(outcome.id, outcome.warning))
            accepted.append((document, outcome.row, outcome.id))
        rows = [row for _, row, _ in accepted]
        missing = await self._missing_parents(spec, rows)
        #: Key → the document holding it in this batch (our MongoDB backend keeps these keys
        #: unique; one upsert statement cannot write a key twice).
        holders: dict[str, str] = {}
        for document, row, doc_id in accepted:
            holder = holders.setdefault(spec.key_text(row), doc_id)
            if holder != doc_id:
                batch.rejected.append(
                    Rejection(
                        doc_id, f"duplicate key, same {', '.join(spec.key)} as {holder}", document
                    )
                )
                continue
            orphan = next(
                (
                    f"orphan: {p} {row[c]} not found"
                    for c, p in spec.parents
                    if row[c] in missing[p]
                ),
                None,
            )
            if orphan is not None:
                batch.rejected.append(Rejection(doc_id, orphan, document))
                continue
            for column, parent in spec.cleared:
                if row[column] is not None and row[column] in missing[parent]:
                    batch.warnings.append(
                        Warning(
                            doc_id,
                            f"{column} cleared: {parent} {row[column]} not found (as ON DELETE "
                            "SET NULL does)",
                        )
                    )
                    row[column] = None
            batch.records.append(to_record(spec, row))
            batch.documents.append(document)
            batch.ids.append(doc_id)
            batch.rows.append(row)
        return batch

    async def _missing_parents(self, spec: TableSpec, rows: list[Row]) -> dict[str, set[str]]:
        """Per parent table, the referenced ids that are neither in the target nor (dry run)
        among the rows the run would have written."""
        missing: dict[str, set[str]] = {}
        for column, parent in (*spec.parents, *spec.cleared):
            known = self.dry_parents.get(parent, set()) if self.dry_run else set()
            wanted = {row[column] for row in rows if row[column] is not None} - known
            found: set[str] = set()
            if wanted and self.conn is not None:
                records = await self.conn.fetch(
                    f"SELECT id FROM {_q(parent)} WHERE id = ANY($1::text[])", sorted(wanted)
                )
                found = {r["id"] for r in records}
            missing.setdefault(parent, set()).update(wanted - found)
        return missing

    def _record(self, spec: TableSpec, result: CollectionResult, batch: _Batch) -> None:
        result.read += batch.read
        result.quarantined.update(r.category for r in batch.rejected)
        result.warnings.update(w.message.split(":", 1)[0] for w in batch.warnings)
        result.extra_dropped.update(batch.extra_dropped)
        self.log.rejected(spec.name, batch.rejected)
        self.log.warned(spec.name, batch.warnings)


class _Batch(PreparedBatch):
    """A prepared batch that also keeps its rows as dicts (the dry run's key lookups)."""

    def __init__(self, read: int, last_id: Any) -> None:
        super().__init__(read=read, last_id=last_id)
        self.rows: list[Row] = []


#: usage_rollup's dimensions and the usage_daily / usage_monthly column of each ('' for `all`).
_ROLLUP = {ALL: "''", **COLUMN}
_DIMS = ", ".join(COLUMN.values())
_SUMS = "sum(calls), sum(input_tokens), sum(output_tokens), sum(cost_usd)"


async def rebuild_usage_aggregates(conn: asyncpg.Connection) -> None:
    """`usage_monthly` and `usage_rollup` computed again from `usage_daily` (one transaction)."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE usage_daily IN SHARE MODE")
        await conn.execute("DELETE FROM usage_monthly")
        await conn.execute(
            f"INSERT INTO usage_monthly (month, {_DIMS}, calls, input_tokens, output_tokens, "
            f"cost_usd) SELECT date_trunc('month', day)::date, {_DIMS}, {_SUMS} FROM usage_daily "
            f"GROUP BY 1, {_DIMS}"
        )
        await conn.execute("DELETE FROM usage_rollup")
        for grain, table, period in (
            ("day", "usage_daily", "day"),
            ("month", "usage_monthly", "month"),
        ):
            for dimension, column in _ROLLUP.items():
                keys = period if dimension == "all" else f"{period}, {column}"
                await conn.execute(
                    "INSERT INTO usage_rollup (dimension, grain, period, key, calls, input_tokens, "
                    f"output_tokens, cost_usd) SELECT '{dimension}', '{grain}', {period}, "
                    f"{column}, {_SUMS} FROM {table} GROUP BY {keys}"
                )
