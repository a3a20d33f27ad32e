"""Gauges kept by the processes themselves: database pool connections and the broker's queue.

- `tbd_db_pool_connections{pool,state}`: `watch_pool(engine, "app")` registers a SQLAlchemy
  engine under a pool name; the gauge is the sum over the process's engines of that name. A
  scrape sets it from the pools (single-process mode: no listener, nothing is done per checkout).
  In multiprocess mode (prefork worker children, where nothing runs at scrape time) the pool's
  checkout/checkin/connect/close events set it as they happen (~6 µs per event, measured).
- `celery_queue_length`: `QueueLengthPoller` reads the length of the run queue in Redis every
  CELERY_QUEUE_POLL_SECONDS in the API. Redis being down is logged once (and once more when it
  is back) and never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from tbd_agents.observability import exposition, metrics

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tbd_agents.config import Settings

log = logging.getLogger(__name__)

STATES = ("in_use", "idle", "overflow")
_POOL_EVENTS = ("checkout", "checkin", "connect", "close", "close_detached", "invalidate")

_engines: dict[str, weakref.WeakSet[Any]] = {}
_lock = threading.Lock()


def _pool_numbers(pool: Any) -> tuple[int, int, int]:
    """(in use, idle, overflow) of a pool; 0 for what a pool class does not keep."""
    in_use = getattr(pool, "checkedout", None)
    idle = getattr(pool, "checkedin", None)
    overflow = getattr(pool, "overflow", None)
    return (
        int(in_use()) if in_use else 0,
        int(idle()) if idle else 0,
        max(int(overflow()), 0) if overflow else 0,
    )


def refresh_pool(name: str) -> None:
    """Set the gauges of pool `name` from its engines' pools now."""
    with _lock:
        engines = list(_engines.get(name, ()))
    totals = [0, 0, 0]
    for sync_engine in engines:
        for i, value in enumerate(_pool_numbers(sync_engine.pool)):
            totals[i] += value
    for state, value in zip(STATES, totals, strict=True):
        metrics.DB_POOL.labels(name, state).set(value)


def refresh_pools() -> None:
    with _lock:
        names = list(_engines)
    for name in names:
        refresh_pool(name)


def watch_pool(engine: AsyncEngine, name: str) -> None:
    """Keep `tbd_db_pool_connections{pool=name}` current for `engine` (until it is collected)."""
    sync_engine = engine.sync_engine
    with _lock:
        _engines.setdefault(name, weakref.WeakSet()).add(sync_engine)
    if exposition.is_multiprocess():
        _follow_events(sync_engine, name)
    exposition.on_scrape(refresh_pools)
    refresh_pool(name)


#: Engines whose pool events set the gauge (multiprocess mode only: in one process a scrape reads
#: the pools itself, and a listener would cost every checkout and checkin, i.e. every request).
_following: weakref.WeakSet[Any] = weakref.WeakSet()


def _follow_events(sync_engine: Any, name: str) -> None:
    with _lock:
        if sync_engine in _following:
            return
        _following.add(sync_engine)

    def changed(*_: Any) -> None:
        refresh_pool(name)

    for name_of_event in _POOL_EVENTS:
        event.listen(sync_engine, name_of_event, changed)


def follow_multiprocess() -> None:
    """The process switched to multiprocess mode (`exposition.enable_multiprocess`): the pools
    watched until now set their gauges from their events from here on."""
    with _lock:
        watched = [(name, engine) for name, engines in _engines.items() for engine in engines]
    for name, sync_engine in watched:
        _follow_events(sync_engine, name)


class QueueLengthPoller:
    """Sets `celery_queue_length` from the length of the run queue in Redis, every `every`
    seconds, in a task of the running event loop (`start()` / `aclose()`)."""

    def __init__(self, redis_url: str, queue: str, every: float) -> None:
        self.redis_url = redis_url
        self.queue = queue
        self.every = every
        self._task: asyncio.Task[None] | None = None
        self._down = False

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueLengthPoller | None:
        if not settings.redis_url or settings.celery_queue_poll_seconds <= 0:
            return None
        return cls(settings.redis_url, settings.run_queue, settings.celery_queue_poll_seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="celery-queue-length")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def read_once(self, client: Any) -> int | None:
        """The queue length now (kombu's priority sub-queues included), None when Redis does
        not answer."""
        from redis.exceptions import RedisError

        try:
            keys = [self.queue, *[f"{self.queue}\x06\x16{p}" for p in (1, 2, 3, 4, 5, 6, 7, 8, 9)]]
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.llen(key)
                lengths = await pipe.execute()
        except (RedisError, OSError) as exc:
            if not self._down:
                log.warning(
                    "celery_queue_length: Redis does not answer (%s); keeping the last value "
                    "until it is back",
                    exc,
                )
            self._down = True
            return None
        if self._down:
            log.info("celery_queue_length: Redis answers again")
        self._down = False
        return int(sum(lengths))

    async def _loop(self) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(
            self.redis_url, socket_connect_timeout=5, socket_timeout=5, health_check_interval=30
        )
        try:
            while True:
                length = await self.read_once(client)
                if length is not None:
                    metrics.QUEUE_LENGTH.set(length)
                await asyncio.sleep(self.every)
        finally:
            await client.aclose()
