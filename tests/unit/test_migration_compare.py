"""The document-level rules of the migration and of its verification, without a database: the
exact originals of changed values (`$exact` paths), and the field-by-field comparison of a source
document with a row as PostgreSQL returns it (no false alarm on any edge case, a difference
naming the field for each kind of break)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson import Decimal128, Int64, ObjectId, Regex

from tbd_agents.tools.migration.batch import classify
from tbd_agents.tools.migration.compare import DocumentComparer
from tbd_agents.tools.migration.convert import exact_originals
from tbd_agents.tools.migration.rows import parse_json
from tbd_agents.tools.migration.transform import SPECS, convert_document, to_record
from tests.support.dumps import edge_case_dataset


def as_stored(collection: str, document: dict[str, Any]) -> dict[str, Any]:
    """The row the migration makes of `document`, as asyncpg reads it back: JSON columns parsed
    from their text (numbers exact), enums as their text, numbered columns numbered."""
    spec = SPECS[collection]
    converted = convert_document(spec, document)
    assert converted.row is not None, converted.problem
    row = dict(zip(spec.columns, to_record(spec, converted.row), strict=True))
    for column in spec.json_columns:
        if row[column] is not None:
            row[column] = parse_json(row[column])
    for column in spec.numbered:  # numbered after the load (tools/migration/numbering.py)
        row[column] = row[column] or 1
    return {k: v.value if hasattr(v, "value") else v for k, v in row.items()}


def fields(collection: str, document: dict[str, Any], row: dict[str, Any]) -> list[str]:
    return [d.field for d in DocumentComparer(SPECS[collection]).compare(document, row)]


def test_exact_originals_are_found_by_path() -> None:
    document = {
        "_id": "id\x00x",
        "name": "a\x00b",
        "logs": [{"detail": "ok"}, {"detail": "x\x00"}],
        "metadata": {"a.b": "n\x00", "": [float("nan")], "score": float("-inf")},
        "price": Decimal128("Infinity"),
        "pattern": Regex("^a\x00", "i"),
        "clean": ["fine", 1, 2.5, datetime(2024, 1, 1)],
    }
    exact = exact_originals(document)
    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    assert exact == {
        "_id": b64("id\x00x"),
        "name": b64("a\x00b"),
        "logs[1].detail": b64("x\x00"),
        'metadata["a.b"]': b64("n\x00"),
        'metadata[""][0]': {"$numberDouble": "NaN"},
        "metadata.score": {"$numberDouble": "-Infinity"},
        "price": {"$numberDecimal": "Infinity"},
        "pattern.$regularExpression.pattern": b64("^a\x00"),
    }


def test_the_migration_records_exact_originals_in_extras() -> None:
    document = {
        "_id": ObjectId(),
        "name": "agent\x00",
        "tool_definitions": [{"x": float("nan")}],
        "old": {"note": "\x00"},
    }
    row = as_stored("agents", document)
    assert row["name"] == "agent" and row["tool_definitions"] == [{"x": "NaN"}]
    assert row["extras"] == {
        "old": {"note": ""},
        "$exact": {
            "name": base64.b64encode(b"agent\x00").decode(),
            "tool_definitions[0].x": {"$numberDouble": "NaN"},
            "old.note": base64.b64encode(b"\x00").decode(),
        },
    }
    assert fields("agents", document, row) == []
    # A source field named $exact would clash with the record: refused, not merged.
    refused = convert_document(SPECS["agents"], {"_id": "a", "name": "n", "$exact": {}})
    assert refused.row is None and "$exact is reserved" in (refused.problem or "")


def test_no_difference_for_any_edge_case_that_migrates() -> None:
    dataset = edge_case_dataset(log_entries=5, big=300)
    compared = 0
    for collection, documents in dataset.documents.items():
        if collection not in SPECS:
            continue
        for document in documents:
            if classify(SPECS[collection], document, {}).row is None:
                continue
            row = as_stored(collection, document)
            assert fields(collection, document, row) == [], (collection, document["_id"])
            compared += 1
    assert compared > 30


def test_each_kind_of_break_names_its_field() -> None:
    at = datetime(2024, 5, 1, 12, 0, 0, 123000)
    document: dict[str, Any] = {
        "_id": ObjectId(),
        "agent_id": ObjectId(),
        "title": "nightly",
        "status": "MAX_TURNS_REACHED",
        "max_turns": Int64(7),
        "tags": None,
        "logs": [{"at": at, "n": Decimal128("0.10")}],
        "usage": {"total_cost": 0.1},
        "legacy": {"kept": True},
        "created_at": at,
    }
    row = as_stored("workflows", document)
    assert row["status"] == "max_turns_reached" and row["tags"] == []
    assert row["logs"] == [{"at": "2024-05-01T12:00:00.123000+00:00", "n": Decimal("0.10")}]
    assert row["updated_at"] == at.replace(tzinfo=UTC) and fields("workflows", document, row) == []

    def broken(**changes: Any) -> list[str]:
        return fields("workflows", document, {**row, **changes})

    assert broken(title="other") == ["title"]
    assert broken(status="running") == ["status"]
    assert broken(max_turns=8) == ["max_turns"]
    assert broken(tags=["x"]) == ["tags"]  # null in the source: the default, []
    assert broken(description="filled") == ["description"]  # absent: the default, ""
    assert broken(model="gpt") == ["model"]  # absent, nullable: NULL
    assert broken(logs=[{"at": "2024-05-01T12:00:00+00:00", "n": Decimal("0.1")}]) == ["logs[0].at"]
    assert broken(logs=[{"at": "2024-05-01T12:00:00.123000+00:00", "n": 1}]) == ["logs[0].n"]
    assert broken(usage={"total_cost": Decimal("0.1"), "more": 1}) == ["usage.more"]
    assert broken(extras={}) == ["legacy"]  # an unknown field dropped
    assert broken(extras={"legacy": {"kept": True}, "new": 1}) == ["extras.new"]
    assert broken(extras={"legacy": {"kept": True}, "$exact": {"title": "eA=="}}) == [
        "extras.$exact['title']"
    ]
    assert broken(updated_at=datetime(2024, 1, 1, tzinfo=UTC)) == ["updated_at"]
    # The same value written another way is no difference: numbers by value, dates by instant.
    assert broken(max_turns=7, created_at=at.replace(tzinfo=UTC)) == []


def test_values_of_typed_columns_follow_the_model() -> None:
    document = {
        "_id": "m1",
        "agent_id": "a",
        "scope": " Session ",
        "key": "k",
        "embedding": [Int64(1), Decimal128("0.1"), float("nan")],
        "ttl": datetime(2030, 1, 1),
    }
    row = as_stored("memories", document)
    assert row["scope"] == "session" and row["embedding"][1] == 0.1
    assert fields("memories", document, row) == []
    assert row["created_at"] == datetime(1970, 1, 1, tzinfo=UTC)  # no ObjectId: the epoch
    nan_kept = row["embedding"][2]
    assert nan_kept != nan_kept  # a DOUBLE PRECISION column holds NaN as it is
    assert fields("memories", document, {**row, "embedding": [1.0, 0.1, 0.0]}) == ["embedding[2]"]
    assert fields("memories", document, {**row, "scope": "agent"}) == ["scope"]
    without = {k: v for k, v in row.items() if k != "extras"} | {"extras": None}
    assert fields("memories", document, without)[0] == "extras"
