"""MongoDB documents ↔ domain models.

Documents keep the shape existing TBD Agents databases have:

* `_id` holds the record id. An ObjectId is exposed as its 24-hex string; a string `_id` stays
  that string; any other `_id` (an integer, a UUID) is exposed as its text. A new record whose id
  is 24 lower-case hex digits is stored with an ObjectId `_id`, any other id as a string — so ids
  that came from MongoDB keep their type when written back.
* Every other field is stored under its model name. Reference fields (`agent_id`,
  `mcp_server_ids`, ...) are written as strings but may hold ObjectIds in existing data; every
  ObjectId read back, at any depth, becomes its hex string.
* Datetimes are stored as BSON dates (UTC, millisecond precision). Reading accepts both naive
  values (taken as UTC) and aware ones; models always get aware UTC datetimes.
* Int64 becomes `int`; Decimal128 becomes `int` when integral, `float` when a float holds it
  exactly, else its exact decimal text. Binary UUIDs become their text.

Enum values are stored as the models' values (the existing spellings, e.g. `x-api-key`); legacy
spellings such as `"STDIO"` are read case-insensitively by the enums themselves.

Keys of a stored document that no model field names are the record's `extras`: read into that
field and written back as top-level keys, so a document keeps every key it had, under the same
name, however often the hub updates it (`extras` itself is never a stored key).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from bson import Binary, Decimal128, Int64, ObjectId, json_util
from bson.binary import UUID_SUBTYPE
from pydantic import ValidationError

from tbd_agents.domain.models import Entity
from tbd_agents.errors import InvalidData
from tbd_agents.storage.common import VERSION, fields_of

E = TypeVar("E", bound=Entity)

_OBJECT_ID_TEXT = re.compile(r"[0-9a-f]{24}")
_INT_TEXT = re.compile(r"-?[1-9][0-9]{0,18}|0")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MS = timedelta(milliseconds=1)


def is_object_id_text(value: str) -> bool:
    """True if `value` is the 24 lower-case hex digits an ObjectId prints as."""
    return _OBJECT_ID_TEXT.fullmatch(value) is not None


def storage_id(record_id: str) -> ObjectId | str:
    """The `_id` a new record is written with: an ObjectId for 24-hex ids, else the string."""
    return ObjectId(record_id) if is_object_id_text(record_id) else record_id


def id_forms(value: str, *, include_int: bool = False) -> list[Any]:
    """Every stored form an id or reference written as `value` may have in existing data.

    Always the string itself; plus the ObjectId for 24-hex text; plus (for `_id`, with
    `include_int`) the integer for canonical decimal text that fits in 64 bits.
    """
    forms: list[Any] = [value]
    if is_object_id_text(value):
        forms.append(ObjectId(value))
    elif include_int and _INT_TEXT.fullmatch(value):
        number = int(value)
        if _INT64_MIN <= number <= _INT64_MAX:
            forms.append(number)
    return forms


def id_text(raw_id: Any) -> str:
    """The record id exposed for a stored `_id` of any BSON type."""
    plain = plain_value(raw_id)
    return plain if isinstance(plain, str) else str(plain)


def floor_ms(value: datetime) -> datetime:
    """`value` as aware UTC, truncated to the millisecond (what a BSON date keeps)."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def ceil_ms(value: datetime) -> datetime:
    """`value` as aware UTC, rounded up to the next whole millisecond if it has a remainder."""
    floored = floor_ms(value)
    return floored if floored == value else floored + _MS


def has_sub_ms(value: datetime) -> bool:
    """True if `value` cannot be stored exactly as a BSON date."""
    return value.microsecond % 1000 != 0


def _decimal_value(value: Decimal128) -> int | float | str:
    number: Decimal = value.to_decimal()
    if not number.is_finite():
        return str(number)
    if number == number.to_integral_value():
        return int(number)
    as_float = float(number)
    if Decimal(repr(as_float)) == number:
        return as_float
    return str(number)


