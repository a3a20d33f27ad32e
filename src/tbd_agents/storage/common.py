"""Backend-neutral checks shared by every repository implementation.

Both backends (PostgreSQL and MongoDB) accept exactly the same queries and the same partial
updates, so the rules live here, once:

* `fields_of(model)` describes each field of an entity (kind, nullability, enum) — what a
  backend needs to know to translate a filter or a sort.
* `check_query(model, query)` validates a whole `Query` (fields, operators, values, sort, limit,
  cursor) and returns a `CheckedQuery` whose filter values and cursor values are already coerced
  to the field types (ISO strings → aware UTC datetimes, enum strings → enum members, ...).
  `check_filters` does the same for the bare filter lists of `count`, `find_one`, `delete_where`.
* `validate_changes(model, changes)` validates a partial update against the model.
* `check_upsert_key` / `check_update_fields` validate the arguments of `upsert`.

Everything a backend cannot or will not do raises `UnsupportedQuery`; nothing is silently ignored.

Operator semantics every backend must give (the contract suite checks them):

* `eq`, `in_`, `gt`/`gte`/`lt`/`lte` never match a null value.
* `ne` and `not_in` DO match null values ("model != 'x'" includes agents without a model), as
  MongoDB's `$ne` / `$nin` do; PostgreSQL uses `IS DISTINCT FROM` / `IS NULL OR <> ALL(...)`.
* `in_` with an empty list matches nothing; `not_in` with an empty list matches everything.
* `contains_any` with an empty list matches nothing; `contains_all` with an empty list matches
  every record (vacuous truth; MongoDB's `$all: []` matches nothing, so the Mongo adapter must
  drop that condition instead of sending it).
* Text sorts and comparisons follow code-point order (PostgreSQL databases created with the C /
  C.UTF-8 collation, MongoDB's default binary comparison).
"""

from __future__ import annotations

import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import TypeAdapter, ValidationError

from tbd_agents.domain.models import Entity, Numbering
from tbd_agents.domain.types import LenientEnum, UtcDatetime
from tbd_agents.errors import InvalidData, UnsupportedQuery
from tbd_agents.storage.protocol import Filter, JsonPage, Op, Page, Query, Sort, decode_cursor

#: Longest id any backend stores (the models' `id` max_length).
MAX_ID_LENGTH = 128

#: The field every change of a record raises by one, in the same statement (optimistic
#: concurrency: `Repository.update` / `delete` take an `expected_version`).
VERSION = "version"

#: Fields a partial update may never change (`version` is raised by the repository itself).
IMMUTABLE_FIELDS = frozenset({"id", "created_at", VERSION})


class FieldKind(StrEnum):
    """What a field holds, as far as querying is concerned."""

    TEXT = "text"
    ENUM = "enum"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATETIME = "datetime"
    STR_ARRAY = "str_array"  # list[str]: TEXT[] / array of strings
    FLOAT_ARRAY = "float_array"  # list[float]: embeddings
    JSON = "json"  # dicts and lists of dicts: JSONB / embedded documents


SCALAR_KINDS = frozenset(
    {
        FieldKind.TEXT,
        FieldKind.ENUM,
        FieldKind.INT,
        FieldKind.FLOAT,
        FieldKind.BOOL,
        FieldKind.DATETIME,
    }
)
ORDERED_KINDS = frozenset({FieldKind.INT, FieldKind.FLOAT, FieldKind.DATETIME})

#: Which field kinds each operator accepts (null checks also need a nullable field).
OPERATOR_KINDS: dict[Op, frozenset[FieldKind]] = {
    Op.EQ: SCALAR_KINDS,
    Op.NE: SCALAR_KINDS,
    Op.IN: SCALAR_KINDS,
    Op.NOT_IN: SCALAR_KINDS,
    Op.GT: ORDERED_KINDS,
    Op.GTE: ORDERED_KINDS,
    Op.LT: ORDERED_KINDS,
    Op.LTE: ORDERED_KINDS,
    Op.IS_NULL: frozenset(FieldKind),
    Op.NOT_NULL: frozenset(FieldKind),
    Op.CONTAINS_ANY: frozenset({FieldKind.STR_ARRAY}),
    Op.CONTAINS_ALL: frozenset({FieldKind.STR_ARRAY}),
    Op.CONTAINS_TEXT: frozenset({FieldKind.TEXT}),
}
LIST_OPERATORS = frozenset({Op.IN, Op.NOT_IN, Op.CONTAINS_ANY, Op.CONTAINS_ALL})
NULL_OPERATORS = frozenset({Op.IS_NULL, Op.NOT_NULL})
_TEXT_KINDS = frozenset({FieldKind.TEXT, FieldKind.ENUM, FieldKind.STR_ARRAY})


