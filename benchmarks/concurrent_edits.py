"""Concurrent edits of one record: updates lost without If-Match, kept with it, and what the
precondition costs (#16 point 7).

    PYTHONPATH=src .venv/bin/python benchmarks/concurrent_edits.py [--rounds 5] [--puts 2000]

On the embedded PostgreSQL 18 in a fresh DATA_DIR, the app called in this process through
httpx's ASGI transport (every request goes through the middlewares, routing and storage):

1. **lost updates**: 20 clients each read an agent's tags and write them back with one more tag
   (no barrier: the interleaving is whatever the event loop and the database make of it); how
   many of the 20 tags the agent keeps, without If-Match and with If-Match + retry on 412.
2. **contention**: 20 clients each add 10 tags to one agent with If-Match + retry: time until all
   200 are in, 412s answered, requests sent.
3. **cost**: PUTs to 1,000 agents (16 in flight, each client on its own agents so nothing
   conflicts), without and with If-Match: CPU ms of this process per PUT, and PUTs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tbd_agents.api import create_app
from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.factory import prepared_store

WRITERS = 20
IN_FLIGHT = 16


async def read_modify_write(
    client: httpx.AsyncClient, path: str, tag: str, conditional: bool
) -> tuple[int, int]:
    """Add `tag` to the record's tags; (requests sent, 412s received)."""
    sent = refused = 0
    while True:
        read = await client.get(path)
        sent += 1
        headers = {"If-Match": read.headers["ETag"]} if conditional else {}
        tags = [*read.json()["tags"], tag]
        written = await client.put(path, json={"tags": tags}, headers=headers)
        sent += 1
        if written.status_code == 200:
            return sent, refused
        if written.status_code != 412:
            raise RuntimeError(f"PUT answered {written.status_code}: {written.text}")
        refused += 1


async def new_agent(client: httpx.AsyncClient, name: str) -> str:
    created = await client.post("/api/agents", json={"name": name})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def lost_updates(client: httpx.AsyncClient, rounds: int) -> None:
    for conditional in (False, True):
        kept: list[int] = []
        refused: list[int] = []
        for r in range(rounds):
            path = f"/api/agents/{await new_agent(client, f'lost-{conditional}-{r}')}"
            results = await asyncio.gather(
                *(read_modify_write(client, path, f"t{i}", conditional) for i in range(WRITERS))
            )
            kept.append(len((await client.get(path)).json()["tags"]))
            refused.append(sum(n for _, n in results))
        label = "with If-Match + retry" if conditional else "without If-Match     "
        print(
            f"lost updates {label}: tags kept of {WRITERS}: {kept} "
            f"(median {statistics.median(kept):g}); 412s per round: {refused}",
            flush=True,
        )


async def contention(client: httpx.AsyncClient, per_writer: int) -> None:
    path = f"/api/agents/{await new_agent(client, 'contended')}"

    async def writer(w: int) -> tuple[int, int]:
        sent = refused = 0
        for k in range(per_writer):
            s, n = await read_modify_write(client, path, f"w{w}-{k}", True)
            sent, refused = sent + s, refused + n
        return sent, refused

    began = time.perf_counter()
    results = await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    wall = time.perf_counter() - began
    final = (await client.get(path)).json()
    total = WRITERS * per_writer
    assert len(final["tags"]) == total, len(final["tags"])
    assert final["version"] == total + 1, final["version"]
    print(
        f"contention: {total} changes by {WRITERS} clients on one record in {wall:.2f} s "
        f"({total / wall:.0f} changes/s), {sum(n for _, n in results)} answers 412, "
        f"{sum(s for s, _ in results)} requests",
        flush=True,
    )


async def cost(client: httpx.AsyncClient, puts: int, agents: int) -> None:
    ids = [await new_agent(client, f"cost-{i}") for i in range(agents)]
    versions = dict.fromkeys(ids, 1)
    mine = [ids[w::IN_FLIGHT] for w in range(IN_FLIGHT)]  # no two clients share an agent
    per_worker = puts // IN_FLIGHT
    for conditional in (False, True, False, True):

        async def worker(own: list[str], conditional: bool = conditional) -> None:
            for k in range(per_worker):
                record = own[k % len(own)]
                headers = {"If-Match": f'"{versions[record]}"'} if conditional else {}
                answer = await client.put(
                    f"/api/agents/{record}", json={"description": f"d{k}"}, headers=headers
                )
                if answer.status_code != 200:
                    raise RuntimeError(f"PUT answered {answer.status_code}: {answer.text}")
                versions[record] = int(answer.headers["ETag"].strip('"'))

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(own) for own in mine))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        done = per_worker * IN_FLIGHT
        label = "with If-Match   " if conditional else "without If-Match"
        print(
            f"PUT {label}: {cpu / done * 1000:.3f} ms CPU/request, {done / wall:.0f} PUTs/s",
            flush=True,
        )


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="tbd-edits-"))
    settings = Settings(  # type: ignore[call-arg]
        data_dir=data_dir,
        embedding_provider="hashing",
        postgres_pool_size=20,
        postgres_max_overflow=5,
        log_level="WARNING",
    )
    try:
        async with prepared_store(settings) as store:
            app = create_app(settings, store)
            async with app.router.lifespan_context(app):
                async with store.unit_of_work() as repos:
                    key = (await ApiKeys(repos).create("bench", scope=KeyScope.USER)).plaintext
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://bench",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=120,
                ) as client:
                    await lost_updates(client, args.rounds)
                    await contention(client, args.per_writer)
                    await cost(client, args.puts, args.agents)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-writer", type=int, default=10)
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=1000)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
