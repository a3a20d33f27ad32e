"""The statements `PostgresRepository` runs, built (and, for the `direct` path, compiled) once
per table and shape: a row by id, insert, versioned update, the whole-list JSON array and the
cascading delete."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    Select,
    Table,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType

from tbd_agents.storage.postgres.direct import DirectStatement, compile_direct
from tbd_agents.storage.postgres.json_rows import json_array_statement, json_document
from tbd_agents.storage.postgres.schema import code_cascades
from tbd_agents.storage.postgres.tables import TABLES  # every table, extra modules included
from tbd_agents.storage.protocol import Sort


@functools.cache
def result_columns(table: Table) -> tuple[ColumnElement[Any], ...]:
    """The table's columns for SELECT lists. asyncpg already returns arrays as Python lists, so
    ARRAY columns skip SQLAlchemy's per-element result processing (40 % of the time of listing
    200 agents, measured)."""
    return tuple(
        type_coerce(c, NullType()).label(c.name) if isinstance(c.type, ARRAY) else c
        for c in table.c
    )


@functools.cache
def select_by_id(table: Table) -> Select[Any]:
    """SELECT of one row by id, built once per table (its cache key is then cheap to compute)."""
    return (
        select(*result_columns(table))
        .select_from(table)
        .where(table.c.id == bindparam("record_id", type_=table.c.id.type))
    )


@functools.cache
def insert_returning(table: Table) -> Executable:
    """INSERT … ON CONFLICT DO NOTHING RETURNING the row, built once per table; the VALUES come
    from the parameters of each execution."""
    return pg_insert(table).on_conflict_do_nothing().returning(table)


@functools.cache
def direct_by_id(table: Table, dialect: Dialect) -> DirectStatement:
    return compile_direct(select_by_id(table), dialect)


@functools.lru_cache(maxsize=512)
def direct_insert(table: Table, dialect: Dialect, keys: tuple[str, ...]) -> DirectStatement:
    return compile_direct(insert_returning(table), dialect, keys)


def update_statement(table: Table, *, conditional: bool, server_time: bool) -> Any:
    """UPDATE of the row with id `_record_id` (and, if `conditional`, `version` =
    `_expected_version`) that raises `version` by one and, with `server_time`, sets `updated_at`
    to `clock_timestamp()`, RETURNING the row; the changed columns' values are the parameters
    of each execution.

    `clock_timestamp()`, not `now()`: `now()` is the start of the transaction, which may be
    before a concurrent writer's commit that this UPDATE waited for (the row lock), so a later
    version could carry an earlier time. The SET list is evaluated after the lock is granted
    (PostgreSQL re-evaluates it on the newest row version after waiting), so `updated_at`
    follows the order of the versions of the row, which is its commit order."""
    conditions = [table.c.id == bindparam("_record_id", type_=table.c.id.type)]
    if conditional:
        conditions.append(
            table.c.version == bindparam("_expected_version", type_=table.c.version.type)
        )
    fixed: dict[str, Any] = {"version": table.c.version + literal_column("1")}
    if server_time:
        fixed["updated_at"] = func.clock_timestamp()
    return update(table).where(*conditions).values(fixed).returning(*table.c)


@functools.lru_cache(maxsize=2048)
def direct_update(
    table: Table,
    dialect: Dialect,
    keys: tuple[str, ...],
    conditional: bool,
    server_time: bool,
) -> DirectStatement:
    """`update_statement` with the `keys` columns set from parameters, compiled once."""
    stmt = update_statement(table, conditional=conditional, server_time=server_time)
    return compile_direct(stmt, dialect, keys)


@functools.cache
def version_by_id(table: Table) -> Select[Any]:
    return select(table.c.version).where(
        table.c.id == bindparam("record_id", type_=table.c.id.type)
    )


@functools.lru_cache(maxsize=256)
def direct_whole_list(
    table: Table,
    fields: tuple[str, ...],
    sort: tuple[Sort, ...],
    equal: tuple[str, ...],
    dialect: Dialect,
) -> DirectStatement | None:
    """The whole list as one JSON array (`json_array_statement`) of the rows whose `equal`
    fields equal the parameters `p0`, `p1`...; None when `json_rows` cannot translate a field."""
    document = json_document(table, fields)
    if document is None:
        return None
    conditions = [
        table.c[name] == bindparam(f"p{i}", type_=table.c[name].type)
        for i, name in enumerate(equal)
    ]
    return compile_direct(json_array_statement(table, document, sort, conditions), dialect)


def cascading_delete(table: Table, conditions: Sequence[ColumnElement[bool]]) -> Executable:
    """`DELETE FROM table WHERE conditions RETURNING id`, which also deletes, in the same
    statement, the children that PostgreSQL does not cascade itself (`schema.code_cascades`:
    data-modifying CTEs on the deleted ids)."""
    parent = delete(table).where(*conditions).returning(table.c.id)
    links = code_cascades(table.name)
    if not links:
        return parent
    deleted = parent.cte("deleted")
    stmt = select(deleted.c.id)
    for i, (child, column) in enumerate(links):
        child_table = TABLES[child]
        stmt = stmt.add_cte(
            delete(child_table)
            .where(child_table.c[column].in_(select(deleted.c.id)))
            .cte(f"children_{i}")
        )
    return stmt
