"""Numbering the rows a migration loaded (`Entity.numbering`: a chat message's `seq`).

Documents of the existing TBD Agents have no `seq`: they are loaded with 0 (the model's default,
"not numbered yet"), in whatever order the batches come. Once the collection is loaded,
`number_rows` numbers every session that has such rows, in one statement: its messages get
1, 2, 3… in their original order — the rows without a number first (stored before numbering
existed), then those a database of this hub numbered, in their order; within each, `created_at`,
then `id` (for ObjectId ids, 24-hex text of one length, the order they were inserted in). Then each session's counter (`message_seq`) is raised to its last number,
so the hub numbers the next message after them.

Idempotent: a re-run finds no row at 0 (an upsert never overwrites a numbered column: see
`loader`), so it changes nothing; rows added by a later run are numbered with their session.
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]

from tbd_agents.tools.migration.transform import CollectionSpec


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def number_rows(conn: asyncpg.Connection, spec: CollectionSpec) -> int:
    """Number the rows of `spec`'s table left at 0 (module docstring); how many changed."""
    numbering = spec.model.numbering
    if numbering is None:
        return 0
    child, parent = _q(spec.table.name), _q(numbering.parent)
    number, link, counter = _q(numbering.field), _q(numbering.parent_field), _q(numbering.counter)
    async with conn.transaction():
        status = await conn.execute(
            f"UPDATE {child} AS c SET {number} = o.n FROM ("
            f"SELECT id, row_number() OVER (PARTITION BY {link} ORDER BY {number}, created_at, id)"
            f" AS n FROM {child} WHERE {link} IN "
            f"(SELECT DISTINCT {link} FROM {child} WHERE {number} = 0)"
            f") AS o WHERE c.id = o.id AND c.{number} IS DISTINCT FROM o.n"
        )
        changed = int(status.split()[-1])
        if changed:
            await conn.execute(
                f"UPDATE {parent} AS p SET {counter} = m.last FROM ("
                f"SELECT {link} AS parent_id, max({number}) AS last FROM {child} GROUP BY {link}"
                f") AS m WHERE p.id = m.parent_id AND p.{counter} < m.last"
            )
    return changed
