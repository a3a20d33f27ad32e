"""Writing batches into PostgreSQL: COPY, staging + upsert, bad-row isolation, checkpoints.

Each batch is one transaction that also moves the collection's checkpoint and records the batch's
quarantined documents (`quarantine.QuarantineRecord`), so a killed run loses at most the batch in
flight and resumes right after the last committed one.

* `copy` mode (the table was empty when the collection started): the batch is COPied straight
  into the table — the fast path of a first load.
* `upsert` mode, and any batch the copy refuses: the batch is COPied into a temporary staging table,
  children whose parent row does not exist are taken out (quarantined as orphans), and the rest is
  written with `INSERT … SELECT … ON CONFLICT (id) DO UPDATE`, which only rewrites rows whose
  content differs — re-running a migration leaves identical rows untouched. Columns the target
  numbers itself (a chat message's `seq`, a session's `message_seq`: `numbering`) are never
  overwritten there.
* If PostgreSQL refuses a staged batch, the batch is split in halves inside savepoints until the
  refused rows are isolated; only those rows are quarantined, with the database's message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]

from tbd_agents.storage.common import VERSION
from tbd_agents.storage.postgres.schema_migration import migration_checkpoints
from tbd_agents.tools.migration.batch import PreparedBatch, Rejection
from tbd_agents.tools.migration.convert import extended_json
from tbd_agents.tools.migration.copybin import one_chunk
from tbd_agents.tools.migration.deferred import ParentCheck
from tbd_agents.tools.migration.quarantine import QuarantineRecord


class LoadSpec(Protocol):
    """What the loader needs of a collection: a `transform.CollectionSpec`, or a
    `tables.TableSpec` (TBD Agents' own non-entity collections, keyed by their primary key)."""

    @property
    def name(self) -> str: ...
    @property
    def columns(self) -> tuple[str, ...]: ...
    @property
    def numbered(self) -> frozenset[str]: ...
    @property
    def parent(self) -> tuple[str, str] | None: ...
    @property
    def key(self) -> tuple[str, ...]: ...


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Progress:
    """A collection's counters as recorded in its checkpoint."""

    position: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0

    def advance(self, read: int, outcome: BatchOutcome, quarantined: int) -> None:
        """Count a batch of `read` documents; set the outcome's position."""
        self.position += read
        outcome.position = self.position
        self.inserted += outcome.inserted
        self.updated += outcome.updated
        self.unchanged += outcome.unchanged
        self.quarantined += quarantined


@dataclass
class BatchOutcome:
    #: Source position after this batch (documents dealt with so far, including earlier runs).
    position: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)


_CHECKPOINT = _q(migration_checkpoints.name)

#: A batch's commit does not wait for its WAL to reach the disk (~1-4 ms per batch here). Safe
#: for the migration: the rows and the checkpoint are in the same transaction, so a server crash
#: loses both together and the run resumes from the last batch that did reach the disk; and the
#: collection's completion (`Checkpoints.complete`, an ordinary commit) flushes every earlier one,
#: so a collection reported complete is durable.
_NO_FLUSH = "SET LOCAL synchronous_commit TO off"


