"""Table of the MongoDB → PostgreSQL migration tool: one checkpoint per (source, collection).

A checkpoint row is written in the same transaction as each batch of rows, so after a crash it
says exactly how far the committed data goes: `position` documents of the source collection have
been dealt with (loaded or quarantined), the last of them having `_id` `last_id` (MongoDB
canonical Extended JSON). `completed_at` is set when the collection was read to its end.
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
