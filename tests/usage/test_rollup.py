"""usage_rollup (PostgreSQL) equals usage_daily and usage_monthly after mixed writes (retries,
calls without an agent or workflow, month boundaries, concurrent writers), the migration
backfills it from existing usage, and on both backends `UsageStore.series` without a limit that
bites gives the same rows as `grouped` (the rollup path against usage_daily)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from tbd_agents.observability.usage.records import COLUMN, DIMENSIONS, UsageFilter
from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.engine import libpq_url
from tests.support import pg
from tests.usage.conftest import UsageApi, call

#: The revision before usage_rollup's.
BEFORE = "c4f7a2e9d158"
#: usage_rollup built again from usage_daily / usage_monthly: must equal the table.
EXPECTED = " UNION ALL ".join(
    f"SELECT '{dim}' AS dimension, '{grain}' AS grain, {period} AS period, {col} AS key, "
    f"sum(calls)::bigint AS calls, sum(input_tokens) AS i, sum(output_tokens) AS o, "
    f"sum(cost_usd) AS c FROM {table} GROUP BY {period}{'' if dim == 'all' else ', ' + col}"
    for grain, table, period in (("day", "usage_daily", "day"), ("month", "usage_monthly", "month"))
    for dim, col in [("all", "''"), *((d, COLUMN[d]) for d in DIMENSIONS)]
)
ROLLUP = (
    "SELECT dimension, grain, period, key, calls, input_tokens AS i, output_tokens AS o, "
    "cost_usd AS c FROM usage_rollup"
)


async def differences(dsn: str) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return [
            *await conn.fetch(f"({EXPECTED}) EXCEPT ({ROLLUP})"),
            *await conn.fetch(f"({ROLLUP}) EXCEPT ({EXPECTED})"),
        ]
    finally:
        await conn.close()


async def mixed_writes(uapi: UsageApi) -> tuple[list[Any], date, date]:
    tag = uuid.uuid4().hex[:6]
    first = datetime(2040, 1, 1, tzinfo=UTC) + timedelta(days=uuid.uuid4().int % 3000)
    first = first.replace(day=28, hour=23, minute=59)  # the last days of a month and the next
    calls = [
        call(at=first + timedelta(days=i // 3, minutes=i), cost=f"0.00{i % 7}00000001",
             tokens=(i * 11, i), user_id=f"u{i % 3}-{tag}",
             agent_id=f"a{i % 4}-{tag}" if i % 5 else None,
             workflow_id=f"w{i % 2}-{tag}" if i % 2 else None,
             schedule_id=f"s-{tag}" if i % 6 == 0 else None,
             provider_id=f"p{i % 2}-{tag}", model=f"m{i % 3}-{tag}")
        for i in range(40)
    ]  # fmt: skip
    for c in calls:
        assert await uapi.usage.record(c)
    assert not await uapi.usage.record(calls[3])  # a retried write adds nothing
    # Concurrent writers on the same rows (the `all` rows of a day are everyone's).
    more = [call(at=first, cost="0.5", user_id=f"u0-{tag}", model=f"m0-{tag}") for _ in range(12)]
    assert all(await asyncio.gather(*(uapi.usage.record(c) for c in more)))
    calls += more
    return calls, first.date(), (first + timedelta(days=14)).date()


async def test_rollup_equals_usage_daily_after_mixed_writes(uapi: UsageApi) -> None:
    calls, start, end = await mixed_writes(uapi)
    where = UsageFilter(start, end)
    for dim in (None, *DIMENSIONS):
        column = COLUMN[dim] if dim else None
        for interval in ("day", "week", "month"):
            ranked = await uapi.usage.series(where, column, interval, 100, "cost_usd")
            grouped = await uapi.usage.grouped(where, column, interval)
            key = lambda r: (r.day, r.key)  # noqa: E731
            assert sorted(ranked.rows, key=key) == sorted(grouped, key=key), (dim, interval)
            assert ranked.folded == 0
    ranked = await uapi.usage.series(where, "agent_id", "day", 2, "calls")
    assert ranked.folded == 3 and len(ranked.keys) == 2  # 4 agents and the calls without one
    assert sum(r.totals.calls for r in ranked.rows) == len(calls)
    if uapi.name == "pg":
        url = uapi.store.url  # type: ignore[attr-defined]
        assert await differences(libpq_url(url)) == []


async def test_the_migration_backfills_the_rollup_and_downgrades(pg18_server: str) -> None:
    url = pg.create_migrated_database(pg18_server, prefix="rollup", revision=BEFORE)
    try:
        conn = await asyncpg.connect(libpq_url(url))
        try:
            await conn.execute(
                "INSERT INTO usage_daily VALUES ('2026-01-31', 'u1', 'a1', '', '', 'p1', 'm1', "
                "2, 10, 5, 0.25), ('2026-02-01', 'u1', 'a2', 'w1', '', 'p1', 'm1', 1, 3, 1, 0.5),"
                " ('2026-02-01', 'u2', '', '', '', 'p2', 'm2', 4, 8, 2, 0.000000000001)"
            )
            await conn.execute(
                "INSERT INTO usage_monthly SELECT date_trunc('month', day)::date, user_id, "
                "agent_id, workflow_id, schedule_id, provider_id, model, sum(calls), "
                "sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM usage_daily "
                "GROUP BY 1, 2, 3, 4, 5, 6, 7"
            )
        finally:
            await conn.close()
        await migrate.upgrade_to_head(url)
        assert await differences(libpq_url(url)) == []
        conn = await asyncpg.connect(libpq_url(url))
        try:
            got = await conn.fetch(
                "SELECT period::text, calls, cost_usd FROM usage_rollup "
                "WHERE dimension = 'all' AND grain = 'day' ORDER BY period"
            )
            agents = await conn.fetch(
                "SELECT key, calls FROM usage_rollup WHERE dimension = 'agent' "
                "AND grain = 'month' AND period = '2026-02-01' ORDER BY key"
            )
        finally:
            await conn.close()
        assert [(r[0], r[1], str(r[2])) for r in got] == [
            ("2026-01-31", 2, "0.250000000000"),
            ("2026-02-01", 5, "0.500000000001"),
        ]
        assert [tuple(r) for r in agents] == [("", 4), ("a2", 1)]
        await migrate.downgrade(url, BEFORE)
        assert await migrate.current_revisions(url) == (BEFORE,)
        conn = await asyncpg.connect(libpq_url(url))
        try:
            assert await conn.fetchval("SELECT to_regclass('usage_rollup')") is None
            assert await conn.fetchval("SELECT sum(calls) FROM usage_daily") == 7
        finally:
            await conn.close()
    finally:
        pg.drop_database(url)
