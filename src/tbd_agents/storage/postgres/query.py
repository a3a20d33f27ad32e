"""Query spec → SQLAlchemy Core expressions for the typed tables.

Input is always a `CheckedQuery` / checked filters from `storage.common`, so fields exist, operators
suit them and values already have the field's Python type. Array operators are written so the
indexes serve them: `= ANY(:array)` for IN (one bound array, one plan for any list length),
`&&` for contains_any and `@>` for contains_all on TEXT[] columns (GIN).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, Table, Text, all_, and_, any_, false, func, literal, or_, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import UnaryExpression

from tbd_agents.domain.models import Entity
from tbd_agents.storage.common import fields_of
from tbd_agents.storage.protocol import Filter, Op, Sort


def db_value(value: Any) -> Any:
    """A Python value as the driver should bind it (enum members as their text)."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, list | tuple):
        return [db_value(v) for v in value]
    return value


def _array_param(column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[Any]:
    """`values` bound as ONE array parameter of the column's (element) type."""
    col_type = column.type
    array_type = col_type if isinstance(col_type, ARRAY) else ARRAY(col_type)
    return literal([db_value(v) for v in values], array_type)


def _json_key_clause(table: Table, flt: Filter) -> ColumnElement[bool]:
    """`<jsonb column>.<key>` holding an array with any (`?|`) / all (`?&`) of the strings."""
    base, _, key = flt.field.partition(".")
    member = table.c[base].op("->", return_type=JSONB)(literal(key, Text()))
    operator = "?|" if flt.op is Op.CONTAINS_ANY else "?&"
    wanted = literal([str(v) for v in flt.value], ARRAY(Text()))
    is_array = func.jsonb_typeof(member) == literal("array", Text())
    return and_(is_array, member.op(operator, return_type=Boolean)(wanted))


def _text_clause(table: Table, flt: Filter) -> ColumnElement[bool]:
    """`ILIKE '%text%'` (the text taken literally) on one or several (`a|b`) text columns."""
    escaped = str(flt.value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = literal(f"%{escaped}%", Text())
    return or_(*(table.c[name].ilike(pattern, escape="\\") for name in flt.field.split("|")))


def filter_clause(table: Table, model: type[Entity], flt: Filter) -> ColumnElement[bool]:
    """SQL condition for one checked filter."""
    if "." in flt.field:
        return _json_key_clause(table, flt)
    if flt.op is Op.CONTAINS_TEXT:
        return _text_clause(table, flt)
    col: ColumnElement[Any] = table.c[flt.field]
    nullable = fields_of(model)[flt.field].nullable
    op = flt.op
    value: Any = flt.value
    scalar: object = db_value(value)
    if op is Op.EQ:
        return col == scalar
    if op is Op.NE:
        return col.is_distinct_from(scalar) if nullable else col != scalar
    if op is Op.IN:
        if not value:
            return false()
        return col == any_(_array_param(col, value))
    if op is Op.NOT_IN:
        # `<> ALL('{}')` is true, so an empty list keeps every row (nulls included below).
        cond = col != all_(_array_param(col, value))
        return or_(col.is_(None), cond) if nullable else cond
    if op is Op.GT:
        return col > scalar
    if op is Op.GTE:
        return col >= scalar
    if op is Op.LT:
        return col < scalar
    if op is Op.LTE:
        return col <= scalar
    if op is Op.IS_NULL:
        return col.is_(None)
    if op is Op.NOT_NULL:
        return col.is_not(None)
    if op is Op.CONTAINS_ANY:
        return col.op("&&", return_type=Boolean)(_array_param(col, value))
    if op is Op.CONTAINS_ALL:
        return col.op("@>", return_type=Boolean)(_array_param(col, value))
    raise AssertionError(f"operator {op!r} passed check_filter but has no SQL translation")


def where_clause(
    table: Table, model: type[Entity], filters: Sequence[Filter]
) -> list[ColumnElement[bool]]:
    return [filter_clause(table, model, f) for f in filters]


def order_by(table: Table, sort: Sequence[Sort]) -> list[UnaryExpression[Any]]:
    return [table.c[s.field].desc() if s.descending else table.c[s.field].asc() for s in sort]


def keyset_clause(table: Table, sort: Sequence[Sort], after: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after the position `after` (sort-key values) in the order `sort`.

    With one direction for every key this is a row comparison `(k1, k2, id) > (v1, v2, vid)`,
    which a composite index can serve; with mixed directions it is the expanded form
    `k1 > v1 OR (k1 = v1 AND k2 < v2) OR ...`, each comparison in its key's direction.
    """
    values = [db_value(v) for v in after]
    cols = [table.c[s.field] for s in sort]
    directions = {s.descending for s in sort}
    if len(directions) == 1:
        left = tuple_(*cols)
        right = tuple_(*(literal(v, c.type) for v, c in zip(values, cols, strict=True)))
        return left < right if sort[0].descending else left > right
    branches: list[ColumnElement[bool]] = []
    for i, key in enumerate(sort):
        equal = [cols[j] == values[j] for j in range(i)]
        beyond = cols[i] < values[i] if key.descending else cols[i] > values[i]
        branches.append(and_(*equal, beyond))
    return or_(*branches)
