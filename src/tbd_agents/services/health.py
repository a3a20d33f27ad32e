"""Readiness checks: each dependency probed with a time limit, its latency reported."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel

from tbd_agents.config import Settings
from tbd_agents.errors import TbdError
from tbd_agents.storage.protocol import DocumentStore

CHECK_TIMEOUT = 5.0


class CheckResult(BaseModel):
    name: str
    ok: bool
    latency_ms: float
    detail: str = ""


async def _timed(name: str, probe: Callable[[], Awaitable[str]]) -> CheckResult:
    start = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe(), CHECK_TIMEOUT)
        ok = True
    except TimeoutError:
        ok, detail = False, f"no answer within {CHECK_TIMEOUT:g} s"
    except TbdError as exc:
        ok, detail = False, exc.message
    except Exception as exc:  # a readiness probe reports any failure rather than crashing
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return CheckResult(
        name=name, ok=ok, latency_ms=round((time.perf_counter() - start) * 1000, 2), detail=detail
    )


async def _database(store: DocumentStore) -> str:
    await store.ping()
    url = getattr(store, "url", None)
    if store.backend == "postgres" and url is not None:
        from tbd_agents.storage.postgres.migrate import ensure_at_head, head_revision

        await ensure_at_head(url)
        return f"{store.backend}, at revision {head_revision()}"
    return store.backend


async def _embedded(supervisor: Any) -> str:
    """The embedded server as its supervisor (`serve`) sees it: running, restarting, disk full."""
    from tbd_agents.errors import DatabaseUnreachable, DiskFull

    now = supervisor.situation()
    if now.disk_full:
        raise DiskFull(now.describe())
    if not now.running:
        raise DatabaseUnreachable(f"the embedded PostgreSQL is not running: {now.describe()}")
    return str(now.describe())


async def _vectors(vectors: Any) -> str:
    from tbd_agents.vectors.base import KNOWLEDGE_CHUNKS

    info = await vectors.collection_info(KNOWLEDGE_CHUNKS.name)
    state = "ready" if info is not None else "no knowledge indexed yet"
    return f"{vectors.backend}, {state}"


async def _failed(reason: str) -> str:
    raise RuntimeError(f"knowledge and memory services did not start: {reason}")


async def _redis(url: str) -> str:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return "pong"


async def readiness(
    settings: Settings, store: DocumentStore, services: Mapping[str, Any]
) -> list[CheckResult]:
    """Database (reachable and at the Alembic head), the embedded PostgreSQL's supervisor (under
    `serve`), vector store, Redis (when configured)."""
    probes: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("database", lambda: _database(store))
    ]
    supervisor = getattr(store, "supervisor", None)
    if supervisor is not None:
        probes.append(("embedded_postgres", lambda: _embedded(supervisor)))
    vectors = services.get("vector_store")
    if vectors is not None:
        probes.append(("vector_store", lambda: _vectors(vectors)))
    elif "knowledge_error" in services:
        reason = str(services["knowledge_error"])
        probes.append(("vector_store", lambda: _failed(reason)))
    if settings.redis_url:
        redis_url = settings.redis_url
        probes.append(("redis", lambda: _redis(redis_url)))
    return list(await asyncio.gather(*(_timed(n, p) for n, p in probes)))