@dataclass(frozen=True, slots=True)
class FieldMeta:
    """One field of an entity, described for query translation and validation."""

    name: str
    kind: FieldKind
    nullable: bool
    enum: type[StrEnum] | None
    adapter: TypeAdapter[Any]  # the field's full type (constraints included): update values
    value_adapter: TypeAdapter[Any]  # the bare scalar / element type: filter and cursor values

    @property
    def sortable(self) -> bool:
        """Sort keys must be non-nullable scalars (keyset pagination needs total order)."""
        return not self.nullable and self.kind in SCALAR_KINDS

    @property
    def is_array(self) -> bool:
        return self.kind in (FieldKind.STR_ARRAY, FieldKind.FLOAT_ARRAY)


@dataclass(frozen=True, slots=True)
class CheckedQuery:
    """A validated query: coerced filters, the full sort (ending with `id`), the decoded cursor."""

    filters: tuple[Filter, ...]
    sort: tuple[Sort, ...]
    limit: int | None
    after: tuple[Any, ...] | None  # sort-key values of the last row of the previous page


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _kind_of(inner: Any) -> tuple[FieldKind, Any]:
    """(kind, bare type used to coerce one filter value) for a non-optional annotation."""
    inner = _strip_annotated(inner)
    origin = get_origin(inner)
    if origin is list:
        item = _strip_annotated(get_args(inner)[0])
        if item is str:
            return FieldKind.STR_ARRAY, str
        if item is float:
            return FieldKind.FLOAT_ARRAY, float
        return FieldKind.JSON, Any
    if origin is dict:
        return FieldKind.JSON, Any
    if isinstance(inner, type):
        if issubclass(inner, StrEnum):
            return FieldKind.ENUM, Annotated[inner, LenientEnum]
        simple = {
            str: FieldKind.TEXT,
            bool: FieldKind.BOOL,
            int: FieldKind.INT,
            float: FieldKind.FLOAT,
        }
        if inner in simple:
            return simple[inner], inner
        if inner is datetime:
            return FieldKind.DATETIME, UtcDatetime
    raise TypeError(f"field type {inner!r} has no storage kind")


@cache
def fields_of(model: type[Entity]) -> Mapping[str, FieldMeta]:
    """Every field of `model` by name (cached per model)."""
    out: dict[str, FieldMeta] = {}
    for name, info in model.model_fields.items():
        inner, nullable = _unwrap_optional(_strip_annotated(info.annotation))
        kind, bare = _kind_of(inner)
        enum = _strip_annotated(inner) if kind is FieldKind.ENUM else None
        full: Any = (
            Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        )
        out[name] = FieldMeta(
            name=name,
            kind=kind,
            nullable=nullable,
            enum=enum,
            adapter=TypeAdapter(full),
            value_adapter=TypeAdapter(bare),
        )
    return out


def field_meta(model: type[Entity], name: str) -> FieldMeta:
    """The field `name` of `model`; UnsupportedQuery naming the valid fields if there is none."""
    meta = fields_of(model).get(name)
    if meta is None:
        known = ", ".join(sorted(fields_of(model)))
        raise UnsupportedQuery(
            f"{model.collection} has no field {name!r}; use one of: {known}",
            details={"field": name},
        )
    return meta


def well_formed_id(record_id: object) -> bool:
    """True if `record_id` could be an id in any backend: non-empty text of at most 128
    characters without NUL (PostgreSQL text cannot hold NUL).

    Repositories answer NotFound for anything else instead of passing it to the driver.
    """
    return (
        isinstance(record_id, str)
        and 0 < len(record_id) <= MAX_ID_LENGTH
        and "\x00" not in record_id
    )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return str(err.get("msg", "invalid value"))


