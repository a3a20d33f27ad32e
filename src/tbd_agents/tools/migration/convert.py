"""BSON values → plain Python values that PostgreSQL can store (the value-level conversion rules).

Rules (documented in docs/migration.md):

* `ObjectId` → its 24-hex string, wherever it appears (ids, references, nested values).
* BSON datetimes are UTC instants: they become timezone-aware UTC `datetime`s at the top level of a
  document and ISO 8601 strings (`2024-05-01T12:00:00+00:00`) inside nested JSON, whatever the time
  zone of the machine running the migration.
* `Int64` → `int`; `Decimal128` → `Decimal` (kept exact: JSONB numbers are arbitrary precision).
* UUIDs (binary subtype 4) → their canonical string.
* NUL characters (`\\x00`), which PostgreSQL cannot store in TEXT or JSONB, are removed from
  strings; the original is kept exactly (see `exact_originals`) and the field is reported.
* Not-a-number and infinite numbers, which JSONB cannot store, become the strings `"NaN"`,
  `"Infinity"`, `"-Infinity"`; the original is kept (see `exact_originals`) and the field is
  reported.
* Any other BSON type (binary data, regular expressions, timestamps, code, DBRefs, MinKey/MaxKey,
  dates outside the years 1 to 9999) becomes its MongoDB Extended JSON (relaxed) form, e.g.
  `{"$binary": {"base64": ..., "subType": "00"}}` — a lossless, documented representation.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from bson import Binary, Decimal128, Int64, ObjectId, json_util

from tbd_agents.domain.types import to_utc

_RELAXED = json_util.RELAXED_JSON_OPTIONS


class Findings:
    """Per-document record of what the conversion had to change (for the warnings report)."""

    __slots__ = ("nonfinite", "nul")

    def __init__(self) -> None:
        self.nul = False
        self.nonfinite = False


def _nonfinite_text(value: float | Decimal) -> str:
    if value != value:  # NaN
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _extended(value: Any) -> Any:
    return json.loads(json_util.dumps(value, json_options=_RELAXED))


def plain(value: Any, findings: Findings, nested: bool = False) -> Any:
    """`value` converted by the rules above; `nested` is True inside embedded documents/arrays."""
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            findings.nul = True
            return value.replace("\x00", "")
        return value
    if kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        findings.nonfinite = True
        return _nonfinite_text(value)
    if kind is dict:
        return {k: plain(v, findings, True) for k, v in value.items()}
    if kind is list:
        return [plain(v, findings, True) for v in value]
    if kind is ObjectId:
        return str(value)
    if kind is datetime:
        # Top level: the models make every datetime aware UTC (naive = UTC) themselves.
        return to_utc(value).isoformat() if nested else value
    if kind is Int64:
        return int(value)
    if kind is Decimal128:
        number = value.to_decimal()
        if number.is_finite():
            return number
        findings.nonfinite = True
        return _nonfinite_text(number)
    return _other(value, findings, nested)


def _other(value: Any, findings: Findings, nested: bool) -> Any:
    if isinstance(value, Binary) and value.subtype == 4 and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):  # str subclasses
        return plain(str(value), findings, nested)
    if isinstance(value, dict):  # SON and other mappings
        return {str(k): plain(v, findings, True) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, findings, True) for v in value]
    if isinstance(value, Decimal):
        if value.is_finite():
            return value
        findings.nonfinite = True
        return _nonfinite_text(value)
    return _extended(value)


#: Key of a row's `extras` holding the exact originals of the values the conversion changed.
EXACT = "$exact"


def path_segment(key: str) -> str:
    """A key as a segment of a field path: as it is, or `["..."]` (JSON string) when it is
    empty or holds `.`, `[` or `]`."""
    if key and not any(c in key for c in ".[]"):
        return key
    return "[" + json.dumps(key, ensure_ascii=False) + "]"


def child_path(path: str, key: str | int) -> str:
    """The path of `key` (a dict key, or a list index) inside the value at `path`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    segment = path_segment(key)
    return path + segment if segment.startswith("[") else f"{path}.{segment}"


def exact_string(original: str) -> str:
    """How `$exact` records a string: the base64 of its UTF-8 bytes."""
    return base64.b64encode(original.encode("utf-8", "surrogatepass")).decode("ascii")


def exact_number(original: float | Decimal | Decimal128) -> dict[str, str]:
    """How `$exact` records a number JSON cannot hold: its Extended JSON (canonical) form."""
    if isinstance(original, float):
        return {"$numberDouble": _nonfinite_text(original)}
    return {"$numberDecimal": str(original)}


def _changed(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(path, exact original) of every value under `value` that `plain` changes (NUL strings,
    non-finite numbers), walking the same structures `plain` does."""
    kind = type(value)
    if kind is str or isinstance(value, str):
        if "\x00" in value:
            yield path, exact_string(str(value))
    elif kind is float:
        if not math.isfinite(value):
            yield path, exact_number(value)
    elif kind is Decimal128 or isinstance(value, Decimal):
        number = value.to_decimal() if kind is Decimal128 else value
        if not number.is_finite():
            yield path, exact_number(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _changed(item, child_path(path, str(key)))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _changed(item, child_path(path, i))
    elif (
        kind in (int, bool, ObjectId, datetime, Int64)
        or value is None
        or isinstance(value, uuid.UUID)
        or (isinstance(value, Binary) and value.subtype == 4 and len(value) == 16)
    ):
        return
    else:  # stored as its Extended JSON: its strings may hold NULs
        yield from _changed(_extended(value), path)


def exact_originals(
    document: Mapping[str, Any], skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """`{field path: exact original}` of every value of `document` that the conversion changes.

    Paths: the top-level key, `.key` for a key of an embedded document, `[i]` for an item of an
    array (`logs[1].detail`); a key that is empty or holds `.`, `[` or `]` is written as a JSON
    string in brackets (`metadata["a.b"]`). Originals: a string as the base64 of its UTF-8
    bytes; NaN or an infinity as `{"$numberDouble": "NaN"}` (`$numberDecimal` for a
    Decimal128). An `_id` string with NULs is recorded under `_id`."""
    out: dict[str, Any] = {}
    for key, value in document.items():
        if key in skip:
            continue
        if key == "_id":
            if isinstance(value, str) and "\x00" in value:
                out["_id"] = exact_string(value)
            continue
        out.update(_changed(value, path_segment(key)))
    return out


def id_text(value: Any) -> str | None:
    """The text id of a document's `_id` (ObjectId hex, string, number, UUID); None if unusable."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, str) and not isinstance(value, bool):
        return value.replace("\x00", "") or None
    if isinstance(value, int | Int64) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Binary) and value.subtype == 4 and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    return None


def extended_json(document: Any) -> str:
    """`document` as MongoDB canonical Extended JSON (lossless; what the quarantine file keeps)."""
    return json_util.dumps(document, json_options=json_util.CANONICAL_JSON_OPTIONS)


def id_from_extended_json(text: str) -> Any:
    """The BSON `_id` value stored by `extended_json` in a checkpoint."""
    return json_util.loads(text, json_options=json_util.CANONICAL_JSON_OPTIONS)
