"""Binary COPY tuples encoded by the converter processes (`tools/migration/copybin.py`) store
exactly what asyncpg's own encoding of the same records stores, for every migrated table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Table

from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.tools.migration.copybin import BinaryRows, Unencodable, one_chunk, row_encoder
from tbd_agents.tools.migration.transform import SPECS, CollectionSpec, to_record
from tests.contract.test_rows import full_record
from tests.support import pg


@pytest.fixture(scope="module")
async def conn(pg18_server: str) -> AsyncIterator[asyncpg.Connection]:
    url = pg.create_migrated_database(pg18_server, prefix="copybin")
    connection = await asyncpg.connect(libpq_url(url))
    yield connection
    await connection.close()
    pg.drop_database(url)


async def _stored(
    conn: asyncpg.Connection, spec: CollectionSpec, records: list[tuple[Any, ...]], binary: bool
) -> list[str]:
    """The rows as PostgreSQL stores them after one COPY (text of each whole row, sorted)."""
    name = f"_copybin_{spec.name}_{int(binary)}"
    await conn.execute(f'CREATE TEMP TABLE "{name}" (LIKE "{spec.name}")')
    try:
        if binary:
            encoder = row_encoder(spec.table, spec.columns)
            assert encoder is not None
            encoded = encoder.encode(records)
            assert len(encoded) == len(records)
            await conn.copy_to_table(
                name, source=one_chunk(encoded.payload()), columns=spec.columns, format="binary"
            )
        else:
            await conn.copy_records_to_table(name, records=records, columns=spec.columns)
        return sorted(r[0] for r in await conn.fetch(f'SELECT t::text FROM "{name}" t'))
    finally:
        await conn.execute(f'DROP TABLE "{name}"')


def _record(spec: CollectionSpec, **changes: Any) -> tuple[Any, ...]:
    record = full_record(spec.model).model_copy(update=changes)
    return to_record(spec, dict(record.__dict__))


def test_every_migrated_table_has_an_encoder() -> None:
    for spec in SPECS.values():
        assert isinstance(spec.table, Table)
        assert row_encoder(spec.table, spec.columns) is not None, spec.name


@pytest.mark.parametrize("name", sorted(SPECS))
async def test_binary_rows_store_what_asyncpg_stores(conn: asyncpg.Connection, name: str) -> None:
    spec = SPECS[name]
    nullable = {c for c in spec.columns if spec.table.c[c].nullable}
    records = [
        _record(spec),
        _record(spec, **dict.fromkeys(nullable - {"id"}, None)),
    ]
    assert await _stored(conn, spec, records, True) == await _stored(conn, spec, records, False)


async def test_edge_values(conn: asyncpg.Connection) -> None:
    spec = SPECS["agents"]
    records = [
        _record(
            spec,
            id=f"edge-{i}",
            name=name,
            created_at=when,
            updated_at=when,
            temperature=temperature,
            max_turns=turns,
            tags=tags,
            tool_definitions=[{"n": 10**20, "f": 1.5, "s": name}],
        )
        for i, (name, when, temperature, turns, tags) in enumerate(
            [
                ("ünïcödé ✓ 🚀", datetime.max.replace(tzinfo=UTC), 0.0, 1, []),
                ('quote " \\ \t\n', datetime.min.replace(tzinfo=UTC), 2.0, 2**31 - 1, ["a", "b"]),
                ("x" * 100_000, datetime(2000, 1, 1, tzinfo=UTC), 0.1, None, ["é" * 300]),
                ("before 2000", datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC), None, 7, [""]),
            ]
        )
    ]
    assert await _stored(conn, spec, records, True) == await _stored(conn, spec, records, False)


async def test_arrays_of_floats_with_nulls(conn: asyncpg.Connection) -> None:
    spec = SPECS["memories"]
    records = [
        _record(spec, id="m1", embedding=[0.25, -1.5, 1e-300]),
        _record(spec, id="m2", embedding=[]),
        _record(spec, id="m3", embedding=None),
    ]
    assert await _stored(conn, spec, records, True) == await _stored(conn, spec, records, False)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_row_dict_encodes_as_its_record(name: str) -> None:
    """`encode_row` (what the converter processes use) gives the bytes of `encode_one` of the
    record, with every value set, with every nullable one null, and at the timestamp limits."""
    spec = SPECS[name]
    encoder = row_encoder(spec.table, spec.columns)
    assert encoder is not None
    nullable = {c for c in spec.columns if spec.table.c[c].nullable} - {"id"}
    full = dict(full_record(spec.model).__dict__)
    rows = [full, {**full, **dict.fromkeys(nullable, None)}]
    for when in (
        datetime.max.replace(tzinfo=UTC),
        datetime.min.replace(tzinfo=UTC),
        datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),
    ):
        rows.append({**full, "created_at": when, "updated_at": when})
    for row in rows:
        assert encoder.encode_row(row) == encoder.encode_one(to_record(spec, row))
    with pytest.raises(Unencodable):
        encoder.encode_row({**full, "id": "lone \ud800 surrogate"})


def test_payload_of_some_rows() -> None:
    spec = SPECS["agents"]
    encoder = row_encoder(spec.table, spec.columns)
    assert encoder is not None
    records = [_record(spec, id=f"r{i}", name=f"agent {i}") for i in range(5)]
    whole = encoder.encode(records)
    part = encoder.encode([records[1], records[3]])
    assert whole.payload([1, 3]) == part.payload()
    assert whole.payload(range(5)) == whole.payload()
    assert isinstance(whole, BinaryRows) and len(whole) == 5


def test_a_value_the_column_cannot_take_is_unencodable() -> None:
    spec = SPECS["agents"]
    encoder = row_encoder(spec.table, spec.columns)
    assert encoder is not None
    for bad in ({"max_turns": 2**31}, {"name": "lone \ud800 surrogate"}):
        record = to_record(spec, {**dict(full_record(spec.model).__dict__), **bad})
        with pytest.raises(Unencodable):
            encoder.encode([record])


def test_default_workers_follow_the_cpus() -> None:
    from tbd_agents.tools.migration.procpool import default_workers

    assert [default_workers(n, "linux") for n in (1, 2, 3, 4, 16)] == [0, 2, 3, 4, 4]
    assert default_workers(8, "darwin") == 0