def coerce_value(model: type[Entity], meta: FieldMeta, value: Any) -> Any:
    """One filter or cursor value converted to the field's (bare) type.

    Datetimes become aware UTC (ISO strings accepted; naive values are taken as UTC), enum
    strings become enum members (case-insensitive). Constraints such as `ge=1` are not applied:
    `gt("max_turns", 0)` is a fair question. Raises UnsupportedQuery naming the field.
    """
    if value is None:
        raise UnsupportedQuery(
            f"{model.collection}.{meta.name}: None is not a filter value; "
            "use is_null()/not_null() to test for a missing value",
            details={"field": meta.name},
        )
    if meta.kind in _TEXT_KINDS and not isinstance(value, str):
        raise UnsupportedQuery(
            f"{model.collection}.{meta.name} holds text; {value!r} is not a string",
            details={"field": meta.name},
        )
    if meta.kind is FieldKind.BOOL and not isinstance(value, bool):
        raise UnsupportedQuery(
            f"{model.collection}.{meta.name} holds true/false; {value!r} is not a bool",
            details={"field": meta.name},
        )
    try:
        return meta.value_adapter.validate_python(value)
    except ValidationError as exc:
        allowed = f" (one of: {', '.join(e.value for e in meta.enum)})" if meta.enum else ""
        raise UnsupportedQuery(
            f"{model.collection}.{meta.name}: {value!r} is not a valid {meta.kind.value} value"
            f"{allowed}: {_first_error(exc)}",
            details={"field": meta.name},
        ) from None


def _as_values(model: type[Entity], flt: Filter) -> Sequence[Any]:
    if isinstance(flt.value, str | bytes | Mapping) or not isinstance(flt.value, Sequence):
        raise UnsupportedQuery(
            f"{model.collection}.{flt.field}: {flt.op.value} needs a list of values, "
            f"got {type(flt.value).__name__}",
            details={"field": flt.field},
        )
    return flt.value


def _check_json_key_filter(model: type[Entity], flt: Filter) -> Filter:
    """`<json field>.<key>` with contains_any / contains_all of strings: the documents whose JSON
    object holds, under `key`, an array with any / all of them (e.g. a memory's
    `metadata.tags`)."""
    base, _, key = flt.field.partition(".")
    meta = field_meta(model, base)
    op = Op(flt.op)
    if meta.kind is not FieldKind.JSON or not key or "." in key or op not in LIST_OPERATORS:
        raise UnsupportedQuery(
            f"{model.collection}.{flt.field}: a key of a JSON field can only be filtered with "
            "contains_any / contains_all of strings (one level, e.g. metadata.tags)",
            details={"field": flt.field},
        )
    values = tuple(_as_values(model, flt))
    if op not in (Op.CONTAINS_ANY, Op.CONTAINS_ALL) or not all(isinstance(v, str) for v in values):
        raise UnsupportedQuery(
            f"{model.collection}.{flt.field}: contains_any / contains_all of strings only",
            details={"field": flt.field, "op": op.value},
        )
    return Filter(flt.field, op, values)


def check_filter(model: type[Entity], flt: Filter) -> Filter:
    """Validate one filter against `model`; return it with its value coerced."""
    if not isinstance(flt, Filter):
        raise UnsupportedQuery(f"{flt!r} is not a Filter; build filters with eq(), in_(), ...")
    if "." in flt.field:
        return _check_json_key_filter(model, flt)
    if Op(flt.op) is Op.CONTAINS_TEXT:
        return _check_text_filter(model, flt)
    meta = field_meta(model, flt.field)
    op = Op(flt.op)
    if meta.kind not in OPERATOR_KINDS[op]:
        suited = sorted(
            o.value
            for o, kinds in OPERATOR_KINDS.items()
            if meta.kind in kinds and (meta.nullable or o not in NULL_OPERATORS)
        )
        raise UnsupportedQuery(
            f"{op.value} does not apply to {model.collection}.{flt.field} "
            f"({meta.kind.value} field); operators for it: {', '.join(suited)}",
            details={"field": flt.field, "op": op.value},
        )
    if op in NULL_OPERATORS:
        if not meta.nullable:
            raise UnsupportedQuery(
                f"{model.collection}.{flt.field} is never null, so {op.value} is meaningless",
                details={"field": flt.field, "op": op.value},
            )
        return Filter(flt.field, op, None)
    if op in LIST_OPERATORS:
        values = tuple(coerce_value(model, meta, v) for v in _as_values(model, flt))
        return Filter(flt.field, op, values)
    return Filter(flt.field, op, coerce_value(model, meta, flt.value))


def _check_text_filter(model: type[Entity], flt: Filter) -> Filter:
    """contains_text: every `|`-separated field a text field, the value a non-empty string."""
    for name in flt.field.split("|"):
        meta = field_meta(model, name)
        if meta.kind is not FieldKind.TEXT:
            raise UnsupportedQuery(
                f"contains_text does not apply to {model.collection}.{name} "
                f"({meta.kind.value} field); it searches text fields",
                details={"field": name, "op": Op.CONTAINS_TEXT.value},
            )
    if not isinstance(flt.value, str) or not flt.value:
        raise UnsupportedQuery(
            "contains_text needs a non-empty string", details={"field": flt.field}
        )
    return Filter(flt.field, Op.CONTAINS_TEXT, flt.value)


