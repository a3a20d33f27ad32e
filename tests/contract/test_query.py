"""Contract: every filter operator, sorting, keyset pages, iterate, UnsupportedQuery."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from tbd_agents.domain.models import Agent, TaskExecution, Workflow
from tbd_agents.errors import UnsupportedQuery
from tbd_agents.storage.protocol import (
    DocumentStore,
    Filter,
    Op,
    Query,
    Sort,
    asc,
    contains_all,
    contains_any,
    contains_text,
    desc,
    eq,
    gt,
    gte,
    in_,
    is_null,
    lt,
    lte,
    ne,
    not_in,
    not_null,
)
from tests.contract.data import ALL_AGENTS, HOUR, T0, add_tasks, python_order, seed_agents

IST = timezone(timedelta(hours=5, minutes=30))

FILTER_CASES: list[tuple[Filter, set[str]]] = [
    (eq("model", "gpt"), {"alpha", "delta"}),
    (eq("name", "charlie"), {"charlie"}),
    (eq("memory_enabled", False), {"bravo", "delta"}),
    (eq("output_format", "MARKDOWN"), {"bravo"}),  # enum input is case-insensitive
    (eq("max_turns", 5), {"bravo", "echo"}),
    (eq("created_at", T0 + HOUR), {"bravo"}),
    (ne("model", "gpt"), {"bravo", "charlie", "echo"}),  # ne matches nulls
    (ne("memory_enabled", True), {"bravo", "delta"}),
    (in_("model", ["gpt", "claude"]), {"alpha", "charlie", "delta", "echo"}),
    (in_("max_turns", [1, 10, 99]), {"alpha", "delta"}),
    (in_("output_format", ["json", "markdown"]), {"bravo", "charlie"}),
    (in_("model", []), set()),
    (not_in("model", ["gpt"]), {"bravo", "charlie", "echo"}),  # not_in matches nulls
    (not_in("name", ["alpha", "bravo"]), {"charlie", "delta", "echo"}),
    (not_in("model", []), set(ALL_AGENTS)),
    (gt("max_turns", 5), {"delta"}),
    (gte("max_turns", 5), {"bravo", "delta", "echo"}),
    (lt("max_turns", 5), {"alpha"}),
    (lte("max_turns", 5), {"alpha", "bravo", "echo"}),
    (gt("temperature", 0.5), {"charlie", "delta"}),
    (lte("temperature", 1.0), {"alpha", "charlie"}),
    (gt("created_at", T0 + 2 * HOUR), {"delta", "echo"}),
    (gte("created_at", T0 + 2 * HOUR), {"charlie", "delta", "echo"}),
    (lt("created_at", (T0 + 2 * HOUR).astimezone(IST)), {"alpha", "bravo"}),
    (lte("created_at", (T0 + HOUR).isoformat()), {"alpha", "bravo"}),  # ISO text accepted
    (is_null("model"), {"bravo"}),
    (is_null("temperature"), {"bravo", "echo"}),
    (not_null("max_turns"), {"alpha", "bravo", "delta", "echo"}),
    (contains_any("tags", ["prod", "dev"]), {"alpha", "delta", "echo"}),
    (contains_any("tags", ["ops"]), {"alpha", "bravo"}),
    (contains_any("tags", []), set()),
    (contains_all("tags", ["ops", "prod"]), {"alpha"}),
    (contains_all("tags", ["prod"]), {"alpha", "delta"}),
    (contains_all("tags", []), set(ALL_AGENTS)),
    (contains_text("name", "LPH"), {"alpha"}),  # any case
    (contains_text("model", "a"), {"charlie", "echo"}),  # nulls never match
    (contains_text("name|model", "gpt"), {"alpha", "delta"}),  # any of the fields
    (contains_text("name|model", "ha"), {"alpha", "charlie"}),
    (contains_text("name", "%"), set()),  # taken literally, not a wildcard
    (contains_text("name", "."), set()),
]


@pytest.mark.parametrize(
    ("flt", "expected"),
    FILTER_CASES,
    ids=[f"{f.op.value}-{f.field}-{i}" for i, (f, _) in enumerate(FILTER_CASES)],
)
async def test_filter_operator(store: DocumentStore, flt: Filter, expected: set[str]) -> None:
    async with store.unit_of_work() as repos:
        await repos.agents.insert_many(seed_agents())
        page = await repos.agents.list(Query(filters=(flt,)))
        counted = await repos.agents.count(flt)
    assert {a.name for a in page.items} == expected
    assert counted == len(expected)


async def test_filters_are_anded(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.agents.insert_many(seed_agents())
        page = await repos.agents.list(
            Query(filters=(contains_any("tags", ["prod", "dev"]), eq("memory_enabled", True)))
        )
    assert {a.name for a in page.items} == {"alpha", "echo"}


SORTS: list[tuple[Sort, ...]] = [
    (asc("created_at"),),
    (desc("created_at"),),
    (asc("status"), desc("turns")),
    (desc("turns"), asc("created_at")),
    (asc("turns"), desc("created_at"), asc("status")),
    (desc("status"), desc("created_at"), desc("id")),
    (asc("prompt"),),
]


@pytest.mark.parametrize(
    "sort", SORTS, ids=lambda s: ",".join(("-" if k.descending else "+") + k.field for k in s)
)
async def test_sort_with_ties_follows_every_key_then_id(
    store: DocumentStore, sort: tuple[Sort, ...]
) -> None:
    async with store.unit_of_work() as repos:
        tasks = await add_tasks(repos, "wf", 17)
        page = await repos.task_executions.list(Query(sort=sort))
    assert page.next_cursor is None
    assert [t.id for t in page.items] == python_order(tasks, sort)


@pytest.mark.parametrize("limit", [1, 4, 6, 25, 40])
@pytest.mark.parametrize(
    "sort", SORTS, ids=lambda s: ",".join(("-" if k.descending else "+") + k.field for k in s)
)
async def test_cursor_pages_cover_every_row_exactly_once(
    store: DocumentStore, sort: tuple[Sort, ...], limit: int
) -> None:
    async with store.unit_of_work() as repos:
        tasks = await add_tasks(repos, "wf", 24)
        seen: list[str] = []
        pages = 0
        query = Query(sort=sort, limit=limit)
        while True:
            page = await repos.task_executions.list(query)
            pages += 1
            assert len(page.items) <= limit
            seen.extend(t.id for t in page.items)
            if page.next_cursor is None:
                break
            assert len(page.items) == limit
            query = query.after(page.next_cursor)
    assert seen == python_order(tasks, sort)
    assert pages == max(1, -(-len(tasks) // limit))


async def test_pages_respect_filters(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        tasks = await add_tasks(repos, "wf", 30)
        query = Query(filters=(in_("turns", [1, 3]),), sort=(desc("created_at"),), limit=4)
        seen: list[str] = []
        while True:
            page = await repos.task_executions.list(query)
            seen.extend(t.id for t in page.items)
            if page.next_cursor is None:
                break
            query = query.after(page.next_cursor)
    wanted = [t for t in tasks if t.turns in (1, 3)]
    assert seen == python_order(wanted, (desc("created_at"),))


async def test_iterate_walks_more_than_one_batch(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        tasks = await add_tasks(repos, "wf", 25)
        query = Query(sort=(asc("turns"),))
        everything = [t.id async for t in repos.task_executions.iterate(query, batch_size=10)]
        capped = [t.id async for t in repos.task_executions.iterate(Query(limit=12), batch_size=5)]
        filtered = [
            t.id
            async for t in repos.task_executions.iterate(
                Query(filters=(gte("tool_calls", 20),)), batch_size=2
            )
        ]
    assert everything == python_order(tasks, (asc("turns"),))
    assert capped == python_order(tasks, (asc("created_at"),))[:12]
    assert sorted(filtered) == [f"t{i:03d}" for i in range(20, 25)]


async def test_iterate_rejects_a_bad_batch_size(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        with pytest.raises(UnsupportedQuery, match="batch_size"):
            [t async for t in repos.skills.iterate(Query(), batch_size=0)]


UNSUPPORTED: list[Query] = [
    Query(filters=(eq("no_such_field", 1),)),
    Query(sort=(asc("no_such_field"),)),
    Query(filters=(contains_any("name", ["a"]),)),
    Query(filters=(contains_all("max_turns", [1]),)),
    Query(filters=(gt("memory_enabled", False),)),
    Query(filters=(gt("tool_definitions", 1),)),
    Query(filters=(eq("tool_definitions", []),)),
    Query(filters=(lt("name", "m"),)),
    Query(filters=(is_null("name"),)),
    Query(filters=(eq("model", None),)),
    Query(filters=(eq("max_turns", "many"),)),
    Query(filters=(eq("output_format", "yaml"),)),
    Query(filters=(Filter("model", Op.IN, "gpt"),)),  # a bare string is not a list of values
    Query(filters=(contains_text("tags", "ops"),)),  # text fields only
    Query(filters=(contains_text("name|max_turns", "1"),)),
    Query(filters=(contains_text("name", ""),)),
    Query(sort=(asc("model"),)),  # nullable
    Query(sort=(asc("tags"),)),
    Query(sort=(asc("name"), desc("name"))),
    Query(limit=0),
    Query(cursor="not a cursor!"),
    Query(cursor="W10"),  # a valid cursor of another sort (no values)
]


@pytest.mark.parametrize("query", UNSUPPORTED, ids=[str(i) for i in range(len(UNSUPPORTED))])
async def test_unsupported_queries_are_refused(store: DocumentStore, query: Query) -> None:
    async with store.unit_of_work() as repos:
        await repos.agents.create(Agent(name="x"))
        with pytest.raises(UnsupportedQuery):
            await repos.agents.list(query)


async def test_unsupported_filters_are_refused_by_count_find_one_and_delete_where(
    store: DocumentStore,
) -> None:
    bad = contains_any("name", ["x"])
    async with store.unit_of_work() as repos:
        await repos.agents.create(Agent(name="x"))
        with pytest.raises(UnsupportedQuery, match="contains_any"):
            await repos.agents.count(bad)
        with pytest.raises(UnsupportedQuery):
            await repos.agents.find_one(eq("nope", 1))
        with pytest.raises(UnsupportedQuery):
            await repos.agents.delete_where(bad)
        assert await repos.agents.count() == 1


async def test_cursor_of_another_sort_is_refused(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await add_tasks(repos, "wf", 5)
        page = await repos.task_executions.list(Query(sort=(asc("turns"), asc("status")), limit=2))
        assert page.next_cursor is not None
        with pytest.raises(UnsupportedQuery, match="cursor"):
            await repos.task_executions.list(Query(limit=2, cursor=page.next_cursor))
        # Same length, wrong types: turns is an int, created_at a datetime.
        page2 = await repos.task_executions.list(Query(sort=(asc("prompt"),), limit=2))
        with pytest.raises(UnsupportedQuery, match="cursor"):
            await repos.task_executions.list(
                Query(sort=(asc("turns"),), limit=2, cursor=page2.next_cursor)
            )


async def test_records_of_other_types_in_the_same_store_do_not_leak(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await add_tasks(repos, "wf-a", 3)
        await repos.workflows.create(Workflow(id="wf-b", agent_id="agent"))
        other = [TaskExecution(id=f"b{i}", workflow_id="wf-b", created_at=T0) for i in range(2)]
        await repos.task_executions.insert_many(other)
        assert await repos.task_executions.count(eq("workflow_id", "wf-b")) == 2
        assert await repos.agents.count() == 0
