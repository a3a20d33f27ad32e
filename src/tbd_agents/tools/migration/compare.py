"""One source document against its PostgreSQL row, field by field, from the document itself.

This is what verification checks, written independently of the conversion (`transform` is not
run): the document's values are compared with the row's under the documented value rules, so a
mistake in the conversion shows up as a difference instead of being reproduced.

For every top-level key of the document:

* `_id` is the row's `id` (the row was found by it); a key `id` equal to it is a copy of it;
* a key that names a column must be in that column, any other key in `extras[key]`;
* the values must be equal after the value rules: ObjectId → its hex text; a BSON date is a UTC
  instant (naive = UTC), a `TIMESTAMPTZ` in a column and ISO 8601 text inside JSON; numbers are
  compared by value (Int64, Decimal128, float, int alike; a `DOUBLE PRECISION` column holds the
  nearest double); an enum column holds the enum's own spelling of the value (any case, `-` or
  `_`, surrounding blanks ignored); binary UUIDs are their text; other BSON types are their
  Extended JSON (relaxed); embedded documents must have exactly the same keys;
* a string with NUL characters must be stored without them and `extras["$exact"][path]` must hold
  the base64 of its UTF-8 bytes; NaN and infinities stored as text in JSON must have their
  original in `extras["$exact"][path]` (`{"$numberDouble": "NaN"}`, `$numberDecimal` for a
  Decimal128); a `DOUBLE PRECISION` column holds them as they are.

A knowledge item of an earlier version of this hub with a media type in `content_type` is read as
the model reads it (`content_type` the kind, the media type in `mime_type`).

Columns the target numbers itself (`CollectionSpec.numbered`: a chat message's `seq`, a session's
`message_seq`) are not the source's: a numbered message must hold a number (1 or more), and a
counter is not compared.

And for what the document does not have: a column the document lacks, or holds null in while the
column cannot be null, must hold the field's default (a nullable column without a default: NULL);
`created_at` missing is the ObjectId's time (1970-01-01 UTC for other ids) and `updated_at`
missing is `created_at`. `extras` must hold no key the document lacks, and `$exact` no path that
no changed value explains.
"""

from __future__ import annotations

import math
import types
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Union, get_args, get_origin

from bson import Binary, Decimal128, Int64, ObjectId

from tbd_agents.domain.types import to_utc
from tbd_agents.tools.migration.convert import (
    EXACT,
    _extended,
    child_path,
    exact_number,
    exact_string,
    id_text,
    path_segment,
)
from tbd_agents.tools.migration.transform import EXTRAS, UNKNOWN_TIME, CollectionSpec, Row

_TEXT_LIMIT = 80


@dataclass(frozen=True, slots=True)
class Difference:
    """One field of one document whose target value is not the source's."""

    #: Field path (`title`, `logs[3].at`, `legacy_flag` for an extras key, `extras.$exact`...).
    field: str
    source: str
    target: str


