"""Verification of TBD Agents' own non-entity collections (`tables.TABLE_SPECS`) by content.

Each batch of source documents is converted by the documented rules (`tables.convert_row`: the
column of each field, picodollars as dollars, `_id` as the key column where the table keeps it),
the target rows with the same keys are read in one query, and every column is compared, by its
canonical form (`rows.canonical_text`: equal numbers, instants and JSON values compare equal
whatever their representation). A document without a row — it could not be converted, or its
row is absent — is either recorded by the migration as quarantined (expected to be absent, and
counted with its reason) or missing. The keys seen go to a temporary table, which gives the ids
the source holds twice and the number of target rows no document has (extra). A reference the
migration cleared (`cleared`: its parent is not in PostgreSQL) is expected to be NULL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tbd_agents.tools.migration.batch import Rejection
from tbd_agents.tools.migration.bsonio import SourceDocument
from tbd_agents.tools.migration.compare import Difference, shown
from tbd_agents.tools.migration.quarantine import key_of, recorded
from tbd_agents.tools.migration.rows import canonical_text, parse_json
from tbd_agents.tools.migration.tables import Row, TableSpec
from tbd_agents.tools.migration.tablestep import convert_batch, key_arrays, key_query
from tbd_agents.tools.migration.worker import in_worker

_SEEN = "_verify_table_seen"


@dataclass
class _Compared:
    """One batch: keys of the rows found, documents without a row, rows that differ."""

    seen: list[str] = field(default_factory=list)
    absent: dict[str, str] = field(default_factory=dict)  # quarantine key → what is known
    differing: dict[str, list[Difference]] = field(default_factory=dict)


def _canonical(value: Any) -> str:
    if isinstance(value, date) and not isinstance(value, datetime):
        value = value.isoformat()
    return canonical_text({"v": value})


def compare_row(spec: TableSpec, expected: Row, found: Mapping[str, Any]) -> list[Difference]:
    """The columns whose target value is not the expected one (a cleared reference: NULL)."""
    differences = []
    cleared = {column for column, _ in spec.cleared}
    for column in spec.columns:
        want = expected[column]
        have = found[column]
        if column in spec.json_columns and isinstance(have, str):
            have = parse_json(have)
        if column in cleared and have is None:
            continue
        if _canonical(want) != _canonical(have):
            differences.append(Difference(column, shown(want), shown(have)))
    return differences


class TableVerifier:
    """Checks the `TableSpec` collections of one source against the target."""

    def __init__(
        self,
        source: Any,
        conn: asyncpg.Connection,
        reader: asyncpg.Connection,
        *,
        batch_size: int,
        show: int,
    ) -> None:
        self.source = source
        self.conn = conn
        self.reader = reader
        self.batch_size = batch_size
        self.show = show

    async def run(self, spec: TableSpec, present: bool, check: Any) -> None:
        """Fill `check` (a `verify.CollectionCheck`) for `spec`'s collection."""
        await self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_SEEN} (key text); TRUNCATE {_SEEN}"
        )
        columns = ", ".join(f'"{c}"' for c in spec.columns)
        async with self.reader.transaction(readonly=True, isolation="repeatable_read"):
            check.target_rows = await self.reader.fetchval(f'SELECT count(*) FROM "{spec.name}"')
            if present:
                async with aclosing(self.source.batches(spec.name, self.batch_size)) as batches:
                    async for documents in batches:
                        check.source_documents += len(documents)
                        found = await self._batch(spec, documents, columns)
                        await self._account(spec.name, check, found)
        counts = await self.conn.fetchrow(
            f"SELECT count(DISTINCT key) AS distinct_keys, (SELECT count(*) FROM (SELECT key "
            f"FROM {_SEEN} GROUP BY key HAVING count(*) > 1) d) AS duplicates FROM {_SEEN}"
        )
        check.extra = max(0, check.target_rows - counts["distinct_keys"])
        check.duplicate_ids = counts["duplicates"]
        check.expected = check.source_documents - sum(check.excluded.values())

    async def _batch(
        self, spec: TableSpec, documents: Sequence[SourceDocument], columns: str
    ) -> _Compared:
        converted = await in_worker(convert_batch, spec, documents)
        out = _Compared()
        expected: list[tuple[str, Row]] = []
        for document, outcome in converted:
            key = key_of(Rejection(outcome.id, "", document))
            if outcome.row is None:
                out.absent[key] = outcome.problem or "not convertible"
            else:
                expected.append((key, outcome.row))
        rows = [row for _, row in expected]
        records = (
            await self.reader.fetch(key_query(spec, columns), *key_arrays(spec, rows))
            if rows
            else []
        )
        by_key = {spec.key_text(r): r for r in records}
        for key, row in expected:
            found = by_key.get(spec.key_text(row))
            if found is None:
                out.absent[key] = "no row"
                continue
            out.seen.append(spec.key_text(row))
            differences = compare_row(spec, row, found)
            if differences:
                out.differing[key] = differences
        return out

    async def _account(self, collection: str, check: Any, found: _Compared) -> None:
        await account_batch(
            self.conn, _SEEN, self.show, collection, check, found.seen, found.differing,
            found.absent,
        )  # fmt: skip


async def account_batch(
    conn: asyncpg.Connection,
    seen_table: str,
    show: int,
    collection: str,
    check: Any,
    seen: Sequence[str],
    differing: Mapping[str, list[Difference]],
    absent: Mapping[str, str | None],
) -> None:
    """Count one compared batch into `check` (a `verify.CollectionCheck`; this and `verify`
    share it): the keys seen (into `seen_table`), the differences, and the absent documents
    (key → what is known of it, or None) split into quarantined, as the migration recorded
    them, and missing. At most `show` ids of each kind are listed."""
    if seen:
        await conn.copy_records_to_table(seen_table, records=[(k,) for k in seen])
    for key, differences in differing.items():
        check.differing += 1
        if len(check.differing_ids) < show:
            check.differing_ids.append(key)
            check.differences[key] = differences
    entries = await recorded(conn, collection, list(absent))
    for key, what in absent.items():
        entry = entries.get(key)
        if entry is not None:
            check.excluded[entry.category] += 1
            check.reasons.setdefault(entry.category, entry.reason)
            continue
        check.missing += 1
        if len(check.missing_ids) < show:
            check.missing_ids.append(key if what is None else f"{key} ({what})")
