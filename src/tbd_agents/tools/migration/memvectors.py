"""Memory vectors from the memories' own `embedding` field, for runs without a Qdrant source.

MongoDB memories carry their vector in `embedding`. The migration keeps it in the
`memories.embedding` column, but semantic search reads the pgvector table `memory_vectors`. After
the documents, this step (`embedding:memories`) reads the migrated `memories` rows in id order
(keyset) and writes one `memory_vectors` row per memory, built by
`services.memory.memory_vector_record` exactly as the memory service builds it, with the
"rewrite only what differs" upsert of `vectors.write`, so a re-run writes nothing.

* The vectors are recorded as the configured embedder's space (`PgVectorStore.ensure_collection`,
  before the first write); a table that holds another space stops the run with the message naming
  `tbd-agents vectors reembed`. Vectors are copied, not recomputed: the embedder to configure is
  the model the MongoDB deployment used. When the embedder fell back to hashing, nothing is
  written (the vectors would be labelled with the wrong model): the run says why and how to fix
  it, and needs attention (exit status 1).
* A memory without an embedding (null or empty) gets no vector and is counted as "no embedding".
  One whose embedding has another dimension than the `memory_vectors` column, or a value a vector
  cannot hold (NaN, infinite, beyond float32), gets a warning line and no vector; its row stays.
* A dry run reads the converted source memories instead (the target's rows are not written yet)
  and counts the vectors it would insert or overwrite.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.services.memory import memory_vector_record
from tbd_agents.storage.postgres.schema_vectors import VECTOR_TABLES
from tbd_agents.tools.migration.batch import Warning, classify
from tbd_agents.tools.migration.loader import BatchOutcome
from tbd_agents.tools.migration.report import ReportLog
from tbd_agents.tools.migration.results import BatchStep, CollectionResult, Reporter
from tbd_agents.tools.migration.sources import Source
from tbd_agents.tools.migration.transform import SPECS
from tbd_agents.tools.migration.vectors import column_type, float32, prepare_target, write
from tbd_agents.tools.migration.worker import in_worker
from tbd_agents.vectors.base import MEMORIES

if TYPE_CHECKING:
    from tbd_agents.embeddings.factory import EmbedderChoice

#: The step's name in `--collection`, the summary, the warnings file and verification.
STEP = "embedding:memories"
TABLE = VECTOR_TABLES[MEMORIES.name].name
NO_EMBEDDING = "no embedding"
_FLOAT32_MAX = 3.4028234663852886e38
_COLUMNS = "id, agent_id, scope, session_id, created_by, key, value, embedding"


@dataclass(frozen=True)
class MemoryEmbeddings:
    """The space the copied vectors are recorded as (the configured embedder's), the engine that
    records it on the target, and why the vectors must not be copied (`unusable`), if so."""

    space: EmbeddingSpace
    engine: AsyncEngine
    unusable: str | None = None

    @classmethod
    def from_choice(cls, choice: EmbedderChoice, engine: AsyncEngine) -> MemoryEmbeddings:
        unusable = None
        if choice.fell_back:
            unusable = (
                f"the {choice.requested} embedding model could not be loaded "
                f"({choice.fallback_reason}), and the hashing fallback is not the model that "
                "made these vectors"
            )
        return cls(choice.embedder.space, engine, unusable)


def vector_row(row: Mapping[str, Any], dimension: int) -> tuple[dict[str, Any] | None, str | None]:
    """The `memory_vectors` row of a migrated memory row: (row, None); (None, None) when the
    memory has no embedding; (None, warning) when its embedding cannot go into the column."""
    embedding = row["embedding"]
    if not embedding:
        return None, None
    if len(embedding) != dimension:
        return None, (
            f"embedding of another dimension: {len(embedding)} dimensions, {TABLE} holds "
            f"{dimension}; the memory is migrated without a vector, so semantic search cannot "
            f"find it. If the memories were embedded with a model of {len(embedding)} dimensions, "
            "configure it (EMBEDDING_PROVIDER / EMBEDDING_MODEL / EMBEDDING_DIMENSIONS), run "
            "`tbd-agents vectors reembed memories` to resize the column and migrate again"
        )
    if not all(
        isinstance(v, int | float) and math.isfinite(v) and abs(v) <= _FLOAT32_MAX
        for v in embedding
    ):
        return None, (
            "embedding not storable: NaN, infinite or beyond float32; the memory is migrated "
            "without a vector (saving it again re-embeds it)"
        )
    record = memory_vector_record(
        str(row["id"]),
        agent_id=row["agent_id"],
        scope=row["scope"],
        session_id=row["session_id"],
        owner=row["created_by"],
        key=row["key"],
        value=row["value"],
        vector=embedding,
    )
    out: dict[str, Any] = {"id": record.id, "text": record.text}
    out.update((name, record.payload[name]) for name in MEMORIES.fields)
    out["embedding"] = float32(record.vector)
    return out, None


@dataclass
class EmbeddingBatch:
    """Memory rows turned into vector rows; the others counted or warned about."""

    read: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[Warning] = field(default_factory=list)
    no_embedding: int = 0


def embedding_batch(memories: Sequence[Mapping[str, Any]], dimension: int) -> EmbeddingBatch:
    batch = EmbeddingBatch(read=len(memories))
    for memory in memories:
        row, warning = vector_row(memory, dimension)
        if row is not None:
            batch.rows.append(row)
        elif warning is not None:
            batch.warnings.append(Warning(str(memory["id"]), warning))
        else:
            batch.no_embedding += 1
    return batch


async def target_memories(
    conn: asyncpg.Connection, batch_size: int
) -> AsyncIterator[list[asyncpg.Record]]:
    """The target's memory rows (the columns a vector is built from), in id order, by keyset."""
    last = ""
    while True:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM memories WHERE id > $1 ORDER BY id LIMIT $2", last, batch_size
        )
        if not rows:
            return
        yield rows
        last = rows[-1]["id"]


