"""Rows encoded in PostgreSQL's binary COPY format, by the converter processes.

With converter processes (`--workers N`), sending records back to the parent as Python tuples
cost the parent ~6 µs per row to unpickle (tz-aware datetimes) and ~3 µs more for asyncpg to
encode them for COPY, on the one core the parent has. The children therefore encode each row
themselves (`RowEncoder`) and send one `bytes` per batch; the parent only frames it
(`BinaryRows.payload`) and hands it to `copy_to_table(format="binary")`.

The bytes are what asyncpg's own codecs send for the same values (tested column type by column
type, `tests/integration/test_migration_copybin.py`): text as UTF-8, TIMESTAMPTZ as microseconds
since 2000-01-01 UTC (`datetime.min`/`max` as -infinity/infinity, as asyncpg writes them),
INTEGER/BIGINT/SMALLINT, BOOLEAN, DOUBLE PRECISION, JSONB (format version 1 + the JSON text the
record already holds) and one-dimensional TEXT[] / DOUBLE PRECISION[] arrays. A table with a column
of any other type gets no encoder (`row_encoder` returns None) and its batches travel as tuples.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Boolean, Double, Float, Integer, SmallInteger, Table, Text
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

from tbd_agents.tools.migration.rows import json_text

#: "PGCOPY\n\377\r\n\0", flags (no OIDs), header extension length 0.
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_INFINITY = datetime.max.replace(tzinfo=UTC)
_NEG_INFINITY = datetime.min.replace(tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_INFINITY_MICROS = (_INFINITY - _EPOCH) // _MICRO
_NEG_INFINITY_MICROS = (_NEG_INFINITY - _EPOCH) // _MICRO
_TEXT_OID = 25
_FLOAT8_OID = 701

_int32 = struct.Struct("!i").pack
_NULL = _int32(-1)
_field_int16 = struct.Struct("!ih").pack
_field_int32 = struct.Struct("!ii").pack
_field_int64 = struct.Struct("!iq").pack
_field_float8 = struct.Struct("!id").pack
_array_head = struct.Struct("!iiiiii").pack  # length, ndim, has-null, oid, size, lower bound
_EMPTY_ARRAY = {oid: struct.pack("!iiii", 12, 0, 0, oid) for oid in (_TEXT_OID, _FLOAT8_OID)}

Encoder = Callable[[Any], bytes]

#: What encoding a value the column cannot take raises (a number out of range, a lone surrogate,
#: a value of the wrong type); `RowEncoder.encode_one` turns it into `Unencodable`. The batch then
#: travels as tuples, so that the loader isolates and quarantines the row with PostgreSQL's or
#: asyncpg's own message, as without converter processes.
ENCODE_ERRORS = (struct.error, OverflowError, ValueError, TypeError, AttributeError)


def _text(value: Any) -> bytes:
    data: bytes = value.encode()
    return _int32(len(data)) + data


def _jsonb(value: Any) -> bytes:
    data: bytes = b"\x01" + value.encode()  # the record holds JSON text (`to_record`)
    return _int32(len(data)) + data


def _timestamp(value: datetime) -> bytes:
    if value.tzinfo is UTC:  # what the models hold: computed without timedelta arithmetic
        micros = (
            (value.toordinal() - _EPOCH_ORDINAL) * 86400
            + value.hour * 3600
            + value.minute * 60
            + value.second
        ) * 1_000_000 + value.microsecond
        if _NEG_INFINITY_MICROS < micros < _INFINITY_MICROS:
            return _field_int64(8, micros)
    if value == _INFINITY:
        return _field_int64(8, 0x7FFFFFFFFFFFFFFF)
    if value == _NEG_INFINITY:
        return _field_int64(8, -0x8000000000000000)
    return _field_int64(8, (value - _EPOCH) // _MICRO)


def _boolean(value: Any) -> bytes:
    return b"\x00\x00\x00\x01\x01" if value else b"\x00\x00\x00\x01\x00"


def _array(oid: int, element: Encoder) -> Encoder:
    def encode(values: Sequence[Any]) -> bytes:
        if not values:
            return _EMPTY_ARRAY[oid]
        body = b"".join(_NULL if v is None else element(v) for v in values)
        has_null = int(any(v is None for v in values))
        return _array_head(20 + len(body), 1, has_null, oid, len(values), 1) + body

    return encode


def _float8_element(value: Any) -> bytes:
    return _field_float8(8, value)


def _encoder(column_type: Any) -> Encoder | None:
    if isinstance(column_type, TIMESTAMP):
        return _timestamp
    if isinstance(column_type, JSONB):
        return _jsonb
    if isinstance(column_type, Text):
        return _text
    if isinstance(column_type, Boolean):
        return _boolean
    if isinstance(column_type, BigInteger):
        return lambda v: _field_int64(8, v)
    if isinstance(column_type, SmallInteger):
        return lambda v: _field_int16(2, v)
    if isinstance(column_type, Integer):
        return lambda v: _field_int32(4, v)
    if isinstance(column_type, Double | Float):
        return lambda v: _field_float8(8, v)
    if isinstance(column_type, ARRAY) and column_type.dimensions in (None, 1):
        item = column_type.item_type
        if isinstance(item, Text):
            return _array(_TEXT_OID, _text)
        if isinstance(item, Double | Float):
            return _array(_FLOAT8_OID, _float8_element)
    return None


class Unencodable(Exception):
    """A record holds a value its column cannot take (see `ENCODE_ERRORS`)."""


class RowEncoder:
    """Encodes records (tuples in `columns` order) of one table as binary COPY tuples."""

    def __init__(
        self,
        encoders: list[Encoder],
        columns: Sequence[str] = (),
        json_columns: Collection[str] = (),
    ) -> None:
        self._encoders = encoders
        self._count = struct.pack("!h", len(encoders))
        self._row = _row_function(self._count, encoders, columns, json_columns)

    def encode_one(self, record: Sequence[Any]) -> bytes:
        """One record as one COPY tuple; Unencodable if a value does not fit its column."""
        try:
            return self._count + b"".join(
                _NULL if value is None else encode(value)
                for encode, value in zip(self._encoders, record, strict=True)
            )
        except ENCODE_ERRORS as exc:
            raise Unencodable(f"{type(exc).__name__}: {exc}") from exc

    def encode_row(self, row: Mapping[str, Any]) -> bytes:
        """A row (column name → value, JSONB values as Python objects) as one COPY tuple: the
        bytes `encode_one(to_record(spec, row))` gives, without building the record."""
        if self._row is None:
            raise TypeError("this encoder was built without its columns")
        try:
            return self._row(row)
        except ENCODE_ERRORS as exc:
            raise Unencodable(f"{type(exc).__name__}: {exc}") from exc

    def encode(self, records: Sequence[Sequence[Any]]) -> BinaryRows:
        """The records as one buffer of COPY tuples, with where each one starts."""
        return BinaryRows.of([self.encode_one(record) for record in records])


def _row_function(
    count: bytes, encoders: list[Encoder], columns: Sequence[str], json_columns: Collection[str]
) -> Callable[[Mapping[str, Any]], bytes] | None:
    """One function encoding a row dict, column after column, without a loop: the per-column
    generator and calls of `encode_one` cost ~2 µs per chat message."""
    if len(columns) != len(encoders):
        return None
    scope: dict[str, Any] = {"COUNT": count, "NULL": _NULL, "json_text": json_text}
    parts = []
    for i, column in enumerate(columns):
        scope[f"e{i}"] = encoders[i]
        value = f"json_text(v{i})" if column in json_columns else f"v{i}"
        parts.append(f"NULL if (v{i} := row[{column!r}]) is None else e{i}({value})")
    source = "def encode(row):\n    return b''.join((COUNT, " + ", ".join(parts) + "))\n"
    exec(source, scope)  # noqa: S102 - built from the table's own column names (repr-quoted)
    function: Callable[[Mapping[str, Any]], bytes] = scope["encode"]
    return function


def row_encoder(
    table: Table, columns: Sequence[str], json_columns: Collection[str] = ()
) -> RowEncoder | None:
    """An encoder for `columns` of `table`, or None if one of them has a type not handled here.
    `json_columns`: the JSONB columns whose values `encode_row` gets as Python objects (default:
    every JSONB column)."""
    encoders = []
    for name in columns:
        encoder = _encoder(table.c[name].type)
        if encoder is None:
            return None
        encoders.append(encoder)
    if not json_columns:
        json_columns = {n for n in columns if isinstance(table.c[n].type, JSONB)}
    return RowEncoder(encoders, columns, json_columns)


@dataclass(slots=True)
class BinaryRows:
    """A batch's rows as binary COPY tuples: `data[offsets[i]:offsets[i + 1]]` is row i."""

    data: bytes
    offsets: array[int]

    @classmethod
    def of(cls, rows: Sequence[bytes]) -> BinaryRows:
        """Rows encoded one by one (`RowEncoder.encode_one`), as one buffer."""
        offsets = array("q", [0])
        size = 0
        for row in rows:
            size += len(row)
            offsets.append(size)
        return cls(b"".join(rows), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def payload(self, indices: Sequence[int] | None = None) -> bytes:
        """A complete binary COPY stream of every row, or of the rows at `indices`."""
        if indices is None or len(indices) == len(self):
            return HEADER + self.data + TRAILER
        data, offsets = self.data, self.offsets
        return HEADER + b"".join(data[offsets[i] : offsets[i + 1]] for i in indices) + TRAILER


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """`data` as the async iterable `copy_to_table` streams (given `bytes` itself, asyncpg would
    take it for a file name)."""
    yield data
