"""Records in the shapes of an existing TBD Agents database behave the same on every backend.

The data is the generated existing database (`tests.support.legacy_dump`): every collection in
every shape its data model allows. Each document is read into its model exactly as the MongoDB
profile reads it (`storage.mongo.codec.from_document`), stored through the `DocumentStore`
protocol, and must read back equal on every backend — existing enum values as written, unknown
keys in `extras`, nested payloads, optional fields absent or null.

PostgreSQL cannot hold the NUL character in text: there a record holding one is refused with a
clear error (the migration keeps such values another way, see docs/migration.md); MongoDB keeps
it. And JSON has no date type: a datetime nested in a JSON value (`extras`, `usage`, `logs`...)
reads back from PostgreSQL as its ISO 8601 text, from MongoDB as a datetime; and a JSON number
keeps its value but not always its Python type there (PostgreSQL prints the float 1e308 as
digits, which read back as an integer of the same value).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tbd_agents.domain.models import ENTITY_BY_COLLECTION, Entity
from tbd_agents.errors import InvalidData
from tbd_agents.services.bundle import ORDER
from tbd_agents.storage.mongo.codec import from_document
from tbd_agents.storage.protocol import DocumentStore
from tests.support.legacy_dump import legacy_database

LEGACY = legacy_database()


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _nested_dates_as_text(value: Any, top: bool = True) -> Any:
    if isinstance(value, datetime) and not top:
        return value.isoformat()
    if isinstance(value, dict):
        return {
            k: _nested_dates_as_text(v, top and not isinstance(v, dict | list))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_nested_dates_as_text(v, False) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    numbers = (int, float)
    if {type(a), type(b)} == {int, float} and isinstance(a, numbers) and isinstance(b, numbers):
        return float(a) == float(b)
    return bool(a == b) and type(a) is type(b)


def _comparable(record: Entity, backend: str) -> dict[str, Any]:
    dumped = record.model_dump()
    return _nested_dates_as_text(dumped) if backend == "postgres" else dumped


def _records() -> list[Entity]:
    order = [m.collection for m in ORDER]
    rest = [c for c in ENTITY_BY_COLLECTION if c not in order]
    records = []
    for collection in (*order, *rest):
        model = ENTITY_BY_COLLECTION[collection]
        records.extend(from_document(model, d) for d in LEGACY.bson_documents(collection))
    return records


RECORDS = _records()
#: Fields of a parent that storing its children changes by design: a session's message counters
#: (raised in the statement that numbers its messages), hence its version and `updated_at`.
_CHANGED_BY_CHILDREN = {
    "chat_sessions": ("message_count", "message_seq", "version", "updated_at"),
}


def test_the_fixture_covers_every_collection() -> None:
    assert {type(r).collection for r in RECORDS} == set(ENTITY_BY_COLLECTION)
    assert any(r.extras for r in RECORDS)


async def test_existing_records_read_back_as_written(store: DocumentStore) -> None:
    refused: list[str] = []
    for record in RECORDS:
        if store.backend == "postgres" and _has_nul(record.model_dump()):
            with pytest.raises(InvalidData, match=r"NUL character \(U\+0000\)"):
                async with store.unit_of_work() as repos:
                    await repos.for_model(type(record)).create(record)
            refused.append(record.id)
            continue
        async with store.unit_of_work() as repos:
            await repos.for_model(type(record)).create(record)
    problems = []
    async with store.unit_of_work() as repos:
        for record in RECORDS:
            if record.id in refused:
                continue
            back = await repos.for_model(type(record)).get(record.id)
            want, got = _comparable(record, store.backend), back.model_dump()
            for name in _CHANGED_BY_CHILDREN.get(type(record).collection, ()):
                want.pop(name), got.pop(name)
            if type(record).collection == "chat_messages" and want["seq"] == 0:
                # Unnumbered (as every existing message is): numbered from its session on create.
                assert got.pop("seq") >= 1
                want.pop("seq")
            if not _same(got, want):
                diff = {k: (v, got.get(k)) for k, v in want.items() if not _same(got.get(k), v)}
                problems.append(f"{type(record).collection} {record.id}: {diff}")
    assert problems == []
    assert (store.backend == "postgres") == bool(refused)
