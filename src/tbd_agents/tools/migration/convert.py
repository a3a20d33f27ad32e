"""BSON values → plain Python values that PostgreSQL can store (the value-level conversion rules).

Rules (documented in docs/migration.md):

* `ObjectId` → its 24-hex string, wherever it appears (ids, references, nested values).
* BSON datetimes are UTC instants: they become timezone-aware UTC `datetime`s at the top level of a
  document and ISO 8601 strings (`2024-05-01T12:00:00+00:00`) inside nested JSON, whatever the time
  zone of the machine running the migration.
* `Int64` → `int`; `Decimal128` → `Decimal` (kept exact: JSONB numbers are arbitrary precision).
* UUIDs (binary subtype 4) → their canonical string.
* NUL characters (`\\x00`), which PostgreSQL cannot store in TEXT or JSONB, are removed from
  strings; the field is reported.
* Not-a-number and infinite numbers, which JSONB cannot store, become the strings `"NaN"`,
  `"Infinity"`, `"-Infinity"`; the field is reported.
* Any other BSON type (binary data, regular expressions, timestamps, code, DBRefs, MinKey/MaxKey,
  dates outside the years 1 to 9999) becomes its MongoDB Extended JSON (relaxed) form, e.g.
  `{"$binary": {"base64": ..., "subType": "00"}}` — a lossless, documented representation.
"""

from __future__ import annotations

import json
import math
import uuid
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