def check_filters(model: type[Entity], filters: Sequence[Filter]) -> tuple[Filter, ...]:
    """Validate filters (ANDed); return them with coerced values."""
    return tuple(check_filter(model, f) for f in filters)


def check_sort(model: type[Entity], query: Query) -> tuple[Sort, ...]:
    """The query's full sort (keys + `id`), each key a non-nullable scalar field, none repeated."""
    full = query.full_sort()
    seen: set[str] = set()
    for key in full:
        meta = field_meta(model, key.field)
        if not meta.sortable:
            why = "nullable" if meta.nullable else f"a {meta.kind.value} field"
            raise UnsupportedQuery(
                f"cannot sort {model.collection} by {key.field}: it is {why}; sort by a "
                "non-nullable text, number, bool or datetime field",
                details={"field": key.field},
            )
        if key.field in seen:
            raise UnsupportedQuery(
                f"{model.collection}: sort names {key.field} twice", details={"field": key.field}
            )
        seen.add(key.field)
    return full


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UnsupportedQuery(f"limit must be a positive integer or None, got {limit!r}")
    return limit


def check_query(model: type[Entity], query: Query) -> CheckedQuery:
    """Validate `query` for `model`; raise UnsupportedQuery for anything a backend cannot honour.

    Unknown fields, operators unsuited to the field (e.g. contains_any on a scalar, gt on a bool
    or JSON field, is_null on a non-nullable field), values of the wrong type, sorts on nullable
    or non-scalar fields, a non-positive limit and cursors of another query are all rejected.
    An empty `in_` list is allowed (it matches nothing).
    """
    filters = check_filters(model, query.filters)
    sort = check_sort(model, query)
    after: tuple[Any, ...] | None = None
    if query.cursor is not None:
        raw = decode_cursor(query.cursor, len(sort))
        try:
            after = tuple(
                coerce_value(model, field_meta(model, s.field), v)
                for s, v in zip(sort, raw, strict=True)
            )
        except UnsupportedQuery:
            raise UnsupportedQuery(
                "cursor does not belong to this query's sort order: pass next_cursor of the "
                "previous page of the same query"
            ) from None
    return CheckedQuery(filters, sort, _check_limit(query.limit), after)


def cursor_values(record: Entity, sort: Sequence[Sort]) -> list[Any]:
    """The sort-key values of `record` (what `encode_cursor` turns into `next_cursor`)."""
    return [getattr(record, s.field) for s in sort]