def plain_value(value: Any) -> Any:
    """A decoded BSON value (at any depth) turned into plain Python the models accept."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, Int64):
        return int(value)
    if isinstance(value, Decimal128):
        return _decimal_value(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, Binary) and value.subtype == UUID_SUBTYPE:
        return str(value.as_uuid())
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    return value


def bson_value(value: Any) -> Any:
    """A model value (at any depth) as it is written to MongoDB.

    Enum members become their text, datetimes aware UTC truncated to the millisecond (a BSON date
    keeps no more), tuples become lists. Everything else is left for the driver to encode, so a
    value BSON cannot hold fails loudly at write time.
    """
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, datetime):
        return floor_ms(value)
    if isinstance(value, Mapping):
        return {k: bson_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [bson_value(v) for v in value]
    return value


EXTRAS = "extras"
#: Keys the hub itself keeps beside a record's fields, never extras (the run-time's outbox on a
#: task execution: `storage.mongo.runtime_schema.OUTBOX_FIELD`).
INTERNAL_KEYS = frozenset({"runtime_outbox"})


def extra_keys(model: type[Entity], doc: Mapping[str, Any]) -> list[str]:
    """The keys of a stored document that are extras (not `_id`, not a model field, not one of
    the hub's `INTERNAL_KEYS`)."""
    fields = model.model_fields
    return [
        k for k in doc if k != "_id" and k not in INTERNAL_KEYS and (k not in fields or k == EXTRAS)
    ]


_RELAXED = json_util.RELAXED_JSON_OPTIONS

#: The version of a document that has no `version` key (written before versions existed).
LEGACY_VERSION = 0


def _extra_value(value: Any) -> Any:
    """An extra key's value as JSON-ready data: BSON types with no JSON form (binary data,
    regular expressions, timestamps, code, DBRefs, MinKey/MaxKey) become their MongoDB Extended
    JSON (relaxed), as the migration writes them, so the record can always be returned."""
    if value is None or isinstance(value, str | bool | int | float | datetime):
        return value
    if isinstance(value, dict):
        return {k: _extra_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_extra_value(v) for v in value]
    return json.loads(json_util.dumps(value, json_options=_RELAXED))


def to_document(record: Entity) -> dict[str, Any]:
    """The document that stores `record` (`_id` first, then one key per model field, then the
    record's extras as top-level keys)."""
    doc: dict[str, Any] = {"_id": storage_id(record.id)}
    for name in type(record).model_fields:
        if name not in ("id", EXTRAS):
            doc[name] = bson_value(getattr(record, name))
    for key, value in record.extras.items():
        doc.setdefault(key, bson_value(value))
    return doc


def field_values(model: type[Entity], doc: Mapping[str, Any]) -> dict[str, Any]:
    """The model's fields found in a stored document, as plain Python (other keys in `extras`).

    A legacy document without `created_at` takes it from its ObjectId's timestamp; without
    `updated_at`, from `created_at`; without `version` (written before versions existed), it is
    at version 0 (its first change, a `$inc`, makes it 1).
    """
    raw_id = doc.get("_id")
    values: dict[str, Any] = {"id": id_text(raw_id)}
    for name in model.model_fields:
        if name not in ("id", EXTRAS) and name in doc:
            values[name] = plain_value(doc[name])
    extras = {key: _extra_value(plain_value(doc[key])) for key in extra_keys(model, doc)}
    if extras:
        values[EXTRAS] = extras
    if values.get("created_at") is None and isinstance(raw_id, ObjectId):
        values["created_at"] = raw_id.generation_time
    if values.get("updated_at") is None and values.get("created_at") is not None:
        values["updated_at"] = values["created_at"]
    if values.get(VERSION) is None and VERSION in model.model_fields:
        values[VERSION] = LEGACY_VERSION
    # An explicit null in a non-nullable field that has a default means "not set" (legacy data).
    metas = fields_of(model)
    for name, info in model.model_fields.items():
        if values.get(name, ...) is None and not info.is_required() and not metas[name].nullable:
            del values[name]
    return values


def from_document(model: type[E], doc: Mapping[str, Any]) -> E:
    """Build a `model` from a stored document; InvalidData naming the record and fields if the
    document does not fit the model."""
    if "_id" not in doc:
        raise InvalidData(f"{model.collection}: document has no _id: {dict(doc)!r:.200}")
    values = field_values(model, doc)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidData(
            f"{model.collection} document {values['id']!r} does not fit the {model.__name__} "
            f"model ({problems}); correct the document in MongoDB or migrate it",
            details={"collection": model.collection, "id": values["id"]},
        ) from None
