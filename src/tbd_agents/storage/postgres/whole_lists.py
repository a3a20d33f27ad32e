"""Whole lists served again while their rows are unchanged.

A whole list (no `limit`, equality filters only) is built by PostgreSQL as one JSON array
(`statements.direct_whole_list`). Building ~1,000 JSON objects is the costly part; checking
whether any of those rows changed is one cheap aggregate. `WHOLE_LISTS` keeps the arrays this
process built, each with the version of its rows (`whole_list_version`), and the repository
serves one again only when the version it reads in the request's transaction is the same.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

from sqlalchemy import Table, bindparam, func, literal_column, select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement

from tbd_agents.storage.postgres.direct import DirectStatement, compile_direct


@functools.lru_cache(maxsize=256)
def whole_list_version(table: Table, equal: tuple[str, ...], dialect: Dialect) -> DirectStatement:
    """The version of the rows `statements.direct_whole_list` reads: their count, a 64-bit hash summed
    over (id, xmin) — every insert, update and delete changes it, as each row version written
    carries its transaction's new xid — and whether this transaction has written (then its own
    uncommitted rows may be in view and nothing is cached)."""
    conditions = [
        table.c[name] == bindparam(f"p{i}", type_=table.c[name].type)
        for i, name in enumerate(equal)
    ]
    name = table.name  # the schema's own table name, not input
    row_hash: ColumnElement[Any] = literal_column(
        f"hashtextextended({name}.id || ':' || {name}.xmin::text, 0)"
    )
    stmt = (
        select(
            func.count(),
            func.coalesce(func.sum(row_hash), literal_column("0")),
            func.txid_current_if_assigned().is_(None),
        )
        .select_from(table)
        .where(*conditions)
    )
    return compile_direct(stmt, dialect)


class WholeListCache:
    """Whole-list JSON arrays of this process, each kept with the version of its rows
    (`_direct_whole_version`). A list is served from here only when the rows' version, read in
    the same transaction, is still the one the array was built at: one aggregate over the rows'
    ids and xids instead of building ~1,000 JSON objects. Bounded by entries and bytes."""

    def __init__(self, max_entries: int = 64, max_bytes: int = 64 * 2**20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], bytes]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[Any, ...], version: tuple[Any, ...]) -> bytes | None:
        found = self._entries.get(key)
        if found is None or found[0] != version:
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, key: tuple[Any, ...], version: tuple[Any, ...], body: bytes) -> None:
        if len(body) > self.max_bytes // 4:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._entries[key] = (version, body)
        self._bytes += len(body)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= len(dropped)


WHOLE_LISTS = WholeListCache()
