"""Backend-neutral query checks, value coercion and partial-update validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tbd_agents.domain.enums import MemoryScope, OutputFormat
from tbd_agents.domain.models import ENTITIES, Agent, ChatMessage, Memory, Token
from tbd_agents.errors import InvalidData, UnsupportedQuery
from tbd_agents.storage.common import (
    FieldKind,
    check_filters,
    check_query,
    check_update_fields,
    check_upsert_key,
    cursor_values,
    fields_of,
    validate_changes,
    well_formed_id,
)
from tbd_agents.storage.protocol import (
    Query,
    asc,
    contains_all,
    contains_any,
    desc,
    encode_cursor,
    eq,
    gt,
    in_,
    is_null,
    lte,
    ne,
    not_in,
)


def test_every_field_of_every_entity_has_a_kind() -> None:
    for model in ENTITIES:
        meta = fields_of(model)
        assert set(meta) == set(model.model_fields)
        assert meta["id"].kind is FieldKind.TEXT and meta["id"].sortable
        assert meta["created_at"].kind is FieldKind.DATETIME


@pytest.mark.parametrize(
    ("model", "name", "kind", "nullable"),
    [
        (Agent, "tags", FieldKind.STR_ARRAY, False),
        (Agent, "tool_definitions", FieldKind.JSON, False),
        (Agent, "output_format", FieldKind.ENUM, False),
        (Agent, "max_turns", FieldKind.INT, True),
        (Agent, "temperature", FieldKind.FLOAT, True),
        (Agent, "memory_enabled", FieldKind.BOOL, False),
        (Agent, "model", FieldKind.TEXT, True),
        (Memory, "embedding", FieldKind.FLOAT_ARRAY, True),
        (Memory, "ttl", FieldKind.DATETIME, True),
        (ChatMessage, "usage", FieldKind.JSON, True),
        (Token, "name", FieldKind.TEXT, False),
    ],
)
def test_field_kinds(model: type[Agent], name: str, kind: FieldKind, nullable: bool) -> None:
    meta = fields_of(model)[name]
    assert (meta.kind, meta.nullable) == (kind, nullable)
    assert meta.sortable is (not nullable and kind not in (FieldKind.JSON, FieldKind.STR_ARRAY))


def test_filter_values_are_coerced_to_the_field_type() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    checked = check_filters(
        Agent,
        [
            eq("output_format", " Markdown "),
            gt("created_at", "2024-01-01T05:30:00+05:30"),
            lte("updated_at", datetime(2024, 1, 1, 12)),  # naive → UTC
            in_("output_format", ["JSON", OutputFormat.TEXT]),
            eq("max_turns", 3),
            contains_any("tags", ["a"]),
            not_in("model", []),
            eq("name", ""),  # constraints (min_length) do not apply to filter values
        ],
    )
    assert checked[0].value is OutputFormat.MARKDOWN
    assert checked[1].value == datetime(2024, 1, 1, 5, 30, tzinfo=ist)
    assert checked[1].value.tzinfo is UTC
    assert checked[2].value == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert checked[3].value == (OutputFormat.JSON, OutputFormat.TEXT)
    assert checked[5].value == ("a",)
    assert checked[6].value == ()


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        (Query(filters=(eq("nope", 1),)), "no field 'nope'"),
        (
            Query(filters=(contains_any("name", ["a"]),)),
            "operators for it: contains_text, eq, in, ne, not_in",
        ),
        (Query(filters=(gt("memory_enabled", True),)), "gt does not apply"),
        (Query(filters=(gt("tool_definitions", 1),)), "json field"),
        (Query(filters=(contains_all("max_turns", [1]),)), "contains_all does not apply"),
        (Query(filters=(is_null("name"),)), "never null"),
        (Query(filters=(eq("model", None),)), "use is_null"),
        (Query(filters=(eq("name", 5),)), "not a string"),
        (Query(filters=(eq("memory_enabled", 1),)), "not a bool"),
        (Query(filters=(eq("max_turns", "many"),)), "not a valid int"),
        (Query(filters=(ne("output_format", "yaml"),)), "one of: text, markdown, json"),
        (Query(filters=(contains_any("tags", [1]),)), "not a string"),
        (Query(sort=(asc("model"),)), "nullable"),
        (Query(sort=(desc("tool_definitions"),)), "json field"),
        (Query(sort=(asc("name"), asc("name"))), "twice"),
        (Query(limit=0), "positive integer"),
        (Query(limit=True), "positive integer"),
        (Query(cursor="%%%"), "cursor"),
    ],
)
def test_check_query_refuses_with_a_message_that_names_the_problem(
    query: Query, fragment: str
) -> None:
    with pytest.raises(UnsupportedQuery) as info:
        check_query(Agent, query)
    assert fragment in info.value.message


def test_cursor_round_trip_restores_typed_values() -> None:
    when = datetime(2024, 5, 1, 10, tzinfo=UTC)
    record = Agent(name="n", created_at=when, output_format="json")
    query = Query(sort=(asc("output_format"), desc("created_at")), limit=2)
    checked = check_query(Agent, query)
    cursor = encode_cursor(cursor_values(record, checked.sort))
    after = check_query(Agent, query.after(cursor)).after
    assert after == (OutputFormat.JSON, when, record.id)
    with pytest.raises(UnsupportedQuery, match="cursor"):
        check_query(Agent, Query(sort=(asc("created_at"), asc("name")), cursor=cursor))
    with pytest.raises(UnsupportedQuery, match="cursor"):
        check_query(Agent, Query(sort=(asc("created_at"),)).after(encode_cursor(["x", "y"])))


def test_full_sort_ends_with_id_in_the_requested_direction() -> None:
    assert check_query(Agent, Query(sort=(desc("id"), asc("name")))).sort == (
        asc("name"),
        desc("id"),
    )
    assert check_query(Agent, Query()).sort == (asc("created_at"), asc("id"))


def test_validate_changes_returns_coerced_values() -> None:
    out = validate_changes(
        Memory,
        {
            "scope": "GLOBAL",
            "ttl": "2024-01-01T00:00:00-02:00",
            "embedding": [1, 2.5],
            "session_id": None,
            "metadata": {"a": [1, {"b": None}]},
        },
    )
    assert out["scope"] is MemoryScope.GLOBAL
    assert out["ttl"] == datetime(2024, 1, 1, 2, tzinfo=UTC)
    assert out["embedding"] == [1.0, 2.5]
    assert out["session_id"] is None
    assert out["metadata"] == {"a": [1, {"b": None}]}
    assert validate_changes(Memory, {}) == {}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"nope": 1}, "has no field 'nope'"),
        ({"id": "x"}, "cannot be changed"),
        ({"created_at": datetime.now(UTC)}, "cannot be changed"),
        ({"key": None}, "cannot be null"),
        ({"scope": "planet"}, "scope"),
        ({"ttl": "tomorrow"}, "ttl"),
        ({"metadata": [1, 2]}, "metadata"),
    ],
)
def test_validate_changes_refuses_bad_input(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidData) as info:
        validate_changes(Memory, changes)
    assert fragment in info.value.message


def test_validate_changes_needs_a_mapping() -> None:
    with pytest.raises(InvalidData, match="mapping"):
        validate_changes(Memory, [("key", "v")])  # type: ignore[arg-type]


def test_upsert_keys_must_be_unique_keys() -> None:
    assert check_upsert_key(Token, ["name"]) == ("name",)
    assert check_upsert_key(Token, ["id"]) == ("id",)
    assert check_upsert_key(Memory, ["key", "agent_id", "scope"]) == ("agent_id", "scope", "key")
    for bad in (["agent_id"], ["name", "name"], [], ["encrypted_value"]):
        with pytest.raises(UnsupportedQuery, match="unique key"):
            check_upsert_key(Token if "name" in bad or not bad else Memory, bad)


def test_upsert_update_fields() -> None:
    default = check_update_fields(Token, ("name",), None)
    assert "id" not in default and "created_at" not in default and "name" not in default
    assert {"encrypted_value", "description", "updated_at"} <= set(default)
    assert check_update_fields(Token, ("name",), ["description", "description"]) == (
        "description",
        "updated_at",
    )
    with pytest.raises(InvalidData, match="no field"):
        check_update_fields(Token, ("name",), ["nope"])
    with pytest.raises(InvalidData, match="cannot overwrite"):
        check_update_fields(Token, ("name",), ["name"])


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("x" * 128, True),
        ("", False),
        ("x" * 129, False),
        ("a\x00b", False),
        (1, False),
    ],
)
def test_well_formed_id(value: object, ok: bool) -> None:
    assert well_formed_id(value) is ok
