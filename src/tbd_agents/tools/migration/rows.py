"""Row values ↔ what PostgreSQL stores, and the canonical per-row hash the verifier compares.

`json_text` encodes a JSONB value exactly (`Decimal` numbers keep every digit). `row_digest` hashes
a row canonically: it gives the same digest for a row converted from a MongoDB document and for
the same row read back from PostgreSQL, whatever representation each side has for equal values
(an `int`, a `float` or a `Decimal` of the same number; dict key order; a datetime in any time
zone), and a different digest as soon as any field's value differs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from tbd_agents.domain.types import to_utc

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


# The C encoder built once (json.dumps builds one per call): no indent, compact, no NaN.
_fast = (
    c_make_encoder(None, _refuse, encode_basestring, None, ":", ",", False, False, False)
    if c_make_encoder
    else None
)


def json_text(value: Any) -> str:
    """`value` as JSON text for a JSONB column; `Decimal`s are written with all their digits."""
    if not value and type(value) in (dict, list):
        return "{}" if type(value) is dict else "[]"
    try:
        return "".join(_fast(value, 0)) if _fast is not None else _encode(value)
    except TypeError:
        return "".join(_slow_json(value))


def _slow_json(value: Any) -> Iterable[str]:
    if isinstance(value, Decimal):
        yield str(value)
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            if i:
                yield ","
            yield _encode(str(key))
            yield ":"
            yield from _slow_json(item)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _slow_json(item)
        yield "]"
    else:
        yield _encode(value)


#: Built once: `json.loads` with keyword arguments builds a decoder per call.
_decode = json.JSONDecoder(parse_float=Decimal).decode


def parse_json(text: str) -> Any:
    """Parse JSONB text read from PostgreSQL without rounding any number."""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return _decode(text)


def _number(value: int | float | Decimal) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        number = Decimal(repr(value))
    else:
        number = Decimal(value)
    if number.is_nan():
        return "NaN"
    if number.is_infinite():
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    sign, digits, exponent = number.normalize().as_tuple()
    return ("-" if sign else "") + "".join(map(str, digits)) + "e" + str(exponent)


def _canonical(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("~")
    elif isinstance(value, bool):
        out.append("T" if value else "F")
    elif isinstance(value, str):
        out.append(_encode(str(value)))
    elif isinstance(value, int | float | Decimal):
        out.append("#" + _number(value))
    elif isinstance(value, datetime):
        out.append("@" + to_utc(value).isoformat())
    elif isinstance(value, Mapping):
        out.append("{")
        for key in sorted(value):
            out.append(_encode(str(key)) + ":")
            _canonical(value[key], out)
            out.append(",")
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for item in value:
            _canonical(item, out)
            out.append(",")
        out.append("]")
    else:
        raise TypeError(f"no canonical form for {type(value).__name__}: {value!r}")


def canonical_text(row: Mapping[str, Any]) -> str:
    """The canonical text of a row (columns sorted by name); equal rows give equal text."""
    out: list[str] = []
    _canonical(row, out)
    return "".join(out)


def row_digest(row: Mapping[str, Any]) -> bytes:
    """16-byte BLAKE2b digest of `canonical_text(row)`."""
    return hashlib.blake2b(canonical_text(row).encode("utf-8"), digest_size=16).digest()