class TableLoader:
    """Loads one collection's batches into its table over one asyncpg connection."""

    def __init__(
        self, conn: asyncpg.Connection, spec: LoadSpec, source: str, run: str = "-"
    ) -> None:
        self.conn = conn
        self.spec = spec
        self.checkpoints = Checkpoints(conn, source, spec.name)
        self.quarantine = QuarantineRecord(conn, spec.name, source, run)
        self.table = _q(spec.name)
        self.stage_name = f"_stage_{spec.name}"
        self.stage = _q(self.stage_name)
        cols = ", ".join(_q(c) for c in spec.columns)
        # `version` is not copied over an existing row: a changed row gets its next version
        # (an ETag read before must not match again), an unchanged one is left alone.
        # Numbered columns (`spec.numbered`) keep the target's value: they are not the source's.
        key = spec.key
        updates = [c for c in spec.columns if c not in (*key, VERSION) and c not in spec.numbered]
        assignments = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in updates)
        if VERSION in spec.columns:
            assignments += f", {_q(VERSION)} = t.{_q(VERSION)} + 1"
        old = ", ".join(f"t.{_q(c)}" for c in updates)
        new = ", ".join(f"EXCLUDED.{_q(c)}" for c in updates)
        self._upsert_sql = (
            f"WITH written AS (INSERT INTO {self.table} AS t ({cols}) SELECT {cols} FROM {self.stage} "
            f"ON CONFLICT ({', '.join(_q(c) for c in key)}) DO UPDATE SET {assignments} WHERE ({old}) IS DISTINCT FROM ({new}) "
            "RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
        )
        self._orphan_sql: str | None = None
        #: Set while the table's foreign key is deferred (`deferred`): the parents are checked here.
        self.parent_check: ParentCheck | None = None
        #: Whether the staging table holds rows of the current transaction (TRUNCATE, which
        #: gives a temporary table a new file, is needed only then).
        self._stage_holds_rows = False
        if spec.parent is not None:
            column, parent = spec.parent
            self._orphan_sql = (
                f"DELETE FROM {self.stage} s WHERE NOT EXISTS (SELECT 1 FROM {_q(parent)} p "
                f"WHERE p.id = s.{_q(column)}) RETURNING s.id, s.{_q(column)}"
            )

    async def setup(self) -> None:
        """Create this connection's staging table (temporary; emptied at every commit)."""
        await self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} (LIKE {self.table}) ON COMMIT DELETE ROWS"
        )
        await self.quarantine.setup()

    async def table_is_empty(self) -> bool:
        return not await self.conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {self.table})")

    # ----------------------------------------------------------------------------- batches

    async def load(
        self,
        batch: PreparedBatch,
        *,
        mode: str,
        progress: Progress,
        before_commit: Callable[[list[Rejection]], None],
    ) -> BatchOutcome:
        """Write `batch` and advance the checkpoint, in one transaction.

        `progress` is updated in place with the batch's counts; `before_commit` receives the rows
        the database refused (orphans, constraint violations) before the transaction commits, so
        they are on record even if the process dies right after the commit."""
        if mode == "copy" and batch.row_count:
            outcome = await self._load_copy(batch, progress, before_commit)
            if outcome is not None:
                return outcome
        outcome = BatchOutcome()
        indices = list(range(batch.row_count))
        async with self.conn.transaction():
            await self.conn.execute(_NO_FLUSH)
            self._stage_holds_rows = False  # ON COMMIT DELETE ROWS emptied it
            if indices:
                await self._upsert(batch, indices, outcome)
            await self._finish(batch, outcome, progress, before_commit)
        return outcome

    async def _load_copy(
        self,
        batch: PreparedBatch,
        progress: Progress,
        before_commit: Callable[[list[Rejection]], None],
    ) -> BatchOutcome | None:
        """COPY the batch straight into the table, in a transaction of its own; None (nothing
        written) if PostgreSQL refuses one of its rows: the caller then stages the batch.

        No savepoint: a refused COPY rolls the whole transaction back, which has done nothing
        else yet (a savepoint per batch cost ~1 ms of server CPU, 2 µs per row at batch 500)."""
        if self.parent_check is not None and not await self.parent_check.all_exist(
            batch.parent_ids
        ):
            return None  # the staged path quarantines the orphans
        outcome = BatchOutcome(inserted=batch.row_count)
        try:
            async with self.conn.transaction():
                await self.conn.execute(_NO_FLUSH)
                try:
                    await self._copy(self.spec.name, batch, None)
                except WRITE_ERRORS as exc:
                    if not row_level(exc):
                        raise
                    raise _CopyRefused from exc
                await self._finish(batch, outcome, progress, before_commit)
        except _CopyRefused:
            return None
        return outcome

    async def _finish(
        self,
        batch: PreparedBatch,
        outcome: BatchOutcome,
        progress: Progress,
        before_commit: Callable[[list[Rejection]], None],
    ) -> None:
        """Count the batch, move the checkpoint and record its quarantine (in its transaction)."""
        outcome.unchanged = (
            batch.row_count - outcome.inserted - outcome.updated - len(outcome.rejected)
        )
        progress.advance(batch.read, outcome, len(batch.rejected) + len(outcome.rejected))
        await self.checkpoints.save(progress, batch.last_id)
        await self.quarantine.write(batch.ids, [*batch.rejected, *outcome.rejected])
        before_commit(outcome.rejected)

    async def _copy(self, table: str, batch: PreparedBatch, indices: Sequence[int] | None) -> None:
        """COPY the batch's rows (those at `indices`, or all) into `table`."""
        if batch.binary is not None:
            await self.conn.copy_to_table(
                table,
                source=one_chunk(batch.binary.payload(indices)),
                columns=self.spec.columns,
                format="binary",
            )
            return
        records = batch.records if indices is None else [batch.records[i] for i in indices]
        await self.conn.copy_records_to_table(table, records=records, columns=self.spec.columns)

    async def _upsert(
        self, batch: PreparedBatch, indices: Sequence[int], outcome: BatchOutcome
    ) -> None:
        """Stage and upsert the rows at `indices`; on refusal, bisect to the refused rows."""
        try:
            async with self.conn.transaction():
                if self._stage_holds_rows:  # only after a bisected half was written
                    await self.conn.execute(f"TRUNCATE {self.stage}")
                await self._copy(self.stage_name, batch, indices)
                orphans = await self.conn.fetch(self._orphan_sql) if self._orphan_sql else []
                inserted, updated = await self.conn.fetchrow(self._upsert_sql)
        except WRITE_ERRORS as exc:
            if not row_level(exc):
                raise
            if len(indices) == 1:
                i = indices[0]
                outcome.rejected.append(
                    Rejection(batch.ids[i], f"database: {_message(exc)}", batch.documents[i])
                )
                return
            half = len(indices) // 2
            await self._upsert(batch, indices[:half], outcome)
            await self._upsert(batch, indices[half:], outcome)
            return
        self._stage_holds_rows = True
        outcome.inserted += inserted
        outcome.updated += updated
        if orphans:
            parent = self.spec.parent[1]  # type: ignore[index]
            position = {batch.ids[i]: i for i in indices}
            for record in orphans:
                i = position[record[0]]
                outcome.rejected.append(
                    Rejection(
                        batch.ids[i], f"orphan: {parent} {record[1]} not found", batch.documents[i]
                    )
                )


