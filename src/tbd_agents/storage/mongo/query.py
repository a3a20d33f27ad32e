"""Query spec → MongoDB filter documents and sort specifications.

Input is always checked by `storage.common` first, so fields exist, operators suit them and
values already have the field's Python type. What this module adds is MongoDB's view of the data:

* `id` is stored as `_id`, and ids and references (`agent_id`, `mcp_server_ids`, ...) may be
  ObjectIds or strings in existing data, so equality and IN match every stored form.
* Enum fields may hold a legacy upper-case spelling, so equality and IN match both spellings.
* BSON dates keep milliseconds; comparisons with a finer datetime are rounded the way that keeps
  their meaning (`>= 10:00:00.0005` is `>= 10:00:00.001`), and equality with one matches nothing.
* `contains_all([])` is vacuously true (MongoDB's `$all: []` matches nothing, so the condition is
  dropped); `ne` / `not_in` match missing and null values, as `$ne` / `$nin` do.

Keyset pagination compares the sort keys in their directions and ends with `_id`, whose BSON type
is carried in the cursor (`o:` ObjectId, `s:` string, `i:` integer) because MongoDB only compares
values of one type with `$gt`/`$lt`: types that sort after the cursor's are added explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from bson import ObjectId

from tbd_agents.domain.models import Entity
from tbd_agents.errors import UnsupportedQuery
from tbd_agents.storage.mongo.codec import bson_value, ceil_ms, floor_ms, has_sub_ms, id_forms
from tbd_agents.storage.protocol import Filter, Op, Sort

Doc = dict[str, Any]

#: Matches no document (an `$in` over nothing).
MATCH_NOTHING: Doc = {"_id": {"$in": []}}

#: BSON types an `_id` may have, in MongoDB's sort order, with their cursor tags.
_ID_TYPES: tuple[tuple[str, str], ...] = (("i", "number"), ("s", "string"), ("o", "objectId"))
_TAG_OF_TYPE = {"number": "i", "string": "s", "objectId": "o"}


def path_of(field: str) -> str:
    """The document key that stores `field`."""
    return "_id" if field == "id" else field


def is_reference(field: str) -> bool:
    """Fields that hold record ids, which existing data may store as ObjectIds."""
    return field == "id" or field.endswith(("_id", "_ids"))


def _forms(field: str, value: Any) -> list[Any]:
    """Every stored form of one (checked) filter value of `field`."""
    if isinstance(value, StrEnum):
        return list(dict.fromkeys((value.value, value.value.upper())))
    if isinstance(value, str) and is_reference(field):
        return id_forms(value, include_int=field == "id")
    return [bson_value(value)]


def _all_forms(field: str, values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, datetime) and has_sub_ms(value):
            continue  # no BSON date equals it
        out.extend(_forms(field, value))
    return out


def _range(op: Op, value: Any) -> Doc:
    if isinstance(value, datetime):
        # Stored dates are whole milliseconds: round the bound so the comparison keeps its sense.
        value = floor_ms(value) if op in (Op.GT, Op.LTE) else ceil_ms(value)
    return {f"${op.value}": value}


def filter_clause(model: type[Entity], flt: Filter) -> Doc:
    """The MongoDB condition for one checked filter."""
    if "." in flt.field:  # a key of a JSON field (an embedded document): strings in its array
        # $elemMatch only matches arrays (a scalar equal to a tag does not count, as on
        # PostgreSQL).
        wanted = [str(v) for v in flt.value]
        if flt.op is Op.CONTAINS_ANY:
            return {flt.field: {"$elemMatch": {"$in": wanted}}}
        every: list[Doc] = [{flt.field: {"$elemMatch": {"$eq": v}}} for v in wanted]
        return {} if not every else every[0] if len(every) == 1 else {"$and": every}
    if flt.op is Op.CONTAINS_TEXT:
        pattern = {"$regex": re.escape(str(flt.value)), "$options": "i"}
        found: list[Doc] = [{path_of(name): pattern} for name in flt.field.split("|")]
        return found[0] if len(found) == 1 else {"$or": found}
    path = path_of(flt.field)
    op, value = flt.op, flt.value
    if op in (Op.EQ, Op.IN):
        forms = _all_forms(flt.field, value if op is Op.IN else (value,))
        return {path: forms[0]} if len(forms) == 1 else {path: {"$in": forms}}  # [] → none
    if op in (Op.NE, Op.NOT_IN):
        forms = _all_forms(flt.field, value if op is Op.NOT_IN else (value,))
        return {path: {"$nin": forms}} if forms else {}
    if op in (Op.GT, Op.GTE, Op.LT, Op.LTE):
        return {path: _range(op, value)}
    if op is Op.IS_NULL:
        return {path: None}
    if op is Op.NOT_NULL:
        return {path: {"$ne": None}}
    if op is Op.CONTAINS_ANY:
        return {path: {"$in": _all_forms(flt.field, value)}}
    if op is Op.CONTAINS_ALL:
        if not value:
            return {}
        each = [{path: {"$in": _forms(flt.field, v)}} for v in value]
        return each[0] if len(each) == 1 else {"$and": each}
    raise AssertionError(f"operator {op!r} passed check_filter but has no MongoDB translation")


def conjunction(clauses: Sequence[Doc]) -> Doc:
    """AND of the non-empty clauses (`{}` when there are none)."""
    kept = [c for c in clauses if c]
    if not kept:
        return {}
    return kept[0] if len(kept) == 1 else {"$and": kept}


def filter_document(model: type[Entity], filters: Sequence[Filter]) -> Doc:
    """The filter document for checked filters (ANDed)."""
    return conjunction([filter_clause(model, f) for f in filters])


def sort_spec(sort: Sequence[Sort]) -> list[tuple[str, int]]:
    """pymongo sort specification for a full sort (ending with `id`)."""
    return [(path_of(s.field), -1 if s.descending else 1) for s in sort]


def id_cursor_value(raw_id: Any) -> str:
    """The cursor form of a stored `_id`: its BSON type tag and its text."""
    if isinstance(raw_id, ObjectId):
        return f"o:{raw_id}"
    if isinstance(raw_id, str):
        return f"s:{raw_id}"
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        return f"i:{int(raw_id)}"
    raise UnsupportedQuery(
        f"cannot page past a document whose _id is a {type(raw_id).__name__} ({raw_id!r}): "
        "keyset pages need ObjectId, string or integer ids; fetch without a limit instead"
    )


def _parse_id_cursor(value: Any) -> tuple[str, Any]:
    tag, sep, text = str(value).partition(":")
    try:
        if sep and tag == "o":
            return "objectId", ObjectId(text)
        if sep and tag == "s":
            return "string", text
        if sep and tag == "i":
            return "number", int(text)
    except (ValueError, TypeError):
        pass
    raise UnsupportedQuery(
        "cursor does not belong to this query's sort order: pass next_cursor of the previous "
        "page of the same query"
    )


def _id_beyond(value: Any, descending: bool) -> Doc:
    """`_id` strictly after the cursor's id in the given direction, across BSON types."""
    type_name, raw = _parse_id_cursor(value)
    order = [name for _, name in _ID_TYPES]
    position = order.index(type_name)
    later = order[:position] if descending else order[position + 1 :]
    branches: list[Doc] = [{"_id": {"$lt" if descending else "$gt": raw}}]
    branches.extend({"_id": {"$type": name}} for name in later)
    return branches[0] if len(branches) == 1 else {"$or": branches}


def keyset_document(sort: Sequence[Sort], after: Sequence[Any] | None) -> Doc:
    """Documents strictly after the position `after` (sort-key values) in the order `sort`.

    Expanded form `k1 > v1 OR (k1 = v1 AND k2 < v2) OR ...`, each comparison in its key's
    direction; the last key is always `id`.
    """
    if after is None:
        return {}
    branches: list[Doc] = []
    for i, key in enumerate(sort):
        equal = {path_of(sort[j].field): bson_value(after[j]) for j in range(i)}
        if key.field == "id":
            beyond = _id_beyond(after[i], key.descending)
        else:
            beyond = {
                path_of(key.field): {"$lt" if key.descending else "$gt": bson_value(after[i])}
            }
        branches.append(conjunction([equal, beyond]) if equal else beyond)
    return branches[0] if len(branches) == 1 else {"$or": branches}
