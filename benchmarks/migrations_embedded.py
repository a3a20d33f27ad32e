"""Time the embedded PostgreSQL and the migrations (run by hand; results in RESULTS.md).

    .venv/bin/python benchmarks/migrations_embedded.py

Measures: first start of a new data directory (initdb + tuning restart), a later start, a stop,
`upgrade head` on an empty database, a no-op `upgrade head`, and a test database copied from a
migrated template (what tests/support/pg.create_migrated_database does).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from tbd_agents.config import load_settings
from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.embedded import EmbeddedPostgres
from tbd_agents.storage.postgres.engine import libpq_url


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


async def admin(url, sql: str) -> None:  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(libpq_url(url.set(database="postgres")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="tbd-bench-"))
    settings = load_settings(embedded_pg_data_dir=base / "pgdata")
    try:
        server = EmbeddedPostgres(settings)
        url, first = timed(server.start)
        _, stop = timed(server.stop)
        url, again = timed(server.start)
        print(f"first start (initdb + tune + restart): {first:.2f} s")
        print(f"stop: {stop:.2f} s, later start: {again:.2f} s")

        ups, noops, copies = [], [], []
        for _ in range(5):
            name = f"b_{uuid.uuid4().hex[:8]}"
            asyncio.run(admin(url, f'CREATE DATABASE "{name}"'))
            target = url.set(database=name)
            _, up = timed(asyncio.run, migrate.upgrade_to_head(target))
            _, noop = timed(asyncio.run, migrate.upgrade_to_head(target))
            copy = f"c_{uuid.uuid4().hex[:8]}"
            _, cp = timed(asyncio.run, admin(url, f'CREATE DATABASE "{copy}" TEMPLATE "{name}"'))
            ups.append(up)
            noops.append(noop)
            copies.append(cp)
        print(f"upgrade head on an empty database: median {statistics.median(ups):.2f} s")
        print(f"upgrade head when already at head: median {statistics.median(noops):.3f} s")
        print(f"CREATE DATABASE ... TEMPLATE migrated: median {statistics.median(copies):.3f} s")
        server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
