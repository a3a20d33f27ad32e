"""Vector tables: knowledge chunks, memory vectors, vector collections, knowledge files.

Embedding columns are vector(384) with HNSW cosine indexes created up front (nothing to train);
chunks and memory vectors cascade from their parent rows; tsvector columns are generated (STORED)
and GIN-indexed for full-text search.

Revision ID: ab052ede29df
Revises: 7b5e0d4c1a26
Create Date: 2026-11-25 20:32:41.669365+00:00
"""

from collections.abc import Sequence

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tbd_agents.migrations.options import documents_only

# revision identifiers, used by Alembic.
revision: str = "ab052ede29df"
down_revision: str | Sequence[str] | None = "7b5e0d4c1a26"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if documents_only():  # needs pgvector: nothing to do on a documents-only server
        return
    op.create_table(
        "vector_collections",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("distance", sa.Text(), server_default=sa.text("'cosine'"), nullable=False),
        sa.Column("pending_model", sa.Text(), nullable=True),
        sa.Column("pending_dimension", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("distance IN ('cosine')", name=op.f("ck_vector_collections_distance")),
        sa.CheckConstraint(
            "dimension BETWEEN 1 AND 16000", name=op.f("ck_vector_collections_dimension_range")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_vector_collections")),
    )
    op.create_table(
        "memory_vectors",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("agent_id", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "tsv",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('english'::regconfig, text)", persisted=True),
            nullable=True,
        ),
        sa.Column("embedding", pgvector.sqlalchemy.vector.VECTOR(dim=384), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["id"], ["memories.id"], name=op.f("fk_memory_vectors_id_memories"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_vectors")),
    )
    op.create_index("idx_memory_vectors_agent_id", "memory_vectors", ["agent_id"], unique=False)
    op.create_index(
        "idx_memory_vectors_embedding",
        "memory_vectors",
        ["embedding"],
        unique=False,
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    op.create_index("idx_memory_vectors_owner", "memory_vectors", ["owner"], unique=False)
    op.create_index("idx_memory_vectors_session_id", "memory_vectors", ["session_id"], unique=False)
    op.create_index(
        "idx_memory_vectors_tsv", "memory_vectors", ["tsv"], unique=False, postgresql_using="gin"
    )
    op.create_table(
        "knowledge_chunks",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("start_offset", sa.Integer(), nullable=False),
        sa.Column("end_offset", sa.Integer(), nullable=False),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column(
            "tsv",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('english'::regconfig, text)", persisted=True),
            nullable=True,
        ),
        sa.Column("embedding", pgvector.sqlalchemy.vector.VECTOR(dim=384), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "0 <= start_offset AND start_offset <= end_offset",
            name=op.f("ck_knowledge_chunks_offsets"),
        ),
        sa.CheckConstraint("chunk_index >= 0", name=op.f("ck_knowledge_chunks_chunk_index_range")),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["knowledge_items.id"],
            name=op.f("fk_knowledge_chunks_item_id_knowledge_items"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_chunks")),
        sa.UniqueConstraint(
            "item_id", "chunk_index", name=op.f("uq_knowledge_chunks_item_id_chunk_index")
        ),
    )
    op.create_index(
        "idx_knowledge_chunks_embedding",
        "knowledge_chunks",
        ["embedding"],
        unique=False,
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    op.create_index(
        "idx_knowledge_chunks_source_id", "knowledge_chunks", ["source_id"], unique=False
    )
    op.create_index(
        "idx_knowledge_chunks_tags",
        "knowledge_chunks",
        ["tags"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_index(
        "idx_knowledge_chunks_tsv",
        "knowledge_chunks",
        ["tsv"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_table(
        "knowledge_files",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("item_id", sa.Text(), nullable=True),
        sa.Column("file_name", sa.Text(), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "size >= 0 AND size = octet_length(data)", name=op.f("ck_knowledge_files_size")
        ),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["knowledge_items.id"],
            name=op.f("fk_knowledge_files_item_id_knowledge_items"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_files")),
    )
    op.create_index("idx_knowledge_files_item_id", "knowledge_files", ["item_id"], unique=False)
    op.create_index("idx_knowledge_files_sha256", "knowledge_files", ["sha256"], unique=False)


def downgrade() -> None:
    if documents_only():
        return
    op.drop_index("idx_knowledge_files_sha256", table_name="knowledge_files")
    op.drop_index("idx_knowledge_files_item_id", table_name="knowledge_files")
    op.drop_table("knowledge_files")
    op.drop_index("idx_knowledge_chunks_tsv", table_name="knowledge_chunks", postgresql_using="gin")
    op.drop_index(
        "idx_knowledge_chunks_tags", table_name="knowledge_chunks", postgresql_using="gin"
    )
    op.drop_index("idx_knowledge_chunks_source_id", table_name="knowledge_chunks")
    op.drop_index(
        "idx_knowledge_chunks_embedding",
        table_name="knowledge_chunks",
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    op.drop_table("knowledge_chunks")
    op.drop_index("idx_memory_vectors_tsv", table_name="memory_vectors", postgresql_using="gin")
    op.drop_index("idx_memory_vectors_session_id", table_name="memory_vectors")
    op.drop_index("idx_memory_vectors_owner", table_name="memory_vectors")
    op.drop_index(
        "idx_memory_vectors_embedding",
        table_name="memory_vectors",
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    op.drop_index("idx_memory_vectors_agent_id", table_name="memory_vectors")
    op.drop_table("memory_vectors")
    op.drop_table("vector_collections")
