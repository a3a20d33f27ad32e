"""Tables of the MongoDB → PostgreSQL migration tool: one checkpoint per (source, collection), and
the documents a run quarantined.

A checkpoint row is written in the same transaction as each batch of rows, so after a crash it
says exactly how far the committed data goes: `position` documents of the source collection have
been dealt with (loaded or quarantined), the last of them having `_id` `last_id` (MongoDB
canonical Extended JSON). `completed_at` is set when the collection was read to its end.

`migration_quarantine` holds one row per source document that is not in its table, with the
reason (the quarantine file holds the documents themselves). It is written in the transaction of
the batch the document belongs to, and a document that a later run migrates loses its row, so
`verify` can tell a document that was quarantined (expected to be absent, and listed) from a
row that went missing. `key` is the document's id, or `#` and a digest of the document for one
without a usable `_id`.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Table, Text, text
from sqlalchemy.dialects.postgresql import TIMESTAMP

from tbd_agents.storage.postgres.schema import metadata

#: How a collection is being loaded: straight COPY into a table that was empty when the run
#: started ("copy"), or COPY into a staging table then INSERT … ON CONFLICT (id) ("upsert").
LOAD_MODES = ("copy", "upsert")

migration_checkpoints = Table(
    "migration_checkpoints",
    metadata,
    Column("source", Text, primary_key=True),
    Column("collection", Text, primary_key=True),
    Column("position", BigInteger, nullable=False, server_default=text("0")),
    Column("last_id", Text, nullable=True),
    Column("mode", Text, nullable=False),
    Column("inserted", BigInteger, nullable=False, server_default=text("0")),
    Column("updated", BigInteger, nullable=False, server_default=text("0")),
    Column("unchanged", BigInteger, nullable=False, server_default=text("0")),
    Column("quarantined", BigInteger, nullable=False, server_default=text("0")),
    Column("started_at", TIMESTAMP(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", TIMESTAMP(timezone=True), nullable=False, server_default=text("now()")),
    Column("completed_at", TIMESTAMP(timezone=True), nullable=True),
    CheckConstraint("mode IN ('copy', 'upsert')", name="mode"),
    CheckConstraint("position >= 0", name="position_range"),
)

migration_quarantine = Table(
    "migration_quarantine",
    metadata,
    Column("collection", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("id", Text, nullable=True),
    Column("category", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("run", Text, nullable=False),
    Column("recorded_at", TIMESTAMP(timezone=True), nullable=False, server_default=text("now()")),
)
