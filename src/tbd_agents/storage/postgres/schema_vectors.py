"""Tables of the vector features: knowledge chunks, memory vectors, collection records, file bytes.

Vectors live beside the rows they belong to and die with them: `knowledge_chunks.item_id` and
`memory_vectors.id` reference their parent with ON DELETE CASCADE, so deleting a knowledge item or
a memory removes its vectors in the same statement. Each embedding column is `vector(384)` (the
size of the default models) with an HNSW cosine index created up front, so there is nothing to
train and no empty-table index to rebuild. `tbd-agents vectors reembed` rebuilds a column and its
index for a model of another size (`halfvec` above 2000 dimensions, pgvector's indexing limit for
`vector`). Full-text search uses a generated `tsvector` column with a GIN index.
"""

from __future__ import annotations

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Computed,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TIMESTAMP, TSVECTOR

from tbd_agents.storage.postgres.schema import metadata

#: Size of the embedding columns the migration creates (BAAI/bge-small-en-v1.5, MiniLM, hashing).
DEFAULT_DIMENSION = 384
#: Largest size an HNSW index accepts on `vector`; above it the column becomes `halfvec`.
MAX_VECTOR_INDEX_DIMENSION = 2000
#: HNSW build parameters (pgvector defaults, which reach recall ≥ 0.95 with ef_search ≥ 100).
HNSW_OPTIONS = {"m": 16, "ef_construction": 64}
#: Text search configuration of the generated tsvector columns (and of the queries).
TS_CONFIG = "english"


def _id() -> Column[str]:
    return Column("id", Text, primary_key=True, server_default=text("gen_random_uuid()::text"))


def _created_at() -> Column[object]:
    return Column(
        "created_at", TIMESTAMP(timezone=True), nullable=False, server_default=text("now()")
    )


def _tsv() -> Column[object]:
    return Column(
        "tsv", TSVECTOR, Computed(f"to_tsvector('{TS_CONFIG}'::regconfig, text)", persisted=True)
    )


def _vector_indexes(table: Table) -> None:
    Index(
        f"idx_{table.name}_embedding",
        table.c.embedding,
        postgresql_using="hnsw",
        postgresql_with=HNSW_OPTIONS,
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    Index(f"idx_{table.name}_tsv", table.c.tsv, postgresql_using="gin")


knowledge_chunks = Table(
    "knowledge_chunks",
    metadata,
    _id(),
    Column(
        "item_id",
        Text,
        ForeignKey("knowledge_items.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("source_id", Text, nullable=False),
    Column("chunk_index", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("start_offset", Integer, nullable=False),
    Column("end_offset", Integer, nullable=False),
    Column("tags", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    _tsv(),
    Column("embedding", Vector(DEFAULT_DIMENSION), nullable=False),
    _created_at(),
    UniqueConstraint("item_id", "chunk_index"),
    CheckConstraint("chunk_index >= 0", name="chunk_index_range"),
    CheckConstraint("0 <= start_offset AND start_offset <= end_offset", name="offsets"),
)
Index("idx_knowledge_chunks_source_id", knowledge_chunks.c.source_id)
Index("idx_knowledge_chunks_tags", knowledge_chunks.c.tags, postgresql_using="gin")
_vector_indexes(knowledge_chunks)

memory_vectors = Table(
    "memory_vectors",
    metadata,
    Column("id", Text, ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True),
    Column("agent_id", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("session_id", Text),
    Column("owner", Text),
    Column("key", Text, nullable=False),
    Column("text", Text, nullable=False),
    _tsv(),
    Column("embedding", Vector(DEFAULT_DIMENSION), nullable=False),
    _created_at(),
)
for _column in ("agent_id", "session_id", "owner"):
    Index(f"idx_memory_vectors_{_column}", memory_vectors.c[_column])
_vector_indexes(memory_vectors)

vector_collections = Table(
    "vector_collections",
    metadata,
    Column("name", Text, primary_key=True),
    Column("model", Text, nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("distance", Text, nullable=False, server_default=text("'cosine'")),
    Column("pending_model", Text),
    Column("pending_dimension", Integer),
    _created_at(),
    Column("updated_at", TIMESTAMP(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("dimension BETWEEN 1 AND 16000", name="dimension_range"),
    CheckConstraint("distance IN ('cosine')", name="distance"),
)

knowledge_files = Table(
    "knowledge_files",
    metadata,
    _id(),
    Column("item_id", Text, ForeignKey("knowledge_items.id", ondelete="CASCADE")),
    Column("file_name", Text),
    Column("content_type", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("data", LargeBinary, nullable=False),
    _created_at(),
    CheckConstraint("size >= 0 AND size = octet_length(data)", name="size"),
)
Index("idx_knowledge_files_item_id", knowledge_files.c.item_id)
Index("idx_knowledge_files_sha256", knowledge_files.c.sha256)

VECTOR_TABLES: dict[str, Table] = {"knowledge_chunks": knowledge_chunks, "memories": memory_vectors}
"""The table holding each vector collection in the pgvector store."""
