"""Rows of a typed table serialised to JSON by PostgreSQL, the way the domain models serialise.

A list endpoint that answers with a page of 1,000 agents spent ~80 % of its CPU time turning rows
into models (JSONB decoding included) and the models back into JSON. For reads whose only purpose
is to send the records out, `json_document` builds one `json_build_object(...)` per row instead,
so the server process only joins strings.

The text has the same JSON values as `TypeAdapter(list[model]).dump_json` of the same rows:

- TIMESTAMPTZ → `"2026-11-25T22:52:20.123000Z"`, and without the fraction when it is zero
  (±infinity, which is what asyncpg stores for `datetime.min`/`max`, as those two dates);
- DOUBLE PRECISION → `1.0` for an integral value (not `1`), `null` for NaN and ±infinity;
- TEXT / INTEGER / BOOLEAN / TEXT[] / JSONB → as stored (enum text is the member's value).

Objects inside JSONB come back with PostgreSQL's key order (JSONB does not keep the order keys were
written in), which JSON does not give meaning to. A column of another type (e.g. DOUBLE PRECISION[])
has no translation here: `json_document` returns None and the caller serialises models instead.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ARRAY, Boolean, Double, Float, Integer, Table, Text, cast, func
from sqlalchemy.dialects.postgresql import JSON, JSONB, TIMESTAMP
from sqlalchemy.sql.elements import ColumnElement, literal_column

#: `json_build_object` takes at most 100 arguments (FUNC_MAX_ARGS), i.e. 50 key/value pairs.
MAX_FIELDS = 50


def _quoted(table: Table, name: str) -> str:
    return f'"{table.name}"."{name}"'


def _timestamp(table: Table, name: str) -> ColumnElement[str]:
    col = _quoted(table, name)
    utc = f"({col} AT TIME ZONE 'UTC')"
    # asyncpg writes datetime.min/max as -infinity/infinity and reads them back as such
    return literal_column(
        f"CASE WHEN {col} = '-infinity' THEN '0001-01-01T00:00:00Z'"
        f" WHEN {col} = 'infinity' THEN '9999-12-31T23:59:59.999999Z'"
        f" ELSE to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        f" || CASE WHEN to_char({utc}, 'US') = '000000' THEN '' ELSE to_char({utc}, '.US') END"
        " || 'Z' END",
        Text,
    )


def _double(table: Table, name: str) -> ColumnElement[str]:
    col = _quoted(table, name)
    return literal_column(
        f"CASE WHEN {col} IS NULL OR {col} = 'NaN'::float8 OR abs({col}) = 'Infinity'::float8"
        " THEN 'null'::json"
        f" WHEN {col} = trunc({col}) AND abs({col}) < 1e16"
        f" THEN (trunc({col})::numeric::text || '.0')::json"
        f" ELSE to_json({col}) END",
        JSON,
    )


def _value(table: Table, name: str) -> ColumnElement[Any] | None:
    column = table.c[name]
    kind = column.type
    if isinstance(kind, TIMESTAMP):
        return _timestamp(table, name)
    if isinstance(kind, Double | Float):
        return _double(table, name)
    if isinstance(kind, Text | Integer | Boolean | JSONB):
        return column
    if isinstance(kind, ARRAY) and isinstance(kind.item_type, Text):
        return column
    return None


@functools.cache
def json_document(table: Table, fields: tuple[str, ...]) -> ColumnElement[str] | None:
    """`json_build_object('f1', <f1>, ...)::text` for one row of `table` with `fields` in that
    order, or None if some field has no SQL translation (or there are too many)."""
    if len(fields) > MAX_FIELDS:
        return None
    args: list[ColumnElement[Any]] = []
    for name in fields:
        value = _value(table, name)
        if value is None:
            return None
        args += [literal_column(f"'{name}'", Text), value]  # field names are identifiers
    return cast(func.json_build_object(*args), Text)


def json_array(documents: Iterable[str]) -> bytes:
    """The documents (JSON texts) as one JSON array, UTF-8."""
    return ("[" + ",".join(documents) + "]").encode()
