"""The cost of the observability plumbing per request and per scrape, in this process.

    PYTHONPATH=src .venv/bin/python benchmarks/observability_bench.py [--requests 50000]

- `HttpMetrics` (observability/httpmetrics.py) around a trivial ASGI app (200, 15-byte body):
  CPU per request with and without the middleware, the difference is its cost;
- the same with the route template in the scope (as FastAPI's router and the fast path set it);
- one `/metrics` scrape (`exposition.scrape`) after the requests above, text and OpenMetrics.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from tbd_agents.observability import exposition
from tbd_agents.observability.httpmetrics import ROUTE_KEY, HttpMetrics

BODY = b'{"status":"ok"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})  # fmt: skip


async def run(target: Any, requests: int, template: str | None) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    started = time.process_time()
    for i in range(requests):
        scope = {"type": "http", "method": "GET", "path": f"/api/agents/{i}", "headers": []}
        if template:
            scope[ROUTE_KEY] = template
        await target(scope, receive, send)
    return (time.process_time() - started) / requests * 1e6  # µs per request


async def main(requests: int) -> None:
    wrapped = HttpMetrics(app)  # type: ignore[arg-type]
    await run(wrapped, 2000, "/warm-up")
    bare = await run(app, requests, None)
    unmatched = await run(wrapped, requests, None)
    routed = await run(wrapped, requests, "/api/agents/{record_id}")
    print(f"bare app:                {bare:6.2f} µs/request")
    print(f"HttpMetrics, unmatched:  {unmatched:6.2f} µs/request (+{unmatched - bare:.2f})")
    print(f"HttpMetrics, templated:  {routed:6.2f} µs/request (+{routed - bare:.2f})")
    for accept in ("text/plain", "application/openmetrics-text; version=1.0.0"):
        started = time.perf_counter()
        for _ in range(50):
            body, _ = exposition.scrape(accept)
        took = (time.perf_counter() - started) / 50 * 1e3
        print(f"scrape ({accept.split(';')[0]}): {took:.2f} ms, {len(body):,} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().requests))
