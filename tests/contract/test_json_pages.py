"""`Repository.list_json`: the page `list` returns, already serialised.

On PostgreSQL the JSON is built by the database (`storage/postgres/json_rows.py`); it must carry
exactly the values the models' own serialisation gives for the same rows: same keys, same
strings (timestamps to the character), numbers of the same kind (`1.0` stays a float), and the
same cursors, so a client cannot tell which path served a page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlalchemy import text

from tbd_agents.domain.models import ENTITIES, Agent, Entity, Memory
from tbd_agents.storage.common import records_json
from tbd_agents.storage.postgres.json_rows import json_document
from tbd_agents.storage.postgres.query import db_value
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.postgres.tables import TABLES
from tbd_agents.storage.protocol import DocumentStore, Query, Sort, contains_all, eq
from tests.contract.test_rows import full_record


def typed(raw: bytes) -> Any:
    """Parsed JSON in which numbers keep their written kind (1 ≠ 1.0)."""
    return json.loads(
        raw,
        parse_int=lambda s: ("int", int(s)),
        parse_float=lambda s: ("float", float(s)),
    )


async def _insert_rows(store: PostgresStore, model: type[Entity], records: list[Entity]) -> None:
    table = TABLES[model.collection]
    async with store.engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))  # no FK checks
        for record in records:
            await conn.execute(
                table.insert().values({n: db_value(getattr(record, n)) for n in model.model_fields})
            )


async def _both(
    store: PostgresStore, model: type[Entity], query: Query, omit: frozenset[str] = frozenset()
) -> tuple[Any, Any, str | None, str | None]:
    async with store.unit_of_work(readonly=True) as repos:
        repo = repos.for_model(model)
        page = await repo.list(query)
        fast = await repo.list_json(query, omit)
    return (
        typed(fast.items),
        typed(records_json(model, page.items, omit)),
        fast.next_cursor,
        page.next_cursor,
    )


def test_every_table_is_serialised_by_the_database() -> None:
    """No entity falls back to models, except memories with their vector column included."""
    for model in ENTITIES:
        fields = tuple(model.model_fields)
        table = TABLES[model.collection]
        if model is Memory:
            assert json_document(table, fields) is None  # DOUBLE PRECISION[] embedding
            fields = tuple(f for f in fields if f != "embedding")
        assert json_document(table, fields) is not None, model.__name__


@pytest.mark.parametrize("model", ENTITIES, ids=lambda m: m.__name__)
async def test_full_records_serialise_alike(pg_store: PostgresStore, model: type[Entity]) -> None:
    await _insert_rows(pg_store, model, [full_record(model)])
    omit = frozenset({"embedding"}) if model is Memory else frozenset()
    for query in (Query(limit=10), Query()):  # a page; the whole list (json_array_statement)
        fast, slow, _, _ = await _both(pg_store, model, query, omit)
        assert len(fast) == 1
        assert fast == slow
        serialised = [f for f, info in model.model_fields.items() if not info.exclude]
        assert list(fast[0]) == [f for f in serialised if f not in omit]  # field order


EDGE_TIMES = [
    datetime(2024, 1, 1, tzinfo=UTC),  # no fraction: pydantic writes none either
    datetime(2024, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
    datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),  # asyncpg stores datetime.min as -infinity
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # … and datetime.max as infinity
    datetime(9999, 12, 31, 23, 59, 59, 120000, tzinfo=UTC),
]
EDGE_TEXT = [
    'quote " backslash \\ slash / tab \t newline \n',
    "ünïcödé ✓ 𝄞 emoji 🚀",
    "control \x01\x1f del \x7f",
    "",
]


async def test_edge_values_serialise_alike(pg_store: PostgresStore) -> None:
    agents = []
    for i, when in enumerate(EDGE_TIMES):
        agents.append(
            Agent(
                name=f"a{i}{EDGE_TEXT[i % len(EDGE_TEXT)]}",
                description=EDGE_TEXT[(i + 1) % len(EDGE_TEXT)],
                temperature=[0.0, 1.0, 2.0, 0.1, 1.9999999999999998, None][i],
                max_turns=None if i % 2 else 7,
                tags=[EDGE_TEXT[i % len(EDGE_TEXT)], "x"] if i % 2 else [],
                tool_definitions=[
                    {
                        "f": 1.0,
                        "big": 1e20,
                        "tiny": 5e-324,
                        "neg": -0.5,
                        "s": EDGE_TEXT[i % len(EDGE_TEXT)],
                        "nested": [None, True, {"k": [1, 2.5]}],
                    }
                ],
                created_at=when,
                updated_at=when,
            )
        )
    await _insert_rows(pg_store, Agent, list(agents))
    fast, slow, _, _ = await _both(pg_store, Agent, Query(limit=100))
    assert len(fast) == len(agents)
    assert fast == slow
    whole, slow, cursor, _ = await _both(pg_store, Agent, Query())
    assert whole == slow == fast
    assert cursor is None
    assert {a["created_at"] for a in fast} == {
        json.loads(TypeAdapter(datetime).dump_json(t)) for t in EDGE_TIMES
    }
    assert "2024-01-01T00:00:00Z" in {a["created_at"] for a in fast}


async def test_pages_and_cursors_match_list(pg_store: PostgresStore) -> None:
    agents = [
        Agent(name=f"n{i % 7:02d}", tags=["t"] if i % 3 else ["t", "u"], temperature=i / 20)
        for i in range(40)
    ]
    await _insert_rows(pg_store, Agent, list(agents))
    for sort in [(Sort("created_at", True),), (Sort("name"),), (Sort("name", True), Sort("id"))]:
        for filters in [(), (contains_all("tags", ["u"]),)]:
            query = Query(filters=filters, sort=sort, limit=6)
            seen = 0
            while True:
                fast, slow, fast_cursor, slow_cursor = await _both(pg_store, Agent, query)
                assert fast == slow and fast_cursor == slow_cursor, (sort, filters)
                seen += len(fast)
                if fast_cursor is None:
                    break
                query = query.after(fast_cursor)
            assert seen == (40 if not filters else len([a for a in agents if "u" in a.tags]))


async def test_whole_lists_filtered_by_equalities_match_list(pg_store: PostgresStore) -> None:
    """Without a limit and with only equality filters (owner, parent, name...), the list is one
    prepared statement returning the array as bytes; it holds what `list` holds, in order."""
    agents = [
        Agent(name=f"n{i % 3}", created_by="alice" if i % 2 else "bob", temperature=i / 20)
        for i in range(25)
    ]
    await _insert_rows(pg_store, Agent, list(agents))
    for filters in [
        (),
        (eq("name", "n1"),),
        (eq("name", "n1"), eq("created_by", "alice")),
        (eq("name", "nobody"),),
        (contains_all("tags", ["x"]),),  # not an equality: the general statement
    ]:
        for sort in [(Sort("created_at", True),), (Sort("name"), Sort("updated_at", True))]:
            fast, slow, cursor, _ = await _both(pg_store, Agent, Query(filters, sort))
            assert fast == slow, (filters, sort)
            assert cursor is None
            expected = [
                a
                for a in agents
                if all(getattr(a, f.field) == f.value for f in filters if f.op == "eq")
            ]
            assert len(fast) == (0 if filters and filters[0].op != "eq" else len(expected))
    async with pg_store.unit_of_work(readonly=True) as repos:
        empty = await repos.agents.list_json(Query(filters=(eq("name", "nobody"),)))
    assert empty.items == b"[]"


async def test_omitted_fields_are_left_out(pg_store: PostgresStore) -> None:
    await _insert_rows(pg_store, Agent, [Agent(name="secretive", system_prompt="hidden")])
    fast, slow, _, _ = await _both(
        pg_store, Agent, Query(limit=5), frozenset({"system_prompt", "tags"})
    )
    assert fast == slow
    assert "system_prompt" not in fast[0] and "tags" not in fast[0] and "name" in fast[0]


async def test_every_backend_pages_alike(store: DocumentStore) -> None:
    """The contract: list_json walks the same pages as list on every backend."""
    async with store.unit_of_work() as repos:
        for i in range(12):
            await repos.agents.create(Agent(name=f"agent-{i:02d}", tags=["x"]))
    query = Query(sort=(Sort("name"),), limit=5)
    names: list[str] = []
    async with store.unit_of_work(readonly=True) as repos:
        while True:
            page = await repos.agents.list(query)
            fast = await repos.agents.list_json(query, frozenset({"system_prompt"}))
            assert fast.next_cursor == page.next_cursor
            items = json.loads(fast.items)
            assert [i["name"] for i in items] == [a.name for a in page.items]
            assert all("system_prompt" not in i for i in items)
            names += [i["name"] for i in items]
            if fast.next_cursor is None:
                break
            query = query.after(fast.next_cursor)
    assert names == [f"agent-{i:02d}" for i in range(12)]


async def test_integers_beyond_64_bits_in_jsonb_read_back_exact(pg_store: PostgresStore) -> None:
    """orjson reads such integers as floats; the JSONB decoder must not lose them."""
    values = {"big": 10**20, "low": -(2**63) - 1, "u64": 2**64 - 1, "text": "9" * 25}
    agent = Agent(name="numbers", tool_definitions=[values])
    async with pg_store.unit_of_work() as repos:
        await repos.agents.create(agent)
    async with pg_store.unit_of_work(readonly=True) as repos:
        got = await repos.agents.get(agent.id)
        fast = await repos.agents.list_json(Query(limit=1))
    assert got.tool_definitions == [values]
    assert all(type(v) is type(values[k]) for k, v in got.tool_definitions[0].items())
    assert json.loads(fast.items)[0]["tool_definitions"] == [values]