class Note(str):
    """A text shown as it is in place of a value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


ABSENT = Note("(absent)")


def shown(value: Any, limit: int = _TEXT_LIMIT) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + f"… ({len(text)} chars)"


def _enum_of(annotation: Any) -> type[StrEnum] | None:
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return None
            annotation = args[0]
        else:
            break
    return annotation if isinstance(annotation, type) and issubclass(annotation, StrEnum) else None


@dataclass(frozen=True)
class _Column:
    #: The column's field path (its name, quoted if it must be).
    path: str
    enum: type[StrEnum] | None
    #: A null in the source means the default (the column cannot be null).
    defaulted: bool
    #: The value of a column the document lacks.
    default: Any


def _columns(spec: CollectionSpec) -> dict[str, _Column]:
    out = {}
    for name, info in spec.model.model_fields.items():
        if name not in spec.fields:
            continue
        default = None
        if name not in ("created_at", "updated_at") and not info.is_required():
            default = info.get_default(call_default_factory=True)
            if isinstance(default, StrEnum):
                default = default.value
        out[name] = _Column(
            path_segment(name), _enum_of(info.annotation), name in spec.defaulted, default
        )
    return out


class _Walk:
    """The comparison of one document: the differences found and the `$exact` paths used."""

    def __init__(self, exact: Mapping[str, Any], limit: int) -> None:
        self.exact = exact
        self.used: set[str] = set()
        self.found: list[Difference] = []
        self.limit = limit

    def differ(self, path: str, source: Any, target: Any) -> None:
        if len(self.found) < self.limit:
            self.found.append(Difference(path, shown(source), shown(target)))

    def exact_holds(self, path: str, original: Any) -> bool:
        self.used.add(path)
        return bool(self.exact.get(path) == original)

    # ----------------------------------------------------------------------------- values

    def value(self, source: Any, target: Any, path: str) -> None:
        """Record a difference if `target` does not hold `source` (see module docstring)."""
        kind = type(source)
        if kind is str:
            if "\x00" in source:
                self._nul(source, target, path)
            elif target != source or type(target) is not str:
                self.differ(path, source, target)
        elif source is None:
            if target is not None:
                self.differ(path, source, target)
        elif kind is bool:
            if target is not source:
                self.differ(path, source, target)
        elif kind is int or kind is Int64:
            if not _same_number(source, target):
                self.differ(path, source, target)
        elif kind is datetime:
            self._datetime(source, target, path)
        elif kind is ObjectId:
            if target != str(source):
                self.differ(path, source, target)
        elif isinstance(source, Mapping):
            self._mapping(source, target, path)
        elif isinstance(source, list | tuple):
            self._sequence(source, target, path)
        elif kind is float or kind is Decimal128 or isinstance(source, Decimal):
            self._number(source, target, path)
        elif isinstance(source, str):
            self.value(str(source), target, path)
        elif isinstance(source, uuid.UUID):
            if target != str(source):
                self.differ(path, source, target)
        elif isinstance(source, Binary) and source.subtype == 4 and len(source) == 16:
            if target != str(uuid.UUID(bytes=bytes(source))):
                self.differ(path, source, target)
        else:  # any other BSON type: its Extended JSON (relaxed)
            self.value(_extended(source), target, path)

    def _nul(self, source: str, target: Any, path: str) -> None:
        if target != source.replace("\x00", ""):
            self.differ(path, source, target)
        elif not self.exact_holds(path, exact_string(source)):
            self.differ(f"{EXTRAS}.{EXACT}[{path!r}]", source, self.exact.get(path))

    def _datetime(self, source: datetime, target: Any, path: str) -> None:
        instant = to_utc(source)
        if isinstance(target, datetime):
            same = target.tzinfo is not None and to_utc(target) == instant
        else:
            same = target == instant.isoformat()
        if not same:
            self.differ(path, source, target)

    def _number(self, source: float | Decimal | Decimal128, target: Any, path: str) -> None:
        number = source.to_decimal() if isinstance(source, Decimal128) else source
        finite = math.isfinite(number) if isinstance(number, float) else number.is_finite()
        if finite:
            if not _same_number(number, target):
                self.differ(path, source, target)
            return
        original = exact_number(source)
        if isinstance(target, float):  # a DOUBLE PRECISION column holds them as they are
            kept = path not in self.exact or self.exact_holds(path, original)
            if not (kept and _same_nonfinite(number, target)):
                self.differ(path, source, target)
        elif target != _text_of_nonfinite(number) or not self.exact_holds(path, original):
            self.differ(path, source, target)

    def _mapping(self, source: Mapping[Any, Any], target: Any, path: str) -> None:
        if not isinstance(target, Mapping):
            self.differ(path, source, target)
            return
        keys = {str(k): v for k, v in source.items()}
        for key in target.keys() - keys.keys():
            self.differ(child_path(path, key), ABSENT, target[key])
        for key, item in keys.items():
            if key not in target:
                self.differ(child_path(path, key), item, ABSENT)
            else:
                self.value(item, target[key], child_path(path, key))

    def _sequence(self, source: list[Any] | tuple[Any, ...], target: Any, path: str) -> None:
        if not isinstance(target, list | tuple) or len(target) != len(source):
            self.differ(path, source, target)
            return
        for i, (item, held) in enumerate(zip(source, target, strict=True)):
            self.value(item, held, child_path(path, i))


def _same_number(source: Any, target: Any) -> bool:
    if isinstance(target, bool) or not isinstance(target, int | float | Decimal):
        return False
    if isinstance(source, bool):
        return False
    if isinstance(target, float):  # a DOUBLE PRECISION column: the nearest double
        try:
            return float(source) == target
        except (OverflowError, ValueError):
            return False
    left = Decimal(repr(source)) if isinstance(source, float) else Decimal(source)
    return left == Decimal(target)


def _same_nonfinite(number: float | Decimal, target: float) -> bool:
    if math.isnan(target):
        return number != number or (isinstance(number, Decimal) and number.is_nan())
    return math.isinf(target) and (target > 0) == (number > 0)


def _text_of_nonfinite(number: float | Decimal) -> str:
    if number != number or (isinstance(number, Decimal) and number.is_nan()):
        return "NaN"
    return "Infinity" if number > 0 else "-Infinity"


class DocumentComparer:
    """Compares the documents of one collection with their rows (see module docstring)."""

    def __init__(self, spec: CollectionSpec, limit: int = 50) -> None:
        self.spec = spec
        self.columns = _columns(spec)
        self.limit = limit

    def compare(self, document: Mapping[str, Any], row: Row) -> list[Difference]:
        """The differences between `document` and `row` (its JSON columns parsed); at most
        `limit` of them."""
        if self.spec.name == "knowledge_items":
            document = _knowledge_item_kind(document)
        extras = row.get(EXTRAS)
        walk = _Walk({}, self.limit)
        if not isinstance(extras, Mapping):
            walk.differ(EXTRAS, Note("a JSON object"), extras)
            extras = {}
        exact = extras.get(EXACT, {})
        if not isinstance(exact, Mapping):
            walk.differ(f"{EXTRAS}.{EXACT}", Note("a JSON object"), exact)
            exact = {}
        walk.exact = exact
        doc_id = row["id"]
        seen: set[str] = set()
        for key, value in document.items():
            if key == "_id":
                nul = isinstance(value, str) and "\x00" in value
                if nul and not walk.exact_holds("_id", exact_string(value)):
                    walk.differ(f"{EXTRAS}.{EXACT}['_id']", value, exact.get("_id"))
                continue
            column = self.columns.get(key)
            if key in self.spec.numbered:
                continue  # checked with the columns the document lacks
            if column is not None:
                if value is None and column.defaulted:
                    continue  # the default, checked with the columns the document lacks
                seen.add(key)
                held = row[key]
                if column.enum is None:
                    # Fast paths for the common values; everything else is walked.
                    kind = type(value)
                    if kind is str and "\x00" not in value:
                        if held != value or type(held) is not str:
                            walk.differ(column.path, value, held)
                        continue
                    if (kind is int or kind is bool) and type(held) is kind:
                        if held != value:
                            walk.differ(column.path, value, held)
                        continue
                    walk.value(value, held, column.path)
                else:
                    self._enum(walk, key, column, value, held)
            elif key == "id" and id_text(value) == doc_id:
                continue
            elif key in extras and key != EXACT:
                walk.value(value, extras[key], path_segment(key))
            else:
                walk.differ(key, value, Note(f"(absent: neither a column nor a key of {EXTRAS})"))
        for name, column in self.columns.items():
            if name in self.spec.numbered:
                self._numbered(walk, name, row)
            elif name not in seen:
                self._default(walk, name, column, document, row)
        for key in extras:
            if key != EXACT and key not in document:
                walk.differ(f"{EXTRAS}.{key}", ABSENT, extras[key])
        if exact:
            for path in exact.keys() - walk.used:
                walk.differ(
                    f"{EXTRAS}.{EXACT}[{path!r}]", Note("(no changed value there)"), exact[path]
                )
        return walk.found

    def _numbered(self, walk: _Walk, name: str, row: Row) -> None:
        numbering = self.spec.model.numbering
        if numbering is None or name != numbering.field:
            return  # a parent's counter
        held = row[name]
        if not isinstance(held, int) or held < 1:
            walk.differ(name, Note("(numbered after the load: 1, 2, 3…)"), held)

    def _enum(self, walk: _Walk, name: str, column: _Column, value: Any, held: Any) -> None:
        assert column.enum is not None
        if isinstance(value, str):
            text = value
            if "\x00" in text:
                if not walk.exact_holds(name, exact_string(text)):
                    walk.differ(f"{EXTRAS}.{EXACT}[{name!r}]", value, walk.exact.get(name))
                text = text.replace("\x00", "")
            try:
                expected: Any = column.enum(text.strip()).value
            except ValueError:
                walk.differ(
                    name, value, Note(f"{shown(held)} (not a value of {column.enum.__name__})")
                )
                return
            if held != expected:
                walk.differ(name, value, held)
            return
        walk.value(value, held, column.path)

    def _default(
        self, walk: _Walk, name: str, column: _Column, document: Mapping[str, Any], row: Row
    ) -> None:
        held = row[name]
        if name == "created_at":
            expected = _created_at(document)
        elif name == "updated_at":
            created = document.get("created_at")
            expected = to_utc(created) if isinstance(created, datetime) else _created_at(document)
        else:
            expected = column.default
            if held == expected and type(held) is type(expected):
                return
        if isinstance(expected, datetime):
            if not (isinstance(held, datetime) and to_utc(held) == expected):
                walk.differ(name, Note(f"(no value: {expected.isoformat()})"), held)
            return
        probe = _Walk({}, 1)
        probe.value(expected, held, name)
        if probe.found:
            walk.differ(name, Note(f"(no value: the default {shown(expected)})"), held)


def _knowledge_item_kind(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """A knowledge item of an earlier version of this hub, whose `content_type` holds a media
    type (`application/pdf`), as the documented rule reads it: `content_type` the kind (`image`
    for an `image/...` type, `file` when it has a `file_id`, else `text`), the media type in
    `mime_type` unless the document has one."""
    kind = document.get("content_type")
    if not isinstance(kind, str) or "/" not in kind:
        return document
    read = dict(document)
    read.setdefault("mime_type", kind)
    if kind.startswith("image/"):
        read["content_type"] = "image"
    else:
        read["content_type"] = "file" if document.get("file_id") else "text"
    return read


def _created_at(document: Mapping[str, Any]) -> datetime:
    created = document.get("created_at")
    if isinstance(created, datetime):
        return to_utc(created)
    raw_id = document.get("_id")
    return raw_id.generation_time if isinstance(raw_id, ObjectId) else UNKNOWN_TIME
