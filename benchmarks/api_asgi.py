"""The API's own CPU per request, without HTTP: the app called as ASGI in this process.

    PYTHONPATH=src .venv/bin/python benchmarks/api_asgi.py [--requests 4000] [--only get,list]

`api_wrk.py` measures what issue #14 states (wrk over HTTP, a separate server process); on a
shared machine its req/s move with the load. This one calls the application object directly
(scope, receive and send as a server would pass them, 16 requests in flight), on the embedded
PostgreSQL in a fresh DATA_DIR, so the CPU time this process spends per request (PostgreSQL runs
in its own processes) is the application's: middleware, routing, dependencies, endpoint,
storage, serialisation. Add ~0.1 ms for uvicorn's HTTP handling to compare with `api_wrk.py`.
Quick to run and steady: the loop for trying a change.

The scenarios are those of `api_wrk.py` (1,000 agents; GET by id, the whole list, PUT, create).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tbd_agents.api import create_app
from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.models import Agent
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.factory import prepared_store
from tbd_agents.storage.protocol import Query, in_

CONCURRENCY = 16


class Caller:
    """Requests straight into the ASGI app; answers checked for their status."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
        ]

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        headers = self.headers
        if body:
            headers = [*headers, (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": method,
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers,
            "state": {},
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


async def scenario(
    name: str, caller: Caller, ids: list[str], requests: int, expect: int
) -> tuple[float, float]:
    """(CPU ms per request, req/s of this process alone)."""
    counter = iter(range(requests))
    prefix = random.randrange(10**9)

    async def one(i: int) -> None:
        if name == "get":
            status, _ = await caller.request("GET", f"/api/agents/{random.choice(ids)}")
        elif name == "list":
            status, body = await caller.request("GET", "/api/agents")
            if i < 0 and status == 200 and len(json.loads(body)) < len(ids):  # warm-up only
                raise RuntimeError("the list is short")
        elif name == "put":
            data = json.dumps({"description": f"changed {i}"}).encode()
            status, _ = await caller.request("PUT", f"/api/agents/{random.choice(ids)}", data)
        else:
            data = json.dumps({"name": f"asgi-{prefix}-{i}", "description": "load"}).encode()
            status, _ = await caller.request("POST", "/api/agents", data)
        if status != expect:
            raise RuntimeError(f"{name}: {status}")

    async def worker() -> None:
        for i in counter:
            await one(i)

    for i in range(200):  # warm-up
        await one(-i - 1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / requests * 1000, requests / wall


async def main(args: argparse.Namespace) -> None:
    fresh = args.data_dir is None
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="tbd-api-asgi-"))
    began = time.perf_counter()
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
                    key = (await ApiKeys(repos).create("admin", scope=KeyScope.ADMIN)).plaintext
                    # a kept DATA_DIR: back to the 1,000 seeded agents
                    every = (await repos.for_model(Agent).list(Query())).items
                    extra = [a.id for a in every if "bench" not in a.tags]
                    if extra:
                        await repos.for_model(Agent).delete_where(in_("id", extra))
                caller = Caller(app, key)
                ids = [a.id for a in every if "bench" in a.tags]
                for i in range(len(ids), 1000):
                    body = json.dumps({"name": f"seed-{i}", "tags": ["bench"]}).encode()
                    status, answer = await caller.request("POST", "/api/agents", body)
                    assert status == 201, answer
                    ids.append(json.loads(answer)["id"])
                print(f"ready in {time.perf_counter() - began:.0f} s", flush=True)
                plan = [("get", 200), ("list", 200), ("put", 200), ("create", 201)]
                for name, expect in plan:
                    if args.only and name not in args.only.split(","):
                        continue
                    count = args.requests // 10 if name == "list" else args.requests
                    results = [
                        await scenario(name, caller, ids, count, expect) for _ in range(args.runs)
                    ]
                    cpu = sorted(r[0] for r in results)
                    runs = " / ".join(f"{r[0]:.3f}" for r in results)
                    print(
                        f"{name:7s} {cpu[len(cpu) // 2]:.3f} ms CPU/request, lowest {cpu[0]:.3f} "
                        f"(runs {runs})",
                        flush=True,
                    )
    finally:
        if fresh:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="get,list,put,create")
    parser.add_argument("--data-dir", help="kept between runs (faster start); default: fresh")
    arguments = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(main(arguments))
    sys.exit(0)
