"""The quarantine record on the target: which source documents a run did not load, and why.

The quarantine file (`report.ReportLog`) keeps the documents themselves for the user; this table
(`migration_quarantine`, one row per collection and document) is what `verify` reads to tell a
document that was quarantined — expected to be absent, and listed with its reason — from a row
that went missing. Rows are written in the transaction of the batch their documents belong to; a
document that a later run loads loses its row in that run's transaction.

A document without a usable `_id` (or that is not valid BSON) is keyed by `#` and a digest of its
content, so a re-run records it once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]

from tbd_agents.storage.postgres.schema_migration import migration_quarantine
from tbd_agents.tools.migration.batch import Rejection
from tbd_agents.tools.migration.bsonio import Undecodable
from tbd_agents.tools.migration.convert import extended_json

TABLE = migration_quarantine.name

_RECORD = (
    f"INSERT INTO {TABLE} (collection, key, id, category, reason, source, run) "
    "SELECT $1, k, i, c, r, $2, $3 FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) "
    "AS x(k, i, c, r) "
    "ON CONFLICT (collection, key) DO UPDATE SET id = EXCLUDED.id, category = EXCLUDED.category, "
    "reason = EXCLUDED.reason, source = EXCLUDED.source, run = EXCLUDED.run, recorded_at = now()"
)
_CLEAR = f"DELETE FROM {TABLE} WHERE collection = $1 AND key = ANY($2::text[])"


def key_of(rejection: Rejection) -> str:
    """The record's key: the document id, or `#` + a digest of a document without one."""
    if rejection.id is not None:
        return rejection.id
    document = rejection.document
    raw = (
        document.raw
        if isinstance(document, Undecodable)
        else extended_json(document).encode("utf-8", "surrogatepass")
    )
    return "#" + hashlib.blake2b(raw, digest_size=16).hexdigest()


class QuarantineRecord:
    """Writes one collection's quarantine rows on the loader's connection (inside its
    transactions)."""

    def __init__(self, conn: asyncpg.Connection, collection: str, source: str, run: str) -> None:
        self.conn = conn
        self.collection = collection
        self.source = source
        self.run = run
        #: Whether rows of earlier runs may exist for this collection (then loaded ids are
        #: cleared batch by batch; on a first load there is nothing to clear).
        self.had_rows = True

    async def setup(self) -> None:
        self.had_rows = bool(
            await self.conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE collection = $1)", self.collection
            )
        )

    async def write(self, loaded: Sequence[str], rejected: Iterable[Rejection]) -> None:
        """Forget the documents loaded in this batch, record the rejected ones."""
        if self.had_rows and loaded:
            await self.conn.execute(_CLEAR, self.collection, list(loaded))
        rows = [(key_of(r), r.id, r.category, r.reason) for r in rejected]
        if rows:
            keys, ids, categories, reasons = (list(c) for c in zip(*rows, strict=True))
            await self.conn.execute(
                _RECORD, self.collection, self.source, self.run, keys, ids, categories, reasons
            )


@dataclass(frozen=True)
class Recorded:
    """A quarantine row as verification reads it."""

    id: str | None
    category: str
    reason: str


async def recorded(
    conn: asyncpg.Connection, collection: str, ids: Sequence[str]
) -> dict[str, Recorded]:
    """The quarantine rows of `ids` in `collection` (by id)."""
    if not ids:
        return {}
    rows = await conn.fetch(
        f"SELECT key, id, category, reason FROM {TABLE} WHERE collection = $1 "
        "AND key = ANY($2::text[])",
        collection,
        list(ids),
    )
    return {r["key"]: Recorded(r["id"], r["category"], r["reason"]) for r in rows}


async def recorded_without_id(conn: asyncpg.Connection, collection: str) -> dict[str, Recorded]:
    """The quarantine rows of `collection`'s documents that have no usable id (by key)."""
    rows = await conn.fetch(
        f"SELECT key, id, category, reason FROM {TABLE} WHERE collection = $1 AND id IS NULL",
        collection,
    )
    return {r["key"]: Recorded(r["id"], r["category"], r["reason"]) for r in rows}