class _CopyRefused(Exception):
    """PostgreSQL refused a row of a batch's COPY (the batch is then staged)."""


class Checkpoints:
    """The checkpoint row of one (source, collection), written on the loader's connection."""

    def __init__(self, conn: asyncpg.Connection, source: str, collection: str) -> None:
        self.conn = conn
        self.key = (source, collection)

    async def begin(self, mode: str) -> None:
        """Start the collection from scratch: reset its checkpoint (committed at once)."""
        await self.conn.execute(
            f"INSERT INTO {_CHECKPOINT} (source, collection, mode) VALUES ($1, $2, $3) "
            "ON CONFLICT (source, collection) DO UPDATE SET position = 0, last_id = NULL, "
            "mode = EXCLUDED.mode, inserted = 0, updated = 0, unchanged = 0, quarantined = 0, "
            "started_at = now(), updated_at = now(), completed_at = NULL",
            *self.key,
            mode,
        )

    async def save(self, progress: Progress, last_id: Any) -> None:
        """Record `progress` (inside the batch's transaction)."""
        await self.conn.execute(
            f"UPDATE {_CHECKPOINT} SET position = $3, last_id = $4, inserted = $5, updated = $6, "
            "unchanged = $7, quarantined = $8, updated_at = now() "
            "WHERE source = $1 AND collection = $2",
            *self.key,
            progress.position,
            None if last_id is None else extended_json(last_id),
            progress.inserted,
            progress.updated,
            progress.unchanged,
            progress.quarantined,
        )

    async def complete(self) -> None:
        """Mark the collection read to its end (a synchronous commit: it also makes every batch
        committed before it durable)."""
        await self.conn.execute(
            f"UPDATE {_CHECKPOINT} SET completed_at = now(), updated_at = now() "
            "WHERE source = $1 AND collection = $2",
            *self.key,
        )

    async def read(self) -> Checkpoint | None:
        row = await self.conn.fetchrow(
            "SELECT mode, position, last_id, inserted, updated, unchanged, quarantined, "
            f"completed_at IS NOT NULL AS completed FROM {_CHECKPOINT} "
            "WHERE source = $1 AND collection = $2",
            *self.key,
        )
        if row is None:
            return None
        progress = Progress(
            position=row["position"],
            inserted=row["inserted"],
            updated=row["updated"],
            unchanged=row["unchanged"],
            quarantined=row["quarantined"],
        )
        return Checkpoint(row["mode"], progress, row["last_id"], row["completed"])


@dataclass(frozen=True)
class Checkpoint:
    """A collection's saved state (see `storage/postgres/schema_migration.py`)."""

    mode: str
    progress: Progress
    last_id: str | None
    completed: bool


#: SQLSTATE classes that mean "this row's data", not "this database": data exceptions (22),
#: integrity constraints (23), program limits such as an index row too large (54).
_ROW_LEVEL_CLASSES = ("22", "23", "54")


#: What writing a batch can raise: server errors, and the driver's refusal to encode a value
#: (e.g. OverflowError for a number beyond an INTEGER column's range).
WRITE_ERRORS = (asyncpg.PostgresError, OverflowError, ValueError)


def row_level(exc: BaseException) -> bool:
    """True when `exc` is about the rows written (isolate them), not about the server (stop)."""
    if not isinstance(exc, asyncpg.PostgresError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _ROW_LEVEL_CLASSES


def _message(exc: BaseException) -> str:
    detail = getattr(exc, "detail", None)
    text = str(exc).strip() or type(exc).__name__
    return f"{text} ({detail})" if detail else text