def validate_changes(model: type[Entity], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a partial update of `model`; return the values coerced to the field types.

    Unknown fields, `id` and `created_at` are refused; None is accepted only for nullable fields;
    every value must satisfy the field's type and constraints. Raises InvalidData naming the field.
    """
    if not isinstance(changes, Mapping):
        raise InvalidData(f"changes must be a mapping of field names to values, got {changes!r}")
    fields = fields_of(model)
    out: dict[str, Any] = {}
    for name, value in changes.items():
        meta = fields.get(name)
        if meta is None:
            raise InvalidData(
                f"{model.collection} has no field {name!r}; updatable fields: "
                + ", ".join(sorted(set(fields) - IMMUTABLE_FIELDS)),
                details={"field": name},
            )
        if name == VERSION:
            raise InvalidData(
                f"{model.collection}.{name} is raised by the storage on every change; to make a "
                "change conditional on it, pass expected_version",
                details={"field": name},
            )
        if name in IMMUTABLE_FIELDS:
            raise InvalidData(
                f"{model.collection}.{name} cannot be changed", details={"field": name}
            )
        if value is None and not meta.nullable:
            raise InvalidData(f"{model.collection}.{name} cannot be null", details={"field": name})
        try:
            out[name] = meta.adapter.validate_python(value)
        except ValidationError as exc:
            raise InvalidData(
                f"{model.collection}.{name}: {value!r} is not valid: {_first_error(exc)}",
                details={"field": name},
            ) from None
    return out


def check_numbered(record: Entity) -> None:
    """Refuse to upsert a record whose numbered field (`Entity.numbering`) is still 0: only
    `create` and `insert_many` number records (an upsert may update an existing one, which
    must keep its place)."""
    numbering = record.numbering
    if numbering is not None and getattr(record, numbering.field) == 0:
        raise UnsupportedQuery(
            f"{record.collection}: upsert needs {numbering.field} set; create() or "
            f"insert_many() number new records from their {numbering.parent} record",
            details={"field": numbering.field},
        )


def check_upsert_key(model: type[Entity], key: Sequence[str]) -> tuple[str, ...]:
    """`key` as a tuple if it is `("id",)` or one of the model's unique keys (order-insensitive)."""
    wanted = tuple(key)
    candidates = (("id",), *model.unique_keys)
    for candidate in candidates:
        if sorted(candidate) == sorted(wanted) and len(set(wanted)) == len(wanted):
            return candidate
    options = "; ".join(", ".join(c) for c in candidates)
    raise UnsupportedQuery(
        f"upsert on {model.collection} needs a unique key; {list(wanted)} is not one. "
        f"Unique keys: {options}",
        details={"key": list(wanted)},
    )


def check_update_fields(
    model: type[Entity], key: Sequence[str], update_fields: Sequence[str] | None
) -> tuple[str, ...]:
    """Fields an upsert overwrites on conflict: the given ones (validated) or every field except
    `id`, `created_at`, `version` (raised by one instead) and the key itself. `updated_at` is
    always included."""
    fields = fields_of(model)
    excluded = IMMUTABLE_FIELDS | set(key)
    if update_fields is None:
        chosen = [f for f in fields if f not in excluded]
    else:
        chosen = list(dict.fromkeys(update_fields))
        for name in chosen:
            if name not in fields:
                raise InvalidData(
                    f"{model.collection} has no field {name!r}", details={"field": name}
                )
            if name in excluded:
                raise InvalidData(
                    f"upsert cannot overwrite {model.collection}.{name} (id, created_at and the "
                    "key fields are kept; version is raised by one)",
                    details={"field": name},
                )
        if "updated_at" not in chosen:
            chosen.append("updated_at")
    return tuple(chosen)


E = TypeVar("E", bound=Entity)


async def iterate_pages(
    list_page: Callable[[Query], Awaitable[Page[E]]], query: Query, batch_size: int
) -> AsyncIterator[E]:
    """Every record `query` matches, read through `list_page` in keyset pages of `batch_size`
    (the shared body of `Repository.iterate`); `query.limit`, if set, caps the total."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UnsupportedQuery(f"batch_size must be a positive integer, got {batch_size!r}")
    remaining = query.limit
    cursor = query.cursor
    while remaining is None or remaining > 0:
        size = batch_size if remaining is None else min(batch_size, remaining)
        page = await list_page(Query(query.filters, query.sort, size, cursor))
        for item in page.items:
            yield item
        if remaining is not None:
            remaining -= len(page.items)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


@cache
def _list_adapter(model: type[Entity]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def records_json(
    model: type[Entity], records: Sequence[Entity], omit: frozenset[str] = frozenset()
) -> bytes:
    """`records` as one JSON array (UTF-8) of their fields minus `omit`, in one pass."""
    exclude = {"__all__": set(omit)} if omit else None
    return _list_adapter(model).dump_json(list(records), exclude=exclude)


async def list_json_via_models(
    list_page: Callable[[Query], Awaitable[Page[E]]],
    model: type[E],
    query: Query,
    omit: frozenset[str],
) -> JsonPage:
    """`Repository.list_json` for a backend that reads models anyway: list, then serialise."""
    page = await list_page(query)
    return JsonPage(records_json(model, page.items, omit), page.next_cursor)


async def number_records(
    model: type[Entity],
    records: Sequence[E],
    raise_counter: Callable[[Numbering, str, int], Awaitable[int | None]],
) -> list[E]:
    """`records`, those whose numbered field (`model.numbering`) is 0 numbered from their
    parent's counter. `raise_counter(numbering, parent_id, n)` adds n to the parent's counter in
    one atomic statement and returns its new value (None: no such parent); parents are raised in
    id order, one lock order for every writer. InvalidData names a missing parent."""
    numbering = model.numbering
    if numbering is None:
        return list(records)
    wanted: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        if getattr(record, numbering.field) == 0:
            wanted.setdefault(str(getattr(record, numbering.parent_field)), []).append(i)
    out = list(records)
    for parent_id in sorted(wanted):
        positions = wanted[parent_id]
        last = await raise_counter(numbering, parent_id, len(positions))
        if last is None:
            raise InvalidData(
                f"{model.collection}.{numbering.parent_field}: no {numbering.parent} "
                f"record has the id {parent_id!r}; create it first",
                details={"field": numbering.parent_field, "id": parent_id},
            )
        first = last - len(positions) + 1
        for n, i in enumerate(positions):
            out[i] = out[i].model_copy(update={numbering.field: first + n})
    return out