async def source_memories(
    source: Source, batch_size: int, superseded: Mapping[str, str]
) -> AsyncIterator[list[dict[str, Any]]]:
    """The memories a run would write, converted from the source (duplicates left out)."""
    spec = SPECS["memories"]

    def convert(documents: Sequence[Any]) -> list[dict[str, Any]]:
        rows = (classify(spec, document, superseded).row for document in documents)
        return [dict(row) for row in rows if row is not None]

    async for documents in source.batches(spec.name, batch_size):
        yield await in_worker(convert, documents)


async def column_dimension(conn: asyncpg.Connection) -> tuple[str, int]:
    """The type of `memory_vectors.embedding` (`vector(n)` / `halfvec(n)`) and its n."""
    typ = await column_type(conn, TABLE)
    return typ, int(typ.split("(")[1].rstrip(")"))


class MemoryVectorStep:
    """The `embedding:memories` step of one run (see module docstring)."""

    def __init__(
        self,
        conn: asyncpg.Connection | None,
        embeddings: MemoryEmbeddings,
        log: ReportLog,
        reporter: Reporter,
        *,
        dry_run: bool,
    ) -> None:
        self.conn = conn
        self.embeddings = embeddings
        self.log = log
        self.reporter = reporter
        self.dry_run = dry_run
        #: Set by `run` when vectors were left uncopied because the embedder fell back.
        self.problem: str | None = None

    async def run(
        self, memories: AsyncIterator[Sequence[Mapping[str, Any]]], total: int
    ) -> CollectionResult:
        """Copy (dry run: count) the vectors of `memories`, batch by batch."""
        result = CollectionResult(name=STEP, total=total)
        started = time.perf_counter()
        self.reporter.collection_started(result)
        vector_type, dimension = "", self.embeddings.space.dimension
        if self.conn is not None:
            vector_type, dimension = await column_dimension(self.conn)
        copyable = 0
        recorded = False
        async for memory_rows in memories:
            batch = embedding_batch(memory_rows, dimension)
            copyable += len(batch.rows)
            outcome = None
            if self.embeddings.unusable is None and not self.dry_run:
                if batch.rows and not recorded:
                    await prepare_target(
                        self.embeddings.engine, MEMORIES.name, self.embeddings.space
                    )
                    recorded = True
                outcome = await self._write(result, batch, vector_type)
            else:
                self.log.warned(STEP, batch.warnings)
                if self.embeddings.unusable is None:
                    await self._count(result, batch)
            result.read += batch.read
            result.warnings.update(w.message.split(":", 1)[0] for w in batch.warnings)
            if batch.no_embedding:
                result.skipped[NO_EMBEDDING] += batch.no_embedding
            self.reporter.batch_done(result, BatchStep(batch.read, len(batch.rows), 0, outcome))
        self.log.sync()
        if self.embeddings.unusable is not None and copyable:
            self.problem = self._problem(copyable)
        result.seconds = time.perf_counter() - started
        self.reporter.collection_done(result)
        return result

    async def _write(
        self, result: CollectionResult, batch: EmbeddingBatch, vector_type: str
    ) -> BatchOutcome:
        assert self.conn is not None
        async with self.conn.transaction():
            inserted, updated = await write(self.conn, MEMORIES.name, batch.rows, vector_type)
            self.log.warned(STEP, batch.warnings)
            self.log.sync()
        outcome = BatchOutcome(
            result.read + batch.read, inserted, updated, len(batch.rows) - inserted - updated
        )
        result.inserted += inserted
        result.updated += updated
        result.unchanged += outcome.unchanged
        return outcome

    async def _count(self, result: CollectionResult, batch: EmbeddingBatch) -> None:
        """Dry run: how many of the batch's vectors would be new, how many overwrite a row."""
        existing = 0
        if self.conn is not None and batch.rows:
            existing = int(
                await self.conn.fetchval(
                    f"SELECT count(*) FROM {TABLE} WHERE id = ANY($1::text[])",
                    [r["id"] for r in batch.rows],
                )
            )
        result.would_overwrite += existing
        result.would_insert += len(batch.rows) - existing

    def _problem(self, copyable: int) -> str:
        done = "would not be copied" if self.dry_run else "were not copied"
        return (
            f"{STEP}: {copyable:,} memory vectors {done} into {TABLE}: "
            f"{self.embeddings.unusable}. Until they are, semantic memory search does not find "
            "these memories. To fix: install the embedding model's package and cache the model "
            "(or set EMBEDDING_ALLOW_DOWNLOAD=true once), or set EMBEDDING_PROVIDER / "
            "EMBEDDING_MODEL / EMBEDDING_DIMENSIONS to the model that made the memories' "
            "embeddings (EMBEDDING_PROVIDER=hashing if it was the hashing embedder); then run "
            "the migration again (`--collection memories` is enough)."
        )
